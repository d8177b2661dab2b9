"""The ``jaxopt-zoo`` command: list optimizers, train one model, compare optimizers on MNIST.

    jaxopt-zoo list
    jaxopt-zoo train --optimizer adam --model cnn --epochs 3 --output runs/adam
    jaxopt-zoo compare --optimizers adadelta,adagrad,adam,rmsprop,sgd --preset keras

Bad flags and unknown optimizer names exit with status 2 and a one-line message; data and
other runtime errors exit with status 1 and a message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A bad command line: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's multi-line usage dump -> one line
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``, with a message naming what was expected."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float_in(what: str, ok) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v != v or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_float = _float_in("a positive finite number", lambda v: 0 < v < float("inf"))
_nonneg_float = _float_in("a finite number >= 0", lambda v: 0 <= v < float("inf"))
_decay = _float_in("a decay rate in [0, 1)", lambda v: 0 <= v < 1)


def _opt_arg(text: str):
    """KEY=VALUE with VALUE parsed as JSON when it can be (0.9, true, [0.9, 0.99])."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    from jaxopt_zoo.train.runner import PRESETS

    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="native",
        help="optimizer semantics and model init: native (ours, Flax init), keras "
        "(Keras formulas and defaults, Keras init), torch (torch.optim's)",
    )
    p.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: the optimizer's own default)",
    )
    p.add_argument(
        "--opt-arg",
        type=_opt_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra optimizer argument, repeatable (e.g. momentum=0.9)",
    )
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument(
        "--init",
        choices=("flax", "keras"),
        default=None,
        help="layer initializers (default: keras for --preset keras, else flax)",
    )
    p.add_argument("--dataset", choices=("mnist", "fashion_mnist"), default="mnist")
    p.add_argument("--epochs", type=_nonneg_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument(
        "--patience",
        type=_nonneg_int,
        default=None,
        help="early stopping on validation loss after N epochs without improvement",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the IDX files (default: $JAXOPT_ZOO_DATA, the cache, or download)",
    )
    p.add_argument(
        "--train-limit", type=_positive_int, default=None, help="train on the first N examples only"
    )
    p.add_argument(
        "--val-limit",
        type=_positive_int,
        default=None,
        help="validate on the first N examples only",
    )
    p.add_argument(
        "--val-size",
        type=_nonneg_int,
        default=0,
        help="hold out N training examples for validation (default 0: validate on "
        "the test set, as the background chapter does)",
    )
    p.add_argument("--output", default=None, help="folder for the results (created)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results already in --output (default: refuse)",
    )
    tq = p.add_argument_group("SAM and weight averaging (any optimizer)")
    tq.add_argument(
        "--sam-rho",
        type=_positive_float,
        default=None,
        metavar="R",
        help="Sharpness-Aware Minimization with radius R (each step computes two gradients)",
    )
    tq.add_argument(
        "--sam-adaptive",
        action="store_true",
        help="ASAM: SAM's perturbation scaled by |w| (needs --sam-rho)",
    )
    tq.add_argument(
        "--swa-start",
        type=_positive_int,
        default=None,
        metavar="EPOCH",
        help="Stochastic Weight Averaging: average the weights at the end of every "
        "epoch from EPOCH (1-based) on",
    )
    tq.add_argument(
        "--swa-lr",
        type=_nonneg_float,
        default=None,
        metavar="X",
        help="with --swa-start: anneal the learning rate to X from the start of "
        "EPOCH (torch's SWALR, cosine)",
    )
    tq.add_argument(
        "--swa-anneal-epochs",
        type=_nonneg_int,
        default=1,
        metavar="N",
        help="epochs of the --swa-lr annealing (default 1; 0 jumps)",
    )
    tq.add_argument(
        "--swa-every",
        type=_positive_int,
        default=None,
        metavar="STEPS",
        help="with --swa-start: average every STEPS steps instead of once per epoch",
    )
    tq.add_argument(
        "--ema",
        type=_decay,
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999)",
    )
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show progress bars (default: only on a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxopt-zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p_list = sub.add_parser("list", help="the optimizers, their defaults and references")
    p_list.add_argument("--preset", choices=("native", "keras", "torch", "all"), default="all")

    p_train = sub.add_parser("train", help="train one model and write metrics.json + a plot")
    p_train.add_argument("--optimizer", required=True)
    p_train.add_argument("--seed", type=_nonneg_int, default=0)
    _add_training_flags(p_train)
    p_train.add_argument(
        "--on-nonfinite",
        choices=("ignore", "skip", "stop"),
        default="ignore",
        help="a step with a non-finite loss, gradient or update: apply it "
        "(ignore), skip it, or stop with a message naming it",
    )
    ck = p_train.add_argument_group("checkpoints")
    ck.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="save checkpoints in DIR (at the end, on Ctrl-C, and every "
        "--checkpoint-every steps); a folder of another run is refused",
    )
    ck.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="STEPS",
        help="also save every STEPS optimizer steps",
    )
    ck.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        default=None,
        metavar="N",
        help="keep the newest N checkpoints (default 3)",
    )
    ck.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest good checkpoint in --checkpoint-dir "
        "(from scratch when it holds none)",
    )

    p_cmp = sub.add_parser("compare", help="train with several optimizers and compare")
    p_cmp.add_argument(
        "--optimizers", required=True, help="comma-separated names, e.g. adam,sgd,rmsprop"
    )
    p_cmp.add_argument(
        "--seeds", type=_positive_int, default=1, help="number of seeds per optimizer (0 .. K-1)"
    )
    _add_training_flags(p_cmp)
    return parser


