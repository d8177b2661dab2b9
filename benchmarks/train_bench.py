"""Training speed, accuracy and peak memory: the jaxopt_zoo trainer vs plain PyTorch eager.

Same data (real MNIST), same batch size, same architecture, same optimizer (Adam, lr 1e-3),
same number of threads. Each (framework, model) runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is its own.

    JAXOPT_ZOO_DATA=/work/shared/data/mnist python benchmarks/train_bench.py
    python benchmarks/train_bench.py --models cnn --variants jax,torch --rounds 2

Per run it reports:

- ``ms/step``: median over windows of ``--window`` steady-state steps (after warm-up and
  compilation) of wall time per optimizer step, waiting for the results at the end of each
  window. JAX: the trainer's own jitted step (``make_indexed_train_step``: donated params and
  optimizer state, data resident on the device, the batch chosen on the device). PyTorch:
  ``zero_grad, forward, loss, backward, step`` on a pre-shuffled in-memory tensor.
- ``epoch s``: wall time of one whole epoch through the user-facing loop
  (``train_and_evaluate`` for JAX, compile and test-set evaluation included; the plain loop for
  PyTorch, plus its evaluation).
- ``test acc``: accuracy on the 10,000 test images after that one epoch.
- ``peak MB``: the subprocess' peak RSS; ``over base``: minus the RSS after imports and data.

With ``--rounds N`` the variants run N times each, alternating, the order rotated each round,
and the table reports medians. The machine block (``machine.py``: CPU model and ISA flags
from /proc/cpuinfo, load average before and after) is printed and written into ``--json``
(``{"machine": ..., "rows": [...]}``); on a busy machine the ``vs torch`` ratios are marked
"not a result", and ``--require-quiet`` refuses to run or write there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import machine as bench_machine  # noqa: E402

# jax-rbg: the trainer with JAX's "unsafe_rbg" PRNG (XLA's RngBitGenerator) for dropout
# instead of the default threefry, which costs about as much as the convolution on CPU.
# jax-flat: the trainer with the parameters held as jz.FlatParams and jz.fuse(adam), through
# a model wrapper that views the flat buffers as the Flax tree (no change to the trainer).
# jax-flat-rbg: both.
# jax-stock: the trainer with the CNN built from Flax's stock layers (nn.Conv, nn.max_pool,
# nn.Dropout) instead of the CPU-fast ones (CNN(fast_layers=False); same parameters, same
# function), so that the table shows which part of the speed is the model and which the library.
VARIANTS = ("jax", "jax-stock", "jax-fused", "jax-flat", "jax-rbg", "jax-flat-rbg", "torch")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load_data():
    from jaxopt_zoo.data import load_mnist

    return load_mnist("train", normalize=True), load_mnist("test", normalize=True)


# --------------------------------------------------------------------------- #
# JAX: the jaxopt_zoo trainer
# --------------------------------------------------------------------------- #


class FlatModel:
    """A Flax model whose parameters are held as a ``jz.FlatParams`` (the jax-flat variants).

    ``FlatModel(model).apply({"params": flat}, x, ...)`` runs ``model`` on the tree view of
    the flat buffers, so the trainer (which calls ``model.apply``) and ``jax.grad`` work on
    ``FlatParams`` unchanged, and ``fuse(tx)`` updates them through ``fused_apply``.
    """

    def __init__(self, model):
        self.model = model

    def apply(self, variables, *args, **kwargs):
        return self.model.apply({"params": variables["params"].tree()}, *args, **kwargs)


def run_jax(
    model_name: str,
    batch: int,
    window: int,
    fused: bool,
    seed: int,
    prng: str = "",
    flat: bool = False,
    stock: bool = False,
) -> dict:
    import jax
    import jax.numpy as jnp

    if prng:
        jax.config.update("jax_default_prng_impl", prng)

    import jaxopt_zoo as jz
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train import (
        Metrics,
        TrainConfig,
        epoch_order,
        evaluate,
        init_loop_state,
        make_indexed_train_step,
        train_and_evaluate,
    )

    train, test = load_data()
    base = rss_mb()
    model = get_model(model_name, init_style="keras")
    if stock and model_name == "cnn":
        model = model.clone(fast_layers=False)
    tx = jz.adam(1e-3)
    if fused or flat:
        tx = jz.fuse(tx)
    state = init_loop_state(model, jz.adam(1e-3), train.images[:1], seed)
    if flat:
        params = jz.FlatParams.from_tree(state.params)
        state = state._replace(params=params, opt_state=tx.init(params))
        model = FlatModel(model)
    else:
        state = state._replace(opt_state=tx.init(state.params))
    fresh_state = jax.tree.map(jnp.copy, state)

    # 1. Steady-state step time of the trainer's own step function.
    images, labels = jnp.asarray(train.images), jnp.asarray(train.labels)
    step = make_indexed_train_step(model, tx, batch)
    params, opt_state = state.params, state.opt_state
    totals = Metrics(*(jnp.zeros(()) for _ in range(3)))
    order = epoch_order(state.rng, 0, images.shape[0])
    key = jax.random.PRNGKey(seed)
    steps_per_epoch = -(-images.shape[0] // batch)
    b = 0

    def run(n):
        nonlocal params, opt_state, totals, b
        for _ in range(n):
            params, opt_state, totals = step(
                params, opt_state, totals, images, labels, order, b % steps_per_epoch, b, key
            )
            b += 1
        jax.block_until_ready((params, opt_state, totals))

    t = time.perf_counter()
    run(1)
    compile_s = time.perf_counter() - t
    run(window)  # warm up
    times = []
    for _ in range(8):
        t = time.perf_counter()
        run(window)
        times.append((time.perf_counter() - t) / window * 1e3)
    assert step._cache_size() == 1, "the train step recompiled"
    del params, opt_state, totals

    # 2. One epoch through train_and_evaluate: accuracy and wall time.
    t = time.perf_counter()
    if not flat:
        final, history = train_and_evaluate(
            model,
            tx,
            train,
            test,
            TrainConfig(batch_size=batch, epochs=1, seed=seed, progress=False),
            state=fresh_state,
        )
        test_acc, train_loss = history[-1]["val_accuracy"], history[-1]["train_loss"]
    else:  # train_and_evaluate checks params against model.init: run its loop by hand
        params, opt_state = fresh_state.params, fresh_state.opt_state
        totals = Metrics(*(jnp.zeros(()) for _ in range(3)))
        order = epoch_order(fresh_state.rng, 0, images.shape[0])
        key = jax.random.fold_in(fresh_state.rng, 2)
        for b in range(steps_per_epoch):
            params, opt_state, totals = step(
                params, opt_state, totals, images, labels, order, b, b, key
            )
        train_loss = totals.means()[0]
        test_acc = evaluate(model, params, test.images, test.labels)[1]
    epoch_s = time.perf_counter() - t
    return {
        "ms_step": statistics.median(times),
        "ms_step_min": min(times),
        "compile_s": compile_s,
        "epoch_s": epoch_s,
        "test_acc": test_acc,
        "train_loss": train_loss,
        "peak_mb": peak_mb(),
        "base_mb": base,
    }


# --------------------------------------------------------------------------- #
# PyTorch eager
# --------------------------------------------------------------------------- #


def torch_model(torch, name: str):
    nn = torch.nn
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(32 * 13 * 13, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def run_torch(model_name: str, batch: int, window: int, threads: int, seed: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train, test = load_data()
    x = torch.from_numpy(np.ascontiguousarray(train.images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(train.labels.astype(np.int64))
    xt = torch.from_numpy(np.ascontiguousarray(test.images.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(test.labels.astype(np.int64))
    base = rss_mb()
    model = torch_model(torch, model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]

    def epoch_batches(gen_seed):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(gen_seed))
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            yield x[idx], y[idx]

    def train_step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    # 1. Steady-state step time, on a throwaway copy of the model so that the epoch below
    #    starts from fresh weights.
    import copy

    state0 = copy.deepcopy(model.state_dict())
    model.train()
    it = epoch_batches(seed + 1)
    for _ in range(window):
        train_step(*next(it))
    times = []
    for _ in range(8):
        batches = [next(it) for _ in range(window)]
        t = time.perf_counter()
        for xb, yb in batches:
            train_step(xb, yb)
        times.append((time.perf_counter() - t) / window * 1e3)
    model.load_state_dict(state0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    # 2. One epoch and a test-set evaluation.
    t = time.perf_counter()
    model.train()
    total_loss, count = 0.0, 0
    for xb, yb in epoch_batches(seed):
        loss = train_step(xb, yb)
        total_loss += float(loss) * len(yb)
        count += len(yb)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xt.shape[0], 1000):
            correct += int((model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum())
    epoch_s = time.perf_counter() - t
    return {
        "ms_step": statistics.median(times),
        "ms_step_min": min(times),
        "compile_s": 0.0,
        "epoch_s": epoch_s,
        "test_acc": correct / xt.shape[0],
        "train_loss": total_loss / count,
        "peak_mb": peak_mb(),
        "base_mb": base,
    }


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #


def worker(args) -> None:
    if args.worker.startswith("jax"):
        parts = args.worker.split("-")[1:]
        out = run_jax(
            args.model,
            args.batch,
            args.window,
            "fused" in parts,
            args.seed,
            prng="unsafe_rbg" if "rbg" in parts else "",
            flat="flat" in parts,
            stock="stock" in parts,
        )
    else:
        out = run_torch(args.model, args.batch, args.window, args.threads, args.seed)
    print("RESULT " + json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=50, help="steps per timing window")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=1, help="alternate the variants this often")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            ap.error(f"unknown variant {variant!r}; choose from {VARIANTS}")
    m = bench_machine.start(args)

    env = dict(os.environ)
    env.setdefault("JAXOPT_ZOO_DATA", os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
    results = {}
    orders = list(bench_machine.rotated_rounds(variants, args.rounds))
    for order in orders:
        for model in args.models.split(","):
            for variant in order:
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    variant,
                    "--model",
                    model,
                    "--batch",
                    str(args.batch),
                    "--window",
                    str(args.window),
                    "--threads",
                    str(args.threads),
                    "--seed",
                    str(args.seed),
                ]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                    raise SystemExit(f"{variant} {model} failed")
                results.setdefault((model, variant), []).append(json.loads(lines[-1][7:]))

    print(
        f"# batch {args.batch}, {args.threads} threads, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}; medians over {args.rounds} round(s)"
    )
    print(
        f"{'model':5s} {'variant':10s} {'ms/step':>8s} {'vs torch':>9s} {'epoch s':>8s} "
        f"{'test acc':>8s} {'peak MB':>8s} {'over base':>9s}"
    )
    rows = []
    for (model, variant), rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        ref = results.get((model, "torch"))
        vs = med["ms_step"] / statistics.median(r["ms_step"] for r in ref) if ref else float("nan")
        print(
            f"{model:5s} {variant:10s} {med['ms_step']:8.2f} {vs:8.2f}x {med['epoch_s']:8.1f} "
            f"{med['test_acc']:8.4f} {med['peak_mb']:8.0f} "
            f"{med['peak_mb'] - med['base_mb']:9.0f}"
        )
        rows.append({"model": model, "variant": variant, "ms_step_vs_torch": vs, **med, "runs": rs})
    print(
        m.headline("(vs torch = ms/step of this variant / ms/step of PyTorch eager; < 1 is faster)")
    )
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": block, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
