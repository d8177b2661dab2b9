"""Optimizer update speed: jaxopt_zoo (plain, fused) vs optax vs torch.optim, side by side.

One update = read params, grads and state, write params and state. Every JAX variant is a
jitted step ``(params, state, grads) -> (params, state)`` with params and state donated, so it
can run in place; torch steps its optimizer on tensors with ``.grad`` set. Variants are timed
round-robin (repeat after repeat, the order rotated each repeat) so that a busy neighbour slows
all of them alike, and the table reports the median. The machine block (``machine.py``: CPU
model and ISA flags from /proc/cpuinfo, load average before and after) is printed and written
into ``--json``; on a busy machine the headline ratios are marked, and ``--require-quiet``
refuses to run or write.

    python benchmarks/update_bench.py                       # the full table (a few minutes)
    python benchmarks/update_bench.py --optimizers adam --sizes 8M --leaves 1 --repeats 3

Columns: ms per update, GB/s = the optimizer's minimal traffic (bytes read + written per
parameter, e.g. 28 B for Adam) / time, and ratios of throughput (time of the other / ours,
so > 1 means ours is faster). "stream" is a donated in-place ``p = a*p + b*g`` pass (12 B per
element), the practical bandwidth of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo.fast import FlatParams, fused_apply  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

# name: (ours, optax, torch factory or None, minimal bytes per float32 parameter)
OPTIMIZERS = {
    "adam": (
        lambda: jz.adam(1e-3),
        lambda: optax.adam(1e-3),
        lambda t, ps, **k: t.optim.Adam(ps, lr=1e-3, **k),
        28,
    ),
    "adamw": (
        lambda: jz.adamw(1e-3, weight_decay=1e-2),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        lambda t, ps, **k: t.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **k),
        28,
    ),
    "momentum": (
        lambda: jz.sgd(1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
        lambda t, ps, **k: t.optim.SGD(ps, lr=1e-2, momentum=0.9, **k),
        20,
    ),
    "lion": (
        lambda: jz.lion(1e-4, weight_decay=1e-3),
        lambda: optax.lion(1e-4, weight_decay=1e-3),
        None,
        20,
    ),
    "rmsprop": (
        lambda: jz.rmsprop(1e-3),
        lambda: optax.rmsprop(1e-3),
        lambda t, ps, **k: t.optim.RMSprop(ps, lr=1e-3, alpha=0.9, **k),
        20,
    ),
    "adagrad": (
        lambda: jz.adagrad(1e-2),
        lambda: optax.adagrad(1e-2),
        lambda t, ps, **k: t.optim.Adagrad(ps, lr=1e-2, **k),
        20,
    ),
}
SIZES = {"100K": 100_000, "1M": 1_000_000, "8M": 8_000_000}  # 100K: smoke test


def leaf_sizes(total: int, leaves: int) -> List[int]:
    """``leaves`` sizes adding up to ``total``: mostly equal, a few odd ones like a real net."""
    base = [total // leaves] * leaves
    base[-1] += total - sum(base)
    return base


def jax_step(tx) -> Callable:
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(step, donate_argnums=(0, 1))


class Variant:
    """A timed update: ``run(n)`` performs n updates and waits for them."""

    def __init__(self, name: str, run: Callable[[int], None], memory: Optional[dict] = None):
        self.name, self.run, self.memory, self.times = name, run, memory, []


def make_jax_variant(name, tx, params, grads, step=None) -> Variant:
    step = jax_step(tx) if step is None else jax.jit(step, donate_argnums=(0, 1))
    state = [params, tx.init(params)]
    compiled = step.lower(state[0], state[1], grads).compile()
    mem = None
    try:
        m = compiled.memory_analysis()
        mem = {
            "arguments": m.argument_size_in_bytes,
            "outputs": m.output_size_in_bytes,
            "aliased": m.alias_size_in_bytes,
            "temporaries": m.temp_size_in_bytes,
        }
    except Exception:  # noqa: BLE001 -- not every backend reports it
        pass

    def run(n):
        p, s = state
        for _ in range(n):
            p, s = step(p, s, grads)
        jax.block_until_ready((p, s))
        state[0], state[1] = p, s

    run(2)  # compile and warm up
    assert step._cache_size() == 1, f"{name} recompiled"
    return Variant(name, run, mem)


def make_torch_variant(name, torch, factory, sizes, kind) -> Optional[Variant]:
    ps = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for q in ps:
        q.grad = torch.randn(q.shape)
    kw = {} if kind is None else {kind: True}
    try:
        opt = factory(torch, ps, **kw)
        opt.step()
    except (RuntimeError, TypeError, ValueError) as e:
        print(f"  (skipping {name}: {str(e).splitlines()[0][:80]})", file=sys.stderr)
        return None

    def run(n):
        with torch.no_grad():
            for _ in range(n):
                opt.step()

    run(2)
    return Variant(name, run)


def torch_lion(torch, sizes) -> Variant:
    """Lion written with torch's multi-tensor (foreach) ops: the best torch eager offers."""
    ps = [torch.randn(n) for n in sizes]
    gs = [torch.randn(n) for n in sizes]
    ms = [torch.zeros(n) for n in sizes]
    lr, wd, b1, b2 = 1e-4, 1e-3, 0.9, 0.99

    def run(n):
        with torch.no_grad():
            for _ in range(n):
                c = torch._foreach_mul(ms, b1)
                torch._foreach_add_(c, gs, alpha=1 - b1)
                torch._foreach_sign_(c)
                torch._foreach_mul_(ps, 1 - lr * wd)
                torch._foreach_add_(ps, c, alpha=-lr)
                torch._foreach_mul_(ms, b2)
                torch._foreach_add_(ms, gs, alpha=1 - b2)

    run(2)
    return Variant("torch foreach (hand-written)", run)


