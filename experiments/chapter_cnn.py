"""Reproduce the background chapter's optimizer comparison on MNIST.

The chapter (shared/seeds/002) trains a Keras CNN — Conv 32 3x3 ReLU, MaxPool 2x2,
Dropout 0.25, Flatten, Dense 256 ReLU, Dropout 0.5, Dense 10 — with batch 64 for 10 epochs,
validating on the 10k test set, with Adadelta, Adagrad, Adam, RMSprop and SGD at Keras'
defaults. We run the same with ``jaxopt_zoo.compat.keras`` and Keras-style initialisation
(mean of 3 seeds), plus SGD with momentum 0.9 and our native defaults as extra rows.

    python experiments/chapter_cnn.py                 # everything (~1 h on 2 CPU cores)
    python experiments/chapter_cnn.py --seeds 1 --rows keras  # the five published rows once

Writes ``results.json``, ``results.csv``, ``table.md`` and ``accuracy.png`` into --output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, run_rows  # noqa: E402

from jaxopt_zoo.train import TrainConfig  # noqa: E402
from jaxopt_zoo.train.report import format_table, plot_curves, summarize, write_csv, write_json  # noqa: E402,E501
from jaxopt_zoo.train.runner import RunSpec, load_data, to_builtin  # noqa: E402

# Validation accuracy after each of the 10 epochs, as printed in the chapter.
PUBLISHED = {
    "Adadelta": [0.3174, 0.6197, 0.7057, 0.7474, 0.7736, 0.7928, 0.8092, 0.8194, 0.8275, 0.8337],
    "Adagrad": [0.8293, 0.8791, 0.8958, 0.9049, 0.9099, 0.9163, 0.9204, 0.9233, 0.9257, 0.9282],
    "Adam": [0.9788, 0.9827, 0.9870, 0.9865, 0.9884, 0.9886, 0.9892, 0.9897, 0.9895, 0.9886],
    "RMSprop": [0.9777, 0.9810, 0.9828, 0.9857, 0.9862, 0.9874, 0.9856, 0.9870, 0.9869, 0.9860],
    "SGD": [0.9119, 0.9333, 0.9443, 0.9515, 0.9566, 0.9598, 0.9630, 0.9644, 0.9663, 0.9681],
}
TOLERANCE = 0.015  # "within 1.5 points of each" (mean over seeds)

KERAS_ROWS = [Row(label, RunSpec(f"keras.{label.lower()}"), "keras") for label in PUBLISHED]
EXTRA_ROWS = [
    Row("SGD momentum 0.9 (keras)", RunSpec("keras.sgd", kwargs={"momentum": 0.9}), "keras")
] + [
    Row(f"{n} (native defaults)", RunSpec(n), "flax")
    for n in ("adadelta", "adagrad", "adam", "rmsprop", "sgd")
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--extra-seeds", type=int, default=1, help="seeds for the extra rows")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rows", choices=("all", "keras", "extra"), default="all")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "chapter_cnn"
    )
    args = ap.parse_args(argv)

    train, val = load_data("mnist", args.data_dir)  # validate on the test set, as the chapter
    config = TrainConfig(batch_size=64, epochs=args.epochs, drop_last=False)  # Keras keeps
    results = {}  # the last batch
    if args.rows in ("all", "keras"):
        results.update(
            run_rows(
                KERAS_ROWS,
                range(args.seeds),
                train,
                val,
                model="cnn",
                config=config,
                output=args.output,
            )
        )
    if args.rows in ("all", "extra"):
        results.update(
            run_rows(
                EXTRA_ROWS,
                range(args.extra_seeds),
                train,
                val,
                model="cnn",
                config=config,
                output=args.output,
            )
        )

    rows = []
    for label, hists in results.items():
        row = summarize(label, hists)
        pub = PUBLISHED.get(label)
        row["published_final_val_accuracy"] = (
            pub[args.epochs - 1] if pub and args.epochs <= len(pub) else None
        )
        if row["published_final_val_accuracy"] is not None:
            row["difference"] = row["final_val_accuracy"] - row["published_final_val_accuracy"]
            row["within_tolerance"] = abs(row["difference"]) <= TOLERANCE
        rows.append(row)
    cols = [
        ("optimizer", "optimizer"),
        ("seeds", "seeds"),
        ("published_final_val_accuracy", "published"),
        ("final_val_accuracy", "ours"),
        ("difference", "ours - published"),
        ("within_tolerance", "within 1.5 pts"),
        ("best_val_accuracy", "best"),
        ("final_val_loss", "val loss"),
        ("seconds_per_epoch", "s/epoch"),
    ]
    table = format_table(rows, cols)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text(_markdown(rows, cols))
    write_json(
        args.output / "results.json",
        to_builtin(
            {
                "setup": {
                    "model": "cnn (Keras init for keras rows)",
                    "batch_size": 64,
                    "epochs": args.epochs,
                    "validation": "MNIST test set (10k)",
                    "tolerance": TOLERANCE,
                },
                "published": PUBLISHED,
                "summary": rows,
                "val_accuracy_per_epoch": {
                    k: [
                        statistics.fmean(e)
                        for e in zip(*[[r["val_accuracy"] for r in h] for h in v])
                    ]
                    for k, v in results.items()
                },
                "histories": results,
            }
        ),
    )
    write_csv(args.output / "results.csv", rows)
    plot_curves(
        results,
        args.output / "accuracy.png",
        references=PUBLISHED,
        title="Reference CNN on MNIST: ours (solid) vs the chapter (dashed)",
    )
    return 0


def _markdown(rows, cols) -> str:
    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            d = 2 if k == "seconds_per_epoch" else 4
            s = f"{v:+.{d}f}" if k == "difference" else f"{v:.{d}f}"
            std = r.get(k + "_std")
            return s + (f" ± {std:.{d}f}" if std else "")
        return str(v)

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
