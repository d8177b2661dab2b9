"""SOAP: state bytes per parameter and the cost of the eigenbasis refresh, ours vs
pytorch_optimizer's SOAP, side by side (float32, CPU).

A refresh (one power iteration ``L @ Q`` and a QR per preconditioned dimension, every
``precondition_frequency`` steps) is timed as the difference between a step that refreshes
(``precondition_frequency=1``) and one that never does (a huge frequency); both optimizers
are timed round-robin over the same gradients (the order rotated each repeat) and the medians
are reported. The machine block (``machine.py``) is printed first; on a busy machine the ratios
are marked "not a result", and ``--require-quiet`` refuses to run (or to write ``--json``).

    python benchmarks/soap_bench.py                  # ~1 minute
    python benchmarks/soap_bench.py --repeats 5 --shapes 256x256,512x128
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# XLA's CPU QR and eigh call the LAPACK of scipy's OpenBLAS, whose threads spin-wait on a
# loaded machine: a 512x512 QR took 228 ms with its default threads and 20 ms with one
# (torch, one thread: 17-20 ms). One thread each, for a like-for-like comparison.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo import registry  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

NEVER = 10**9


def parse_shapes(text):
    return [tuple(int(d) for d in s.split("x")) for s in text.split(",")]


def ours_step(shapes, freq):
    """A jitted step of ours, warmed past the first (set-up) call."""
    tx = jz.soap(3e-3, precondition_frequency=freq)
    rng = np.random.default_rng(0)
    params = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    grads = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    state = tx.init(params)
    for _ in range(3):
        _, state = step(params, state, grads)
    jax.block_until_ready(state)

    def run():
        nonlocal state
        _, state = step(params, state, grads)
        jax.block_until_ready(state)

    return run, tx, params


def torch_step(shapes, freq):
    from pytorch_optimizer import SOAP

    rng = np.random.default_rng(0)
    params = [
        torch.tensor(rng.normal(size=s), dtype=torch.float32, requires_grad=True) for s in shapes
    ]
    for p in params:
        p.grad = torch.tensor(rng.normal(size=p.shape), dtype=torch.float32)
    opt = SOAP(params, lr=3e-3, precondition_frequency=freq)
    for _ in range(3):
        opt.step()
    return opt.step, opt, params


def torch_state_bytes(opt, params):
    total = 0
    for p in params:
        for v in opt.state[p].values():
            for t in v if isinstance(v, list) else [v]:
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
    return total / sum(p.numel() for p in params)


def median_ms(fns, repeats, inner):
    timed = bench_machine.interleave_repeated(fns, repeats, inner)
    return {k: v["median"] for k, v in timed.items()}, timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="256x256,512x128,64x32x3x3")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=2)
    # torch with 2 OpenMP threads on the loaded 2-CPU machine ran its SOAP steps 20-30x
    # slower (threads spin-wait for each other); 1 thread is its best case there
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    torch.set_num_threads(args.torch_threads)
    shapes = parse_shapes(args.shapes)
    n = sum(int(np.prod(s)) for s in shapes)
    print(
        f"SOAP on {len(shapes)} float32 arrays {args.shapes} ({n / 1e6:.2f}M parameters), "
        f"jax {jax.__version__}, torch {torch.__version__} ({args.torch_threads} threads), "
        f"{os.cpu_count()} CPUs"
    )

    fns, objs = {}, {}
    for freq, tag in ((1, "refresh"), (NEVER, "plain")):
        fns[f"ours {tag}"], tx, params = ours_step(shapes, freq)
        fns[f"torch {tag}"], opt, tparams = torch_step(shapes, freq)
        objs[tag] = (tx, params, opt, tparams)
    ms, timed = median_ms(fns, args.repeats, args.inner)

    tx, params, opt, tparams = objs["plain"]
    ours_b = registry.state_bytes_per_param(tx, params=params)
    torch_b = torch_state_bytes(opt, tparams)
    print(
        "\nspread (max - min) / median: "
        + ", ".join(f"{k} {v['spread']:.0%}" for k, v in timed.items())
    )
    busy = m.busy_reason()
    if busy:
        print(f"\n**{busy}**: the ratios below are not a result")
    print("\n| | ours | pytorch_optimizer | torch / ours |")
    print("|---|---|---|---|")
    print(f"| state bytes per parameter | {ours_b:.2f} | {torch_b:.2f} | {torch_b / ours_b:.2f} |")
    for tag in ("plain", "refresh"):
        o, t = ms[f"ours {tag}"], ms[f"torch {tag}"]
        print(
            f"| step without refresh, ms | {o:.2f} | {t:.2f} | {t / o:.2f}x |"
            if tag == "plain"
            else f"| step with refresh, ms | {o:.2f} | {t:.2f} | {t / o:.2f}x |"
        )
    ro = ms["ours refresh"] - ms["ours plain"]
    rt = ms["torch refresh"] - ms["torch plain"]
    print(f"| refresh alone (difference), ms | {ro:.2f} | {rt:.2f} | {rt / ro:.2f}x |")
    print(
        f"| per step at precondition_frequency=10, ms | {ms['ours plain'] + ro / 10:.2f} | "
        f"{ms['torch plain'] + rt / 10:.2f} | "
        f"{(ms['torch plain'] + rt / 10) / (ms['ours plain'] + ro / 10):.2f}x |"
    )
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        out = {"machine": block, "state_bytes": {"ours": ours_b, "torch": torch_b}, "ms": ms}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
