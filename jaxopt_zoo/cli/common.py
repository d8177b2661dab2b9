"""What the training commands share: optimizer specs from flags, the config, the data, the
output folder and the checkpointer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from jaxopt_zoo.cli.flags import UsageError


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
            spec.build()
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
    }
    if args.sam_adaptive and args.sam_rho is None:
        raise UsageError("--sam-adaptive needs --sam-rho (e.g. --sam-rho 0.5 for ASAM)")
    if args.swa_start is None:
        for flag in ("swa_lr", "swa_every"):
            if flags[flag] is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --swa-start")
    if args.swa_start is not None and args.ema is not None:
        raise UsageError("--swa-start and --ema are two kinds of weight averaging; choose one")
    if args.swa_start is not None and args.swa_start > args.epochs:
        raise UsageError(
            f"--swa-start {args.swa_start} is after the last epoch "
            f"(--epochs {args.epochs}); nothing would be averaged"
        )
    try:
        return Techniques(**flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _config(args, seed: int):
    from jaxopt_zoo.cli.devices import device_config
    from jaxopt_zoo.train import TrainConfig

    return TrainConfig(
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=seed,
        patience=args.patience,
        progress=args.progress,
        on_nonfinite=getattr(args, "on_nonfinite", "ignore"),
        **device_config(args),
    )


def _data(args):
    from jaxopt_zoo.train.runner import load_data

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
    d = {k: v for k, v in vars(args).items() if k not in ("func",)}
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
        callbacks=callbacks,
    )
