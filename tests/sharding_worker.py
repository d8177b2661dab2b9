"""The multi-device checks behind tests/test_sharding.py, on 8 virtual CPU devices.

Run as ``python tests/sharding_worker.py``: it starts JAX with 8 CPU devices (the pytest
process already has 1), runs every check once and prints one JSON object, which the tests
read. Every number is measured here; the assertions live in the tests.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

# Cheap CPU code generation: these checks compile ~10 programs and run each a few times.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    " --xla_llvm_disable_expensive_passes=true"
)

import jax  # noqa: E402

from jaxopt_zoo.sharding import use_cpu_devices  # noqa: E402

# 8 devices, and PJRT_NPROC >= 16 so that XLA's CPU pool cannot deadlock a collective
# (jaxopt_zoo/sharding/threads.py); a bare jax_num_cpu_devices leaves 8 threads on 2 cores.
use_cpu_devices(8)
jax.config.update("jax_numpy_rank_promotion", "raise")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo import sharding as sh  # noqa: E402

STEPS = 3
# Tensor-parallel-like parameter specs on a (data=4, model=2) mesh, so that "placed like the
# parameters" is not trivially "replicated"; ZeRO-1 then adds the data axis.
# Few leaves: the ~45 optimizers are compiled together and compile time grows with leaves.
SHAPES = {
    "w": ((64, 32), P("model")),
    "k": ((3, 3, 8, 16), P(None, None, None, "model")),
    "b": ((32,), P()),
    "odd": ((5, 3), P()),
}


def _with_stand_in_loss(name, tx):
    """``tx`` with the update keywords its registry entry needs (L-BFGS's line search: the
    loss 0.5 * |p|^2, its value and the gradient given), so that it runs in a partition."""
    needs = jz.entry(name).extra_args
    if not needs:
        return tx

    def loss(p):
        return 0.5 * sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(p))

    def update(g, s, p=None):
        have = {
            "value": lambda: loss(p),
            "grad": lambda: g,
            "value_fn": lambda: loss,
            "obj_fn": lambda: loss,  # Sophia's
        }
        return tx.update(g, s, p, **{a: have[a]() for a in needs if a in have})

    return optax.GradientTransformation(tx.init, update)


# torch.lbfgs runs up to max_iter line-searched iterations per update, whose discrete
# decisions (a Wolfe test, a curvature skip) may flip under the rounding of a partitioned
# product: not compared here.
NOT_SHARDED = ("torch.lbfgs",)

# Every optimizer's state layout is checked (``layout_only``: one cheap ``init`` program).
# Sharded updates against the single-device ones are run for every optimizer that is not
# element-wise (reductions, matrix products, line searches: where a partitioned computation
# can round or go wrong) and for these element-wise ones, one per kind of state (moments, a
# trace, sign-based, four buffers, a copy of the start): an element-wise block computes
# each element from that element alone, so a partition cannot change it, and the sharded
# update's output shardings are fixed by ``sharded_update``. (Compiling all ~90 in one
# program took 65 of this worker's 110 s.)
ELEMENTWISE_UPDATED = ("adam", "adamw", "sgd", "lion", "adan", "cocob", "torch.adam", "keras.adam")


def _elementwise(name):
    """Whether registered optimizer ``name`` is element-wise by its blocks' specs (names
    not in the registry, such as the optax references here, count as not)."""
    from jaxopt_zoo.fast.spec import is_elementwise

    return name in jz.available("") and is_elementwise(jz.get(name))


def checked_names():
    names = jz.available() + jz.available("torch.") + jz.available("keras.")
    return [n for n in names if n not in NOT_SHARDED]


def optimizers():
    txs = {n: _with_stand_in_loss(n, jz.get(n)) for n in checked_names()}
    # torch.optim.Muon takes matrices only (torch.muon refuses the rest, as torch does):
    # matrices to it, everything else to AdamW, as torch users split their parameters.
    txs["torch.muon"] = jz.partition(
        {"muon": jz.get("torch.muon"), "adamw": jz.get("torch.adamw")},
        lambda p: jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adamw", p),
    )
    # Factored moments need dimensions >= min_dim_size_to_factor (default 128).
    txs["adafactor(min_dim_size_to_factor=8)"] = jz.adafactor(min_dim_size_to_factor=8)
    txs["optax.adafactor(min_dim_size_to_factor=8)"] = optax.adafactor(
        1e-2, min_dim_size_to_factor=8
    )
    txs["optax.adamw"] = optax.adamw(1e-3, weight_decay=1e-2)
    txs["optax.lamb"] = optax.lamb(1e-3)
    txs["chain(ours, optax)"] = optax.chain(
        jz.clip_by_global_norm(1.0),
        jz.scale_by_adam(),
        optax.add_decayed_weights(1e-2),
        optax.scale_by_trust_ratio(),
        jz.ema(0.9),
        optax.scale(-1e-3),
    )
    return txs


def combined(txs):
    """All optimizers in one transformation (one compile): optimizer ``name`` updates the
    parameters under ``params[name]``, each a copy of SHAPES."""
    labels = lambda params: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}  # noqa: E731
    return jz.partition(txs, labels)


def make_params(names, mesh, dtype=jnp.float32, seed=0):
    """``{name: {leaf: array}}`` on the host and placed (sharded per SHAPES, or replicated)."""
    rng = np.random.default_rng(seed)
    one = {k: rng.normal(size=s) for k, (s, _) in SHAPES.items()}
    host = {n: {k: np.asarray(v, dtype) for k, v in one.items()} for n in names}
    spec = (lambda k: SHAPES[k][1]) if len(mesh.shape) > 1 else (lambda k: P())
    placed = {
        n: {k: jax.device_put(v, NamedSharding(mesh, spec(k))) for k, v in t.items()}
        for n, t in host.items()
    }
    return host, placed


def grads(host, step, dtype):
    rng = np.random.default_rng(100 + step)
    one = {k: rng.normal(size=s) for k, (s, _) in SHAPES.items()}
    return {n: {k: np.asarray(one[k], dtype) for k in t} for n, t in host.items()}


def err(a, b, scale_of):
    """max |a - b| over the float leaves, relative to ``scale_of(b_leaf, path)``."""
    worst = 0.0
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        if not (x.size and jnp.issubdtype(x.dtype, jnp.floating)):
            continue
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(scale_of(y, path), 1e-30)))
    return worst


def spec_axes(spec, ndim):
    entries = tuple(spec) + (None,) * (ndim - len(tuple(spec)))
    return [() if e is None else ((e,) if isinstance(e, str) else tuple(e)) for e in entries]


def _layout(st, mesh):
    """How one optimizer's state ``st`` lies on the devices: bytes in all, per device, and
    in leaves split fewer than ``mesh.size`` ways (no dimension the axes divide)."""
    leaves = jax.tree.leaves(st)
    per_dev = sh.bytes_per_device(st)
    return {
        "total_bytes": sum(a.nbytes for a in leaves),
        "max_device_bytes": max(per_dev.values(), default=0),
        "min_device_bytes": min(per_dev.values(), default=0),
        "unsplit_bytes": sum(a.nbytes for a in leaves if _ways(a) < mesh.size),
        # the bytes a device should hold by the documented specs: sum of nbytes / ways split
        "layout_bytes": sum(a.nbytes // _ways(a) for a in leaves),
    }


def layout_only(txs, mesh, shard_over):
    """The state layout ``init_sharded`` gives every optimizer in ``txs``, without updates
    (for element-wise optimizers beyond ELEMENTWISE_UPDATED: see there)."""
    tx = combined(txs)
    _, placed = make_params(txs, mesh)
    s_sh = sh.state_sharding(tx, placed, shard_over=shard_over)
    state = sh.init_sharded(tx, placed, shard_over=shard_over)
    init_ok = all(
        a.sharding.is_equivalent_to(s, a.ndim)
        for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(s_sh))
    )
    return {
        "init_shardings_ok": init_ok,
        "per_optimizer": {n: _layout(state.inner_states[n], mesh) for n in txs},
    }


def run_sharded(txs, mesh, shard_over, dtype=np.float32):
    """STEPS sharded updates of every optimizer in ``txs`` vs the single-device computation."""
    tx = combined(txs)
    t0 = time.perf_counter()
    timing = {}
    host, placed = make_params(txs, mesh, dtype)
    s_sh = sh.state_sharding(tx, placed, shard_over=shard_over)
    timing["shardings"] = time.perf_counter() - t0
    state = sh.init_sharded(tx, placed, shard_over=shard_over)
    timing["init"] = time.perf_counter() - t0
    init_ok = all(
        a.sharding.is_equivalent_to(s, a.ndim)
        for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(s_sh))
    )
    p_sh = sh.param_sharding(placed)
    upd = sh.sharded_update(tx, placed, shard_over=shard_over)
    params = jax.device_put(host, p_sh)  # a copy: the update donates its inputs
    ref_upd = jax.jit(lambda g, s, p: _step(tx, g, s, p))  # on one device
    ref_p = jax.tree.map(jnp.asarray, host)
    ref_s = tx.init(ref_p)
    for t in range(STEPS):
        g = grads(host, t, dtype)
        params, state = upd(jax.device_put(g, p_sh), state, params)
        jax.block_until_ready(state)
        timing[f"step{t}"] = time.perf_counter() - t0
        ref_p, ref_s = ref_upd(g, ref_s, ref_p)
        jax.block_until_ready(ref_s)
        timing[f"ref{t}"] = time.perf_counter() - t0
    out = {
        "compiles": upd._cache_size(),
        "init_shardings_ok": init_ok,
        "per_optimizer": {},
        "timing": timing,
    }
    for n in txs:
        st, rst = state.inner_states[n], ref_s.inner_states[n]
        leaves = jax.tree.leaves(st)
        out["per_optimizer"][n] = {
            **_layout(st, mesh),
            "params_keep_sharding": all(
                a.sharding.is_equivalent_to(b.sharding, a.ndim)
                for a, b in zip(jax.tree.leaves(params[n]), jax.tree.leaves(placed[n]))
            ),
            "state_keeps_sharding": all(
                a.sharding.is_equivalent_to(b, a.ndim)
                for a, b in zip(leaves, jax.tree.leaves(s_sh.inner_states[n]))
            ),
            # parameters: relative to their movement (f64) and to their size (f32 rounding)
            "param_err_move": err(
                params[n],
                ref_p[n],
                lambda y, path, n=n: float(np.max(np.abs(y - _get(host[n], path)))),
            ),
            "param_err": err(params[n], ref_p[n], lambda y, path: float(np.max(np.abs(y)))),
            "state_err": err(st, rst, lambda y, path: float(np.max(np.abs(y), initial=0))),
            "moved": float(
                max(np.max(np.abs(np.asarray(ref_p[n][k]) - host[n][k])) for k in host[n])
            ),
        }
    return out


def _ways(a):
    """Into how many distinct pieces ``a``'s sharding cuts it."""
    mesh = a.sharding.mesh
    return int(
        np.prod(
            [mesh.shape[x] for dim in spec_axes(a.sharding.spec, a.ndim) for x in dim],
            dtype=np.int64,
        )
    )


