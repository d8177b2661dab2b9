"""A sweep's results: per-configuration rows, mean ± std per setting, the table, CSV and the
learning-rate plot (final validation metric against the learning rate, one curve per optimizer,
a band of ± one standard deviation over the seeds)."""

from __future__ import annotations

import csv
import math
import os
import statistics
from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ["config_rows", "format_sweep_table", "plot_sweep", "setting_rows", "write_sweep_csv"]


def _metric_values(history: Sequence[Mapping[str, Any]], metric: str) -> List[float]:
    return [
        float(r[metric]) for r in history if r.get(metric) is not None and not math.isnan(r[metric])
    ]


def config_rows(
    records: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool
) -> List[Dict[str, Any]]:
    """One row per configuration: ``optimizer``, its hyperparameters, ``seed``, and the final
    and best value of ``metric`` over its history (``final_<metric>``, ``best_<metric>``).

    Args:
      records: sweep records (``{"optimizer", "hparams", "seed", "history"}``).
      metric: a history key, e.g. ``"val_accuracy"`` or ``"val_bits_per_char"``.
      higher_is_better: whether the best value is the largest (accuracy) or smallest (loss).

    Example:
      >>> rec = {"optimizer": "adam", "hparams": {"learning_rate": 0.1}, "seed": 0,
      ...        "history": [{"val_accuracy": 0.5}, {"val_accuracy": 0.75}, {"val_accuracy": 0.7}]}
      >>> config_rows([rec], "val_accuracy", True)
      [{'optimizer': 'adam', 'learning_rate': 0.1, 'seed': 0, 'final_val_accuracy': 0.7, \
'best_val_accuracy': 0.75}]
    """
    rows = []
    for r in records:
        values = _metric_values(r["history"], metric)
        last = r["history"][-1].get(metric) if r["history"] else None
        best = (max if higher_is_better else min)(values) if values else None
        rows.append(
            {
                "optimizer": r.get("optimizer", ""),
                **r["hparams"],
                "seed": r["seed"],
                f"final_{metric}": None if last is None else float(last),
                f"best_{metric}": best,
            }
        )
    return rows


def _mean_std(xs: Sequence[Any]) -> Tuple[Any, Any]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def setting_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> List[Dict[str, Any]]:
    """Mean and std over seeds of each setting (optimizer + hyperparameters) of
    :func:`config_rows`' rows, in first-seen order.

    Args:
      rows: :func:`config_rows` output.
      metric: the metric those rows summarize.

    Example:
      >>> rows = [{"optimizer": "sgd", "learning_rate": 0.1, "seed": s,
      ...          "final_val_accuracy": a, "best_val_accuracy": a}
      ...         for s, a in [(0, 0.5), (1, 0.7)]]
      >>> [(r["seeds"], round(r["final_val_accuracy"], 3), round(r["final_val_accuracy_std"], 3))
      ...  for r in setting_rows(rows, "val_accuracy")]
      [(2, 0.6, 0.141)]
    """
    groups: Dict[Tuple, List[Mapping[str, Any]]] = {}
    for row in rows:
        key = tuple((k, v) for k, v in row.items() if k not in ("seed",) and "_" + metric not in k)
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        s = dict(key)
        s["seeds"] = len(members)
        for stat in (f"final_{metric}", f"best_{metric}"):
            s[stat], s[stat + "_std"] = _mean_std([m[stat] for m in members])
        out.append(s)
    return out


def _fmt(v: Any, measured: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if measured else f"{v:g}"
    return str(v)


def format_sweep_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    """A plain-text table of :func:`config_rows` or :func:`setting_rows` (``x ± s``).

    Args:
      rows: the rows (dicts with the same keys); ``<key>_std`` values join ``<key>``'s cell.
      metric: the metric the rows summarize.

    Example:
      >>> print(format_sweep_table([{"optimizer": "sgd", "learning_rate": 0.1, "seeds": 2,
      ...     "final_val_accuracy": 0.6, "final_val_accuracy_std": 0.1}], "val_accuracy"))
      optimizer  learning_rate  seeds  final_val_accuracy
      sgd        0.1            2      0.6000 ± 0.1000
    """
    if not rows:
        return "(no results)"
    cols = [c for c in rows[0] if not c.endswith("_std")]
    cells = []
    for r in rows:
        line = []
        for c in cols:
            s = _fmt(r.get(c), c.startswith(("final_", "best_")))
            std = r.get(c + "_std")
            if std is not None and r.get(c) is not None:
                s += f" ± {std:.4f}"
            line.append(s)
        cells.append(line)
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    text = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    text += ["  ".join(s.ljust(w) for s, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(text)


def write_sweep_csv(path: os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV, the union of their keys as the header (first-seen order).

    Args:
      path: the file to write.
      rows: dicts; None values are written as empty cells.

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "sweep.csv"
      >>> write_sweep_csv(p, [{"optimizer": "sgd", "seed": 0}])
      >>> p.read_text().splitlines()
      ['optimizer,seed', 'sgd,0']
    """
    header: List[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in header})


def plot_sweep(
    settings: Sequence[Mapping[str, Any]],
    metric: str,
    path: os.PathLike,
    *,
    x: str = "learning_rate",
    title: str = "",
) -> None:
    """The final ``metric`` (mean over seeds, band ± std) against ``x`` on a log axis, one
    curve per optimizer (and per value of any other swept hyperparameter), saved as a PNG.

    Args:
      settings: :func:`setting_rows` output.
      metric: the history key the rows summarize.
      path: the PNG to write.
      x: the hyperparameter on the x axis.
      title: the plot's title.

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "sweep.png"
      >>> plot_sweep([{"optimizer": "sgd", "learning_rate": lr, "seeds": 2,
      ...              "final_val_accuracy": a, "final_val_accuracy_std": 0.01}
      ...             for lr, a in [(0.01, 0.8), (0.1, 0.9)]], "val_accuracy", p)
      >>> p.stat().st_size > 0
      True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"final_{metric}"
    curves: Dict[str, List[Mapping[str, Any]]] = {}
    for s in settings:
        others = [f"{k}={v:g}" for k, v in s.items() if _is_hparam(k, metric) and k != x]
        label = " ".join([str(s.get("optimizer", ""))] + others).strip()
        curves.setdefault(label, []).append(s)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in curves.items():
        rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[x])
        if not rows:
            continue
        xs = [r[x] for r in rows]
        ys = [r[key] for r in rows]
        sd = [r.get(key + "_std") or 0.0 for r in rows]
        (line,) = ax.plot(xs, ys, marker="o", label=f"{label} ({rows[0]['seeds']} seeds)")
        lo = [y - e for y, e in zip(ys, sd)]
        hi = [y + e for y, e in zip(ys, sd)]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(f"final {metric.replace('_', ' ')} (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _is_hparam(key: str, metric: str) -> bool:
    return key not in ("optimizer", "seeds", "seed") and not key.endswith(
        (f"_{metric}", f"_{metric}_std")
    )
