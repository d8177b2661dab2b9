"""8-bit Adam state against float32 Adam, plain XLA path, beside torch, torchao and
bitsandbytes on the CPU.

One AdamW step on float32 parameters (default 8M in 8 leaves of 1000 x 1000), side by side
in interleaved rounds (``machine.interleave``), median ms per step:

- ours: ``jz.adamw`` (float32 state) and ``jz.adamw_8bit`` (8-bit state: dequantize, update,
  quantize, fused by XLA), each ``update`` + ``apply_updates`` in one jitted step with
  parameters and state donated;
- torch: ``torch.optim.AdamW(fused=True)`` (or the foreach path where fused is missing);
- torchao 0.18 ``AdamW8bit`` (its ``torch.compile``d step) and bitsandbytes 0.50
  ``AdamW8bit`` (its CPU kernels), where installed.

Ratios are the other's time over ours (> 1: ours faster) and ours 8-bit over ours float32
(the issue's target: at most 1.3). Prints a Markdown table and the machine block.

    python benchmarks/lowbit_bench.py                     # 8M parameters
    python benchmarks/lowbit_bench.py --size 100K --repeats 2   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Callable, Dict

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

SIZES = {"100K": 100_000, "1M": 1_000_000, "8M": 8_000_000}
HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)


def _shapes(total: int):
    rows = 1000 if total >= 1_000_000 else 100
    return [(rows, 1000)] * max(1, total // (rows * 1000))


def jax_step(tx, shapes) -> Callable[[], Any]:
    rng = np.random.default_rng(0)
    params = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    grads = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"p": params, "s": state}

    def run():
        box["p"], box["s"] = step(box["p"], box["s"], grads)
        jax.block_until_ready(box["p"])

    run()
    return run


def torch_step(make: Callable[[Any], Any], shapes) -> Callable[[], Any]:
    import torch

    rng = np.random.default_rng(0)
    ps = [
        torch.nn.Parameter(torch.from_numpy(rng.normal(size=s).astype(np.float32))) for s in shapes
    ]
    for p in ps:
        p.grad = torch.from_numpy(rng.normal(size=p.shape).astype(np.float32))
    opt = make(ps)

    def run():
        opt.step()

    run()
    return run


def variants(shapes) -> Dict[str, Callable[[], Any]]:
    out = {
        "ours adamw (f32 state)": jax_step(jz.adamw(1e-3, weight_decay=1e-2), shapes),
        "ours adamw_8bit": jax_step(jz.adamw_8bit(1e-3, weight_decay=1e-2), shapes),
    }
    try:
        import torch

        def fused(ps):
            try:
                return torch.optim.AdamW(ps, **HP, fused=True)
            except (RuntimeError, TypeError):
                return torch.optim.AdamW(ps, **HP, foreach=True)

        out["torch AdamW (fused)"] = torch_step(fused, shapes)
    except ImportError:
        print("torch not installed: skipped")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torchao.optim as ao

            out["torchao AdamW8bit"] = torch_step(lambda ps: ao.AdamW8bit(ps, **HP), shapes)
        except ImportError:
            print("torchao not installed: skipped")
        try:
            import bitsandbytes as bnb

            out["bitsandbytes AdamW8bit"] = torch_step(
                lambda ps: bnb.optim.AdamW8bit(ps, **HP), shapes
            )
        except ImportError:
            print("bitsandbytes not installed: skipped")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="8M")
    ap.add_argument("--repeats", type=int, default=7)
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    shapes = _shapes(SIZES[args.size])
    n = sum(r * c for r, c in shapes)
    vs = variants(shapes)
    res = bench_machine.interleave(vs, args.repeats, pause=0.05)
    ours8 = res["ours adamw_8bit"]["median"]
    ours32 = res["ours adamw (f32 state)"]["median"]
    print(m.headline(f"\nAdamW step, {n / 1e6:.1f}M float32 parameters, median ms per step"))
    print("\n| variant | ms/step | spread | its time / ours 8-bit |")
    print("|---|---:|---:|---:|")
    for name, r in res.items():
        print(f"| {name} | {r['median']:.2f} | {r['spread']:.0%} | {r['median'] / ours8:.2f} |")
    print(f"\nours 8-bit / ours float32: {ours8 / ours32:.2f} (target <= 1.3)")
    print(m.finish())


if __name__ == "__main__":
    main()