def _get(tree, path):
    for k in path:
        tree = (
            tree[k.key]
            if hasattr(k, "key")
            else (tree[k.idx] if hasattr(k, "idx") else getattr(tree, k.name))
        )
    return tree


def _step(tx, g, s, p):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s


def placement(tx, placed):
    """For every state leaf: the param it matched (by path suffix) and how it was placed."""
    leaves = []
    for shard_over in (None, "data"):
        s_sh = sh.state_sharding(tx, placed, shard_over=shard_over)
        shapes = jax.eval_shape(tx.init, placed)
        for (path, sd), ns in zip(
            jax.tree_util.tree_leaves_with_path(shapes), jax.tree.leaves(s_sh)
        ):
            key = path[-1].key if path and hasattr(path[-1], "key") else None
            leaves.append(
                {
                    "shard_over": shard_over,
                    "path": jax.tree_util.keystr(path),
                    "shape": list(sd.shape),
                    "param": key if key in SHAPES else None,
                    "axes": [list(a) for a in spec_axes(ns.spec, len(sd.shape))],
                }
            )
    return leaves


def home_checks(mesh):
    calls = collections.Counter()

    def newton_schulz(x):  # a stand-in for Muon's orthogonalization (3 quintic steps)
        jax.debug.callback(lambda n: calls.update([int(n)]), x.size)
        a, b, c = 3.4445, -4.7750, 2.0315
        x = x.reshape(-1, x.shape[-1])
        x = x / (jnp.linalg.norm(x) + 1e-7)
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        for _ in range(3):
            m = x @ x.T
            x = a * x + (b * m + c * m @ m) @ x
        return x.T if tall else x

    shapes = [(64, 32), (32, 48), (3, 3, 8, 16), (24, 40), (40, 8), (16, 16), (56, 24)]
    rng = np.random.default_rng(0)
    mats = [
        jax.device_put(
            np.asarray(rng.normal(size=s), np.float32),
            NamedSharding(mesh, P("data") if s[0] % 8 == 0 else P()),
        )
        for s in shapes
    ]
    run = jax.jit(lambda ms: sh.run_on_home_devices(newton_schulz, ms, mesh))
    got = run(mats)
    jax.effects_barrier()  # every callback has run
    counts = dict(calls)
    ref = jax.jit(lambda ms: [newton_schulz(m) for m in ms])([np.asarray(m) for m in mats])
    jax.effects_barrier()
    calls.clear()
    with jax.set_mesh(mesh):  # the mesh from the context, as an optimizer's update sees it
        ctx = jax.jit(lambda ms: sh.run_on_home_devices(newton_schulz, ms))(mats)
    jax.effects_barrier()
    ctx_counts = dict(calls)
    calls.clear()
    # Inputs in the ZeRO-1 layout (as `mats` are placed), moved only to their home devices,
    # and the results split back in that layout (replicated results: Muon's checks). (20, 12)
    # splits in no dimension: it stays whole; the vector splits.
    split_shapes = shapes + [(20, 12), (16,)]
    zmats = [
        jax.device_put(np.asarray(rng.normal(size=s), np.float32), _zero1(mesh, s))
        for s in split_shapes
    ]
    zref = jax.jit(lambda ms: [newton_schulz(m) for m in ms])([np.asarray(m) for m in zmats])
    jax.effects_barrier()
    calls.clear()
    zgot = jax.jit(
        lambda ms: sh.run_on_home_devices(
            newton_schulz, ms, mesh, in_split="zero1", out_split="zero1"
        )
    )(zmats)
    jax.effects_barrier()
    split = {
        "exact": all(
            bool(np.array_equal(np.asarray(a), np.asarray(b))) for a, b in zip(zgot, zref)
        ),
        "calls_per_matrix": [calls.get(int(np.prod(s)), 0) for s in split_shapes],
        "split_zero1": [a.sharding.is_equivalent_to(_zero1(mesh, a.shape), a.ndim) for a in zgot],
        "replicated": [a.sharding.is_fully_replicated for a in zgot],
    }
    calls.clear()
    try:
        # (20, 12): 8 divides neither dimension
        jax.jit(lambda ms: sh.run_on_home_devices(jnp.sin, ms, mesh, in_split=[0]))(zmats[7:8])
        split["bad_split_error"] = None
    except ValueError as e:
        split["bad_split_error"] = str(e)
    return {
        "split": split,
        "context_exact": all(
            bool(np.array_equal(np.asarray(a), np.asarray(b))) for a, b in zip(ctx, ref)
        ),
        "context_calls_per_matrix": [ctx_counts.get(int(np.prod(s)), 0) for s in shapes],
        "exact": all(bool(np.array_equal(np.asarray(a), np.asarray(b))) for a, b in zip(got, ref)),
        "max_abs_diff": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, ref)
        ),
        "calls_per_matrix": [counts.get(int(np.prod(s)), 0) for s in shapes],
        "replicated": all(a.sharding.is_fully_replicated for a in got),
        "assignment": sh.home_device_assignment(shapes, 8),
    }


