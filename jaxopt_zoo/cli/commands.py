"""The ``list``, ``train`` and ``compare`` commands."""

from __future__ import annotations

import sys
import time

from jaxopt_zoo.cli.common import (
    _checkpointer,
    _config,
    _config_record,
    _data,
    _output_dir,
    _run_with_checkpoints,
    _specs,
)
from jaxopt_zoo.cli.devices import watchdog
from jaxopt_zoo.cli.flags import EXIT_FAILURE, UsageError


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
        with watchdog(args) as beat:  # several processes: a dead peer stops this one
            if ckpt is None:
                _, history = run(
                    spec,
                    train,
                    val,
                    model=args.model,
                    init_style=init,
                    config=_config(args, args.seed),
                    callbacks=[beat],
                )
            else:
                with ckpt:
                    history = _run_with_checkpoints(
                        ckpt, args, spec, init, train, val, callbacks=[beat]
                    )
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
    plot_curves(
        results,
        out / "accuracy.png",
        title=f"{args.model} on {args.dataset}: validation accuracy per epoch",
    )
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'accuracy.png'}")
    return 0
