"""The one-pass native CPU step (jaxopt_zoo.fast.native) behind fused_apply on FlatParams.

For every optimizer with a kernel, the native step is taken (the custom call is in the
compiled program) and its parameter and state trajectories over many steps equal the plain
optimizer's to float32 rounding; for every other configuration the XLA path is taken, with
the same results; the buffers are updated in place; nothing recompiles; and a missing or
broken compiler falls back to XLA with a reason.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.fast import native

STEPS = 25
# 70,001 + 3x41 + 7 elements: above the kernel's threshold for using both threads, not a
# multiple of its 1024-element blocks, so chunk and block edges are exercised.
SHAPES = {"w": (70_001,), "k": (3, 41), "b": (7,)}


def make_tree(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()}


def grads_at(step, dtype=jnp.float32):
    g = make_tree(1000 + step, dtype)
    g["b"] = g["b"].at[:3].set(0.0)  # exact zeros: AdaGrad's s > 0 branch, sign(0) in Lion
    return g


def lowered_text(step, *args):
    return step.lower(*args).as_text()


def run_native(tx, dtype=jnp.float32, native_flag=True):
    fused = jz.fuse(tx)
    step = jax.jit(jz.fused_apply(fused, native=native_flag), donate_argnums=(0, 1))
    params = jz.FlatParams.from_tree(make_tree(0, dtype))
    state = fused.init(params)
    grads0 = jz.FlatParams.from_tree(grads_at(0, dtype))
    uses_kernel = native.TARGET in lowered_text(step, params, state, grads0)
    trajectory = []
    for t in range(STEPS):
        params, state = step(params, state, jz.FlatParams.from_tree(grads_at(t, dtype)))
        trajectory.append(params.tree())
    assert step._cache_size() == 1  # compiled once
    return trajectory, state, uses_kernel


def run_plain(tx, dtype=jnp.float32):
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    params = make_tree(0, dtype)
    state = tx.init(params)
    trajectory = []
    for t in range(STEPS):
        params, state = step(params, state, grads_at(t, dtype))
        trajectory.append(params)
    return trajectory, state


def assert_same_trajectory(got, want, rtol):
    for step, (a, b) in enumerate(zip(got, want)):
        for k in SHAPES:
            x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
            scale = np.max(np.abs(y))
            np.testing.assert_allclose(
                x, y, rtol=0, atol=rtol * scale, err_msg=f"step {step + 1}, leaf {k}"
            )


def test_the_kernel_builds_here():
    # CI and development machines have a C++ compiler: the native path must be live, or
    # every parity test below would silently compare XLA with XLA.
    st = native.status()
    assert st["available"], st["reason"]
    assert os.path.exists(st["library"])


WITH_KERNEL = {
    "adam": lambda: jz.adam(1e-2),
    "adam-eps-root": lambda: jz.adam(1e-2, eps_root=1e-8, b1=0.8, b2=0.99),
    "adamw": lambda: jz.adamw(1e-2, weight_decay=0.1),
    "adam-cosine": lambda: jz.adam(optax.cosine_decay_schedule(1e-2, STEPS)),
    "adamw-scheduled-decay": lambda: jz.chain(
        jz.scale_by_adam(),
        jz.add_decayed_weights(lambda c: 0.01 * (c + 1)),
        jz.scale_by_learning_rate(1e-2),
    ),
    "sgd": lambda: jz.sgd(0.05),
    "momentum": lambda: jz.sgd(0.05, momentum=0.9),
    "nesterov": lambda: jz.sgd(0.05, momentum=0.9, nesterov=True),
    "dampening": lambda: jz.chain(jz.trace(0.9, dampening=0.3), jz.scale(-0.05)),
    "lion": lambda: jz.lion(1e-3, weight_decay=0.1),
    "rmsprop": lambda: jz.rmsprop(1e-3),
    "rmsprop-eps-outside": lambda: jz.rmsprop(1e-3, eps_in_sqrt=False, momentum=0.5),
    "adagrad": lambda: jz.adagrad(0.05),
    "nadam": lambda: jz.nadam(1e-2),
    "nadamw": lambda: jz.nadamw(1e-2, weight_decay=0.1),
    "amsgrad": lambda: jz.amsgrad(1e-2),
    "adamax": lambda: jz.adamax(1e-2),
    "adagrad-no-initial": lambda: jz.chain(
        jz.scale_by_rss(0.0, eps=1e-10), jz.scale_by_learning_rate(0.05)
    ),
    "sign_sgd": lambda: jz.sign_sgd(1e-3, weight_decay=0.1),
    "signum": lambda: jz.signum(optax.linear_schedule(1e-3, 1e-4, STEPS), beta=0.8),
    "ema-debiased": lambda: jz.chain(jz.ema(0.8), jz.scale(-0.05)),
    "adan": lambda: jz.adan(1e-2, weight_decay=0.02),
    "adan-paper": lambda: jz.adan(1e-2, eps_root=0.0, paper_weights=True),
    "adan-proximal": lambda: jz.adan(
        optax.linear_schedule(1e-2, 1e-3, STEPS), weight_decay=0.5, proximal=True
    ),
    "optimistic_gradient_descent": lambda: jz.optimistic_gradient_descent(
        1e-2, alpha=optax.linear_schedule(1.0, 0.5, STEPS), beta=0.7
    ),
    "optimistic_adam": lambda: jz.optimistic_adam(1e-2),
    "simplified_ademamix": lambda: jz.simplified_ademamix(
        1e-3, b1=0.9, alpha=optax.linear_schedule(0.0, 5.0, STEPS), weight_decay=0.1
    ),
    "adabelief": lambda: jz.adabelief(1e-2),
    "acprop": lambda: jz.acprop(1e-2, weight_decay=0.1),
    "rprop": lambda: jz.rprop(1e-2),
    "rprop-torch": lambda: jz.rprop(  # a learning rate above the bounds: clamped at once
        0.1, min_step_size=1e-3, max_step_size=0.05, current_step=True, clamp_unchanged=True
    ),
    "madgrad": lambda: jz.madgrad(optax.linear_schedule(1e-2, 1e-3, STEPS), weight_decay=0.1),
    "madgrad-dual-averaging": lambda: jz.madgrad(
        1e-2, momentum=0.0, weight_decay=0.1, decouple_decay=True
    ),
    "cocob": lambda: jz.cocob(),
    "cocob-decay": lambda: jz.cocob(0.5, weight_decay=0.01),
}


@pytest.mark.parametrize("name", sorted(WITH_KERNEL))
def test_native_step_matches_the_plain_optimizer(name):
    tx = WITH_KERNEL[name]()
    got, state, uses_kernel = run_native(tx)
    assert uses_kernel, f"{name}: expected the one-pass kernel, got the XLA path"
    want, plain_state = run_plain(tx)
    # Float32 rounding: the kernel multiplies by 1/(1 - b^t) where the plain path divides,
    # and the chain's products are formed in another order; 25 steps stay within ~2e-6.
    assert_same_trajectory(got, want, rtol=2e-6)
    # The optimizer state matches too (same types and values, counts included).
    flat = jax.tree.map(
        lambda x: x.tree() if isinstance(x, jz.FlatParams) else x,
        state.inner,
        is_leaf=lambda x: isinstance(x, jz.FlatParams),
    )
    assert jax.tree.structure(flat) == jax.tree.structure(plain_state)
    for a, b in zip(jax.tree.leaves(flat), jax.tree.leaves(plain_state)):
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            np.asarray(b, np.float64),
            rtol=1e-5,
            atol=1e-6 * max(1.0, float(jnp.max(jnp.abs(b)))),
        )


WITHOUT_KERNEL = {
    "nadam-amsgrad": lambda: jz.adam(1e-2, nesterov=True, amsgrad=True),
    "adam-mu-dtype": lambda: jz.adam(1e-2, mu_dtype=jnp.bfloat16),
    "rmsprop-centered": lambda: jz.rmsprop(1e-3, centered=True),
    "signum-bf16-average": lambda: jz.signum(1e-3, accumulator_dtype=jnp.bfloat16),
    "masked-decay": lambda: jz.adamw(
        1e-2, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 0, p)
    ),
    "clipped": lambda: jz.chain(jz.clip_by_global_norm(1.0), jz.adam(1e-2)),
    "optax-chain": lambda: optax.chain(jz.scale_by_adam(), optax.scale(-1e-2)),
    "injected": lambda: optax.inject_hyperparams(jz.adam)(learning_rate=1e-2),
}


@pytest.mark.parametrize("name", sorted(WITHOUT_KERNEL))
def test_other_optimizers_take_the_xla_path_with_the_same_results(name):
    tx = WITHOUT_KERNEL[name]()
    got, _, uses_kernel = run_native(tx)
    assert not uses_kernel, name
    want, _ = run_plain(tx)
    assert_same_trajectory(got, want, rtol=2e-5)


def test_native_false_and_other_dtypes_take_the_xla_path():
    tx = jz.adam(1e-2)
    got, _, uses_kernel = run_native(tx, native_flag=False)
    assert not uses_kernel
    assert_same_trajectory(got, run_plain(tx)[0], rtol=2e-6)
    got, _, uses_kernel = run_native(tx, dtype=jnp.bfloat16)
    assert not uses_kernel
    want, _ = run_plain(tx, dtype=jnp.bfloat16)
    assert_same_trajectory(got, want, rtol=2e-2)


def test_every_buffer_is_updated_in_place():
    # Peak memory of a donated native step = its arguments: params, grads and state, with
    # no temporary as large as a parameter buffer (Lion included: XLA keeps a copy of its
    # old momentum, +33%).
    for tx in (jz.adam(1e-3), jz.lion(1e-4), jz.sgd(1e-2, momentum=0.9)):
        fused = jz.fuse(tx)
        params = jz.FlatParams.from_tree(make_tree(0))
        grads = jz.FlatParams.from_tree(grads_at(0))
        step = jax.jit(jz.fused_apply(fused), donate_argnums=(0, 1))
        stats = step.lower(params, fused.init(params), grads).compile().memory_analysis()
        n_bytes = 4 * params.buffers["float32"].size
        donated = stats.argument_size_in_bytes - n_bytes  # all but the gradients
        assert stats.alias_size_in_bytes >= donated - 64
        assert stats.temp_size_in_bytes < n_bytes // 100


def test_a_missing_or_broken_compiler_falls_back_to_xla(tmp_path):
    # In a fresh process: with no compiler, a failing compiler or JAXOPT_ZOO_NATIVE=0 the
    # status says why, and fused_apply still gives the plain optimizer's parameters.
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, optax, jaxopt_zoo as jz
        p = {"w": jnp.arange(5.0), "b": jnp.ones(2)}
        g = {"w": jnp.full(5, 0.5), "b": jnp.array([1.0, -2.0])}
        tx = jz.adam(0.1)
        f = jz.fuse(tx)
        fp = jz.FlatParams.from_tree(p)
        step = jax.jit(jz.fused_apply(f))
        new, _ = step(fp, f.init(fp), jz.FlatParams.from_tree(g))
        u, _ = tx.update(g, tx.init(p), p)
        want = optax.apply_updates(p, u)
        assert all(bool(jnp.allclose(new.tree()[k], want[k])) for k in p)
        assert jz.native.TARGET not in step.lower(fp, f.init(fp), fp).as_text()
        print(jz.native.status()["reason"])
    """)
    cases = {
        "no compiler": {"CXX": str(tmp_path / "no-such-c++")},
        "failing compiler": {"CXX": "false"},
        "disabled": {"JAXOPT_ZOO_NATIVE": "0"},
    }
    for name, env in cases.items():
        full = dict(os.environ, JAXOPT_ZOO_CACHE_DIR=str(tmp_path / "cache"), **env)
        done = subprocess.run(
            [sys.executable, "-c", script], env=full, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        reason = done.stdout.strip().splitlines()[-1]
        expected = {
            "no compiler": "no C++ compiler found",
            "failing compiler": "failed",
            "disabled": "JAXOPT_ZOO_NATIVE=0",
        }[name]
        assert expected in reason, (name, reason)
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-built left behind


def test_a_damaged_cached_kernel_is_rebuilt(tmp_path):
    # A truncated library in the cache (a full disk, a crash in an older version) is
    # rebuilt on the next use instead of disabling the kernel.
    cache = tmp_path / "cache"
    env = dict(os.environ, JAXOPT_ZOO_CACHE_DIR=str(cache))
    script = "import jaxopt_zoo as jz; s = jz.native.status(); print(s['available'], s['library'])"
    first = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0 and first.stdout.split()[0] == "True", first.stderr[-2000:]
    library = first.stdout.split()[1]
    with open(library, "r+b") as f:
        f.truncate(100)
    again = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and again.stdout.split() == ["True", library], again.stderr
    assert os.path.getsize(library) > 10_000


@pytest.mark.parametrize("guard", [False, True], ids=["plain", "guarded"])
def test_the_trainer_step_takes_the_kernel_with_flat_parameters(guard):
    # train_step on FlatParams with fuse(adam) runs the kernel and matches the plain step,
    # with and without the non-finite guard (one step factory: the guard does not bypass it).
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train.steps import train_step

    class FlatModel:  # as benchmarks/train_bench.py's: the model on FlatParams' tree view
        def __init__(self, model):
            self.model = model

        def apply(self, variables, *args, **kwargs):
            return self.model.apply({"params": variables["params"].tree()}, *args, **kwargs)

    model = get_model("mlp")
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 28, 28, 1)), jnp.float32)
    y = jnp.arange(16, dtype=jnp.int32) % 10
    w, key = jnp.ones(16), jax.random.PRNGKey(0)
    params = model.init(jax.random.PRNGKey(1), x[:1])["params"]
    plain, fused = jz.adam(1e-2), jz.fuse(jz.adam(1e-2))
    flat = jz.FlatParams.from_tree(params)
    step_plain = jax.jit(lambda p, s: train_step(model, plain, p, s, x, y, w, key)[:2])
    step_flat = jax.jit(
        lambda p, s: train_step(FlatModel(model), fused, p, s, x, y, w, key, guard=guard)[:2]
    )
    assert native.TARGET in step_flat.lower(flat, fused.init(flat)).as_text()
    p, s, fp, fs = params, plain.init(params), flat, fused.init(flat)
    for _ in range(10):
        p, s = step_plain(p, s)
        fp, fs = step_flat(fp, fs)
    for a, b in zip(jax.tree.leaves(fp.tree()), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(b))))
