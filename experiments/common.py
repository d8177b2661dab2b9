"""Shared plumbing for the MNIST experiments: a per-run result cache and the report files.

Each (row, seed) run is stored in ``<output>/runs/<row>-seed<k>.json`` as soon as it ends, so
an interrupted experiment continues where it stopped and rows can be added later.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Sequence

from jaxopt_zoo.train import TrainConfig
from jaxopt_zoo.train.report import write_json
from jaxopt_zoo.train.runner import RunSpec, run, to_builtin


@dataclasses.dataclass(frozen=True)
class Row:
    """A table row: a label, the optimizer to run and the model initialisation."""

    label: str
    spec: RunSpec
    init_style: str


def run_rows(
    rows: Sequence[Row],
    seeds: Sequence[int],
    train,
    val,
    *,
    model: str,
    config: TrainConfig,
    output: Path,
) -> Dict[str, List[List[dict]]]:
    """Train every row with every seed (skipping runs already stored); {label: histories}."""
    cache = output / "runs"
    cache.mkdir(parents=True, exist_ok=True)
    results: Dict[str, List[List[dict]]] = {}
    for row in rows:
        tx = None
        for seed in seeds:
            path = cache / f"{row.label.replace(' ', '_').replace('/', '-')}-seed{seed}.json"
            if path.exists():
                history = json.loads(path.read_text())["history"]
            else:
                tx = row.spec.build() if tx is None else tx
                cfg = dataclasses.replace(config, seed=int(seed))
                _, history = run(
                    row.spec, train, val, model=model, init_style=row.init_style, config=cfg, tx=tx
                )
                write_json(
                    path,
                    to_builtin(
                        {
                            "row": row.label,
                            "optimizer": row.spec.optimizer,
                            "kwargs": dict(row.spec.kwargs),
                            "seed": seed,
                            "init": row.init_style,
                            "history": history,
                        }
                    ),
                )
            last = history[-1]
            print(
                f"  {row.label:28s} seed {seed}: val_acc {last['val_accuracy']:.4f}  "
                f"val_loss {last['val_loss']:.4f}",
                flush=True,
            )
            results.setdefault(row.label, []).append(history)
    return results
