"""Shampoo: per-step time, the cost of the root refresh and state bytes per parameter, ours vs
pytorch_optimizer's ScalableShampoo (and its plain Shampoo), side by side (float32, CPU).

A refresh (every statistic's inverse p-th root, every ``precondition_frequency`` steps) is
timed as the difference between a step that refreshes (``precondition_frequency=1``) and one
that never does (a huge frequency); every optimizer is timed round-robin over the same
gradients (the order rotated each repeat) and the medians are reported. Pairs compared: ours
with ``eigh`` roots against ``ScalableShampoo(use_svd=True)``, ours with
``root_method="newton"`` against its default coupled Newton, and (``--plain``) ours set up as
the plain ``Shampoo`` (no blocks, no grafting) against ``Shampoo``. All precondition from the
first step (``start_preconditioning_step=1``), blocks of 512. The machine block
(``machine.py``) is printed first; on a busy machine the ratios are marked "not a result", and
``--require-quiet`` refuses to run (or to write ``--json``).

    python benchmarks/shampoo_bench.py --shapes transformer      # a few minutes
    python benchmarks/shampoo_bench.py --shapes cnn --repeats 5

Shape sets: "transformer", the 16 matrices of a 4-layer width-384 transformer (per layer qkv
384x1152, out 384x384, mlp 384x1536 and 1536x384: 7.1M parameters); "cnn", the reference CNN's
parameters (conv 3x3x1x32, dense 5408x256 and 256x10, biases: 1.4M parameters); or a list
such as ``256x256,512x128``. The plain ``Shampoo`` is left out by default: on the CNN it
would keep and decompose a 5408x5408 statistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# one LAPACK thread each, as soap_bench.py (spin-waiting OpenBLAS threads on a loaded machine)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo import registry  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

NEVER = 10**9
SHAPE_SETS = {
    "transformer": [(384, 1152), (384, 384), (384, 1536), (1536, 384)] * 4,
    "cnn": [(3, 3, 1, 32), (32,), (5408, 256), (256,), (256, 10), (10,)],
}
PLAIN = dict(
    b1=0.0,
    b2=1.0,
    block_size=10**9,
    graft=None,
    nesterov=False,
    merge_dims=False,
    precondition_1d=True,
    epsilon_mode="init",
)


def parse_shapes(text):
    if text in SHAPE_SETS:
        return SHAPE_SETS[text]
    return [tuple(int(d) for d in s.split("x")) for s in text.split(",")]


def ours_step(shapes, freq, **kw):
    """A jitted step of ours, warmed up."""
    tx = jz.shampoo(1e-3, precondition_frequency=freq, start_preconditioning_step=1, **kw)
    rng = np.random.default_rng(0)
    params = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    grads = [jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32) for s in shapes]
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    state = tx.init(params)
    for _ in range(2):
        _, state = step(params, state, grads)
    jax.block_until_ready(state)

    def run():
        nonlocal state
        _, state = step(params, state, grads)
        jax.block_until_ready(state)

    return run, tx, params


def torch_step(shapes, freq, kind):
    from pytorch_optimizer import ScalableShampoo, Shampoo

    rng = np.random.default_rng(0)
    params = [
        torch.tensor(rng.normal(size=s), dtype=torch.float32, requires_grad=True) for s in shapes
    ]
    for p in params:
        p.grad = torch.tensor(rng.normal(size=p.shape), dtype=torch.float32)
    if kind == "plain":
        opt = Shampoo(params, lr=1e-3, preconditioning_compute_steps=freq)
    else:
        opt = ScalableShampoo(
            params,
            lr=1e-3,
            start_preconditioning_step=1,
            preconditioning_compute_steps=freq,
            block_size=512,
            use_svd=kind == "svd",
        )
    for _ in range(2):
        opt.step()
    return opt.step, opt, params


def _tensor_bytes(v, seen):
    if id(v) in seen:
        return 0
    seen.add(id(v))
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, (list, tuple)):
        return sum(_tensor_bytes(x, seen) for x in v)
    if isinstance(v, dict):
        return sum(_tensor_bytes(x, seen) for x in v.values())
    if type(v).__module__.startswith("pytorch_optimizer") and hasattr(v, "__dict__"):
        return sum(_tensor_bytes(x, seen) for x in vars(v).values())
    return 0


def torch_state_bytes(opt, params):
    """Bytes of every tensor the optimizer's state holds (its PreConditioner and graft
    objects walked), per parameter."""
    seen: set = set()
    total = sum(_tensor_bytes(opt.state[p], seen) for p in params)
    return total / sum(p.numel() for p in params)


def median_ms(fns, repeats, inner):
    timed = bench_machine.interleave_repeated(fns, repeats, inner)
    return {k: v["median"] for k, v in timed.items()}, timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="transformer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=1)
    ap.add_argument("--plain", action="store_true", help="also the plain Shampoo pair")
    ap.add_argument("--no-newton", action="store_true", help="leave the Newton pair out")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch's threads (default: every core, as XLA uses them)",
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    torch.set_num_threads(args.torch_threads)
    shapes = parse_shapes(args.shapes)
    n = sum(int(np.prod(s)) for s in shapes)
    print(
        f"Shampoo on {len(shapes)} float32 arrays ({args.shapes}, {n / 1e6:.2f}M parameters), "
        f"jax {jax.__version__}, torch {torch.__version__} ({args.torch_threads} threads), "
        f"{os.cpu_count()} CPUs"
    )
    pairs = {
        "eigh vs ScalableShampoo(use_svd=True)": (dict(epsilon_mode="init"), "svd"),
        "newton vs ScalableShampoo (Newton)": (dict(root_method="newton"), "newton"),
    }
    if args.no_newton:
        del pairs["newton vs ScalableShampoo (Newton)"]
    if args.plain:
        pairs["plain vs Shampoo"] = (PLAIN, "plain")
    fns, objs = {}, {}
    for pair, (kw, kind) in pairs.items():
        for freq, tag in ((1, "refresh"), (NEVER, "plain")):
            fns[(pair, "ours", tag)], tx, params = ours_step(shapes, freq, **kw)
            fns[(pair, "torch", tag)], opt, tparams = torch_step(shapes, freq, kind)
            objs[(pair, tag)] = (tx, params, opt, tparams)
    named = {" / ".join(k): f for k, f in fns.items()}
    ms_named, timed = median_ms(named, args.repeats, args.inner)
    ms = {k: ms_named[" / ".join(k)] for k in fns}
    print(
        "\nspread (max - min) / median: "
        + ", ".join(f"{k} {v['spread']:.0%}" for k, v in timed.items())
    )
    busy = m.busy_reason()
    if busy:
        print(f"\n**{busy}**: the ratios below are not a result")
    out = {"machine": None, "pairs": {}}
    for pair in pairs:
        tx, params, opt, tparams = objs[(pair, "plain")]
        ours_b = registry.state_bytes_per_param(tx, params=params)
        torch_b = torch_state_bytes(opt, tparams)
        o = {t: ms[(pair, "ours", t)] for t in ("plain", "refresh")}
        t_ = {t: ms[(pair, "torch", t)] for t in ("plain", "refresh")}
        ro, rt = o["refresh"] - o["plain"], t_["refresh"] - t_["plain"]
        print(f"\n{pair}\n\n| | ours | pytorch_optimizer | torch / ours |\n|---|---|---|---|")
        print(f"| state bytes per parameter | {ours_b:.2f} | {torch_b:.2f} | "
              f"{torch_b / ours_b:.2f} |")  # fmt: skip
        print(f"| step without refresh, ms | {o['plain']:.2f} | {t_['plain']:.2f} | "
              f"{t_['plain'] / o['plain']:.2f}x |")  # fmt: skip
        print(f"| step with refresh, ms | {o['refresh']:.2f} | {t_['refresh']:.2f} | "
              f"{t_['refresh'] / o['refresh']:.2f}x |")  # fmt: skip
        print(f"| refresh alone (difference), ms | {ro:.2f} | {rt:.2f} | "
              f"{rt / ro if ro > 0 else float('nan'):.2f}x |")  # fmt: skip
        out["pairs"][pair] = {
            "state_bytes": {"ours": ours_b, "torch": torch_b},
            "ms": {"ours": o, "torch": t_},
        }
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        out["machine"] = block
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