# --------------------------------------------------------------------------- commands


def cmd_list(args) -> int:
    from jaxopt_zoo import registry

    groups = {
        "native": registry.available(),
        "torch": registry.available("torch."),
        "keras": registry.available("keras."),
    }
    for group, names in groups.items():
        if args.preset not in ("all", group):
            continue
        print(f"{group}:")
        rows = []
        for n in names:
            e = registry.entry(n)
            d = e.defaults()
            lr = d.get("learning_rate", d.get("lr"))
            shown = {
                k: v
                for k, v in d.items()
                if k not in ("learning_rate", "lr")
                and (v is True or (isinstance(v, (int, float, tuple)) and not isinstance(v, bool)))
            }
            extra = ", ".join(f"{k}={v}" for k, v in list(shown.items())[:5])
            state = f"{registry.state_bytes_per_param(n):.2f}"
            rows.append(
                (n, f"{lr:g}" if isinstance(lr, (int, float)) else "-", e.paper, state, extra)
            )
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        # state: bytes of optimizer state per parameter (1024x1024 float32 matrix + bias)
        print(
            f"  {'name'.ljust(w[0])}  {'lr'.ljust(w[1])}  {'reference'.ljust(w[2])}  "
            "state B/param  defaults"
        )
        for r in rows:
            print(
                f"  {r[0].ljust(w[0])}  {r[1].ljust(w[1])}  {r[2].ljust(w[2])}  "
                f"{r[3].rjust(13)}  {r[4]}"
            )
    return 0


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
    from jaxopt_zoo.train import TrainConfig

    return TrainConfig(
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=seed,
        patience=args.patience,
        progress=args.progress,
        on_nonfinite=getattr(args, "on_nonfinite", "ignore"),
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


def cmd_train(args) -> int:
    from jaxopt_zoo.train import NonFiniteError
    from jaxopt_zoo.train.report import history_table, plot_history, write_json
    from jaxopt_zoo.train.runner import PRESET_INIT, run, to_builtin

    spec = _specs([args.optimizer], args)[0]
    init = args.init or PRESET_INIT[args.preset]
    out = _output_dir(
        args,
        f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        ("metrics.json", "learning_curve.png"),
    )
    ckpt = _checkpointer(args, spec, init)  # before anything is written
    train, val = _data(args)
    print(
        f"training {args.model} ({init} init) with {spec.optimizer} on {len(train.labels)} "
        f"{args.dataset} images, validating on {len(val.labels)}",
        flush=True,
    )
    try:
        if ckpt is None:
            _, history = run(
                spec, train, val, model=args.model, init_style=init, config=_config(args, args.seed)
            )
        else:
            with ckpt:
                history = _run_with_checkpoints(ckpt, args, spec, init, train, val)
            if history is None:
                return 128 + int(ckpt.interrupted)
    except NonFiniteError as e:
        print(f"jaxopt-zoo: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(history_table(history))
    if history and "val_accuracy_avg" in history[-1]:
        print(
            "val_loss/val_acc are the live weights' (the parameters the optimizer steps); "
            "avg val_loss/avg val_acc the averaged weights' (SWA or EMA), which the final "
            "checkpoint also holds in its optimizer state"
        )
    write_json(
        out / "metrics.json",
        to_builtin(
            {
                "config": _config_record(
                    args,
                    optimizer_resolved=spec.optimizer,
                    init=init,
                    techniques=spec.techniques.record(),
                ),
                "history": history,
            }
        ),
    )
    if history:
        plot_history(
            history,
            out / "learning_curve.png",
            title=f"{spec.name} · {args.model} · {args.dataset}",
        )
    print(f"wrote {out / 'metrics.json'} and {out / 'learning_curve.png'}")
    return 0


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


def _run_with_checkpoints(ckpt, args, spec, init, train, val):
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
    )


def cmd_compare(args) -> int:
    from jaxopt_zoo.train.report import (
        format_table,
        plot_curves,
        summarize,
        summary_columns,
        write_csv,
        write_json,
    )
    from jaxopt_zoo.train.runner import PRESET_INIT, compare, to_builtin

    names = [n for n in args.optimizers.split(",")]
    specs = _specs(names, args)
    if len({s.name for s in specs}) != len(specs):
        raise UsageError(f"--optimizers lists a name twice: {args.optimizers}")
    init = args.init or PRESET_INIT[args.preset]
    out = _output_dir(
        args,
        f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
        ("results.json", "results.csv", "accuracy.png"),
    )
    train, val = _data(args)
    print(
        f"comparing {', '.join(s.optimizer for s in specs)} on {args.model} ({init} init), "
        f"{args.seeds} seed(s), {args.epochs} epochs, {len(train.labels)} training images",
        flush=True,
    )

    def on_result(label, seed, history):
        last = history[-1] if history else None
        if last:
            print(
                f"  {label} seed {seed}: val_acc {last['val_accuracy']:.4f} "
                f"val_loss {last['val_loss']:.4f} ({sum(r['seconds'] for r in history):.1f}s)",
                flush=True,
            )

    results = compare(
        specs,
        train,
        val,
        seeds=range(args.seeds),
        model=args.model,
        init_style=init,
        config=_config(args, 0),
        on_result=on_result,
    )
    rows = [summarize(label, hists) for label, hists in results.items()]
    print(format_table(rows, summary_columns(rows)))
    write_json(
        out / "results.json",
        to_builtin(
            {
                "config": _config_record(
                    args, init=init, optimizers_resolved=[s.optimizer for s in specs]
                ),
                "summary": rows,
                "histories": results,
            }
        ),
    )
    write_csv(out / "results.csv", rows)
    plot_curves(
        results,
        out / "accuracy.png",
        title=f"{args.model} on {args.dataset}: validation accuracy per epoch",
    )
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'accuracy.png'}")
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "compare": cmd_compare}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        import jaxopt_zoo._train_extra  # noqa: F401  (flax, orbax, tqdm: the [train] extra)
    except ModuleNotFoundError as e:
        print(f"jaxopt-zoo: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"jaxopt-zoo: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxopt-zoo: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        # data errors (missing, corrupt files), unwritable output folders, bad values found
        # late: a message, not a traceback
        msg = str(e).strip().replace("\n", "\n  ")
        print(f"jaxopt-zoo: {type(e).__name__}: {msg}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
