"""Every registered optimizer through the same checks (the optimizer table).

Compiled functions are built once per (optimizer, dtype) and shared across checks.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from tests.helpers import stand_in_extra_args

NAMES = jz.available()

# Per optimizer: keyword arguments (beyond the registry defaults) and step counts for the
# convergence checks: after STEPS steps, the parabola's minimum within 1e-2 from
# p0 = (-1, 1.5), and Rosenbrock's loss down to a quarter of its value at (-1.2, 1).
TABLE = {
    "sgd": dict(kw=dict(learning_rate=0.002)),
    "momentum": dict(kw=dict(learning_rate=0.001)),
    "nesterov": dict(kw=dict(learning_rate=0.001)),
    "adagrad": dict(kw=dict(learning_rate=0.5)),
    "rmsprop": dict(kw=dict(learning_rate=0.01)),
    "rmsprop_centered": dict(kw=dict(learning_rate=0.01)),
    "rmsprop_nesterov": dict(kw=dict(learning_rate=0.005)),
    "adadelta": dict(kw=dict(learning_rate=1.0)),
    "adam": dict(kw=dict(learning_rate=0.05)),
    "adamw": dict(kw=dict(learning_rate=0.05)),
    "amsgrad": dict(kw=dict(learning_rate=0.05)),
    "adamax": dict(kw=dict(learning_rate=0.05)),
    "nadam": dict(kw=dict(learning_rate=0.05)),
    "nadamw": dict(kw=dict(learning_rate=0.05)),
    "radam": dict(kw=dict(learning_rate=0.005)),
    "adabelief": dict(kw=dict(learning_rate=0.05)),
    "yogi": dict(kw=dict(learning_rate=0.05)),
    "lion": dict(kw=dict(learning_rate=0.005)),
    # low-bit state: the test's small leaves stay float32 (min_size), as adamw and lion
    "adam_8bit": dict(kw=dict(learning_rate=0.05)),
    "adamw_8bit": dict(kw=dict(learning_rate=0.05)),
    "adamw_4bit": dict(kw=dict(learning_rate=0.05)),
    "adamw_fp8": dict(kw=dict(learning_rate=0.05)),
    "lion_8bit": dict(kw=dict(learning_rate=0.005)),
    "lamb": dict(kw=dict(learning_rate=0.02)),
    "lars": dict(kw=dict(learning_rate=1.0, trust_coefficient=0.01)),
    "adafactor": dict(kw=dict(learning_rate=0.05, multiply_by_parameter_scale=False)),
    # eps well above float32 rounding: the constant gradients below keep SOAP's statistic
    # rank-deficient, and with eps=1e-8 Adam in the eigenbasis blows rounding noise along
    # the null direction up to full-size steps (jit and eager then differ by 3e-2)
    "soap": dict(kw=dict(learning_rate=0.05, eps=1e-2)),
    "shampoo": dict(kw=dict(learning_rate=0.05)),
    "schedule_free_sgd": dict(kw=dict(learning_rate=0.007)),
    "schedule_free_adamw": dict(kw=dict(learning_rate=0.05)),
    "prodigy": dict(kw=dict(learning_rate=1.0)),
    "adopt": dict(kw=dict(learning_rate=0.05)),
    "mars": dict(kw=dict(learning_rate=0.01)),
    "ademamix": dict(kw=dict(learning_rate=0.05)),
    # Matrices only in the tree tests below; the 2-vectors here take Muon's NAdamW part.
    "muon": dict(kw=dict(learning_rate=0.05)),
    # optax.contrib's (contrib-a); cocob, dadapt_adamw, dog and dowg need no learning rate
    "acprop": dict(kw=dict(learning_rate=0.01)),
    "cocob": dict(kw=dict(learning_rate=1.0)),
    "dadapt_adamw": dict(kw=dict(learning_rate=1.0)),
    "dog": dict(kw=dict(learning_rate=1.0)),
    "dowg": dict(kw=dict(learning_rate=1.0)),
    "dpsgd": dict(kw=dict(learning_rate=0.01, noise_multiplier=1e-3)),  # noise: 5e-5 from 0
    "simplified_ademamix": dict(kw=dict(learning_rate=0.001)),
    # its line search sets the step; the learning rate scales the direction before it
    "lbfgs": dict(kw=dict(learning_rate=0.1)),
    "galore": dict(kw=dict(learning_rate=0.05)),  # 2-vectors: Adam; matrices projected below
    "madgrad": dict(kw=dict(learning_rate=0.01)),
    "momo": dict(kw=dict(learning_rate=1.0)),
    "momo_adam": dict(kw=dict(learning_rate=0.05)),
    "sophia": dict(kw=dict(learning_rate=0.005)),
    # optax 0.2.8's remaining optimizers (polyak_sgd has no learning rate: the first
    # keyword is the one injected below)
    "adamaxw": dict(kw=dict(learning_rate=0.05)),
    "adan": dict(kw=dict(learning_rate=0.05)),
    "fromage": dict(kw=dict(learning_rate=0.01)),
    "noisy_sgd": dict(kw=dict(learning_rate=0.002)),
    "novograd": dict(kw=dict(learning_rate=0.005)),
    "optimistic_gradient_descent": dict(kw=dict(learning_rate=0.001)),
    "optimistic_adam": dict(kw=dict(learning_rate=0.05)),
    "optimistic_adam_v2": dict(kw=dict(learning_rate=0.05)),
    "polyak_sgd": dict(kw=dict(max_learning_rate=0.01)),
    "rprop": dict(kw=dict(learning_rate=0.01)),
    "sign_sgd": dict(kw=dict(learning_rate=0.001)),
    "signum": dict(kw=dict(learning_rate=0.001)),
    "sm3": dict(kw=dict(learning_rate=0.5)),
    # issue 19 (the unnamed 2-vector shares one second moment)
    "adam_mini": dict(kw=dict(learning_rate=0.05)),
    # PSGD Kron: its RMS clip bounds a step at 1.1 * lr (the parabola's end: within ~lr)
    "psgd_kron": dict(kw=dict(learning_rate=0.003)),
}
STEPS = 3000


def test_table_covers_every_registered_optimizer():
    assert sorted(TABLE) == sorted(NAMES)


def parabola(p):
    return jnp.sum(p**2)


def rosenbrock(p):
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


@functools.lru_cache(maxsize=None)
def runs(name):
    """STEPS steps of optimizer ``name`` on each 2-D test function, from each's start: one
    compiled program for both (a compile costs more than the 2 x 3000 tiny steps), run
    once; ``{fn_name: (final params, losses)}``."""
    tx = jz.get(name, **TABLE[name]["kw"])

    def one(fn, p0):
        def body(carry, _):
            p, s = carry
            g = jax.grad(fn)(p)
            u, s = tx.update(g, s, p, **stand_in_extra_args(name, p, g, loss=fn))
            p = optax.apply_updates(p, u)
            return (p, s), fn(p)

        (p, _), losses = jax.lax.scan(body, (p0, tx.init(p0)), None, length=STEPS)
        return p, losses

    out = jax.jit(lambda a, b: {"parabola": one(parabola, a), "rosenbrock": one(rosenbrock, b)})(
        START["parabola"], START["rosenbrock"]
    )
    return jax.device_get(out)


START = {"parabola": jnp.array([-1.0, 1.5]), "rosenbrock": jnp.array([-1.2, 1.0])}


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola(name):
    p, losses = runs(name)["parabola"]
    assert np.all(np.isfinite(losses))
    assert float(np.max(np.abs(p))) < 1e-2, f"{name} ended at {p}"


@pytest.mark.parametrize("name", NAMES)
def test_descends_on_rosenbrock(name):
    p, losses = runs(name)["rosenbrock"]
    start = float(rosenbrock(START["rosenbrock"]))
    assert np.all(np.isfinite(losses)), name
    assert float(losses[-1]) < 0.25 * start, f"{name}: {start} -> {float(losses[-1])}"


@pytest.mark.parametrize("name", NAMES)
def test_descends_with_only_required_arguments(name):
    """``adadelta()``, ``adam(lr)``, ... as a user would first call them, on a quadratic."""
    e = jz.entry(name)
    kwargs = dict(e.fixed)
    if "learning_rate" in _required(e.factory):
        kwargs["learning_rate"] = e.default_lr
    tx = e.factory(**kwargs)
    p = jnp.array([3.0, -2.0])
    s = tx.init(p)
    extra = functools.partial(stand_in_extra_args, name, loss=parabola)
    step = jax.jit(lambda p, s: tx.update(2 * p, s, p, **extra(p, 2 * p)))
    for _ in range(20):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
    assert float(jnp.sum(p**2)) < 13.0, f"{name} did not descend: {p}"


def _required(fn):
    import inspect

    return [
        k
        for k, v in inspect.signature(fn).parameters.items()
        if v.default is inspect.Parameter.empty
    ]


def tree_params(dtype):
    return {
        "w": jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(3, 4).astype(dtype),
        "b": jnp.full((4,), 0.5, dtype),
        "s": jnp.asarray(0.3, dtype),
    }


@functools.lru_cache(maxsize=None)
def stepper(name, dtype_name):
    tx = jz.get(name, **TABLE[name]["kw"])
    return tx, jax.jit(lambda g, s, p: tx.update(g, s, p, **stand_in_extra_args(name, p, g)))


DTYPES = ["float32", "bfloat16", "complex64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_dtypes_state_and_no_recompilation(name, dtype):
    """Every optimizer accepts complex parameters: |g|^2 replaces g^2, and where an
    algorithm takes a sign or a maximum it applies it to z / |z| or |z| (Lion, AdaMax, Yogi)."""
    _check_dtypes(name, dtype)


def _check_dtypes(name, dtype):
    dt = jnp.dtype(dtype)
    params = tree_params(dt)
    tx, step = stepper(name, dtype)
    state = tx.init(params)
    grads = jax.tree.map(lambda p: (p * 0.3 + 0.1).astype(dt), params)
    if dtype == "complex64":
        grads = jax.tree.map(lambda g: g * (1 + 0.5j), grads)
    s_struct = jax.tree.structure(state)
    s_dtypes = [x.dtype for x in jax.tree.leaves(state)]
    for _ in range(3):
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        # update dtype equals gradient dtype, shapes equal
        chex.assert_trees_all_equal_dtypes(updates, grads)
        chex.assert_trees_all_equal_shapes(updates, grads)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)), name
        # state structure and dtypes stable across steps
        assert jax.tree.structure(state) == s_struct
        assert [x.dtype for x in jax.tree.leaves(state)] == s_dtypes
    # one compile for the three calls
    assert step._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_eager_agree(name):
    tx, step = stepper(name, "float32")
    params = tree_params(jnp.float32)
    grads = jax.tree.map(lambda p: jnp.cos(3 * p) + 0.2, params)
    s1 = s2 = tx.init(params)
    p1 = p2 = params
    for _ in range(4):
        u1, s1 = step(grads, s1, p1)
        p1 = optax.apply_updates(p1, u1)
        u2, s2 = tx.update(grads, s2, p2, **stand_in_extra_args(name, p2, grads))
        p2 = optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(s1, s2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_inside_optax_chain_and_inject_hyperparams(name):
    hp = "learning_rate" if "learning_rate" in TABLE[name]["kw"] else next(iter(TABLE[name]["kw"]))
    lr = TABLE[name]["kw"][hp]
    other = {k: v for k, v in TABLE[name]["kw"].items() if k != hp}
    e = jz.entry(name)
    factory = functools.partial(e.factory, **{**e.fixed, **other})
    static = {
        "adafactor": ("min_dim_size_to_factor", "decay_offset"),
        "soap": ("precondition_frequency", "max_precondition_dim"),
        "shampoo": ("block_size", "precondition_frequency", "start_preconditioning_step"),
        "muon": ("ns_steps",),
        "dpsgd": ("seed",),
        "lbfgs": ("memory_size", "scale_init_precond"),
        "galore": ("rank", "update_proj_gap", "proj_step_offset", "decay_after_update"),
        "sophia": ("update_interval", "bias_correction", "hessian_first"),
        "madgrad": ("decouple_decay",),
        "momo": ("adapt_lower_bound",),
        "momo_adam": ("adapt_lower_bound",),
        # low-bit state: the block size, size threshold and rounding seed shape the state
        **{
            n: ("block_size", "min_size", "seed")
            for n in ("adam_8bit", "adamw_8bit", "adamw_4bit", "adamw_fp8", "lion_8bit")
        },
        "adam_mini": ("dim", "n_heads"),  # issue 19: the blocks' shapes
        "psgd_kron": ("max_size_triangular", "min_ndim_triangular", "seed"),
    }.get(name, ())  # loop counts stay Python ints
    injected = optax.inject_hyperparams(factory, static_args=static)(**{hp: lr})
    params = tree_params(jnp.float32)
    grads = jax.tree.map(lambda p: jnp.sin(2 * p) + 0.1, params)

    def run_tx(tx, step, n=3):
        s, p = tx.init(params), params
        for _ in range(n):
            u, s = step(grads, s, p)
            p = optax.apply_updates(p, u)
        return p, s

    def eager(tx):  # 3 small steps op by op cost less than a compile
        return lambda g, s, p: tx.update(g, s, p, **stand_in_extra_args(name, p, g))

    plain, step = stepper(name, "float32")  # compiled once for the dtype test too
    p_plain, _ = run_tx(plain, step)
    chained = optax.chain(optax.clip_by_global_norm(1e6), plain)
    p_chain, _ = run_tx(chained, eager(chained))
    p_inj, s_inj = run_tx(injected, eager(injected))
    chex.assert_trees_all_close(p_chain, p_plain, rtol=1e-5, atol=1e-7)
    # injected hyperparameters are float32 arrays rather than Python constants, so the
    # arithmetic rounds differently: agreement to float32 noise, not bit for bit
    chex.assert_trees_all_close(p_inj, p_plain, rtol=1e-4, atol=1e-6)
    # the injected learning rate is live state: changing it changes the next step
    extra = stand_in_extra_args(name, p_inj, grads)
    u_before, _ = injected.update(grads, s_inj, p_inj, **extra)
    s_inj.hyperparams[hp] = jnp.asarray(0.0)
    u_zero, _ = injected.update(grads, s_inj, p_inj, **extra)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(u_before), jax.tree.leaves(u_zero))
    )
    if name in INIT_ONLY_LR:
        assert diff == 0.0, name
    else:
        assert diff > 1e-6, name


# Their learning rate is only the initial value of a state (rprop's step sizes), so changing
# the injected one after init changes nothing (as in optax).
INIT_ONLY_LR = {"rprop"}