def _zero1(mesh, shape):
    """The ZeRO-1 sharding of an array of ``shape`` over the mesh's ``data`` axis."""
    d = sh.zero1_dim(shape, mesh.shape["data"])
    return NamedSharding(mesh, P(*["data" if j == d else None for j in range(len(shape))]))


def train_checks():
    """A data-parallel MLP train step (batch split over 8 devices) vs the same on one."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 20)).astype(np.float32)
    y = rng.integers(0, 5, size=64)
    host = {
        "w1": (0.3 * rng.normal(size=(20, 64))).astype(np.float32),
        "b1": np.zeros(64, np.float32),
        "w2": (0.3 * rng.normal(size=(64, 5))).astype(np.float32),
        "b2": np.zeros(5, np.float32),
    }
    tx = jz.get("lamb")

    def loss_fn(p, xb, yb):
        logits = jax.nn.relu(xb @ p["w1"] + p["b1"][None]) @ p["w2"] + p["b2"][None]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(p, s, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    ref = jax.jit(step)
    p1 = jax.tree.map(jnp.asarray, host)
    s1 = tx.init(p1)
    ref_losses = []
    for _ in range(STEPS + 2):
        p1, s1, loss = ref(p1, s1, x, y)
        ref_losses.append(float(loss))
    out = {"ref_losses": ref_losses}
    mesh = sh.data_mesh(8)
    for shard_over in (None, "data"):
        params = sh.replicate(host, mesh)
        p_sh = sh.param_sharding(params)
        s_sh = sh.state_sharding(tx, params, shard_over=shard_over)
        state = sh.init_sharded(tx, params, shard_over=shard_over)
        b_sh = sh.batch_sharding(mesh)
        f = jax.jit(
            step,
            in_shardings=(p_sh, s_sh, b_sh, b_sh),
            out_shardings=(p_sh, s_sh, sh.replicated(mesh)),
            donate_argnums=(0, 1),
        )
        xb, yb = sh.shard_batch((x, y), mesh)
        stats = sh.compiled_stats(f.lower(params, state, xb, yb).compile())
        losses = []
        for _ in range(STEPS + 2):
            params, state, loss = f(params, state, xb, yb)
            losses.append(float(loss))
        out[str(shard_over)] = {
            "stats": stats,
            "losses": losses,
            "compiles": f._cache_size(),
            "param_err": err(params, p1, lambda y, path: float(np.max(np.abs(y)))),
            "state_bytes_per_device": max(sh.bytes_per_device(state).values()),
            "state_bytes": sum(a.nbytes for a in jax.tree.leaves(state)),
            "batch_split": [list(s.data.shape) for s in xb.addressable_shards][:2],
        }
    return out


# A small transformer's matrices (two of one shape, so that the plain update batches them) and
# a vector, for Muon with one home device per matrix.
MUON_SHAPES = {
    "qkv": (32, 96),
    "qkv2": (32, 96),
    "out": (32, 32),
    "up": (32, 128),
    "down": (128, 32),
    "emb": (64, 32),
    "b": (32,),
}


def muon_home_checks(mesh, dtype, modes, shapes=MUON_SHAPES, steps=STEPS + 2):
    """``jz.muon(home_devices=mesh)`` on 8 devices vs ``jz.muon`` on one: ``steps`` steps,
    with the state placed as ``modes`` say (None: replicated, "data": ZeRO-1; "data+zero1":
    ZeRO-1 with ``home_zero1=True``, each momentum moved only to its home device); for float32
    replicated, also the per-device FLOPs of the plain Muon's step (which repeats every
    iteration on every device)."""
    out = {}
    rng = np.random.default_rng(1)
    host = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    gs = [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(steps)]
    tx = jz.muon(0.02, weight_decay=0.1)
    ref = jax.jit(lambda g, s, p, tx=tx: _step(tx, g, s, p))
    ref_p = jax.tree.map(jnp.asarray, host)
    ref_s = tx.init(ref_p)
    for g in gs:
        ref_p, ref_s = ref(g, ref_s, ref_p)
    moved = float(max(np.max(np.abs(np.asarray(ref_p[k]) - host[k])) for k in host))
    for mode in modes:
        shard_over = None if mode is None else "data"
        txh = jz.muon(0.02, weight_decay=0.1, home_devices=mesh, home_zero1=mode == "data+zero1")
        params = sh.replicate(host, mesh)
        state = sh.init_sharded(txh, params, shard_over=shard_over)
        upd = sh.sharded_update(txh, params, shard_over=shard_over)
        compiled = upd.lower(params, state, params).compile()
        for g in gs:
            params, state = upd(jax.device_put(g, sh.param_sharding(params)), state, params)
        r = {
            "moved": moved,
            "compiles": upd._cache_size(),
            "param_err": err(params, ref_p, lambda y, path: float(np.max(np.abs(y)))),
            "param_err_move": err(params, ref_p, lambda y, path: moved),
            "state_err": err(state, ref_s, lambda y, path: float(np.max(np.abs(y), initial=0))),
            "collectives": sh.compiled_stats(compiled)["collectives"],
            "flops": (compiled.cost_analysis() or {}).get("flops"),
        }
        if dtype == np.float32 and mode is None:  # the plain Muon's program
            rep = sh.replicate(host, mesh)
            plain = sh.sharded_update(tx, rep, donate=False)
            plain_c = plain.lower(rep, sh.init_sharded(tx, rep), rep).compile()
            r["plain_flops"] = (plain_c.cost_analysis() or {}).get("flops")
        out[f"{np.dtype(dtype).name}_{mode}"] = r
    return out


# With ZeRO-1, also a matrix that 8 divides in no dimension (it stays whole on every device).
MUON_ZERO1_SHAPES = dict(MUON_SHAPES, odd=(12, 20))
MUON_ZERO1_STEPS = 20

# The matrices of the 4-layer width-384 char transformer (per layer: attention in and out, MLP
# up and down), where the collective bytes of Muon's step with ZeRO-1 are measured.
TRANSFORMER_384 = {
    f"{name}{layer}": shape
    for layer in range(4)
    for name, shape in (
        ("qkv", (384, 1152)),
        ("out", (384, 384)),
        ("up", (384, 1536)),
        ("down", (1536, 384)),
    )
}


def muon_zero1_bytes(mesh):
    """Collective bytes of Muon's compiled step (float32, ``home_devices=mesh``) on
    TRANSFORMER_384 over 8 devices with ZeRO-1 state: each momentum all-gathered to every
    device (``home_zero1=False``), or moved only to its home device (``home_zero1=True``). Compiled
    from abstract arguments, not run. Also the bytes the all-to-all should move: the matrices
    of the busiest home device (the assignment jz.muon makes)."""
    from jaxopt_zoo.optim.newton_schulz import stack_flops

    n = mesh.shape["data"]
    rep = sh.replicated(mesh)
    params = {
        k: jax.ShapeDtypeStruct(s, jnp.float32, sharding=rep) for k, s in TRANSFORMER_384.items()
    }
    out = {}
    for name, shard_over, zero1 in (("zero1_gather", "data", False), ("zero1_home", "data", True)):
        tx = jz.muon(0.02, home_devices=mesh, home_zero1=zero1)
        s_sh = sh.state_sharding(tx, params, shard_over=shard_over)
        state = jax.tree.map(
            lambda a, ns: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ns),
            jax.eval_shape(tx.init, params),
            s_sh,
        )
        upd = sh.sharded_update(tx, params, shard_over=shard_over, donate=False)
        out[name] = sh.compiled_stats(upd.lower(params, state, params).compile())["collectives"]
    shapes = [TRANSFORMER_384[k] for k in sorted(TRANSFORMER_384)]  # the leaves' order
    home = sh.home_device_assignment(
        [(1, *sorted(s)) for s in shapes], n, lambda w: stack_flops(w, jnp.float32, "auto", 5)
    )
    sizes = [4 * int(np.prod(s)) for s in shapes]
    out["matrix_bytes"] = sum(sizes)
    out["busiest_home_bytes"] = max(sum(b for b, h in zip(sizes, home) if h == d) for d in range(n))
    return out


# SOAP's statistics: square matrices, and one whose long side (24) is not preconditioned, so that
# every preconditioned statistic has full rank and distinct eigenvalues (its first eigh has one
# basis, up to signs; see docs/scale-out.md, "Known gaps").
SOAP_SHAPES = {"a": (16, 16), "c": (20, 20), "d": (8, 24), "v": (16,)}


def soap_home_checks(mesh):
    """``jz.soap(home_devices=mesh)`` on 8 devices vs ``jz.soap`` on one, in float64: 5 steps
    with a refresh every 2 (first eigh, then two power-QR refreshes), gradients a fixed matrix
    with distinct singular values plus 1% noise; and both programs' per-device FLOPs."""
    rng = np.random.default_rng(2)

    def fixed(shape):
        if len(shape) == 1:
            return rng.normal(size=shape)
        u, _, vt = np.linalg.svd(rng.normal(size=shape), full_matrices=False)
        return (u * np.linspace(3.0, 1.0, u.shape[1])) @ vt

    base = {k: fixed(s) for k, s in SOAP_SHAPES.items()}
    gs = [{k: b + 0.01 * rng.normal(size=b.shape) for k, b in base.items()} for _ in range(5)]
    host = {k: rng.normal(size=s) for k, s in SOAP_SHAPES.items()}
    kw = dict(learning_rate=0.01, precondition_frequency=2, max_precondition_dim=20)
    tx = jz.soap(**kw)
    ref = jax.jit(lambda g, s, p: _step(tx, g, s, p))
    ref_p = jax.tree.map(jnp.asarray, host)
    ref_s = tx.init(ref_p)
    for g in gs:
        ref_p, ref_s = ref(g, ref_s, ref_p)
    moved = float(max(np.max(np.abs(np.asarray(ref_p[k]) - host[k])) for k in host))
    txh = jz.soap(**kw, home_devices=mesh)
    params = sh.replicate(host, mesh)
    state = sh.init_sharded(txh, params)
    upd = sh.sharded_update(txh, params, donate=False)
    compiled = upd.lower(params, state, params).compile()
    for g in gs:
        params, state = upd(jax.device_put(g, sh.param_sharding(params)), state, params)
    rep = sh.replicate(host, mesh)
    plain = sh.sharded_update(tx, rep, donate=False)
    plain_c = plain.lower(rep, sh.init_sharded(tx, rep), rep).compile()
    out = {
        "moved": moved,
        "compiles": upd._cache_size(),
        "param_err_move": err(params, ref_p, lambda y, path: moved),
        "state_err": err(state, ref_s, lambda y, path: float(np.max(np.abs(y), initial=0))),
        "collectives": sh.compiled_stats(compiled)["collectives"],
        "flops": (compiled.cost_analysis() or {}).get("flops"),
        "plain_flops": (plain_c.cost_analysis() or {}).get("flops"),
    }
    # ZeRO-1 state: statistics and bases all-gathered to every device (home_zero1=False), or
    # moved only to their home device and the new bases sent back split (home_zero1=True).
    for name, zero1 in (("zero1_gather", False), ("zero1_home", True)):
        txz = jz.soap(**kw, home_devices=mesh, home_zero1=zero1)
        params = sh.replicate(host, mesh)
        state = sh.init_sharded(txz, params, shard_over="data")
        upd = sh.sharded_update(txz, params, shard_over="data", donate=False)
        r = {
            "collectives": sh.compiled_stats(upd.lower(params, state, params).compile())[
                "collectives"
            ]
        }
        if zero1:
            for g in gs:
                params, state = upd(jax.device_put(g, sh.param_sharding(params)), state, params)
            r["compiles"] = upd._cache_size()
            r["param_err_move"] = err(params, ref_p, lambda y, path: moved)
            r["state_err"] = err(state, ref_s, lambda y, path: float(np.max(np.abs(y), initial=0)))
            r["bases_split"] = [
                list(spec_axes(q.sharding.spec, 2)[0]) for q in jax.tree.leaves(state[0].q)
            ]
        out[name] = r
    # What the home part should move with home_zero1: per move (eigh: gg in, basis out;
    # refresh: gg and q in, basis and order out), the busiest home device's pieces from or to
    # each of the 8 devices. Statistics whose d is not a multiple of 8 stay whole (not moved).
    from jaxopt_zoo.optim.soap_refresh import refresh_cost

    ds = [d for shp in SOAP_SHAPES.values() if len(shp) == 2 for d in shp if d <= 20]
    home = sh.home_device_assignment([(d, d) for d in ds], 8, refresh_cost)
    per_row = {"eigh_in": 1, "eigh_out": 1, "refresh_in": 2, "refresh_out": 1}
    moved_bytes = 0
    for move, k in per_row.items():
        cols = [k * d + (1 if move == "refresh_out" else 0) for d in ds]
        loads = [0] * 8
        for d, c, h in zip(ds, cols, home):
            if d % 8 == 0:
                loads[h] += d * c * 8  # float64
        moved_bytes += max(loads)
    out["home_all_to_all_bytes"] = moved_bytes
    # the split statistics and bases, which home_zero1=False all-gathers (eigh: gg; refresh:
    # gg and q); the orders (d values per split basis), which GSPMD gathers with home_zero1
    out["split_stat_bytes"] = sum(8 * d * d for d in ds if d % 8 == 0)
    out["split_order_bytes"] = sum(8 * d for d in ds if d % 8 == 0)
    return out


