"""The ``sweep`` command: a learning-rate (and hyperparameter) grid over seeds in one program.

    jaxopt-zoo sweep --optimizer adam,sgd --model mlp --lr 1e-4,3e-4,1e-3,3e-3 --seeds 3 \\
        --opt-arg b1=0.9,0.95 --epochs 3 --output runs/sweep

Every configuration (optimizer x --lr x swept --opt-arg x seed) is trained by
:func:`jaxopt_zoo.train.sweep.sweep`; each optimizer is its own vmapped program. Writes
``sweep.json`` (one record per configuration with the history of ``metrics.json``),
``sweep.csv`` (one row per configuration) and ``sweep.png`` (final validation metric against
the learning rate, one curve per optimizer, seed bands).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Tuple

from jaxopt_zoo.cli.args import UsageError, nonneg_int, positive_int
from jaxopt_zoo.cli.common import _data, _output_dir, _prepare, _techniques
from jaxopt_zoo.cli.flags import add_budget_flags, add_precision_flags, add_technique_flags

FILES = ("sweep.json", "sweep.csv", "sweep.png")


def _number_list(text: str) -> Tuple[float, ...]:
    values = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive numbers, got {text!r}"
            ) from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"expected positive finite numbers, got {part!r}")
        values.append(v)
    return tuple(values)


def _sweep_arg(text: str) -> Tuple[str, Any]:
    """KEY=V or KEY=V1,V2,... : one value (any JSON, as in ``train``) or a numeric list."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY=V1,V2, got {text!r}")
    key, value = (s.strip() for s in text.split("=", 1))
    try:
        parsed = json.loads(value)
        return key, tuple(parsed) if isinstance(parsed, list) else parsed
    except json.JSONDecodeError:
        pass
    if "," not in value:
        return key, value
    parts = []
    for part in value.split(","):
        try:
            v = json.loads(part)
        except json.JSONDecodeError:
            v = part
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise argparse.ArgumentTypeError(
                f"{key}: only numeric hyperparameters can be swept, got {part.strip()!r} in "
                f"{text!r}; give a non-numeric option a single value"
            )
        parts.append(float(v))
    return key, list(parts)  # a list: swept


def add_sweep_parser(sub) -> argparse.ArgumentParser:
    """The ``sweep`` subcommand's parser, added to ``sub`` (argparse subparsers)."""
    from jaxopt_zoo.train.runner import PRESETS

    p = sub.add_parser("sweep", help="train a grid of learning rates x seeds in one program")
    p.add_argument("--optimizer", required=True, help="a name, or several: adam,sgd")
    p.add_argument(
        "--lr",
        type=_number_list,
        default=None,
        help="learning rates, comma-separated (default: the optimizer's default)",
    )
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds 0 .. K-1 per setting")
    p.add_argument(
        "--opt-arg",
        type=_sweep_arg,
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="optimizer argument, repeatable; several numbers are swept (e.g. b1=0.9,0.95)",
    )
    p.add_argument("--preset", choices=PRESETS, default="native")
    p.add_argument("--model", choices=("cnn", "mlp", "charlm"), default="mlp")
    p.add_argument("--init", choices=("flax", "keras"), default=None)
    p.add_argument(
        "--dataset",
        choices=("mnist", "fashion_mnist", "shakespeare"),
        default=None,
        help="default: shakespeare for --model charlm, else mnist",
    )
    p.add_argument("--epochs", type=nonneg_int, default=3)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-limit", type=positive_int, default=None, metavar="N")
    p.add_argument("--val-limit", type=positive_int, default=None, metavar="N")
    p.add_argument("--val-size", type=nonneg_int, default=0)
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="at most N configurations per program (default: as many as fit in memory)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="train the configurations one after another through train's own program: "
        "results bit-identical to separate train runs, no vmap batching (slower)",
    )
    p.add_argument("--dropout", type=float, default=0.0, help="the char-LM's dropout rate")
    # the flags of train, with its names, defaults and checks (a configuration = a train run)
    add_budget_flags(p)
    add_technique_flags(p)
    add_precision_flags(p)
    p.add_argument("--output", default=None, help="folder for the results (created)")
    p.add_argument("--overwrite", action="store_true")
    return p


def _grid_and_fixed(args, default_lr) -> Tuple[Dict[str, List[float]], Dict[str, Any]]:
    grid: Dict[str, List[float]] = {}
    fixed: Dict[str, Any] = {}
    for key, value in args.opt_arg:
        if key in ("learning_rate", "lr"):
            raise UsageError("give learning rates with --lr, not --opt-arg")
        if key in grid or key in fixed:
            raise UsageError(f"--opt-arg {key} is given twice")
        (grid if isinstance(value, list) else fixed)[key] = value
    lrs = list(args.lr) if args.lr is not None else [default_lr]
    if lrs[0] is None:
        raise UsageError("this optimizer has no default learning rate: pass --lr")
    return {"learning_rate": lrs, **grid}, fixed


def _make_tx(full: str, fixed: Dict[str, Any], techniques: Any, per_epoch: int, total: int):
    """``make_tx(learning_rate, **swept)``: the optimizer ``train`` builds
    (:meth:`~jaxopt_zoo.train.runner.RunSpec.build`: schedule, clipping, decay mask, SAM,
    averaging), from traced scalars; the schedule's peak is the traced learning rate."""
    from jaxopt_zoo.train.runner import RunSpec

    def make_tx(learning_rate, **swept):
        spec = RunSpec(full, lr=learning_rate, kwargs={**fixed, **swept}, techniques=techniques)
        return spec.build(per_epoch, total)

    return make_tx


