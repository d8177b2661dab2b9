"""Results: summary rows over seeds, text tables, JSON/CSV files and learning-curve plots."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence


def _mean_std(xs: Sequence[float]):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(label: str, histories: Sequence[Sequence[Mapping[str, Any]]]) -> Dict[str, Any]:
    """One row for ``label`` from one history per seed: final and best validation accuracy,
    final validation loss and seconds per epoch, as mean and std over the seeds."""
    final_acc = [h[-1]["val_accuracy"] for h in histories if h]
    best_acc = [
        max((r["val_accuracy"] for r in h if r["val_accuracy"] is not None), default=None)
        for h in histories
        if h
    ]
    final_loss = [h[-1]["val_loss"] for h in histories if h]
    train_loss = [h[-1]["train_loss"] for h in histories if h]
    s_epoch = [statistics.fmean(r["seconds"] for r in h) for h in histories if h]
    row = {
        "optimizer": label,
        "seeds": len(histories),
        "epochs": max((len(h) for h in histories), default=0),
    }
    series = [
        ("final_val_accuracy", final_acc),
        ("best_val_accuracy", best_acc),
        ("final_val_loss", final_loss),
        ("final_train_loss", train_loss),
        ("seconds_per_epoch", s_epoch),
    ]
    if any(h and "val_bits_per_char" in h[-1] for h in histories):  # the char-LM
        series += [
            ("final_val_bits_per_char", [h[-1]["val_bits_per_char"] for h in histories if h]),
            (
                "best_val_bits_per_char",
                [
                    min(
                        (r["val_bits_per_char"] for r in h if r["val_bits_per_char"] is not None),
                        default=None,
                    )
                    for h in histories
                    if h
                ],
            ),
        ]
    if any(h and "val_accuracy_avg" in h[-1] for h in histories):  # SWA / weight EMA runs
        series += [
            ("final_val_accuracy_avg", [h[-1].get("val_accuracy_avg") for h in histories if h]),
            ("final_val_loss_avg", [h[-1].get("val_loss_avg") for h in histories if h]),
        ]
    for key, xs in series:
        row[key], row[key + "_std"] = _mean_std(xs)
    return row


def _fmt(v: Any, std: Any = None, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        s = f"{v:.{digits}f}"
        if std is not None and std > 0:
            s += f" ± {std:.{digits}f}"
        return s
    return str(v)


SUMMARY_COLUMNS = [
    ("optimizer", "optimizer"),
    ("final_val_accuracy", "final val acc"),
    ("best_val_accuracy", "best val acc"),
    ("final_val_loss", "final val loss"),
    ("seconds_per_epoch", "s/epoch"),
]
#: With weight averaging: the averaged weights' final validation accuracy and loss too.
AVERAGE_COLUMNS = [
    ("final_val_accuracy_avg", "final val acc (averaged)"),
    ("final_val_loss_avg", "final val loss (averaged)"),
]


def summary_columns(rows: Sequence[Mapping[str, Any]]) -> List[tuple]:
    """The summary table's columns: :data:`SUMMARY_COLUMNS`, plus the averaged weights'
    when any row has them."""
    cols = list(SUMMARY_COLUMNS)
    if any(r.get("final_val_accuracy_avg") is not None for r in rows):
        cols[-1:-1] = AVERAGE_COLUMNS
    if any(r.get("final_val_bits_per_char") is not None for r in rows):
        cols[-1:-1] = [
            ("final_val_bits_per_char", "final val bits/char"),
            ("best_val_bits_per_char", "best val bits/char"),
        ]
        cols[-1] = ("seconds_per_epoch", "s/eval")  # the char-LM has no epochs
    return cols


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple] = SUMMARY_COLUMNS
) -> str:
    """A plain-text table; ``columns`` are (key, heading) pairs; ``key_std`` adds ``± std``."""
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append(
            [
                _fmt(r.get(k), r.get(k + "_std"), 2 if k == "seconds_per_epoch" else 4)
                for k, _ in columns
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def history_table(history: Sequence[Mapping[str, Any]]) -> str:
    """One line per evaluation (epoch); the step, the averaged weights' validation metrics
    and the char-LM's bits per character too when present."""
    cols = [
        ("epoch", "epoch"),
        ("step", "step"),
        ("train_loss", "loss"),
        ("train_accuracy", "acc"),
        ("val_loss", "val_loss"),
        ("val_accuracy", "val_acc"),
        ("seconds", "s"),
    ]
    if any("val_accuracy_avg" in r for r in history):
        cols[-1:-1] = [("val_loss_avg", "avg val_loss"), ("val_accuracy_avg", "avg val_acc")]
    if any("val_bits_per_char" in r for r in history):
        cols[-1:-1] = [("val_bits_per_char", "val_bits/char")]
    if not any("step" in r for r in history):
        cols.remove(("step", "step"))
    return format_table(history, cols)


def write_json(path: os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a killed run leaves no half file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def write_csv(path: os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    path = Path(path)
    keys: List[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: os.PathLike,
    *,
    metric: str = "val_accuracy",
    title: Optional[str] = None,
    ylabel: Optional[str] = None,
    references: Optional[Mapping[str, Sequence[float]]] = None,
    x: str = "epoch",
) -> None:
    """One curve per label (mean over its seeds, shaded min..max) of ``metric`` per epoch.

    ``references``: optional published per-epoch values drawn dashed in the same colour.
    ``x="step"`` puts the records' optimizer steps on the x axis instead of epochs.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    many = len(curves) > 10
    for i, (label, hists) in enumerate(curves.items()):
        color = plt.cm.tab20(i % 20) if many else f"C{i}"
        n = min(len(h) for h in hists) if hists else 0
        if n == 0:
            continue
        vals = [[h[e][metric] for h in hists] for e in range(n)]
        mean = [statistics.fmean(v) for v in vals]
        epochs = list(range(1, n + 1)) if x == "epoch" else [hists[0][e][x] for e in range(n)]
        ax.plot(epochs, mean, marker="o", ms=3, color=color, label=label)
        if len(hists) > 1:
            ax.fill_between(
                epochs, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.15
            )
        if references and label in references:
            ref = references[label]
            ax.plot(range(1, len(ref) + 1), ref, ls="--", color=color, alpha=0.7)
    ax.set_xlabel(x)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or metric.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_history(
    history: Sequence[Mapping[str, Any]], path: os.PathLike, title: str = "", x: str = "epoch"
) -> None:
    """Loss and accuracy (train and validation) per epoch of one run, side by side; the
    char-LM's loss in bits per character. ``x="step"``: optimizer steps on the x axis."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r[x] for r in history]
    bits = "val_bits_per_char" in history[0] if history else False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for ax, what in zip(axes, ("bits_per_char" if bits else "loss", "accuracy")):
        ax.plot(epochs, [r[f"train_{what}"] for r in history], marker="o", ms=3, label="train")
        if any(r[f"val_{what}"] is not None for r in history):
            ax.plot(
                epochs, [r[f"val_{what}"] for r in history], marker="o", ms=3, label="validation"
            )
        ax.set_xlabel(x)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(what.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