# PSGD Kron's factors: two same-shape matrices (batched on their home device), a conv kernel
# merged to a matrix, a vector (a diagonal factor).
KRON_SHAPES = {"a": (16, 12), "b": (16, 12), "k": (3, 3, 4, 8), "v": (10,)}


def _home_vs_one(make, shapes, seed, mesh):
    """``make(home_devices=mesh)`` on the mesh's devices vs ``make()`` on one, in float64, 5
    steps on ``shapes``: how far the parameters moved, the errors, the collectives and both
    programs' per-device FLOPs (the sharded one without home devices as ``plain_flops``)."""
    rng = np.random.default_rng(seed)
    gs = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(5)]
    host = {k: rng.normal(size=s) for k, s in shapes.items()}
    tx = make()
    ref = jax.jit(lambda g, s, p: _step(tx, g, s, p))
    ref_p = jax.tree.map(jnp.asarray, host)
    ref_s = tx.init(ref_p)
    for g in gs:
        ref_p, ref_s = ref(g, ref_s, ref_p)
    moved = float(max(np.max(np.abs(np.asarray(ref_p[k]) - host[k])) for k in host))
    txh = make(home_devices=mesh)
    params = sh.replicate(host, mesh)
    state = sh.init_sharded(txh, params)
    upd = sh.sharded_update(txh, params, donate=False)
    compiled = upd.lower(params, state, params).compile()
    for g in gs:
        params, state = upd(jax.device_put(g, sh.param_sharding(params)), state, params)
    rep = sh.replicate(host, mesh)
    plain = sh.sharded_update(tx, rep, donate=False)
    plain_c = plain.lower(rep, sh.init_sharded(tx, rep), rep).compile()
    return {
        "moved": moved,
        "compiles": upd._cache_size(),
        "param_err_move": err(params, ref_p, lambda y, path: moved),
        "state_err": err(state, ref_s, lambda y, path: float(np.max(np.abs(y), initial=0))),
        "collectives": sh.compiled_stats(compiled)["collectives"],
        "flops": (compiled.cost_analysis() or {}).get("flops"),
        "plain_flops": (plain_c.cost_analysis() or {}).get("flops"),
    }


