"""8-bit AdamW's step: ours (native kernel and plain XLA) vs torch's fused float32 AdamW,
torchao's and bitsandbytes' AdamW8bit, side by side.

One step = read the parameters, gradients and state, write the parameters and state, on
8M float32 parameters (16 leaves of 500K by default). Variants:

- ``ours 8-bit native``: ``jz.fused_apply(jz.fuse(jz.adamw_8bit(...)))`` on float32
  ``FlatParams``: the C++ kernel over uint8 codes and per-block absmax (docs/low-bit.md);
- ``ours 8-bit XLA`` / ``ours f32 XLA``: ``jz.adamw_8bit`` / ``jz.adamw`` on the tree, the plain
  jitted step (``update`` then ``apply_updates``, parameters and state donated);
- ``ours f32 native``: ``fused_apply(fuse(jz.adamw))`` on ``FlatParams``;
- ``torch fused f32``: ``torch.optim.AdamW(fused=True)``; ``torchao 8-bit``:
  ``torchao.optim.AdamW8bit`` (its step through ``torch.compile`` unless ``--torchao-eager``);
  ``bnb 8-bit``: ``bitsandbytes.optim.AdamW8bit`` (its CPU kernels).

Timed in interleaved rounds (``machine.interleave``), median ms per step; the machine block
(CPU, ISA flags, load before and after) is printed, and ratios from a busy machine are marked.
Issue 19's targets: the native 8-bit step >= 1.3x torch's fused float32 AdamW and >= 3x
torchao's and bitsandbytes' 8-bit steps; the plain XLA 8-bit step at most 1.3x the time of
the float32 one.

    python benchmarks/lowbit_bench.py                    # ~2 minutes
    python benchmarks/lowbit_bench.py --size 1M --repeats 2 --skip bnb   # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo.registry.memory import state_bytes_per_param  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

SIZES = {"100K": 100_000, "1M": 1_000_000, "8M": 8_000_000}
HP = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=1e-2)


def make_tree(total: int, leaves: int, seed: int) -> Dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    n = total // leaves
    return {f"w{i:02d}": jnp.asarray(rng.normal(size=n) * 0.1, jnp.float32) for i in range(leaves)}


def jax_variant(tx: Any, params: Any, grads: Any, fused: bool) -> Callable[[], None]:
    if fused:
        tx = jz.fuse(tx)
        step = jax.jit(jz.fused_apply(tx), donate_argnums=(0, 1))
    else:

        def plain(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        step = jax.jit(plain, donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params)]
    box.append(tx.init(box[0]))

    def run() -> None:
        box[0], box[1] = step(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    run()
    run()
    return run


def torch_variant(name: str, total: int, leaves: int, eager: bool) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(total // leaves) * 0.1) for _ in range(leaves)]
    for p in ps:
        p.grad = torch.randn_like(p)
    kw = dict(lr=HP["lr"], betas=(HP["b1"], HP["b2"]), eps=HP["eps"], weight_decay=HP["wd"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "torch fused f32":
            opt = torch.optim.AdamW(ps, fused=True, **kw)
        elif name == "torchao 8-bit":
            import torchao.optim as ao

            if eager:  # torchao's step without torch.compile (its C++ compile can be slow)
                torch.compile = lambda f=None, **_: f if f is not None else (lambda g: g)
            opt = ao.AdamW8bit(ps, **kw)
        else:
            import bitsandbytes as bnb

            opt = bnb.optim.AdamW8bit(ps, **kw)
    opt.step()
    opt.step()

    def run() -> None:
        opt.step()

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="8M", choices=list(SIZES))
    ap.add_argument("--leaves", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--skip", default="", help="comma-separated: torch, torchao, bnb")
    ap.add_argument("--torchao-eager", action="store_true", help="torchao without torch.compile")
    bench_machine.add_arguments(ap)
    a = ap.parse_args(argv)
    mach = bench_machine.start(a)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    total, skip = SIZES[a.size], set(filter(None, a.skip.split(",")))
    params, grads = make_tree(total, a.leaves, 0), make_tree(total, a.leaves, 1)
    flat_p, flat_g = jz.FlatParams.from_tree(params), jz.FlatParams.from_tree(grads)
    lr, wd = HP["lr"], HP["wd"]
    variants: Dict[str, Callable[[], None]] = {
        "ours 8-bit native": jax_variant(
            jz.adamw_8bit(lr, weight_decay=wd), flat_p, flat_g, fused=True
        ),
        "ours f32 native": jax_variant(jz.adamw(lr, weight_decay=wd), flat_p, flat_g, True),
        "ours 8-bit XLA": jax_variant(jz.adamw_8bit(lr, weight_decay=wd), params, grads, False),
        "ours f32 XLA": jax_variant(jz.adamw(lr, weight_decay=wd), params, grads, False),
    }
    if "torch" not in skip:
        variants["torch fused f32"] = torch_variant("torch fused f32", total, a.leaves, False)
    if "torchao" not in skip:
        variants["torchao 8-bit"] = torch_variant("torchao 8-bit", total, a.leaves, a.torchao_eager)
    if "bnb" not in skip:
        variants["bnb 8-bit"] = torch_variant("bnb 8-bit", total, a.leaves, False)
    print(f"jax {jax.__version__}, torch {torch.__version__}; {total:,} float32 parameters "
          f"in {a.leaves} leaves", flush=True)  # fmt: skip
    timed = bench_machine.interleave(variants, rounds=a.repeats, pause=0.05)
    print()
    print("| variant | ms per step | spread |")
    print("|---|---:|---:|")
    for k, t in timed.items():
        print(f"| {k} | {t['median']:.1f} | {t['spread']:.0%} |")
    bpp = {
        "adamw_8bit": state_bytes_per_param(jz.adamw_8bit(lr), params),
        "adamw": state_bytes_per_param(jz.adamw(lr), params),
    }
    print(f"\nstate bytes per parameter: 8-bit {bpp['adamw_8bit']:.3f}, float32 {bpp['adamw']:.3f}")
    ours = timed["ours 8-bit native"]["median"]
    print()
    for k, target in (("torch fused f32", 1.3), ("torchao 8-bit", 3.0), ("bnb 8-bit", 3.0)):
        if k in timed:
            r = timed[k]["median"] / ours
            print(mach.headline(f"{k} / ours 8-bit native = {r:.2f}x (target >= {target}x)"))
    r = timed["ours 8-bit XLA"]["median"] / timed["ours f32 XLA"]["median"]
    print(mach.headline(f"ours 8-bit XLA / ours f32 XLA = {r:.2f} (target <= 1.3)"))
    block = mach.finish()
    print(f"# load average {block['load_before']} before, {block['load_after']} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
