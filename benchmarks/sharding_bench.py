"""Scale out on N devices: plain data parallel vs ZeRO-1, and Muon's home devices.

Read from the compiled programs (``jaxopt_zoo.sharding.compiled_stats``: XLA's memory analysis
per device, and the collectives in the optimized HLO), with N virtual CPU devices so that it
runs anywhere (on GPUs/TPUs the same code takes the real devices):

1. A data-parallel train step (cross-entropy, AdamW; batch split over the devices) of the
   reference CNN and of a larger char transformer, the optimizer state replicated on every
   device ("DP") or split over them ("ZeRO-1", ``shard_over="data"``): per-device state
   bytes, argument / output / temporary memory, collective bytes per step by kind, and the
   step time.
2. Muon on the transformer's matrices: the spread of Newton-Schulz work over the devices with
   one home device per matrix (the assignment's cost model, and XLA's FLOP count of each
   device's share), and the per-device FLOPs and step time of the whole Muon step, plain
   (every device iterates every matrix) vs ``home_devices=mesh``.
3. ZeRO-1 with home devices (``--no-zero1-home`` skips it): the collective bytes of the
   compiled Muon and SOAP updates of the 4-layer width-384 char transformer's parameters,
   each matrix's state all-gathered to every device (``home_zero1=False``) vs moved only to
   its home device (``home_zero1=True``). Compiled only, from abstract arguments.

    python benchmarks/sharding_bench.py                   # 8 devices, both models (~4 min)
    python benchmarks/sharding_bench.py --models cnn --repeats 3 --json sharding.json
    python benchmarks/sharding_bench.py --models '' --no-muon   # ZeRO-1 + home only (~1 min)

Virtual CPU devices share the machine's cores: step times measure total work (what a
device saves by not repeating the others' work), not the parallel speedup of real devices.
Step times are timed round-robin with the order rotated each repeat; the machine block
(``machine.py``) is printed and written into ``--json``, step-time ratios measured on a busy
machine are marked "not a result" (byte counts and FLOPs do not depend on the load), and
``--require-quiet`` refuses to run or write there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jaxopt_zoo import sharding as sh  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine as bench_machine  # noqa: E402


def models(names: List[str]) -> Dict[str, Tuple[Any, Any, Callable]]:
    """name -> (params, (inputs, labels), loss_fn(params, inputs, labels))."""
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.models.transformer import CharTransformer

    rng = np.random.default_rng(0)
    out = {}
    if "cnn" in names:
        cnn = get_model("cnn")
        x = rng.normal(size=(64, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, size=64)
        params = cnn.init(jax.random.key(0), x[:1], train=False)["params"]

        def cnn_loss(p, xb, yb):
            logits = cnn.apply({"params": p}, xb, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        out["cnn"] = (params, (x, y), cnn_loss)
    if "transformer" in names:
        lm = CharTransformer(width=256, depth=8)
        tokens = rng.integers(0, 84, size=(16, 129)).astype(np.int32)
        params = lm.init(jax.random.key(0), jnp.asarray(tokens[:1, :-1]))["params"]

        def lm_loss(p, xb, yb):
            logits = lm.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        out["transformer"] = (params, (tokens[:, :-1], tokens[:, 1:]), lm_loss)
    return out


def train_step(tx, loss_fn):
    import optax

    def step(p, s, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    return step


def median_ms(fns: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """Round-robin, the order rotated each repeat, so a busy neighbour slows all alike."""
    return {k: v["median"] for k, v in bench_machine.interleave(fns, repeats).items()}


def data_parallel(name, params, batch, loss_fn, mesh, repeats) -> Dict[str, Any]:
    import jaxopt_zoo as jz

    tx = jz.adamw(1e-3, weight_decay=1e-2)
    step = train_step(tx, loss_fn)
    b_sh = sh.batch_sharding(mesh)
    xb, yb = sh.shard_batch(batch, mesh)
    rows: Dict[str, Any] = {}
    runners = {}
    for mode, shard_over in (("DP", None), ("ZeRO-1", "data")):
        p = sh.replicate(params, mesh)
        p_sh = sh.param_sharding(p)
        s_sh = sh.state_sharding(tx, p, shard_over=shard_over)
        state = sh.init_sharded(tx, p, shard_over=shard_over)
        f = jax.jit(
            step,
            in_shardings=(p_sh, s_sh, b_sh, b_sh),
            out_shardings=(p_sh, s_sh, sh.replicated(mesh)),
            donate_argnums=(0, 1),
        )
        t0 = time.perf_counter()
        compiled = f.lower(p, state, xb, yb).compile()
        stats = sh.compiled_stats(compiled)
        stats["compile_s"] = time.perf_counter() - t0
        stats["state_bytes_per_device"] = max(sh.bytes_per_device(state).values())
        stats["state_bytes"] = sum(a.nbytes for a in jax.tree.leaves(state))
        stats["param_bytes"] = sum(a.nbytes for a in jax.tree.leaves(p))
        box = [p, state]

        def run(box=box, compiled=compiled):
            box[0], box[1], loss = compiled(box[0], box[1], xb, yb)
            loss.block_until_ready()

        run()  # warm up
        runners[mode] = run
        rows[mode] = stats
    for mode, ms in median_ms(runners, repeats).items():
        rows[mode]["step_ms"] = ms
    return rows


def muon_spread(params, mesh, repeats, batch, loss_fn) -> Dict[str, Any]:
    """Newton-Schulz work per device with one home device per matrix, and the Muon step."""
    import jax.numpy as jnp
    import numpy as np

    import jaxopt_zoo as jz
    from jaxopt_zoo.optim.newton_schulz import stack_flops

    n = mesh.shape["data"]
    leaves = [x for x in jax.tree.leaves(params) if x.ndim == 2]  # jz.muon's matrices
    wide = [tuple(sorted(x.shape)) for x in leaves]  # (n, m), n <= m: the iterated view
    out: Dict[str, Any] = {"matrices": len(leaves), "devices": n}
    for model, cost in (
        ("quintic", lambda s: sh.newton_schulz_flops(s[1:])),  # the textbook iteration
        ("as run", lambda s: stack_flops(s, jnp.float32, "auto", 5)),  # Gram form where used
    ):
        views = [(1, *w) for w in wide]
        home = sh.home_device_assignment(views, n, cost)
        loads = sh.assignment_loads(views, home, n, cost)
        out[model] = {
            "loads": loads,
            "max_over_mean": max(loads) / float(np.mean(loads)),
            "min_over_mean": min(loads) / float(np.mean(loads)),
            "largest_matrix_over_mean": max(cost(v) for v in views) / float(np.mean(loads)),
        }
        if model == "as run":  # the assignment jz.muon(home_devices=...) makes
            ortho = jz.orthogonalize_by_newton_schulz()
            xla = []
            for d in range(n):
                mine = {str(i): leaves[i] for i in range(len(leaves)) if home[i] == d}
                if not mine:
                    xla.append(0.0)
                    continue
                fn = lambda u, t=ortho: t.update(u, t.init(u))[0]  # noqa: E731
                c = jax.jit(fn).lower(mine).compile()
                xla.append(float((c.cost_analysis() or {}).get("flops", 0.0)))
            out[model]["xla_flops_per_device"] = xla
            out[model]["xla_max_over_mean"] = max(xla) / float(np.mean(xla))
    # The whole Muon train step, plain vs home devices (state replicated, then ZeRO-1).
    b_sh = sh.batch_sharding(mesh)
    xb, yb = sh.shard_batch(batch, mesh)
    runners, rows = {}, {}
    for mode, kw, shard_over in (
        ("plain", {}, None),
        ("home", {"home_devices": mesh}, None),
        ("home + ZeRO-1", {"home_devices": mesh}, "data"),
        ("home + ZeRO-1, home_zero1", {"home_devices": mesh, "home_zero1": True}, "data"),
    ):
        tx = jz.muon(0.02, **kw)
        p = sh.replicate(params, mesh)
        p_sh = sh.param_sharding(p)
        s_sh = sh.state_sharding(tx, p, shard_over=shard_over)
        state = sh.init_sharded(tx, p, shard_over=shard_over)
        f = jax.jit(
            train_step(tx, loss_fn),
            in_shardings=(p_sh, s_sh, b_sh, b_sh),
            out_shardings=(p_sh, s_sh, sh.replicated(mesh)),
            donate_argnums=(0, 1),
        )
        compiled = f.lower(p, state, xb, yb).compile()
        stats = sh.compiled_stats(compiled)
        stats["flops_per_device"] = float((compiled.cost_analysis() or {}).get("flops", 0.0))
        box = [p, state]

        def run(box=box, compiled=compiled):
            box[0], box[1], loss = compiled(box[0], box[1], xb, yb)
            loss.block_until_ready()

        run()
        runners[mode] = run
        rows[mode] = stats
    for mode, ms in median_ms(runners, repeats).items():
        rows[mode]["step_ms"] = ms
    out["step"] = rows
    return out


def zero1_home_bytes(mesh) -> Dict[str, Any]:
    """Collective bytes of the compiled Muon / SOAP update (float32, ``home_devices=mesh``,
    ZeRO-1 state) of CharTransformer(width=384, depth=4)'s parameters: ``home_zero1`` off
    (each matrix's state all-gathered to every device) and on (moved to its home device)."""
    import jax.numpy as jnp

    import jaxopt_zoo as jz
    from jaxopt_zoo.models.transformer import CharTransformer

    lm = CharTransformer(width=384, depth=4)
    shapes = jax.eval_shape(lm.init, jax.random.key(0), jnp.zeros((1, 128), jnp.int32))["params"]
    rep = sh.replicated(mesh)
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), shapes)
    leaves = jax.tree.leaves(params)
    out: Dict[str, Any] = {
        "param_bytes": sum(4 * a.size for a in leaves),
        "matrix_bytes": sum(4 * a.size for a in leaves if a.ndim == 2),
        "matrices": sum(a.ndim == 2 for a in leaves),
    }
    opts = {
        "muon": lambda **kw: jz.muon(0.02, home_devices=mesh, **kw),
        "soap": lambda **kw: jz.soap(
            3e-3, precondition_frequency=10, max_precondition_dim=1536, home_devices=mesh, **kw
        ),
    }
    for name, make in opts.items():
        for zero1 in (False, True):
            tx = make(home_zero1=zero1)
            s_sh = sh.state_sharding(tx, params, shard_over="data")
            state = jax.tree.map(
                lambda a, ns: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ns),
                jax.eval_shape(tx.init, params),
                s_sh,
            )
            step = sh.sharded_update(tx, params, shard_over="data", donate=False)
            t0 = time.perf_counter()
            compiled = step.lower(params, state, params).compile()
            stats = sh.compiled_stats(compiled)
            stats["compile_s"] = time.perf_counter() - t0
            out[f"{name}, home_zero1={zero1}"] = stats
            print(f"{name} home_zero1={zero1}: compiled", file=sys.stderr)
    return out