def kron_home_checks(mesh):
    """``jz.psgd_kron(home_devices=mesh)`` on 8 devices vs ``jz.psgd_kron`` on one, in
    float64, 5 steps, every step a preconditioner update (and a balance at step 3), and both
    programs' per-device FLOPs."""
    kw = dict(learning_rate=0.01, weight_decay=0.01, balance_prob=0.5)
    return _home_vs_one(lambda **h: jz.psgd_kron(**kw, **h), KRON_SHAPES, 4, mesh)


def shampoo_home_checks(mesh):
    """``jz.shampoo(home_devices=mesh)`` on 8 devices vs ``jz.shampoo`` on one, in float64: 5
    steps with the roots refreshed every 2 (SOAP's shapes; the 24-wide side split into blocks
    of 20 and 4), the statistics full rank from the first step (``epsilon * I``)."""
    kw = dict(
        learning_rate=0.01, precondition_frequency=2, start_preconditioning_step=1, block_size=20
    )
    return _home_vs_one(lambda **h: jz.shampoo(**kw, **h), SOAP_SHAPES, 3, mesh)


def main():
    t0 = time.perf_counter()
    devices = np.array(jax.devices())
    mesh2 = Mesh(devices.reshape(4, 2), ("data", "model"))
    mesh1 = sh.data_mesh(8)
    txs = optimizers()
    _, placed = make_params(["one"], mesh2)
    result = {
        "devices": len(devices),
        "placement": {n: placement(tx, placed["one"]) for n, tx in txs.items()},
    }
    result["placement_seconds"] = time.perf_counter() - t0
    result["params"] = {
        k: {"shape": list(shape), "axes": [list(a) for a in spec_axes(spec, len(shape))]}
        for k, (shape, spec) in SHAPES.items()
    }
    # Parameters sharded over "model" (2), state placed like them and split over "data" (4).
    updated = {n: tx for n, tx in txs.items() if n in ELEMENTWISE_UPDATED or not _elementwise(n)}
    result["tp2_zero4"] = run_sharded(updated, mesh2, "data")
    rest = {n: tx for n, tx in txs.items() if n not in updated}
    result["tp2_zero4_layout"] = layout_only(rest, mesh2, "data")
    # Plain data parallelism over 8 devices (parameters replicated): ZeRO-1, then without.
    dp = {n: txs[n] for n in ("adam", "lamb", "adafactor(min_dim_size_to_factor=8)")}
    result["dp8_zero8"] = run_sharded(dp, mesh1, "data")
    result["dp8_replicated"] = run_sharded({"adam": txs["adam"]}, mesh1, None)
    # Non-element-wise optimizers in float64: exact up to the order of sums.
    with jax.enable_x64(True):
        exact = {
            "lamb": jz.get("lamb"),
            "lars": jz.get("lars"),
            "adafactor": jz.adafactor(min_dim_size_to_factor=8),
        }
        result["f64_tp2_zero4"] = run_sharded(exact, mesh2, "data", np.float64)
    t1 = time.perf_counter()
    result["train"] = train_checks()
    result["train_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    result["home"] = home_checks(mesh1)
    result["home_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    result["muon_home"] = muon_home_checks(mesh1, np.float32, (None, "data"))
    with jax.enable_x64(True):
        result["muon_home"].update(
            muon_home_checks(
                mesh1,
                np.float64,
                ("data", "data+zero1"),
                shapes=MUON_ZERO1_SHAPES,
                steps=MUON_ZERO1_STEPS,
            )
        )
    result["muon_home_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    result["muon_zero1_bytes"] = muon_zero1_bytes(mesh1)
    result["muon_zero1_bytes_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    with jax.enable_x64(True):
        result["soap_home"] = soap_home_checks(mesh1)
    result["soap_home_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    with jax.enable_x64(True):
        result["shampoo_home"] = shampoo_home_checks(mesh1)
    result["shampoo_home_seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    with jax.enable_x64(True):
        result["kron_home"] = kron_home_checks(mesh1)
    result["kron_home_seconds"] = time.perf_counter() - t1
    result["seconds"] = time.perf_counter() - t0
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
