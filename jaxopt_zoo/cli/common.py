"""What the training commands share: optimizer specs from flags, the config, the data, the
output folder and the checkpointer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from jaxopt_zoo.cli.args import UsageError
from jaxopt_zoo.cli.devices import device_config


def _specs(names: Sequence[str], args) -> List[Any]:
    from jaxopt_zoo.train.runner import RunSpec, resolve_optimizer

    specs = []
    for raw in names:
        name = raw.strip()
        if not name:
            raise UsageError("empty optimizer name in the list")
        try:
            full = resolve_optimizer(name, args.preset)
        except KeyError as e:
            raise UsageError(str(e.args[0]) if e.args else str(e)) from None
        spec = RunSpec(
            full, lr=args.lr, kwargs=dict(args.opt_arg), label=name, techniques=_techniques(args)
        )
        try:  # build once now so that bad --opt-arg / --lr values fail before any training
            spec.build(total_steps=args.steps or 10**6)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{name}: {e}") from None
        specs.append(spec)
    return specs


def _techniques(args):
    from jaxopt_zoo.train.techniques import Techniques

    flags = {
        "sam_rho": args.sam_rho,
        "sam_adaptive": args.sam_adaptive,
        "swa_start": args.swa_start,
        "swa_every": args.swa_every,
        "swa_lr": args.swa_lr,
        "swa_anneal_epochs": args.swa_anneal_epochs,
        "ema": args.ema,
        "clip_norm": args.clip_norm,
        "schedule": args.schedule,
        "warmup_steps": args.warmup_steps or 0,
        "decay_fraction": 0.2 if args.decay_fraction is None else args.decay_fraction,
        "decay_mask": args.decay_mask,
        **_precision(args),
    }
    if args.schedule == "constant" and args.warmup_steps is not None:
        raise UsageError("--warmup-steps needs --schedule warmup-cosine or wsd")
    if args.schedule != "wsd" and args.decay_fraction is not None:
        raise UsageError("--decay-fraction needs --schedule wsd")
    if args.steps is not None and args.warmup_steps is not None:
        if args.warmup_steps >= args.steps:
            raise UsageError(
                f"--warmup-steps {args.warmup_steps} leaves nothing of --steps {args.steps}"
            )
    if args.sam_adaptive and args.sam_rho is None:
        raise UsageError("--sam-adaptive needs --sam-rho (e.g. --sam-rho 0.5 for ASAM)")
    if args.swa_start is None:
        for flag in ("swa_lr", "swa_every"):
            if flags[flag] is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --swa-start")
    if args.swa_start is not None and args.ema is not None:
        raise UsageError("--swa-start and --ema are two kinds of weight averaging; choose one")
    if args.swa_start is not None and args.model == "charlm":
        raise UsageError("--swa-start counts epochs, which --model charlm has none of; use --ema")
    if args.swa_start is not None and args.steps is None and args.swa_start > args.epochs:
        raise UsageError(
            f"--swa-start {args.swa_start} is after the last epoch "
            f"(--epochs {args.epochs}); nothing would be averaged"
        )
    try:
        return Techniques(**flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _precision(args) -> dict:
    """The precision settings of ``Techniques`` from --bf16-params/--bf16-rounding and
    --state-bits/--state-block-size."""
    if args.bf16_rounding is not None and not args.bf16_params:
        raise UsageError("--bf16-rounding needs --bf16-params")
    out: dict = {}
    if args.state_block_size is not None and args.state_bits is None:
        raise UsageError("--state-block-size needs --state-bits (8, 4 or fp8)")
    if args.state_bits is not None:
        out["state_bits"] = args.state_bits
        if args.state_block_size is not None:
            out["state_block_size"] = args.state_block_size
    if args.bf16_params:
        out.update(bf16_params=True, bf16_rounding=args.bf16_rounding or "stochastic")
    return out


def _prepare(args) -> None:
    """Fill in the defaults that depend on the model, refuse flags that do not apply."""
    from jaxopt_zoo.train.lm import LM_DEFAULTS

    lm = args.model == "charlm"
    if args.dataset is None:
        args.dataset = "shakespeare" if lm else "mnist"
    if lm != (args.dataset == "shakespeare"):
        raise UsageError(
            "--model charlm trains on --dataset shakespeare (text); the cnn and mlp on "
            f"images (mnist, fashion_mnist), not {args.dataset}"
        )
    lm_flags = ["eval_windows", *LM_DEFAULTS]
    if not lm:
        for flag in lm_flags:
            if getattr(args, flag) is not None:
                name = "layers" if flag == "depth" else flag.replace("_", "-")
                raise UsageError(f"--{name} is for --model charlm")
        return
    for flag in ("train_limit", "val_limit"):
        if getattr(args, flag) is not None:
            raise UsageError(
                f"--{flag.replace('_', '-')} is for images; --model charlm trains on "
                "random windows and validates on --eval-windows"
            )
    if args.val_size:
        raise UsageError("--val-size is for images; --model charlm holds out the last 10%")
    if args.steps is None:
        raise UsageError("--model charlm has no epochs: give it a step budget, --steps N")
    for key, value in LM_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.eval_windows is None:
        args.eval_windows = 256
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 10)


def _model_options(args, vocab_size: int = 84):
    """The char-LM's size from the flags; None for the other models."""
    from jaxopt_zoo.train.lm import LM_DEFAULTS

    if args.model != "charlm":
        return None
    return {"vocab_size": vocab_size, **{k: getattr(args, k) for k in LM_DEFAULTS}}