def kib(b: Any) -> str:
    return "-" if b is None else f"{b / 1024:,.0f} KiB"


def report(res: Dict[str, Any]) -> None:
    print(f"\n{res['devices']} devices ({res['platform']}), jax {res['jax']}\n")
    busy = res.get("machine", {}).get("busy")
    if busy:
        print(f"**{busy}**: the step times and their ratios are not a result\n")
    print("| model | per device | DP | ZeRO-1 | ZeRO-1 / DP |")
    print("|---|---|---|---|---|")
    for name, rows in res["data_parallel"].items():
        dp, z = rows["DP"], rows["ZeRO-1"]
        kinds = sorted(set(dp["collectives"]) | set(z["collectives"]))
        lines = [
            ("optimizer state", "state_bytes_per_device"),
            ("step arguments", "argument_bytes"),
            ("step outputs", "output_bytes"),
            ("temporaries", "temp_bytes"),
        ] + [(f"{k} bytes", k) for k in kinds]
        for label, key in lines:
            a = dp["collectives"].get(key, 0) if key in kinds else dp[key]
            b = z["collectives"].get(key, 0) if key in kinds else z[key]
            ratio = f"{b / a:.3f}" if a else "-"
            print(f"| {name} | {label} | {kib(a)} | {kib(b)} | {ratio} |")
        print(
            f"| {name} | step time (median) | {dp['step_ms']:.1f} ms | {z['step_ms']:.1f} ms "
            f"| {z['step_ms'] / dp['step_ms']:.2f} |"
        )
        print(
            f"| {name} | (total state / params) | {kib(dp['state_bytes'])} / "
            f"{kib(dp['param_bytes'])} | | |"
        )
    m = res.get("muon")
    if m:
        print(f"\nMuon, {m['matrices']} matrices of the transformer over {m['devices']} devices:")
        for model in ("quintic", "as run"):
            r = m[model]
            print(
                f"  cost {model:8s}: busiest / mean {r['max_over_mean']:.3f}, least / mean "
                f"{r['min_over_mean']:.3f}, largest matrix / mean "
                f"{r['largest_matrix_over_mean']:.3f}"
            )
        r = m["as run"]
        print(
            "  XLA FLOPs per device (each device's share, compiled): "
            + ", ".join(f"{f / 1e9:.2f}" for f in r["xla_flops_per_device"])
            + f" GFLOP; busiest / mean {r['xla_max_over_mean']:.3f}"
        )
        print(
            "\n| Muon step | FLOPs per device | all-gather | all-to-all | all-reduce | step time |"
        )
        print("|---|---|---|---|---|---|")
        base = m["step"]["plain"]
        for mode, s in m["step"].items():
            c = s["collectives"]
            print(
                f"| {mode} | {s['flops_per_device'] / 1e9:.2f} G "
                f"({s['flops_per_device'] / base['flops_per_device']:.2f}x) | "
                f"{kib(c.get('all-gather', 0))} | {kib(c.get('all-to-all', 0))} | "
                f"{kib(c.get('all-reduce', 0))} | "
                f"{s['step_ms']:.0f} ms ({s['step_ms'] / base['step_ms']:.2f}x) |"
            )


