"""PSGD Kron's step: jaxopt_zoo's ``psgd_kron`` vs ``kron_torch.Kron`` (0.3.3), side by side.

Both with the same settings (lr, b1, the factors' sizes: ``--max-size`` for
``max_size_triangular`` on both, 2048 by default so that the CNN's 5408-wide dimension gets
a diagonal factor on both, as 5408^2 triangular factors would take seconds a step on a CPU),
float32. Each is timed with a preconditioner update every step (probability 1) and with none
(probability 0 for ours, 1e-9 for kron_torch, whose counter rule divides by it): the update's
cost is the difference. The JAX steps are jitted with parameters and state donated;
kron_torch runs as shipped (its ``torch.compile``d functions; ``--torch-eager`` runs them
eagerly, as the smoke test does). Variants are timed round-robin (the order rotated each
repeat) so that a busy neighbour slows all of them alike; the table reports medians and
ratios (kron_torch's time / ours: > 1 means ours is faster). The machine block
(``machine.py``) is printed and written into ``--json``; ratios measured on a busy machine are
marked "not a result", and ``--require-quiet`` refuses to run or write there.

    python benchmarks/kron_bench.py                        # both shape sets (minutes)
    python benchmarks/kron_bench.py --shapes cnn --repeats 5
    python benchmarks/kron_bench.py --shapes 64x96,96x64   # any list of shapes

Shape sets: "transformer", the 16 matrices of a 4-layer width-384 transformer (per layer
qkv 384x1152, out 384x384, mlp 384x1536 and 1536x384: 7.1M parameters); "cnn", the reference
CNN's kernels and dense layers (3x3x1x32, 3x3x32x32, 5408x256, 256x10: 1.4M parameters).
Same-shape matrices (four of each in the transformer) share one batched fit here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Tuple

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see soap_bench.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo import registry  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine as bench_machine  # noqa: E402

SHAPES: Dict[str, List[Tuple[int, ...]]] = {
    "transformer": [(384, 1152), (384, 384), (384, 1536), (1536, 384)] * 4,
    "cnn": [(3, 3, 1, 32), (3, 3, 32, 32), (5408, 256), (256, 10)],
}
LR = 3e-4


def parse_shapes(text: str) -> Dict[str, List[Tuple[int, ...]]]:
    """Named sets (comma-separated) or one custom set of ``AxB[xC...]`` shapes."""
    names = text.split(",")
    if all(n in SHAPES for n in names):
        return {n: SHAPES[n] for n in names}
    return {"custom": [tuple(int(d) for d in s.split("x")) for s in names]}


def ours(shapes, prob, max_size) -> Tuple[Callable[[], None], float]:
    """A warmed, jitted step of ``psgd_kron`` and its state bytes per parameter."""
    tx = jz.psgd_kron(LR, preconditioner_update_probability=prob, max_size_triangular=max_size)
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.normal(size=s) * 0.02, jnp.float32) for s in shapes]
    grads = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    state = tx.init(params)
    nbytes = registry.state_bytes_per_param(tx, params=params)
    for _ in range(2):
        params, state = step(params, state, grads)
    jax.block_until_ready(params)

    def run():
        nonlocal params, state
        params, state = step(params, state, grads)
        jax.block_until_ready(params)

    return run, nbytes


def reference(shapes, prob, max_size, eager) -> Tuple[Callable[[], None], float]:
    """A warmed ``kron_torch.Kron`` step and its state bytes per parameter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from kron_torch import Kron
    rng = np.random.default_rng(0)
    params = [
        torch.tensor(rng.normal(size=s) * 0.02, dtype=torch.float32, requires_grad=True)
        for s in shapes
    ]
    for p in params:
        p.grad = torch.tensor(rng.normal(size=p.shape), dtype=torch.float32)
    opt = Kron(
        params,
        lr=LR,
        preconditioner_update_probability=max(prob, 1e-9),
        max_size_triangular=max_size,
    )

    def run():
        with contextlib.redirect_stdout(io.StringIO()):  # its first step prints sizes
            if eager:
                with torch._dynamo.config.patch(disable=True):
                    opt.step()
            else:
                opt.step()

    for _ in range(2):
        run()
    total = sum(
        t.numel() * t.element_size()
        for p in params
        for t in [opt.state[p]["momentum_buffer"], *opt.state[p]["Q"]]
    )
    return run, total / sum(p.numel() for p in params)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="transformer,cnn")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=2)
    ap.add_argument("--max-size", type=int, default=2048, help="max_size_triangular (both)")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch's threads (default: every core, as XLA uses them)",
    )
    ap.add_argument("--torch-eager", action="store_true", help="kron_torch without compile")
    ap.add_argument("--json", default=None, help="also write the results here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    torch.set_num_threads(args.torch_threads)
    results = {}
    for set_name, shapes in parse_shapes(args.shapes).items():
        n = sum(int(np.prod(s)) for s in shapes)
        print(
            f"\n{set_name}: {len(shapes)} float32 arrays ({n / 1e6:.2f}M parameters), "
            f"jax {jax.__version__}, torch {torch.__version__} ({args.torch_threads} threads"
            f"{', eager' if args.torch_eager else ''}), max_size_triangular={args.max_size}"
        )
        fns, nbytes = {}, {}
        for prob, tag in ((1.0, "update"), (0.0, "plain")):
            fns[f"ours {tag}"], nbytes["ours"] = ours(shapes, prob, args.max_size)
            fns[f"kron_torch {tag}"], nbytes["kron_torch"] = reference(
                shapes, prob, args.max_size, args.torch_eager
            )

        timed = bench_machine.interleave_repeated(fns, args.repeats, args.inner)
        ms = {k: v["median"] for k, v in timed.items()}
        print(
            "spread (max - min) / median: "
            + ", ".join(f"{k} {v['spread']:.0%}" for k, v in timed.items())
        )
        busy = m.busy_reason()
        if busy:
            print(f"\n**{busy}**: the ratios below are not a result")
        print("\n| | ours | kron_torch | kron_torch / ours |")
        print("|---|---|---|---|")
        o, t = nbytes["ours"], nbytes["kron_torch"]
        print(f"| state bytes per parameter | {o:.2f} | {t:.2f} | {t / o:.2f} |")
        rows = (("plain", "step without update, ms"), ("update", "step with update, ms"))
        for tag, label in rows:
            o, t = ms[f"ours {tag}"], ms[f"kron_torch {tag}"]
            print(f"| {label} | {o:.2f} | {t:.2f} | {t / o:.2f}x |")
        uo = ms["ours update"] - ms["ours plain"]
        ut = ms["kron_torch update"] - ms["kron_torch plain"]
        ratio = f"{ut / uo:.2f}x" if uo > 0 else "n/a (ours within noise)"
        print(f"| update alone (difference), ms | {uo:.2f} | {ut:.2f} | {ratio} |")
        results[set_name] = {"ms": ms, "state_bytes": nbytes}
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": block, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