def _config(args, seed: int):
    from jaxopt_zoo.train import TrainConfig

    return TrainConfig(
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=seed,
        patience=args.patience,
        progress=args.progress,
        on_nonfinite=getattr(args, "on_nonfinite", "ignore"),
        steps=args.steps,
        eval_every=args.eval_every,
        eval_batch_size=128 if args.model == "charlm" else 1000,
        **device_config(args),
    )


def _data(args):
    """``(train, val)``; for the char-LM ``(TokenWindows, (x, y) windows)``, and its
    vocabulary in ``args.vocab``."""
    from jaxopt_zoo.train.runner import load_data

    if args.model == "charlm":
        from jaxopt_zoo.train.lm import load_lm_data

        train, val, vocab = load_lm_data(
            args.data_dir, context=args.context, eval_windows_count=args.eval_windows
        )
        args.vocab = vocab.chars
        return train, val

    return load_data(
        args.dataset,
        args.data_dir,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        val_size=args.val_size,
        seed=0,
    )


def _output_dir(args, default_name: str, files: Sequence[str]) -> Path:
    """The results folder (created); refuses one holding any of ``files`` from an earlier
    run unless --overwrite (or --resume: the same run finishing)."""
    out = Path(args.output) if args.output else Path("runs") / default_name
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder")
    taken = [f for f in files if (out / f).exists()]
    if taken and not (args.overwrite or getattr(args, "resume", False)):
        raise UsageError(
            f"--output {out} already holds {', '.join(taken)} from an earlier "
            "run; choose another --output or pass --overwrite to replace them"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _config_record(args, **extra) -> Dict[str, Any]:
    d = {k: v for k, v in vars(args).items() if k not in ("func", "vocab")}
    d["opt_arg"] = dict(args.opt_arg)
    d.update(extra)
    return d


def _checkpointer(args, spec, init):
    """The run's Checkpointer, or None without --checkpoint-dir."""
    if args.checkpoint_dir is None:
        for flag in ("checkpoint_every", "keep_checkpoints"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --checkpoint-dir")
        if args.resume:
            raise UsageError("--resume needs --checkpoint-dir")
        return None
    from jaxopt_zoo.train.runner import CheckpointsExistError, open_checkpointer

    identity = {
        "optimizer": spec.optimizer,
        "lr": args.lr,
        "opt_arg": dict(args.opt_arg),
        "model": args.model,
        "init": init,
        "dataset": args.dataset,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "train_limit": args.train_limit,
        "val_limit": args.val_limit,
        "val_size": args.val_size,
    }
    if spec.techniques.record():  # only when on: older checkpoint folders stay resumable
        identity["techniques"] = spec.techniques.record()
    if spec.techniques.schedule != "constant":  # the schedule's length
        identity["steps"] = args.steps
    if args.eval_every is not None:  # places the evaluations (and the state's counters)
        identity["eval_every"] = args.eval_every
    if args.model == "charlm":
        identity.update(
            model_options=_model_options(args, len(args.vocab)),
            vocab=args.vocab,
            eval_windows=args.eval_windows,
        )
    try:
        return open_checkpointer(
            args.checkpoint_dir,
            identity,
            keep=args.keep_checkpoints or 3,
            every_steps=args.checkpoint_every,
            resume=args.resume,
        )
    except CheckpointsExistError as e:
        raise UsageError(str(e)) from None


def _run_with_checkpoints(ckpt, args, spec, init, train, val, callbacks=()):
    from jaxopt_zoo.train.runner import run_with_checkpoints

    return run_with_checkpoints(
        ckpt,
        spec,
        train,
        val,
        model=args.model,
        init_style=init,
        config=_config(args, args.seed),
        resume=args.resume,
        model_options=_model_options(args, len(getattr(args, "vocab", "")) or 84),
        callbacks=callbacks,
    )
