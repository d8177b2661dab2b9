"""The explainer's claims, measured: AdamW vs Adam with L2, clipping by norm, SAM/ASAM, SWA
and the parameter EMA, on Fashion-MNIST (3 seeds) with MNIST alongside (1 seed).

The explainer (shared/seeds/004) says: decoupled weight decay (AdamW) generalizes better than
L2 added to Adam's gradient; clipping by global norm stabilizes training; SAM finds flatter
minima that generalize better; SWA averages weights into a flatter, better solution. Each row
trains the reference CNN (Flax init, batch 128) with the same data order per seed, and
reports:

- test accuracy (mean ± std over seeds) of the live weights, and of the averaged weights for
  SWA / EMA rows;
- the train-test gap: accuracy on 10,000 training images (inference mode) minus test accuracy;
- the cost: seconds per epoch relative to the row's base optimizer;
- sharpness at the final weights on a fixed batch of 1,024 training images: the largest
  Hessian eigenvalue of the training loss (power iteration on Hessian-vector products, 10
  iterations) and the loss increase under a worst-case-direction perturbation of radius 0.05
  (SAM's own objective, ``L(w + rho g/|g|) - L(w)``).

    python experiments/explainer.py                      # everything (~30-40 min, 2 cores)
    python experiments/explainer.py --quick              # a smoke run in about a minute

Writes ``results.json``, ``results.csv``, ``table.md`` and ``accuracy.png`` into --output;
each (dataset, row, seed) run is cached in ``runs/`` so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp

import jaxopt_zoo as jz
from jaxopt_zoo.models import get_model
from jaxopt_zoo.train import TrainConfig, evaluate, steps_per_epoch, train_and_evaluate
from jaxopt_zoo.train.report import format_table, plot_curves, write_csv, write_json
from jaxopt_zoo.train.runner import load_data, to_builtin
from jaxopt_zoo.train.steps import weighted_cross_entropy

LR_ADAM, LR_SGD = 1e-3, 0.05


@dataclasses.dataclass(frozen=True)
class Row:
    """A row: its label, the row whose time it is compared with, and ``build(steps_per_epoch,
    epochs) -> GradientTransformation``."""

    label: str
    base: str
    build: Callable[[int, int], jz.GradientTransformation]


def _adam_l2(spe, epochs):  # L2 in the gradient, before Adam's scaling (coupled)
    return jz.chain(
        jz.add_l2_regularization(5e-4), jz.scale_by_adam(), jz.scale_by_learning_rate(LR_ADAM)
    )


def _sgdm(spe, epochs):
    return jz.sgd(LR_SGD, momentum=0.9)


def _adamw(spe, epochs):
    return jz.adamw(LR_ADAM, weight_decay=0.05)


def _swa(spe, epochs):
    """SWA over the last third of training: SWALR anneals to lr/2 over one epoch from its
    start, and the weights are averaged every tenth of an epoch from then on (averaging only
    at epoch ends would take a single snapshot in a 3-epoch run)."""
    start = max(1, epochs - max(1, epochs // 3) + 1)  # 1-based first epoch of SWA
    lr = jz.schedules.swa_lr(LR_SGD, LR_SGD / 2, anneal_steps=spe, start_step=(start - 1) * spe)
    every = max(1, spe // 10)
    return jz.swa(jz.sgd(lr, momentum=0.9), start_step=(start - 1) * spe + every, every_steps=every)


ROWS = [
    Row("Adam", "Adam", lambda spe, e: jz.adam(LR_ADAM)),
    Row("Adam + L2 5e-4", "Adam", _adam_l2),
    Row("AdamW wd 0.05", "Adam", _adamw),
    Row(
        "AdamW + clip 1.0",
        "AdamW wd 0.05",
        lambda spe, e: jz.chain(jz.clip_by_global_norm(1.0), _adamw(spe, e)),
    ),
    Row("SGD-m", "SGD-m", _sgdm),
    Row(
        "SGD-m + clip 1.0",
        "SGD-m",
        lambda spe, e: jz.chain(jz.clip_by_global_norm(1.0), _sgdm(spe, e)),
    ),
    Row("SAM(SGD-m) rho 0.05", "SGD-m", lambda spe, e: jz.sam(_sgdm(spe, e), rho=0.05)),
    Row(
        "ASAM(SGD-m) rho 0.5", "SGD-m", lambda spe, e: jz.sam(_sgdm(spe, e), rho=0.5, adaptive=True)
    ),
    Row("SAM(AdamW) rho 0.05", "AdamW wd 0.05", lambda spe, e: jz.sam(_adamw(spe, e), rho=0.05)),
    Row(
        "ASAM(AdamW) rho 0.5",
        "AdamW wd 0.05",
        lambda spe, e: jz.sam(_adamw(spe, e), rho=0.5, adaptive=True),
    ),
    Row("SWA(SGD-m), last third", "SGD-m", _swa),
    Row("EMA 0.999 (AdamW)", "AdamW wd 0.05", lambda spe, e: jz.ema_weights(_adamw(spe, e), 0.999)),
]


# --------------------------------------------------------------------------- #
# Sharpness
# --------------------------------------------------------------------------- #


def sharpness(
    model, params, images, labels, *, iters: int = 10, rho: float = 0.05, seed: int = 0
) -> Dict[str, float]:
    """Largest Hessian eigenvalue (power iteration on HVPs) and SAM's loss increase at radius
    ``rho`` of the training loss on one fixed batch, in inference mode."""
    x, y = jnp.asarray(images), jnp.asarray(labels)

    def loss(p):
        return weighted_cross_entropy(model.apply({"params": p}, x, train=False), y)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    f = lambda v: loss(unravel(v))  # noqa: E731
    hvp = jax.jit(lambda v, t: jax.jvp(jax.grad(f), (v,), (t,))[1])
    v = jax.random.normal(jax.random.PRNGKey(seed), flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)
    eig = 0.0
    for _ in range(iters):
        hv = hvp(flat, v)
        eig = float(jnp.vdot(v, hv))
        v = hv / (jnp.linalg.norm(hv) + 1e-30)
    g = jax.grad(f)(flat)
    bumped = flat + rho * g / (jnp.linalg.norm(g) + 1e-12)
    base = float(f(flat))
    return {
        "hessian_top_eigenvalue": eig,
        "sam_loss_increase": float(f(bumped)) - base,
        "train_batch_loss": base,
    }


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #


def run_one(
    row: Row,
    dataset: str,
    seed: int,
    train,
    val,
    *,
    epochs: int,
    batch_size: int,
    probe,
    cache: Optional[Path],
    probe_n: int = 2048,
) -> dict:
    path = None
    if cache is not None:
        path = cache / f"{dataset}-{row.label.replace(' ', '_').replace('/', '-')}-seed{seed}.json"
        if path.exists():
            return json.loads(path.read_text())
    config = TrainConfig(batch_size=batch_size, epochs=epochs, seed=seed, progress=False)
    spe = steps_per_epoch(len(train.labels), config)
    tx = row.build(spe, epochs)
    model = get_model("cnn")
    t0 = time.perf_counter()
    state, history = train_and_evaluate(model, tx, train, val, config)
    seconds = time.perf_counter() - t0
    out = {
        "dataset": dataset,
        "row": row.label,
        "seed": seed,
        "history": history,
        "seconds": seconds,
        # steady-state cost: epochs after the first (which also compiles), when there are any
        "seconds_per_epoch": statistics.median(
            h["seconds"] for h in (history[1:] if len(history) > 1 else history)
        ),
    }
    weights = {"live": state.params}
    if "val_accuracy_avg" in history[-1]:
        weights["averaged"] = jz.averaged_params(state.opt_state, like=state.params)
    for name, p in weights.items():
        test_loss, test_acc = evaluate(model, p, val.images, val.labels)
        train_loss, train_acc = evaluate(model, p, probe[0], probe[1])
        out[name] = {
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "train_accuracy": train_acc,
            "train_loss": train_loss,
            "gap": train_acc - test_acc,
            **sharpness(model, p, probe[0][:probe_n], probe[1][:probe_n], seed=seed),
        }
    if path is not None:
        write_json(path, to_builtin(out))
    return out


def summarize(runs: List[dict], base_seconds: Dict[str, float], base: str) -> dict:
    def ms(xs):
        xs = [x for x in xs if x is not None]
        return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)

    best = "averaged" if "averaged" in runs[0] else "live"
    row = {"optimizer": runs[0]["row"], "weights": best, "seeds": len(runs)}
    for key in ("test_accuracy", "gap", "hessian_top_eigenvalue", "sam_loss_increase"):
        row[key], row[key + "_std"] = ms([r[best][key] for r in runs])
    if best == "averaged":
        row["live_test_accuracy"], row["live_test_accuracy_std"] = ms(
            [r["live"]["test_accuracy"] for r in runs]
        )
    secs = statistics.fmean(r["seconds_per_epoch"] for r in runs)
    row["seconds_per_epoch"] = secs
    row["time_vs_base"] = secs / base_seconds[base] if base in base_seconds else None
    return row


COLUMNS = [
    ("optimizer", "row"),
    ("weights", "weights"),
    ("test_accuracy", "test acc"),
    ("live_test_accuracy", "live test acc"),
    ("gap", "train-test gap"),
    ("hessian_top_eigenvalue", "top Hessian eig"),
    ("sam_loss_increase", "loss rise @0.05"),
    ("time_vs_base", "time vs base"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="fashion_mnist,mnist")
    ap.add_argument("--seeds", type=int, default=3, help="seeds on Fashion-MNIST")
    ap.add_argument("--mnist-seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--train-limit", type=int, default=None, help="train on the first N images only"
    )
    ap.add_argument("--rows", default=None, help="comma-separated row labels (default: all)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="2,000 training images, 1 epoch, 1 seed, 3 rows: a smoke run",
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "explainer"
    )
    args = ap.parse_args(argv)
    rows = ROWS
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",")]
        rows = [r for r in ROWS if r.label in wanted]
        if len(rows) != len(wanted):
            ap.error(f"unknown row in --rows; known: {[r.label for r in ROWS]}")
    limit = args.train_limit
    if args.quick:
        limit, args.epochs, args.seeds, args.mnist_seeds = 1000, 2, 1, 1
        rows = [
            r for r in ROWS if r.label in ("SGD-m", "SAM(SGD-m) rho 0.05", "SWA(SGD-m), last third")
        ]
    args.output.mkdir(parents=True, exist_ok=True)
    cache = None if args.quick else args.output / "runs"
    if cache is not None:
        cache.mkdir(exist_ok=True)

    report: Dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        seeds = range(args.seeds if dataset == "fashion_mnist" else args.mnist_seeds)
        train, val = load_data(
            dataset,
            args.data_dir,
            train_limit=limit,
            val_limit=1000 if args.quick else None,
        )
        probe = (train.images[:10000], train.labels[:10000])
        runs: Dict[str, List[dict]] = {}
        for row in rows:
            for seed in seeds:
                r = run_one(
                    row,
                    dataset,
                    seed,
                    train,
                    val,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    probe=probe,
                    cache=cache,
                    probe_n=256 if args.quick else 1024,
                )
                w = "averaged" if "averaged" in r else "live"
                print(
                    f"{dataset:13s} {row.label:24s} seed {seed}: test acc "
                    f"{r[w]['test_accuracy']:.4f} ({w}), gap {r[w]['gap']:+.4f}, "
                    f"eig {r[w]['hessian_top_eigenvalue']:.2f}, {r['seconds']:.0f}s",
                    flush=True,
                )
                runs.setdefault(row.label, []).append(r)
        base_seconds = {
            k: statistics.fmean(r["seconds_per_epoch"] for r in v) for k, v in runs.items()
        }
        summary = [
            summarize(v, base_seconds, next(r.base for r in rows if r.label == k))
            for k, v in runs.items()
        ]
        print(f"\n{dataset}: {args.epochs} epochs, {len(seeds)} seed(s)")
        print(format_table(summary, COLUMNS))
        report[dataset] = {
            "summary": summary,
            "histories": {k: [r["history"] for r in v] for k, v in runs.items()},
        }
        write_csv(args.output / f"results_{dataset}.csv", summary)
        plot_curves(
            report[dataset]["histories"],
            args.output / f"accuracy_{dataset}.png",
            title=f"Reference CNN on {dataset}: validation accuracy per epoch",
        )
    write_json(
        args.output / "results.json",
        to_builtin(
            {
                "setup": {
                    "model": "cnn (flax init)",
                    "batch_size": args.batch_size,
                    "epochs": args.epochs,
                    "lr_adam": LR_ADAM,
                    "lr_sgd": LR_SGD,
                    "validation": "the test split",
                    "quick": args.quick,
                    "train_limit": limit,
                    "seeds_fashion_mnist": args.seeds,
                    "seeds_mnist": args.mnist_seeds,
                },
                **report,
            }
        ),
    )
    (args.output / "table.md").write_text(
        "\n\n".join(f"### {ds}\n\n" + _markdown(rep["summary"]) for ds, rep in report.items())
        + "\n"
    )
    return 0


def _markdown(rows) -> str:
    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        if isinstance(v, float):
            d = 2 if k in ("time_vs_base", "hessian_top_eigenvalue") else 4
            std = r.get(k + "_std")
            return f"{v:.{d}f}" + (f" ± {std:.{d}f}" if std else "")
        return str(v)

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
