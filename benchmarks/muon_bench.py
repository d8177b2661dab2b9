"""Muon's step: jaxopt_zoo vs optax.contrib.muon vs torch.optim.Muon, side by side.

Each at the other's Newton-Schulz precision: ours in float32 against optax (float32), ours in
bfloat16 (``ns_dtype=jnp.bfloat16``: bfloat16 products with float32 accumulation) against
torch (bfloat16 on the CPU as well). One step = momentum, orthogonalization, parameter update;
the JAX steps are jitted with parameters and state donated, torch steps ``torch.optim.Muon``
on tensors with ``.grad`` set. Variants are timed round-robin (repeat after repeat, the order
rotated each repeat) so that a busy neighbour slows all of them alike; the table reports
medians, spreads and ratios (time of the other / ours: > 1 means ours is faster). The machine
block (``machine.py``) is printed and written into ``--json``; ratios measured on a busy
machine are marked "not a result", and ``--require-quiet`` refuses to run or write there.

    python benchmarks/muon_bench.py                      # both shape sets (about a minute)
    python benchmarks/muon_bench.py --shapes transformer --repeats 5

Shape sets: "transformer", the 16 matrices of a 4-layer width-384 transformer (per layer
qkv 384x1152, out 384x384, mlp 384x1536 and 1536x384: 7.1M parameters); "cnn", the
reference CNN's dense layers (5408x256 and 256x10: 1.4M parameters).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import jaxopt_zoo as jz  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine as bench_machine  # noqa: E402

SHAPES: Dict[str, List[Tuple[int, int]]] = {
    "transformer": [(384, 1152), (384, 384), (384, 1536), (1536, 384)] * 4,
    "cnn": [(5408, 256), (256, 10)],
}
LR = 0.02


def jax_variant(tx, shapes) -> Callable[[int], None]:
    rng = np.random.default_rng(0)
    params = {
        f"w{i:02d}": jnp.asarray(rng.normal(size=s) * 0.02, jnp.float32)
        for i, s in enumerate(shapes)
    }
    grads = jax.tree.map(lambda p: p * 0.1 + 0.01, params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    box = [params, tx.init(params)]

    def run(n):
        p, s = box
        for _ in range(n):
            p, s = step(p, s, grads)
        jax.block_until_ready(p)
        box[:] = [p, s]

    run(1)  # compile, warm up
    return run


def torch_variant(shapes) -> Callable[[int], None]:
    import torch

    rng = np.random.default_rng(0)
    # torch's Linear weights are (out, in): the transposed shapes (same Newton-Schulz cost)
    params = [
        torch.tensor(rng.normal(size=s[::-1]) * 0.02, dtype=torch.float32, requires_grad=True)
        for s in shapes
    ]
    for p in params:
        p.grad = p.detach() * 0.1 + 0.01
    opt = torch.optim.Muon(params, lr=LR)

    def run(n):
        for _ in range(n):
            opt.step()

    run(1)
    return run


def time_round_robin(
    variants: Dict[str, Callable[[int], None]], iters: int, repeats: int
) -> Dict[str, Dict[str, float]]:
    """Per variant: median, min, max, spread of ms per step (``machine.interleave``)."""
    calls = {k: (lambda run=run: run(iters)) for k, run in variants.items()}
    return bench_machine.interleave(calls, repeats, per_call=iters)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="also time ours in float32 without the Gram form (ns_method='standard')",
    )
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)

    import torch

    print(
        f"# jax {jax.__version__} "
        f"({jax.default_backend()}), optax {optax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    results = {}
    for key in args.shapes:
        shapes = SHAPES[key]
        n_params = sum(a * b for a, b in shapes)
        variants = {
            "ours f32": jax_variant(jz.muon(LR), shapes),
            "optax f32": jax_variant(optax.contrib.muon(LR), shapes),
            "ours bf16": jax_variant(jz.muon(LR, ns_dtype=jnp.bfloat16), shapes),
            # the compat preset: torch.optim.Muon's arithmetic (bfloat16 Newton-Schulz)
            "torch.muon": jax_variant(jz.get("torch.muon", learning_rate=LR), shapes),
            "torch bf16": torch_variant(shapes),
        }
        if args.ablation:
            variants["ours f32 std"] = jax_variant(jz.muon(LR, ns_method="standard"), shapes)
            # bfloat16 products through XLA:CPU's own bfloat16 GEMM, as before the CPU path
            # took them as float32 products of the upcast operands (newton_schulz._dot)
            ns = jz.optim.newton_schulz
            fast_dot = ns._dot
            ns._dot = lambda x, y, acc: jnp.einsum("bij,bjk->bik", x, y, preferred_element_type=acc)
            try:
                variants["ours bf16 gemm"] = jax_variant(jz.muon(LR, ns_dtype=jnp.bfloat16), shapes)
            finally:
                ns._dot = fast_dot
        times = time_round_robin(variants, args.iters, args.repeats)
        med = {k: v["median"] for k, v in times.items()}
        row = {
            "matrices": len(shapes),
            "params": n_params,
            "ms": med,
            "spread": {k: v["spread"] for k, v in times.items()},
            "optax_f32_over_ours_f32": med["optax f32"] / med["ours f32"],
            "torch_bf16_over_ours_bf16": med["torch bf16"] / med["ours bf16"],
            "torch_bf16_over_torch_muon": med["torch bf16"] / med["torch.muon"],
        }
        results[key] = row
        print(
            f"\n{key}: {len(shapes)} matrices, {n_params / 1e6:.1f}M parameters "
            f"(median of {args.repeats} x {args.iters} steps, ms per step)"
        )
        for k, v in med.items():
            t = times[k]
            print(f"  {k:<14} {v:8.1f} ms   (min {t['min']:.1f}, max {t['max']:.1f})")
        print(m.headline(f"  optax f32 / ours f32   = {row['optax_f32_over_ours_f32']:.2f}x"))
        print(m.headline(f"  torch bf16 / ours bf16 = {row['torch_bf16_over_ours_bf16']:.2f}x"))
        print(m.headline(f"  torch bf16 / torch.muon = {row['torch_bf16_over_torch_muon']:.2f}x"))
        row["busy"] = m.busy_reason()
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": block, **results}, indent=2))
    return results


if __name__ == "__main__":
    main()
