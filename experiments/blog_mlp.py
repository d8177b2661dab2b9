"""The blog post's MLP on MNIST (shared/seeds/000, 001): 784-128 ReLU-10, batch 32, 5 epochs.

The post trains with SGD at learning rate 0.01, then the same model with SGD + momentum 0.9,
Adam and RMSProp through Keras (``model.fit(..., validation_split=0.2)``, then
``model.evaluate`` on the test set). We train on the first 48,000 training images (Keras'
validation_split keeps the last 20% out) with Keras' formulas, defaults and initialisation,
and report the test accuracy after every epoch. The post prints no accuracies of its own, so
this table is ours; the expected ordering (adaptive and momentum methods ahead of plain SGD
after 5 epochs) is checked in ``results.json``.

    python experiments/blog_mlp.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, run_rows  # noqa: E402

from jaxopt_zoo.data import Dataset  # noqa: E402
from jaxopt_zoo.train import TrainConfig  # noqa: E402
from jaxopt_zoo.train.report import format_table, plot_curves, summarize, write_csv, write_json  # noqa: E402,E501
from jaxopt_zoo.train.runner import RunSpec, load_data, to_builtin  # noqa: E402

ROWS = [
    Row("SGD lr 0.01", RunSpec("keras.sgd", lr=0.01), "keras"),
    Row("SGD momentum 0.9", RunSpec("keras.sgd", lr=0.01, kwargs={"momentum": 0.9}), "keras"),
    Row("Adam", RunSpec("keras.adam"), "keras"),
    Row("RMSProp", RunSpec("keras.rmsprop"), "keras"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "blog_mlp"
    )
    args = ap.parse_args(argv)

    train, test = load_data("mnist", args.data_dir)
    n_fit = int(len(train.labels) * 0.8)  # validation_split=0.2 holds out the last 20%
    train = Dataset(train.images[:n_fit], train.labels[:n_fit])
    config = TrainConfig(batch_size=32, epochs=args.epochs)
    results = run_rows(
        ROWS, range(args.seeds), train, test, model="mlp", config=config, output=args.output
    )

    per_epoch = {
        label: [statistics.fmean(e) for e in zip(*[[r["val_accuracy"] for r in h] for h in hists])]
        for label, hists in results.items()
    }
    rows = [summarize(label, hists) for label, hists in results.items()]
    cols = [("optimizer", "optimizer")] + [
        (f"e{i}", f"epoch {i}") for i in range(1, args.epochs + 1)
    ]
    table_rows = [
        {"optimizer": k, **{f"e{i + 1}": v for i, v in enumerate(acc)}}
        for k, acc in per_epoch.items()
    ]
    print("test accuracy per epoch (mean over seeds)")
    print(format_table(table_rows, cols))
    final = {k: v[-1] for k, v in per_epoch.items()}
    checks = {
        "momentum beats plain SGD": final["SGD momentum 0.9"] > final["SGD lr 0.01"],
        "Adam beats plain SGD": final["Adam"] > final["SGD lr 0.01"],
        "RMSProp beats plain SGD": final["RMSProp"] > final["SGD lr 0.01"],
    }
    print(checks)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(
        args.output / "results.json",
        to_builtin(
            {
                "setup": {
                    "model": "mlp 784-128-10 (Keras init)",
                    "batch_size": 32,
                    "epochs": args.epochs,
                    "train_examples": n_fit,
                    "evaluation": "MNIST test set (10k) after every epoch",
                },
                "test_accuracy_per_epoch": per_epoch,
                "checks": checks,
                "summary": rows,
                "histories": results,
            }
        ),
    )
    write_csv(args.output / "results.csv", table_rows)
    plot_curves(
        results,
        args.output / "accuracy.png",
        ylabel="test accuracy",
        title="MLP 784-128-10 on MNIST: test accuracy per epoch",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