def report_zero1_home(z: Dict[str, Any], devices: int) -> None:
    print(
        f"\nZeRO-1 with home devices, CharTransformer(width=384, depth=4) on {devices} devices: "
        f"{z['matrices']} matrices, {kib(z['matrix_bytes'])} of float32 matrices "
        f"({kib(z['param_bytes'])} of parameters). Collective bytes per device of the "
        "compiled update (both branches of SOAP's refresh switch counted):\n"
    )
    rows = [k for k in z if k.startswith(("muon", "soap"))]
    kinds = sorted({c for k in rows for c in z[k]["collectives"]})
    print("| update | " + " | ".join(kinds) + " | total |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for k in rows:
        c = z[k]["collectives"]
        cells = [kib(c.get(kind, 0)) for kind in kinds]
        print(f"| {k} | " + " | ".join(cells) + f" | {kib(sum(c.values()))} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--models", default="cnn,transformer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-muon", action="store_true")
    ap.add_argument("--no-zero1-home", action="store_true")
    ap.add_argument("--json", default=None)
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = set(names) - {"cnn", "transformer"}
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; expected cnn and/or transformer")
    sh.use_cpu_devices(args.devices)  # before JAX starts; GPUs/TPUs: the real devices
    mesh = sh.data_mesh(args.devices)
    res: Dict[str, Any] = {
        "devices": args.devices,
        "platform": f"{jax.devices()[0].platform}, {platform.processor() or platform.machine()}",
        "jax": jax.__version__,
        "data_parallel": {},
    }
    built = models(names)
    for name, (params, batch, loss_fn) in built.items():
        res["data_parallel"][name] = data_parallel(name, params, batch, loss_fn, mesh, args.repeats)
        print(f"{name}: done", file=sys.stderr)
    if not args.no_muon and "transformer" in built:
        params, batch, loss_fn = built["transformer"]
        res["muon"] = muon_spread(params, mesh, args.repeats, batch, loss_fn)
    if not args.no_zero1_home:
        res["zero1_home"] = zero1_home_bytes(mesh)
    res["machine"] = m.block()
    report(res)
    if "zero1_home" in res:
        report_zero1_home(res["zero1_home"], args.devices)
    res["machine"] = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