def stream_variants(n: int, torch) -> List[Variant]:
    """Bandwidth probes: an in-place ``p = a*p + b*g`` pass, 12 bytes per element."""
    p, g = jnp.ones(n, jnp.float32), jnp.ones(n, jnp.float32)
    f = jax.jit(lambda p, g: 0.999 * p + 0.001 * g, donate_argnums=0)
    box = [f(p, g)]

    def run_jax(k):
        x = box[0]
        for _ in range(k):
            x = f(x, g)
        x.block_until_ready()
        box[0] = x

    run_jax(2)
    out = [Variant("stream (jax)", run_jax)]
    if torch is not None:
        tp, tg = torch.ones(n), torch.ones(n)

        def run_torch_fused(k):
            for _ in range(k):
                torch.add(tp, tg, alpha=0.001, out=tp)

        run_torch_fused(2)
        out.append(Variant("stream (torch)", run_torch_fused))
    return out


def time_round_robin(variants: List[Variant], iters: int, repeats: int) -> None:
    for order in bench_machine.rotated_rounds(variants, repeats):
        for v in order:
            time.sleep(0.02)  # let the other framework's spinning worker threads go idle
            t = time.perf_counter()
            v.run(iters)
            v.times.append((time.perf_counter() - t) / iters * 1e3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--sizes", default="1M,8M")
    ap.add_argument("--leaves", default="1,16,256")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iters", type=int, default=0, help="updates per timing (0: ~0.25 s)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument(
        "--apply-chunks",
        type=int,
        default=32,
        help="buffers per dtype for the chunk-ordered XLA fused_apply variant",
    )
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=None, help="write the results here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)

    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811

            torch.set_num_threads(args.threads)
        except ImportError:
            print("torch not installed: skipping the torch columns", file=sys.stderr)
    names = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    for n in names:
        if n not in OPTIMIZERS:
            ap.error(f"unknown optimizer {n!r}; choose from {', '.join(OPTIMIZERS)}")
    sizes = [s.strip() for s in args.sizes.split(",")]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    leaves = [int(x) for x in args.leaves.split(",")]

    print(f"# native kernel: {jz.native.status()['reason']}")
    print(
        f"# jax "
        f"{jax.__version__}, optax {optax.__version__}"
        + (f", torch {torch.__version__} ({args.threads} threads)" if torch else "")
        + f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    results = []
    rng = np.random.default_rng(0)
    for size in sizes:
        total = SIZES[size]
        streams = stream_variants(total, torch)
        for opt in names:
            ours_f, optax_f, torch_f, nbytes = OPTIMIZERS[opt]
            for nl in leaves:
                ls = leaf_sizes(total, nl)
                params = {
                    f"p{i:03d}": jnp.asarray(rng.standard_normal(n, np.float32))
                    for i, n in enumerate(ls)
                }
                grads = jax.tree.map(
                    lambda p: jnp.asarray(rng.standard_normal(p.shape, np.float32)), params
                )
                fp = FlatParams.from_tree(params)
                fg = FlatParams(fp.layout.flatten(grads), fp.layout)
                fpn = FlatParams.from_tree(params)
                fgn = FlatParams(fpn.layout.flatten(grads), fpn.layout)
                fpa = FlatParams.from_tree(params, chunks=args.apply_chunks)
                fga = FlatParams(fpa.layout.flatten(grads), fpa.layout)
                fused_tx, native_tx = jz.fuse(ours_f()), jz.fuse(ours_f())
                fresh = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731 -- donation eats it
                variants = [
                    make_jax_variant("ours", ours_f(), fresh(params), grads),
                    make_jax_variant("ours fused (tree)", jz.fuse(ours_f()), fresh(params), grads),
                    make_jax_variant("ours fused (FlatParams)", jz.fuse(ours_f()), fp, fg),
                    make_jax_variant(
                        f"ours fused_apply XLA (FlatParams x{args.apply_chunks})",
                        fused_tx,
                        fpa,
                        fga,
                        step=fused_apply(fused_tx, native=False),
                    ),
                    make_jax_variant(
                        "ours fused_apply native (FlatParams)",
                        native_tx,
                        fpn,
                        fgn,
                        step=fused_apply(native_tx),
                    ),
                    make_jax_variant("optax (donated)", optax_f(), fresh(params), grads),
                ]
                if torch is not None:
                    if torch_f is None:
                        variants.append(torch_lion(torch, ls))
                    else:
                        for kind in ("foreach", "fused"):
                            v = make_torch_variant(f"torch {kind}", torch, torch_f, ls, kind)
                            if v is not None:
                                variants.append(v)
                iters = args.iters or max(3, int(0.25 / max(1e-4, _probe(variants[2]))))
                time_round_robin(variants + streams, iters, args.repeats)
                row = report(opt, size, nl, total, nbytes, variants, streams, m)
                results.append(row)
                for v in streams:
                    v.times.clear()
                del variants, params, grads, fp, fg, fpn, fgn, fpa, fga
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": block, "rows": results}, f, indent=1)
    return results


def _probe(v: Variant) -> float:
    t = time.perf_counter()
    v.run(2)
    return (time.perf_counter() - t) / 2


def report(opt, size, nl, total, nbytes, variants, streams, m=None) -> dict:
    med = {v.name: statistics.median(v.times) for v in variants + streams}
    spread = {v.name: bench_machine.stats(v.times)["spread"] for v in variants + streams}
    ours_best = min((k for k in med if k.startswith("ours")), key=lambda k: med[k])
    torch_keys = [k for k in med if k.startswith("torch")]
    torch_best = min(torch_keys, key=lambda k: med[k]) if torch_keys else None
    gb = lambda ms, b=nbytes: b * total / (ms * 1e-3) / 1e9  # noqa: E731
    print(f"\n## {opt}, {size} parameters, {nl} leaves ({nbytes} B/param minimal traffic)")
    print(
        f"{'variant':34s} {'ms':>8s} {'spread':>7s} {'GB/s':>7s} {'vs optax':>9s} "
        f"{'vs torch best':>13s}"
    )
    for v in variants:
        ms = med[v.name]
        vs_optax = med["optax (donated)"] / ms
        vs_torch = (med[torch_best] / ms) if torch_best else float("nan")
        print(
            f"{v.name:34s} {ms:8.2f} {spread[v.name]:6.0%} {gb(ms):7.1f} {vs_optax:8.2f}x "
            f"{vs_torch:12.2f}x"
        )
    for v in streams:
        ms = med[v.name]
        print(f"{v.name:34s} {ms:8.2f} {spread[v.name]:6.0%} {gb(ms, 12):7.1f}")
    mem = {v.name: v.memory for v in variants if v.memory}
    row = {
        "optimizer": opt,
        "size": size,
        "leaves": nl,
        "bytes_per_param": nbytes,
        "ms": med,
        "spread": spread,
        "best_ours": ours_best,
        "best_torch": torch_best,
        "best_ours_vs_optax": med["optax (donated)"] / med[ours_best],
        "best_ours_vs_torch": (med[torch_best] / med[ours_best]) if torch_best else None,
        "memory": mem,
    }
    line = f"best ours = {ours_best}: {row['best_ours_vs_optax']:.2f}x optax (donated)"
    if torch_best:
        line += f", {row['best_ours_vs_torch']:.2f}x {torch_best}"
    print(m.headline(line) if m is not None else line)
    if m is not None:
        row["busy"] = m.busy_reason()
    return row


if __name__ == "__main__":
    main()