def _check_flags(args) -> None:
    _prepare(args)  # train's defaults and refusals (charlm: --steps, --eval-windows, ...)
    if args.model != "charlm" and args.dropout:
        raise UsageError("--dropout is for --model charlm")
    if args.model != "charlm" and args.epochs == 0 and args.steps is None:
        raise UsageError("--epochs 0 trains nothing: pass --epochs N or --steps N")


def _run_lengths(args, train) -> Tuple[int, int]:
    """``(steps per epoch or eval period, total steps)`` as ``train`` computes them."""
    from jaxopt_zoo.train import TrainConfig
    from jaxopt_zoo.train.lm import TokenWindows
    from jaxopt_zoo.train.runner import run_lengths_of

    data = TokenWindows(train, args.context) if args.model == "charlm" else train
    config = TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, steps=args.steps, eval_every=args.eval_every
    )
    return run_lengths_of(data, config)


def _load(args, init: str):
    from jaxopt_zoo.models import CharTransformer, get_model

    if args.model != "charlm":
        train, val = _data(args)
        return get_model(args.model, init), train, val, len(train.labels)
    from jaxopt_zoo.data.text import load_shakespeare

    data = load_shakespeare(args.data_dir)
    try:
        model = CharTransformer(
            vocab_size=data.vocab.size,
            context=args.context,
            width=args.width,
            depth=args.depth,
            heads=args.heads,
            dropout=args.dropout,
            init_style=init,  # type: ignore[arg-type]  # checked by the parser's choices
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model, data.train, data.val, len(data.train)


def cmd_sweep(args) -> int:
    from jaxopt_zoo import registry
    from jaxopt_zoo.train.report import write_json
    from jaxopt_zoo.train.runner import PRESET_INIT, resolve_optimizer, to_builtin
    from jaxopt_zoo.train.sweep import SweepConfig, grid_points, sweep
    from jaxopt_zoo.train.sweep.report import (
        config_rows,
        format_sweep_table,
        plot_sweep,
        setting_rows,
        write_sweep_csv,
    )

    _check_flags(args)
    techniques = _techniques(args)  # train's Techniques from train's flags and checks
    names = [n.strip() for n in args.optimizer.split(",")]
    if len(set(names)) != len(names) or not all(names):
        raise UsageError(f"--optimizer: empty or repeated name in {args.optimizer!r}")
    groups = []
    for name in names:
        try:
            full = resolve_optimizer(name, args.preset)
        except KeyError as e:
            raise UsageError(str(e.args[0]) if e.args else str(e)) from None
        defaults = registry.entry(full).defaults()
        grid, fixed = _grid_and_fixed(args, defaults.get("learning_rate", defaults.get("lr")))
        groups.append([name, full, grid, fixed, None])
    for lengths in ((1, args.steps or 10**6), None):  # a bad --opt-arg fails before the data
        if lengths is None:
            init = args.init or PRESET_INIT[args.preset]
            model, train, val, n_train = _load(args, init)
            lengths = _run_lengths(args, train)  # (then a schedule longer than the run)
        for group in groups:
            name, full, grid, fixed, _ = group
            group[4] = make_tx = _make_tx(full, fixed, techniques, *lengths)
            try:
                make_tx(**grid_points(grid)[0])
            except (TypeError, ValueError) as e:
                raise UsageError(f"{name}: {e}") from None
    out = _output_dir(args, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", FILES)
    config = SweepConfig(
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps=args.steps,
        eval_every=args.eval_every,
        eval_batch_size=128 if args.model == "charlm" else 1000,  # as train
        eval_windows=args.eval_windows if args.model == "charlm" else None,
        chunk_size=args.chunk_size,
        exact=args.exact,
    )
    lm = args.model == "charlm"
    metric, higher = ("val_bits_per_char", False) if lm else ("val_accuracy", True)
    records, chunkings = [], {}
    for name, full, grid, fixed, make_tx in groups:
        n_cfg = len(grid_points(grid)) * args.seeds
        print(
            f"{name} ({full}): {n_cfg} configs on {args.model}, {n_train} training "
            f"{'tokens' if lm else 'examples'}",
            flush=True,
        )
        result = sweep(
            model,
            make_tx,
            grid,
            range(args.seeds),
            train,
            val,
            config,
            log=lambda line: print(f"  {line}", flush=True),
        )
        chunkings[name] = result.chunking.describe()
        print(f"  compile {result.compile_seconds:.1f}s, total {result.seconds:.1f}s", flush=True)
        records += [{"optimizer": name, "fixed": fixed, **r} for r in result.records]
    rows = config_rows(records, metric, higher)
    settings = setting_rows(rows, metric)
    print(format_sweep_table(rows, metric))
    print()
    print(format_sweep_table(settings, metric))
    record = {
        "config": {
            **vars(args),
            "opt_arg": dict(args.opt_arg),
            "init": init,
            "techniques": techniques.record(),
        },
        "metric": metric,
        "chunking": chunkings,
        "records": records,
    }
    write_json(out / "sweep.json", to_builtin(record))
    write_sweep_csv(out / "sweep.csv", rows)
    plot_sweep(
        settings,
        metric,
        out / "sweep.png",
        title=f"{args.model}: final {metric} vs learning rate ({args.seeds} seeds)",
    )
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0
