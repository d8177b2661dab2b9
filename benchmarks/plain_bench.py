"""The plain path against optax: every optimizer both libraries have, the step a user writes.

For each registered native optimizer that optax or optax.contrib also has under the same
name, the step a user writes with either library: ``tx.update`` then ``apply_updates`` in one
jitted function with parameters and state donated, on float32 parameters (default 8M in 16
leaves, each a 1000-row matrix so that matrix-wise optimizers see matrices). Both are built
with the registry's default learning rate and each library's other defaults (the work per
step is the same; the values differ where the defaults do). Timed in interleaved rounds
(``machine.interleave``: each variant first in turn and after each other equally often),
median ms per step; ratio = optax's time / ours (> 1: ours faster). Prints a Markdown table,
the geometric mean and the slowest ratio, with the machine block (CPU, ISA, load before and
after; a busy machine's ratios are marked).

    python benchmarks/plain_bench.py                       # all shared names (~5 minutes)
    python benchmarks/plain_bench.py --only adam,adabelief --repeats 9
    python benchmarks/plain_bench.py --size 100K --repeats 2   # a quick check that it runs

Left out, with the reason printed: optimizers whose ``update`` needs more than the gradient
(lbfgs's line search, polyak_sgd's and momo's loss value, sophia's objective, dpsgd's
per-example gradients) and muon (its Newton-Schulz step has its own benchmark,
``benchmarks/muon_bench.py``).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

SIZES = {"100K": 100_000, "1M": 1_000_000, "8M": 8_000_000}
LEFT_OUT = {
    "muon": "its Newton-Schulz step: benchmarks/muon_bench.py",
    "dpsgd": "takes per-example gradients",
}


def optax_factory(name: str) -> Optional[Callable[..., Any]]:
    """optax's (or optax.contrib's) constructor of the same name, or None (optax.contrib
    first: optax keeps deprecated aliases of some contrib names, e.g. dpsgd)."""
    for mod in (optax.contrib, optax):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            f = getattr(mod, name, None)
        if callable(f):
            return f
    return None


def shared_names() -> Tuple[List[str], Dict[str, str]]:
    """The registered native names optax has too, and why any of them is left out."""
    names, skipped = [], {}
    for n in jz.available():
        if optax_factory(n) is None:
            continue
        if n in LEFT_OUT:
            skipped[n] = LEFT_OUT[n]
        elif jz.entry(n).extra_args:
            skipped[n] = f"its update needs {', '.join(jz.entry(n).extra_args)}"
        else:
            names.append(n)
    return names, skipped


def build(name: str) -> Tuple[Any, Any]:
    """(ours, optax's), both with the registry's default learning rate where they take one."""
    e = jz.entry(name)
    ours = jz.get(name)
    f = optax_factory(name)
    assert f is not None
    kw = {}
    if "learning_rate" in inspect.signature(f).parameters and e.default_lr is not None:
        kw["learning_rate"] = e.default_lr
    return ours, f(**kw)


def make_tree(total: int, leaves: int, seed: int) -> Dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    rows = 1000 if total >= 1000 * leaves else 10
    cols = max(total // leaves // rows, 1)
    return {
        f"w{i:02d}": jnp.asarray(rng.normal(size=(rows, cols)) * 0.1, jnp.float32)
        for i in range(leaves)
    }


def variant(tx: Any, params: Any, grads: Any) -> Callable[[int], None]:
    """``run(n)``: n donated steps of ``tx`` (compiled and warmed up here)."""

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    f = jax.jit(step, donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params), None]
    # a copy: some inits (optax's cocob, ...) keep the parameters themselves in the state,
    # and the step donates both
    box[1] = jax.tree.map(jnp.copy, tx.init(box[0]))

    def run(n: int) -> None:
        p, s = box
        for _ in range(n):
            p, s = f(p, s, grads)
        jax.block_until_ready((p, s))
        box[0], box[1] = p, s

    run(2)
    assert f._cache_size() == 1
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated names (default: all shared)")
    ap.add_argument("--size", default="8M", choices=list(SIZES))
    ap.add_argument("--leaves", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--iters", type=int, default=0, help="steps per timing (0: ~0.2 s)")
    bench_machine.add_arguments(ap)
    a = ap.parse_args(argv)
    mach = bench_machine.start(a)
    names, skipped = shared_names()
    if a.only:
        wanted = a.only.split(",")
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"not a shared optimizer timed here: {unknown}; shared: {names}")
        names = wanted
    total = SIZES[a.size]
    params = make_tree(total, a.leaves, 0)
    grads = make_tree(total, a.leaves, 1)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"jax {jax.__version__}, optax {optax.__version__}; {n_params:,} float32 parameters")
    rows = []
    for name in names:
        ours_tx, ref_tx = build(name)
        runs = {"ours": variant(ours_tx, params, grads), "optax": variant(ref_tx, params, grads)}
        iters = a.iters
        if not iters:
            t = time.perf_counter()
            runs["ours"](1)
            iters = max(1, int(0.2 / max(time.perf_counter() - t, 1e-4)))
        calls = {k: (lambda r=r, n=iters: r(n)) for k, r in runs.items()}
        timed = bench_machine.interleave(calls, rounds=a.repeats, per_call=iters)
        ours_ms, ref_ms = timed["ours"]["median"], timed["optax"]["median"]
        rows.append((name, ours_ms, ref_ms, ref_ms / ours_ms, timed["ours"]["spread"]))
        print(f"  {name}: ours {ours_ms:.2f} ms, optax {ref_ms:.2f} ms", file=sys.stderr)
    print()
    print("| optimizer | ours ms | optax ms | optax / ours | spread (ours) |")
    print("|---|---:|---:|---:|---:|")
    for name, o, r, ratio, spread in rows:
        print(f"| {name} | {o:.2f} | {r:.2f} | {ratio:.2f}x | {spread:.0%} |")
    if rows:
        gmean = math.exp(sum(math.log(r[3]) for r in rows) / len(rows))
        worst = min(rows, key=lambda r: r[3])
        print()
        print(
            mach.headline(
                f"geometric mean {gmean:.2f}x over {len(rows)} optimizers; slowest "
                f"{worst[0]} at {worst[3]:.2f}x (> 1: ours faster)"
            )
        )
    for n, why in skipped.items():
        print(f"- left out: {n} ({why})")
    block = mach.finish()
    print(f"# load average {block['load_before']} before, {block['load_after']} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
