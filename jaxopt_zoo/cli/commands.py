"""The ``list``, ``train`` and ``compare`` commands: their parsers and what they run."""

from __future__ import annotations

import sys
import time

from jaxopt_zoo.cli.args import EXIT_FAILURE, UsageError, nonneg_int, positive_int
from jaxopt_zoo.cli.common import (
    _checkpointer,
    _config,
    _config_record,
    _data,
    _model_options,
    _output_dir,
    _prepare,
    _run_with_checkpoints,
    _specs,
)
from jaxopt_zoo.cli.devices import add_device_flags, watchdog
from jaxopt_zoo.cli.flags import add_training_flags


def add_list_parser(sub) -> None:
    """The ``list`` subcommand's parser, added to ``sub`` (argparse subparsers)."""
    p_list = sub.add_parser("list", help="the optimizers, their defaults and references")
    p_list.add_argument("--preset", choices=("native", "keras", "torch", "all"), default="all")


def add_train_parser(sub) -> None:
    """The ``train`` subcommand's parser."""
    p_train = sub.add_parser("train", help="train one model and write metrics.json + a plot")
    p_train.add_argument("--optimizer", required=True)
    p_train.add_argument("--seed", type=nonneg_int, default=0)
    add_training_flags(p_train)
    add_device_flags(p_train)
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
        type=positive_int,
        default=None,
        metavar="STEPS",
        help="also save every STEPS optimizer steps",
    )
    ck.add_argument(
        "--keep-checkpoints",
        type=positive_int,
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


def add_compare_parser(sub) -> None:
    """The ``compare`` subcommand's parser."""
    p_cmp = sub.add_parser("compare", help="train with several optimizers and compare")
    p_cmp.add_argument(
        "--optimizers", required=True, help="comma-separated names, e.g. adam,sgd,rmsprop"
    )
    p_cmp.add_argument(
        "--seeds", type=positive_int, default=1, help="number of seeds per optimizer (0 .. K-1)"
    )
    add_training_flags(p_cmp)
    add_device_flags(p_cmp)


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


def cmd_train(args) -> int:
    from jaxopt_zoo.train import NonFiniteError
    from jaxopt_zoo.train.distributed import is_primary
    from jaxopt_zoo.train.report import history_table, plot_history, write_json
    from jaxopt_zoo.train.runner import PRESET_INIT, run, to_builtin

    _prepare(args)
    spec = _specs([args.optimizer], args)[0]
    init = args.init or PRESET_INIT[args.preset]
    out = _output_dir(
        args,
        f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        ("metrics.json", "learning_curve.png"),
    )
    lm = args.model == "charlm"
    data = _data(args) if lm else None  # the char-LM's identity holds its vocabulary
    ckpt = _checkpointer(args, spec, init)  # before anything is written
    train, val = data or _data(args)
    print(f"training {_describe(args, init, spec.optimizer, train, val)}", flush=True)
    options = _model_options(args, len(getattr(args, "vocab", "")) or 84)
    try:
        with watchdog(args, ckpt) as beat:  # several processes: a dead peer stops this one
            if ckpt is None:
                _, history = run(
                    spec,
                    train,
                    val,
                    model=args.model,
                    init_style=init,
                    config=_config(args, args.seed),
                    model_options=options,
                    callbacks=[beat],
                )
            else:
                with ckpt:
                    history = _run_with_checkpoints(
                        ckpt, args, spec, init, train, val, callbacks=[beat]
                    )
        if history is None:  # interrupted (Ctrl-C): the checkpoint holds the step
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
    if not is_primary():  # several processes: process 0 writes the results
        return 0
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
            x="step" if args.steps or args.eval_every else "epoch",
        )
    print(f"wrote {out / 'metrics.json'} and {out / 'learning_curve.png'}")
    return 0


def cmd_compare(args) -> int:
    from jaxopt_zoo.train.distributed import is_primary
    from jaxopt_zoo.train.report import (
        format_table,
        plot_curves,
        summarize,
        summary_columns,
        write_csv,
        write_json,
    )
    from jaxopt_zoo.train.runner import PRESET_INIT, compare, to_builtin

    _prepare(args)
    names = [n for n in args.optimizers.split(",")]
    specs = _specs(names, args)
    if len({s.name for s in specs}) != len(specs):
        raise UsageError(f"--optimizers lists a name twice: {args.optimizers}")
    init = args.init or PRESET_INIT[args.preset]
    lm = args.model == "charlm"
    plot = "val_bits_per_char.png" if lm else "accuracy.png"
    out = _output_dir(
        args, f"compare-{time.strftime('%Y%m%d-%H%M%S')}", ("results.json", "results.csv", plot)
    )
    train, val = _data(args)
    budget = f"{args.steps} steps" if args.steps else f"{args.epochs} epochs"
    print(
        f"comparing {', '.join(s.optimizer for s in specs)} on {args.model} ({init} init), "
        f"{args.seeds} seed(s), {budget}",
        flush=True,
    )

    def on_result(label, seed, history):
        last = history[-1] if history else None
        if last:
            bpc = f" val_bpc {last['val_bits_per_char']:.4f}" if lm else ""
            print(
                f"  {label} seed {seed}: val_acc {last['val_accuracy']:.4f} "
                f"val_loss {last['val_loss']:.4f}{bpc} "
                f"({sum(r['seconds'] for r in history):.1f}s)",
                flush=True,
            )

    with watchdog(args) as beat:  # several processes: a dead peer stops this one
        results = compare(
            specs,
            train,
            val,
            seeds=range(args.seeds),
            model=args.model,
            init_style=init,
            config=_config(args, 0),
            on_result=on_result,
            model_options=_model_options(args, len(getattr(args, "vocab", "")) or 84),
            callbacks=[beat],
        )
    rows = [summarize(label, hists) for label, hists in results.items()]
    print(format_table(rows, summary_columns(rows)))
    if not is_primary():  # several processes: process 0 writes the results
        return 0
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
    by_steps = bool(args.steps or args.eval_every)
    what = "validation bits per character" if lm else "validation accuracy"
    plot_curves(
        results,
        out / plot,
        metric="val_bits_per_char" if lm else "val_accuracy",
        title=f"{args.model} on {args.dataset}: {what} per {'evaluation' if by_steps else 'epoch'}",
        x="step" if by_steps else "epoch",
    )
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'} and {out / plot}")
    return 0


def _describe(args, init: str, optimizer: str, train, val) -> str:
    """What is trained on what: one line."""
    if args.model == "charlm":
        return (
            f"charlm ({args.depth} layers, {args.heads} heads, width {args.width}, context "
            f"{args.context}; {init} init) with {optimizer} for {args.steps} steps on "
            f"{len(train.tokens)} characters of {args.dataset}, validating on "
            f"{len(val[0])} windows ({val[0].size} characters) every {args.eval_every} steps"
        )
    return (
        f"{args.model} ({init} init) with {optimizer} on {len(train.labels)} "
        f"{args.dataset} images, validating on {len(val.labels)}"
    )
