"""GPU check: the parity tests, Adam, Muon and the sweep on a GPU, in one run, into one JSON.

    python benchmarks/gpu_check.py --json gpu_check.json          # on a GPU machine, < 4 min
    python benchmarks/gpu_check.py --smoke --json smoke.json      # anywhere: CPU, tiny sizes

Four checks, each recorded with what it measured, its tolerance and whether it passed:

1. ``parity_tests``: the parity test files (optax, torch, the new optimizers, Muon, SOAP) run
   by pytest with JAX on the GPU (the references, torch and Keras, on the CPU as in the suite),
   float32 matrix products at full precision (``JAX_DEFAULT_MATMUL_PRECISION=highest``: the
   GPU's TF32 default would fail the float32 tolerances of matrix-based optimizers).
2. ``adam_vs_torch_fused``: ``jz.adam`` against ``torch.optim.Adam(fused=True)`` on the same
   device (CUDA; CPU in ``--smoke``): a float32 and a float64 trajectory over 4 shapes
   (relative error < 1e-5 / 1e-6, the project's parity standard), then the update's speed at
   ``--adam-size`` parameters: ours (plain, and ``fused_apply(fuse(adam))`` on FlatParams),
   optax, torch fused and foreach, interleaved (``machine.interleave``).
3. ``muon_vs_torch``: ``jaxopt_zoo.compat.torch.muon`` against ``torch.optim.Muon`` (bfloat16
   Newton-Schulz in both; relative trajectory error < 1e-3 as tests/test_muon.py), then one
   step's speed on the 16 matrices of a width-384 transformer: ours in bfloat16 vs torch,
   ours in float32 vs ``optax.contrib.muon``.
4. ``sweep_vs_sequential``: 8 Adam configurations (4 learning rates x 2 seeds) of the MLP on
   synthetic MNIST-shaped data trained one after the other through ``train_and_evaluate``
   and at once by ``jaxopt_zoo.train.sweep.sweep``: the final parameters must agree (relative
   error < 1e-5: float32 rounding, as the vmapped sums may reduce in another order; 3e-7 on
   the CPU at the smoke size), then wall seconds of both, alternated.

Speed ratios are "time of the other / ours" (> 1: ours is faster) and carry the machine
block's verdict (a busy host marks them "not a result"). Without a GPU the script says so and
exits 2 unless ``--smoke`` (the same checks at tiny sizes on the CPU, for the test suite).
Torch without CUDA (a CPU build) is compared on the CPU and the JSON says so. Exit code 0
when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

# JAX must not take 75% of the GPU's memory: torch shares the device in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
import machine as bench_machine  # noqa: E402

PARITY_FILES = [
    "tests/test_parity_optax.py",
    "tests/test_parity_torch.py",
    "tests/test_parity_new.py",
    "tests/test_muon.py",
    "tests/test_parity_soap.py",
]
# --smoke: one fast parity case, so the suite's smoke test stays short
SMOKE_PARITY = ["tests/test_parity_optax.py::test_trajectory_matches_optax[adam-float32]"]
SHAPES = [(16, 8), (3, 3, 2, 4), (10,), ()]  # matrix, conv kernel, vector, scalar
TOL = {"float32": 1e-5, "float64": 1e-6}
MUON_TOL = 1e-3  # bfloat16 Newton-Schulz vs bfloat16 Newton-Schulz (tests/test_muon.py)
SWEEP_TOL = 1e-5


def devices() -> Dict[str, Any]:
    import jax
    import torch

    cuda = torch.cuda.is_available()
    return {
        "jax_backend": jax.default_backend(),
        "jax_devices": [d.device_kind for d in jax.devices()],
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_cuda": cuda,
        "torch_device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }


def max_rel_err(a: Any, b: Any) -> float:
    """max |a - b| / max |b| per leaf, the largest over leaves (tests/helpers.max_rel_err)."""
    import jax
    import numpy as np

    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return worst


def ratios(med: Dict[str, float], pairs: Dict[str, tuple], m: bench_machine.Machine) -> dict:
    """``name: (other, ours)`` -> ``{name: time(other) / time(ours)}``, and the verdict."""
    out = {k: med[o] / med[u] for k, (o, u) in pairs.items() if o in med and u in med}
    return {"ratios": out, "busy": m.busy_reason()}


# --------------------------------------------------------------------------- #
# 1. The parity tests
# --------------------------------------------------------------------------- #
def check_parity_tests(targets: List[str], workers: int, timeout: float) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:benchmark"]
    cmd += ["-p", "no:cacheprovider", *targets]
    import importlib.util

    if workers > 1 and importlib.util.find_spec("xdist") is not None:  # pytest-xdist
        cmd += ["-n", str(workers), "--dist", "loadfile"]
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
    env.pop("JAX_PLATFORMS", None)  # the default backend: the GPU where there is one
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        out, rc = out + f"\n(timed out after {timeout:.0f} s)", None
    counts = {
        k: int(n)
        for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", out[-3000:])
    }
    ok = rc == 0 and counts.get("passed", 0) > 0
    return {
        "ok": ok,
        "command": " ".join(cmd[1:]),
        "returncode": rc,
        "counts": counts,
        "seconds": time.perf_counter() - t0,
        "tail": out[-3000:] if not ok else out[-300:],
    }


# --------------------------------------------------------------------------- #
# 2. Adam vs torch's fused Adam
# --------------------------------------------------------------------------- #
def adam_trajectory_errors(torch, tdev, steps: int) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_zoo as jz

    hp = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8)
    out = {}
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(0)
        params = [rng.normal(size=s).astype(dtype) for s in SHAPES]
        grads = [rng.normal(size=(steps, *s)).astype(dtype) for s in SHAPES]
        tx = jz.adam(hp["lr"], b1=hp["betas"][0], b2=hp["betas"][1], eps=hp["eps"])

        @jax.jit
        def run(p, g, tx=tx):
            def body(carry, gt):
                p, s = carry
                u, s = tx.update(gt, s, p)
                p = optax.apply_updates(p, u)
                return (p, s), p

            return jax.lax.scan(body, (p, tx.init(p)), g)[1]

        with jax.enable_x64(dtype == "float64"):
            ours = jax.device_get(run([jnp.asarray(p) for p in params], grads))
        tdtype = getattr(torch, dtype)
        ps = [torch.tensor(p, dtype=tdtype, device=tdev, requires_grad=True) for p in params]
        opt = torch.optim.Adam(ps, **hp, fused=True)
        theirs: List[list] = [[] for _ in ps]
        for t in range(steps):
            for p, g in zip(ps, grads):
                p.grad = torch.tensor(g[t], dtype=tdtype, device=tdev)
            opt.step()
            for i, p in enumerate(ps):
                theirs[i].append(p.detach().cpu().numpy().copy())
        err = max_rel_err(ours, [np.stack(t) for t in theirs])
        out[dtype] = {"max_rel_err": err, "tol": TOL[dtype], "ok": err < TOL[dtype]}
    return out


def adam_speed(torch, tdev, size: int, leaves: int, rounds: int, m) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_zoo as jz
    from jaxopt_zoo.fast import FlatParams, fused_apply

    rng = np.random.default_rng(0)
    sizes = [size // leaves] * leaves
    sizes[-1] += size - sum(sizes)
    params = {f"p{i:03d}": rng.standard_normal(n, np.float32) for i, n in enumerate(sizes)}
    grads = {k: jnp.asarray(rng.standard_normal(v.shape, np.float32)) for k, v in params.items()}
    sync = torch.cuda.synchronize if tdev == "cuda" else (lambda: None)

    def jax_run(tx, p, g, step=None):
        def plain(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        f = jax.jit(step or plain, donate_argnums=(0, 1))
        box = [p, tx.init(p)]

        def run():
            for _ in range(10):
                box[0], box[1] = f(box[0], box[1], g)
            jax.block_until_ready(box)

        run()
        return run

    def torch_run(kind):
        ps = [torch.tensor(v, device=tdev, requires_grad=True) for v in params.values()]
        for p in ps:
            p.grad = torch.randn_like(p)
        opt = torch.optim.Adam(ps, lr=1e-3, **{kind: True})

        def run():
            for _ in range(10):
                opt.step()
            sync()

        run()
        return run

    tree = lambda: {k: jnp.asarray(v) for k, v in params.items()}  # noqa: E731
    fp = FlatParams.from_tree(tree())
    fg = FlatParams(fp.layout.flatten(grads), fp.layout)
    fused = jz.fuse(jz.adam(1e-3))
    variants = {
        "ours": jax_run(jz.adam(1e-3), tree(), grads),
        "ours fused_apply (FlatParams)": jax_run(fused, fp, fg, step=fused_apply(fused)),
        "optax": jax_run(optax.adam(1e-3), tree(), grads),
        "torch fused": torch_run("fused"),
        "torch foreach": torch_run("foreach"),
    }
    timed = bench_machine.interleave(variants, rounds, per_call=10, pause=0.01)
    med = {k: v["median"] for k, v in timed.items()}
    best = min(("ours", "ours fused_apply (FlatParams)"), key=lambda k: med[k])
    out = {
        "params": size,
        "leaves": leaves,
        "ms_per_update": med,
        "spread": {k: v["spread"] for k, v in timed.items()},
        "best_ours": best,
        **ratios(med, {"torch fused / best ours": ("torch fused", best)}, m),
    }
    out["ratios"]["optax / best ours"] = med["optax"] / med[best]
    return out


# --------------------------------------------------------------------------- #
# 3. Muon vs torch.optim.Muon
# --------------------------------------------------------------------------- #
def muon_trajectory_error(torch, tdev, steps: int) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxopt_zoo.compat import torch as tc

    shapes = [(9, 4), (3, 8), (5, 5), (9, 4)]
    rng = np.random.default_rng(0)
    params = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [rng.normal(size=(steps, *s)).astype(np.float32) for s in shapes]
    tx = tc.muon(lr=0.02)

    @jax.jit
    def run(p, g):
        def body(carry, gt):
            p, s = carry
            u, s = tx.update(gt, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p, tx.init(p)), g)[1]

    ours = jax.device_get(run([jnp.asarray(p) for p in params], grads))
    ps = [torch.tensor(p, device=tdev, requires_grad=True) for p in params]
    opt = torch.optim.Muon(ps, lr=0.02)
    theirs: List[list] = [[] for _ in ps]
    for t in range(steps):
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g[t], device=tdev)
        opt.step()
        for i, p in enumerate(ps):
            theirs[i].append(p.detach().cpu().numpy().copy())
    theirs_np = [np.stack(t) for t in theirs]
    moved = max(float(np.abs(t[-1] - p).max()) for t, p in zip(theirs_np, params))
    err = max_rel_err(ours, theirs_np)
    return {"max_rel_err": err, "tol": MUON_TOL, "moved": moved, "ok": err < MUON_TOL}


def muon_speed(torch, tdev, shapes, rounds: int, m) -> Dict[str, Any]:
    import jax.numpy as jnp
    import numpy as np
    import optax.contrib
    from muon_bench import LR, jax_variant

    import jaxopt_zoo as jz

    sync = torch.cuda.synchronize if tdev == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    ps = [
        torch.tensor(rng.normal(size=s[::-1]) * 0.02, dtype=torch.float32, device=tdev)
        for s in shapes
    ]
    ps = [p.requires_grad_(True) for p in ps]
    for p in ps:
        p.grad = p.detach() * 0.1 + 0.01
    opt = torch.optim.Muon(ps, lr=LR)

    def torch_step():
        opt.step()
        sync()

    torch_step()
    runs: Dict[str, Callable[[], None]] = {
        "ours f32": lambda r=jax_variant(jz.muon(LR), shapes): r(1),
        "optax f32": lambda r=jax_variant(optax.contrib.muon(LR), shapes): r(1),
        "ours bf16": lambda r=jax_variant(jz.muon(LR, ns_dtype=jnp.bfloat16), shapes): r(1),
        "torch bf16": torch_step,
    }
    timed = bench_machine.interleave(runs, rounds)
    med = {k: v["median"] for k, v in timed.items()}
    return {
        "matrices": len(shapes),
        "params": sum(a * b for a, b in shapes),
        "ms_per_step": med,
        "spread": {k: v["spread"] for k, v in timed.items()},
        **ratios(
            med,
            {
                "optax f32 / ours f32": ("optax f32", "ours f32"),
                "torch bf16 / ours bf16": ("torch bf16", "ours bf16"),
            },
            m,
        ),
    }


# --------------------------------------------------------------------------- #
# 4. The sweep vs sequential runs
# --------------------------------------------------------------------------- #
def check_sweep(
    lrs, seeds, steps: int, batch: int, rounds: int, m, smoke: bool = False
) -> Dict[str, Any]:
    import jax
    import numpy as np

    import jaxopt_zoo as jz
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train import TrainConfig, train_and_evaluate
    from jaxopt_zoo.train.sweep import SweepConfig, sweep

    rng = np.random.default_rng(0)
    n, n_val = steps * batch, 4 * batch
    images = rng.random((n + n_val, 28, 28, 1), dtype=np.float32)
    labels = (images.reshape(len(images), -1)[:, :10].argmax(1)).astype(np.int32)  # learnable
    train, val = (images[:n], labels[:n]), (images[n:], labels[n:])
    # --smoke: no evaluation, and the seeds of a learning rate share one optimizer object (one
    # compile); the GPU run compiles each configuration, as separate `train` commands would
    val = None if smoke else val
    model = get_model("mlp")
    out: Dict[str, Any] = {"configs": len(lrs) * len(seeds), "steps": steps, "batch": batch}

    def sequential():
        params = []
        for lr in lrs:
            shared = jz.adam(lr)
            for seed in seeds:
                config = TrainConfig(batch_size=batch, epochs=1, seed=seed, progress=False)
                tx = shared if smoke else jz.adam(lr)
                state, _ = train_and_evaluate(model, tx, train, val, config)
                params.append(jax.device_get(state.params))
        return params

    def swept():
        config = SweepConfig(batch_size=batch, epochs=1)
        return sweep(model, jz.adam, {"learning_rate": lrs}, seeds, train, val, config).params

    walls: Dict[str, List[float]] = {"sequential": [], "sweep": []}
    results: Dict[str, Any] = {}
    for order in bench_machine.rotated_rounds(["sequential", "sweep"], rounds):
        for mode in order:
            t0 = time.perf_counter()
            results[mode] = (sequential if mode == "sequential" else swept)()
            walls[mode].append(time.perf_counter() - t0)
    seq, swp = results["sequential"], results["sweep"]
    errs = [max_rel_err(jax.tree.map(lambda x, i=i: x[i], swp), seq[i]) for i in range(len(seq))]
    spread = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(seq[0]), jax.tree.leaves(seq[-1]))
    )
    out["parity"] = {
        "max_rel_err": max(errs),
        "tol": SWEEP_TOL,
        "configs_differ_by": spread,  # not one run copied
        "ok": max(errs) < SWEEP_TOL and spread > 0,
    }
    med = {k: float(np.median(v)) for k, v in walls.items()}
    out["speed"] = {
        "wall_s": walls,
        "median_wall_s": med,
        **ratios(med, {"sequential / sweep": ("sequential", "sweep")}, m),
    }
    out["ok"] = out["parity"]["ok"]
    return out


# --------------------------------------------------------------------------- #
def run_check(name: str, fn: Callable[[], Dict[str, Any]], results: Dict[str, Any]) -> None:
    print(f"[{name}] ...", flush=True)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 -- a failed check is a result, the others still run
        r = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    r.setdefault("seconds", time.perf_counter() - t0)
    r["cpu_seconds"] = _cpu_seconds() - c0  # this process and its finished children
    results[name] = r
    print(f"[{name}] {'ok' if r['ok'] else 'FAILED'} ({r['seconds']:.1f} s)", flush=True)


def _cpu_seconds() -> float:
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="gpu_check.json", help="where to write the results")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs without a GPU")
    ap.add_argument("--parity-workers", type=int, default=8, help="pytest-xdist workers")
    ap.add_argument("--parity-timeout", type=float, default=150.0)
    ap.add_argument("--skip", default="", help="comma-separated checks to skip")
    ap.add_argument("--adam-size", type=int, default=8_000_000)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    m = bench_machine.start(args)
    import jax
    import torch

    jax.config.update("jax_numpy_rank_promotion", "raise")  # as the test suite
    dev = devices()
    gpu = dev["jax_backend"] == "gpu"
    record: Dict[str, Any] = {"smoke": args.smoke, "gpu": gpu, "devices": dev}
    if not gpu:
        record["note"] = f"no GPU: JAX's backend is {dev['jax_backend']}"
        if args.smoke:
            record["note"] += "; ran the same checks on the CPU at tiny sizes (--smoke)"
    tdev = "cuda" if dev["torch_cuda"] else "cpu"
    if gpu and tdev == "cpu":
        record["torch_note"] = (
            f"torch {dev['torch']} has no CUDA: torch ran on the CPU, so its speed is not "
            "comparable (install a CUDA build of torch for the GPU comparison)"
        )
    print(f"# devices: {dev}", flush=True)
    if not gpu and not args.smoke:
        record["ok"], record["checks"] = False, {}
        record["machine"] = m.finish()
        Path(args.json).write_text(json.dumps(record, indent=1))
        print(f"{record['note']}: nothing checked; --smoke runs the checks on the CPU")
        return 2

    small = args.smoke
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    checks: Dict[str, Any] = {}
    todo: Dict[str, Callable[[], Dict[str, Any]]] = {
        "parity_tests": lambda: check_parity_tests(
            SMOKE_PARITY if small else PARITY_FILES,
            1 if small else args.parity_workers,
            args.parity_timeout,
        ),
        "adam_vs_torch_fused": lambda: _with_ok(
            {
                "torch_device": tdev,
                "parity": adam_trajectory_errors(torch, tdev, 20 if small else 100),
                "speed": adam_speed(
                    torch,
                    tdev,
                    10_000 if small else args.adam_size,
                    4 if small else 16,
                    1 if small else args.rounds,
                    m,
                ),
            },
            lambda r: all(v["ok"] for v in r["parity"].values()),
        ),
        "muon_vs_torch": lambda: _with_ok(
            {
                "torch_device": tdev,
                "parity": muon_trajectory_error(torch, tdev, 10 if small else 100),
                "speed": muon_speed(
                    torch,
                    tdev,
                    [(64, 32), (32, 96)] if small else _transformer_shapes(),
                    1 if small else args.rounds,
                    m,
                ),
            },
            lambda r: r["parity"]["ok"],
        ),
        "sweep_vs_sequential": lambda: check_sweep(
            [1e-3] if small else [3e-4, 1e-3, 3e-3, 1e-2],
            [0, 1],
            8 if small else 300,
            16 if small else 64,
            1 if small else 2,
            m,
            smoke=small,
        ),
    }
    for name, fn in todo.items():
        if name in skip:
            checks[name] = {"ok": True, "skipped": True, "seconds": 0.0}
            continue
        with jax.default_matmul_precision("highest"):  # parity: no TF32 in float32 products
            run_check(name, fn, checks)
    record["checks"] = checks
    record["ok"] = all(c["ok"] for c in checks.values())
    record["seconds"] = time.perf_counter() - t_start
    record["machine"] = m.finish()  # --require-quiet: exits here on a busy machine
    Path(args.json).write_text(json.dumps(record, indent=1, default=str))
    print(m.headline(f"all checks {'passed' if record['ok'] else 'did NOT pass'}"))
    print(f"wrote {args.json} ({record['seconds']:.0f} s)")
    return 0 if record["ok"] else 1


def _with_ok(r: Dict[str, Any], ok: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
    r["ok"] = bool(ok(r))
    return r


def _transformer_shapes():
    from muon_bench import SHAPES as MUON_SHAPES

    return MUON_SHAPES["transformer"]


if __name__ == "__main__":
    sys.exit(main())
