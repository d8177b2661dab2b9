"""How close a vmapped sweep's configurations are to separate ``train`` runs, and why.

For every learning rate x seed of a grid (default: the MLP on MNIST, Adam at 3e-4, 1e-3,
3e-3 and 1e-2, seeds 0 and 1, 2 epochs of batch 64, as ``jaxopt-zoo sweep --model mlp``
runs it), this trains:

- the configuration in the default vmapped sweep (:func:`jaxopt_zoo.train.sweep.sweep`);
- the same configuration in ``SweepConfig(exact=True)`` (one after another, ``train``'s
  program);
- a separate ``train`` run (``runner.run``: the path of ``jaxopt-zoo train``);
- that ``train`` run again with one weight of the initialization moved by one ulp
  (``np.nextafter``);
- that ``train`` run again with every gradient multiplied by ``1 + 2**-23`` (about half
  its elements move by one ulp at every step): rounding noise of the size that summing a
  matrix product in another order makes, and nothing else.

and reports, per configuration and epoch, the relative difference of the validation loss
from the ``train`` run (and the largest parameter difference at the end). The exact sweep
must be 0 everywhere; the vmapped sweep's difference is put beside the 1-ulp run's, which
show how far float32 rounding alone moves the same run.

    python experiments/sweep_exactness.py            # full MNIST, ~5 min on 2 cores
    python experiments/sweep_exactness.py --train-limit 2048 --output /tmp/exact

Writes ``results.json`` and ``table.md`` in ``--output``
(default ``experiments/results/sweep_exactness``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxopt_zoo.core import chain
from jaxopt_zoo.models import get_model
from jaxopt_zoo.train import TrainConfig, init_loop_state, train_and_evaluate
from jaxopt_zoo.train.report import write_json
from jaxopt_zoo.train.runner import RunSpec, load_data, run, run_lengths_of, to_builtin
from jaxopt_zoo.train.sweep import SweepConfig, sweep
from jaxopt_zoo.transforms.learning_rate import scale

OUT = Path(__file__).resolve().parent / "results" / "sweep_exactness"


def _numbers(text: str):
    return [float(x) for x in text.split(",")]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _max_param_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _one_ulp(params):
    """The parameters with one weight (the first non-zero element of the largest leaf, a
    kernel: biases start at zero, whose next float is a subnormal that XLA flushes to zero)
    moved up by one ulp."""
    leaves, treedef = jax.tree.flatten(jax.device_get(params))
    big = max(range(len(leaves)), key=lambda i: np.size(leaves[i]))
    leaf = np.array(leaves[big])
    flat = leaf.reshape(-1)
    k = int(np.flatnonzero(flat)[0])
    flat[k] = np.nextafter(flat[k], np.float32(np.inf))
    leaves[big] = leaf
    return jax.tree.unflatten(treedef, leaves)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=_numbers, default=[3e-4, 1e-3, 3e-3, 1e-2])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", type=Path, default=OUT)
    args = p.parse_args(argv)

    train, val = load_data(
        "mnist", args.data_dir, train_limit=args.train_limit, val_limit=args.val_limit
    )
    config = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, progress=False)
    lengths = run_lengths_of(train, config)

    def make_tx(learning_rate):  # what `jaxopt-zoo sweep` builds: RunSpec.build
        return RunSpec(args.optimizer, lr=learning_rate).build(*lengths)

    model = get_model(args.model)
    seeds = list(range(args.seeds))
    grid = {"learning_rate": args.lr}
    t0 = time.perf_counter()
    plain = SweepConfig(batch_size=args.batch_size, epochs=args.epochs)
    vmapped = sweep(model, make_tx, grid, seeds, train, val, plain)
    t_vmap = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = sweep(
        model, make_tx, grid, seeds, train, val,
        SweepConfig(batch_size=args.batch_size, epochs=args.epochs, exact=True),
    )  # fmt: skip
    t_exact = time.perf_counter() - t0

    rows = []
    t_train = 0.0
    for i, (rec_v, rec_e) in enumerate(zip(vmapped.records, exact.records)):
        lr, seed = rec_v["hparams"]["learning_rate"], rec_v["seed"]
        spec = RunSpec(args.optimizer, lr=lr)
        tx = spec.build(*lengths)
        cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, seed=seed, progress=False)
        t0 = time.perf_counter()
        state, history = run(spec, train, val, model=args.model, config=cfg, tx=tx)
        t_train += time.perf_counter() - t0
        start = init_loop_state(model, tx, train.images[:1], seed)
        start = start._replace(params=_one_ulp(start.params))
        ulp_state, ulp_history = train_and_evaluate(model, tx, train, val, cfg, state=start)
        noisy = chain(scale(1.0 + 2.0**-23), tx)
        noisy_state, noisy_history = train_and_evaluate(model, noisy, train, val, cfg)
        params = jax.device_get(state.params)
        pick = lambda tree, i=i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        for epoch, (h, hv, he, hu, hn) in enumerate(
            zip(history, rec_v["history"], rec_e["history"], ulp_history, noisy_history),
            start=1,
        ):
            rows.append(
                {
                    "learning_rate": lr,
                    "seed": seed,
                    "epoch": epoch,
                    "val_loss_train": h["val_loss"],
                    "rel_vmapped": _rel(hv["val_loss"], h["val_loss"]),
                    "rel_exact": _rel(he["val_loss"], h["val_loss"]),
                    "rel_one_ulp": _rel(hu["val_loss"], h["val_loss"]),
                    "rel_grad_ulp": _rel(hn["val_loss"], h["val_loss"]),
                }
            )
        rows[-1]["params_vmapped"] = _max_param_diff(pick(vmapped.params), params)
        rows[-1]["params_exact"] = _max_param_diff(pick(exact.params), params)
        rows[-1]["params_one_ulp"] = _max_param_diff(jax.device_get(ulp_state.params), params)
        rows[-1]["params_grad_ulp"] = _max_param_diff(jax.device_get(noisy_state.params), params)
        print(json.dumps(rows[-1]), flush=True)

    summary = {
        "max_rel_vmapped": max(r["rel_vmapped"] for r in rows),
        "max_rel_exact": max(r["rel_exact"] for r in rows),
        "max_rel_one_ulp": max(r["rel_one_ulp"] for r in rows),
        "max_rel_grad_ulp": max(r["rel_grad_ulp"] for r in rows),
        "seconds_vmapped_sweep": t_vmap,
        "seconds_exact_sweep": t_exact,
        "seconds_train_runs": t_train,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(
        args.output / "results.json",
        to_builtin({"config": {**vars(args), "output": str(args.output)}, "rows": rows, **summary}),
    )
    lines = [
        "| lr | seed | epoch | val_loss (train) | vmapped sweep | exact sweep "
        "| train, 1 weight 1 ulp | train, gradients x (1 + 2^-23) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['learning_rate']:g} | {r['seed']} | {r['epoch']} | {r['val_loss_train']:.6f} "
            f"| {r['rel_vmapped']:.1e} | {r['rel_exact']:.1e} | {r['rel_one_ulp']:.1e} "
            f"| {r['rel_grad_ulp']:.1e} |"
        )
    lines.append("")
    lines.append(
        f"Relative differences of the validation loss from the `train` run. Largest: vmapped "
        f"{summary['max_rel_vmapped']:.1e}, exact {summary['max_rel_exact']:.1e}, one ulp "
        f"{summary['max_rel_one_ulp']:.1e}, gradients x (1 + 2^-23) "
        f"{summary['max_rel_grad_ulp']:.1e}. Wall time: vmapped sweep {t_vmap:.1f} s, exact "
        f"sweep {t_exact:.1f} s, the separate train runs {t_train:.1f} s."
    )
    (args.output / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
