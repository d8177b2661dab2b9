"""Composition with optax and Flax, hyperparameter validation, pytree mismatch errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import jaxopt_zoo as jz
from tests.helpers import stand_in_extra_args

# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.adam(-0.1), r"Invalid learning_rate: -0.1"),
        (lambda: jz.adam(1e-3, b1=1.0), r"Invalid b1: 1.0. Expected a number >= 0 and < 1"),
        (lambda: jz.adam(1e-3, b2=-0.5), r"Invalid b2: -0.5"),
        (lambda: jz.adam(1e-3, eps=-1e-8), r"Invalid eps"),
        (lambda: jz.adamw(1e-3, weight_decay=-1.0), r"Invalid weight_decay: -1.0"),
        (lambda: jz.sgd(0.1, momentum=-0.9), r"Invalid momentum: -0.9"),
        (lambda: jz.sgd(0.1, nesterov=True), r"Nesterov momentum needs momentum > 0"),
        (lambda: jz.sgd(0.1, momentum=0.9, nesterov=True, dampening=0.1), r"dampening"),
        (lambda: jz.rmsprop(0.1, decay=1.5), r"Invalid decay: 1.5"),
        (lambda: jz.adagrad(0.1, initial_accumulator_value=-1), r"initial_accumulator_value"),
        (lambda: jz.adadelta(rho=1.0), r"Invalid rho"),
        (lambda: jz.lion(1e-4, b1=2.0), r"Invalid b1"),
        (lambda: jz.clip_by_global_norm(0.0), r"Invalid max_norm"),
        (lambda: jz.adam(float("nan")), r"Invalid learning_rate: nan"),
        (lambda: jz.schedules.cosine(0.1, 0), r"Invalid decay_steps"),
        (lambda: jz.schedules.warmup_cosine(0.0, 0.1, 10, 5), r"decay_steps > warmup_steps"),
    ],
)
def test_invalid_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_types_raise_type_errors():
    with pytest.raises(TypeError, match=r"got a string"):
        jz.adam("0.001")
    with pytest.raises(TypeError, match=r"got a bool"):
        jz.adam(True)
    with pytest.raises(TypeError, match=r"expected a GradientTransformation"):
        jz.chain(jz.adam(1e-3), 0.1)


def test_arrays_tracers_and_schedules_pass_validation():
    jz.adam(jnp.asarray(1e-3))
    jz.adam(lambda count: 1e-3 / (1 + count))
    jax.jit(lambda lr: jz.adam(lr).init(jnp.ones(2)))(jnp.asarray(-1.0))  # traced: not checked


def test_registry_errors_name_the_options():
    with pytest.raises(
        KeyError, match=r"^Unknown optimizer 'adma'. Did you mean .*'adam'.*Known: .*adabelief"
    ):
        jz.get("adma")
    with pytest.raises(TypeError, match=r"adam: unknown argument\(s\) \['betas'\]"):
        jz.get("adam", betas=(0.9, 0.99))


# ----------------------------------------------------------------- pytrees


def test_structure_mismatch_names_both_structures():
    tx = jz.adam(1e-3)
    state = tx.init({"w": jnp.ones(3), "b": jnp.ones(2)})
    with pytest.raises(
        ValueError,
        match=r"(?s)does not match.*gradients:.*'w'.*state \(from "
        r"init\):.*'b'.*'w'",
    ):
        tx.update({"w": jnp.ones(3)}, state)


def test_shape_mismatch_names_the_leaf():
    tx = jz.sgd(0.1, momentum=0.9)
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"leaf \['w'\] has shape \(4,\).*shape \(3,\)"):
        tx.update({"w": jnp.ones(4)}, state)


def test_missing_params_for_weight_decay_is_explained():
    tx = jz.adamw(1e-3)
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"needs the current parameters"):
        tx.update({"w": jnp.ones(3)}, state)


def test_empty_and_zero_size_params():
    for name in jz.available():
        tx = jz.get(name)
        params = {"empty": jnp.zeros((0, 3)), "x": jnp.ones(2)}
        state = tx.init(params)
        g = jax.tree.map(jnp.ones_like, params)
        u, _ = tx.update(g, state, params, **stand_in_extra_args(name, params, g))
        assert u["empty"].shape == (0, 3), name
        assert bool(jnp.all(jnp.isfinite(u["x"]))), name
        u, _ = tx.update({}, tx.init({}), {}, **stand_in_extra_args(name, {}, {}))
        assert u == {}, name


# ----------------------------------------------------------------- blocks


def test_masked_leaves_other_updates_untouched():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = jz.masked(jz.scale(10.0), {"w": True, "b": False})
    u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(u["w"], 10.0)
    np.testing.assert_allclose(u["b"], 1.0)


def test_partition_routes_by_label():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = jz.partition(
        {"fast": jz.sgd(1.0), "frozen": jz.scale(0.0)}, lambda p: {"w": "fast", "b": "frozen"}
    )
    u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(u["w"], -1.0)
    np.testing.assert_allclose(u["b"], 0.0)
    with pytest.raises(ValueError, match=r"labels \['other'\] have no transformation"):
        jz.partition({"fast": jz.sgd(1.0)}, {"w": "fast", "b": "other"}).init(params)


def test_clip_by_global_norm_bounds_the_norm():
    g = {"a": jnp.full(4, 3.0), "b": jnp.full(3, -4.0)}
    tx = jz.clip_by_global_norm(1.0)
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(float(jz.global_norm(u)), 1.0, rtol=1e-6)
    small = jax.tree.map(lambda x: x * 1e-3, g)
    u, _ = tx.update(small, tx.init(g))
    np.testing.assert_allclose(u["a"], small["a"])


def test_norms_of_half_precision_leaves_are_taken_in_float32():
    # A float16 leaf's squares overflow at 256 and their sum far earlier: norms, RMS and
    # trust ratios sum in float32 (before: global_norm inf, the clip zeroed every update,
    # LAMB/fromage took inf * 0 = nan for a zero update).
    rng = np.random.default_rng(0)
    big = {"w": jnp.asarray(rng.normal(size=(64, 64)) * 50, jnp.float16)}
    want = float(np.sqrt(np.sum(np.asarray(big["w"], np.float64) ** 2)))
    got = jz.global_norm(big)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    tx = jz.clip_by_global_norm(1.0)
    u, _ = tx.update(big, tx.init(big))
    np.testing.assert_allclose(float(jz.global_norm(u)), 1.0, rtol=2e-3)
    zero = {"w": jnp.zeros((64, 64), jnp.float16)}
    f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
    for name in ("lamb", "fromage", "lars"):
        tx = jz.get(name)
        for g in (big, zero):
            u, _ = tx.update(g, tx.init(big), big)
            want, _ = tx.update(f32(g), tx.init(f32(big)), f32(big))
            assert u["w"].dtype == jnp.float16, name
            scale = float(jnp.max(jnp.abs(want["w"])))
            np.testing.assert_allclose(u["w"].astype(jnp.float32), want["w"], atol=2e-3 * scale)


def test_skip_not_finite_equals_a_control_run_that_skips_those_steps():
    # NaN and Inf gradients injected at chosen steps (two of them in a row, under the limit
    # of 2, then more after a finite step reset the count): parameters and inner state end
    # equal to Adam run on the finite gradients only (to float32 rounding: XLA compiles the
    # guarded step into other fused loops, so the last bit may differ).
    bad = {3: jnp.nan, 4: jnp.inf, 9: -jnp.inf, 10: jnp.nan, 15: jnp.nan}
    rng = np.random.default_rng(0)
    grads = [
        {
            "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=3), jnp.float32),
        }
        for _ in range(20)
    ]
    for t, v in bad.items():
        grads[t] = {"w": grads[t]["w"].at[1, 2].set(v), "b": grads[t]["b"]}
    guarded, control = jz.skip_not_finite(jz.adam(0.1), max_consecutive=2), jz.adam(0.1)
    p0 = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    step_g = jax.jit(lambda g, s, p: guarded.update(g, s, p))
    step_c = jax.jit(lambda g, s, p: control.update(g, s, p))
    pg, sg, pc, sc = p0, guarded.init(p0), p0, control.init(p0)
    for t, g in enumerate(grads):
        u, sg = step_g(g, sg, pg)
        pg = optax.apply_updates(pg, u)
        if t not in bad:
            u, sc = step_c(g, sc, pc)
            pc = optax.apply_updates(pc, u)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)  # noqa: E731
    jax.tree.map(close, pg, pc)
    jax.tree.map(close, sg.inner_state, sc)
    assert int(sg.total_skipped) == len(bad) and int(sg.consecutive) == 0


def test_skip_not_finite_skips_and_counts():
    tx = jz.skip_not_finite(jz.sgd(0.1, momentum=0.9), max_consecutive=2)
    p = jnp.ones(3)
    s = tx.init(p)
    u, s = tx.update(jnp.ones(3), s, p)
    inner_after_one = s.inner_state
    u, s = tx.update(jnp.array([1.0, jnp.nan, 1.0]), s, p)
    np.testing.assert_array_equal(u, 0.0)
    assert int(s.total_skipped) == 1 and not bool(s.last_finite)
    jax.tree.map(np.testing.assert_array_equal, s.inner_state, inner_after_one)
    u, s = tx.update(jnp.array([jnp.inf, 1.0, 1.0]), s, p)
    assert int(s.total_skipped) == 2
    # a third non-finite step in a row: gives up skipping and lets it through
    u, s = tx.update(jnp.array([jnp.inf, 1.0, 1.0]), s, p)
    assert not bool(jnp.all(jnp.isfinite(u))) and int(s.total_skipped) == 2


def test_chain_forwards_extra_args():
    seen = {}

    def init(params):
        return jz.EmptyState()

    def update(updates, state, params=None, *, value=None):
        seen["value"] = value
        return updates, state

    tx = jz.chain(jz.GradientTransformationExtraArgs(init, update), jz.sgd(0.1))
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2), value=3.0)
    assert seen["value"] == 3.0


# ----------------------------------------------------------------- composition


def test_multisteps_accumulates_like_a_big_batch():
    params = jnp.array([1.0, -2.0])
    grads = [jnp.array([0.5, 1.0]), jnp.array([1.5, -1.0])]
    ms = optax.MultiSteps(jz.adam(0.1), every_k_schedule=2)
    s = ms.init(params)
    p = params
    for g in grads:
        u, s = ms.update(g, s, p)
        p = optax.apply_updates(p, u)
    tx = jz.adam(0.1)
    u, _ = tx.update((grads[0] + grads[1]) / 2, tx.init(params), params)
    np.testing.assert_allclose(p, params + u, rtol=1e-6)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)


def test_flax_train_state_trains():
    model = Tiny()
    x = jnp.linspace(-1, 1, 16).reshape(8, 2)
    y = x @ jnp.array([[2.0], [-1.0]])
    st = train_state.TrainState.create(
        apply_fn=model.apply, params=model.init(jax.random.key(0), x), tx=jz.adamw(0.05)
    )

    @jax.jit
    def step(st):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((st.apply_fn(p, x) - y) ** 2))(st.params)
        return st.apply_gradients(grads=g), loss

    st, first = step(st)
    for _ in range(200):
        st, loss = step(st)
    assert float(loss) < 0.01 * float(first)


def test_nnx_optimizer_trains():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, jz.lion(0.01, weight_decay=0.0), wrt=nnx.Param)
    x = jnp.linspace(-1, 1, 16).reshape(8, 2)
    y = x @ jnp.array([[2.0], [-1.0]])

    @nnx.jit
    def step(model, opt):
        loss, g = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(model, g)
        return loss

    first = float(step(model, opt))
    for _ in range(300):
        loss = step(model, opt)
    assert float(loss) < 0.01 * first


def test_optax_blocks_drop_into_our_chain():
    tx = jz.chain(optax.clip_by_global_norm(1.0), jz.scale_by_adam(), optax.scale(-0.1))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.1))
    p = jnp.array([1.0, 2.0, 3.0])
    s1, s2 = tx.init(p), ref.init(p)
    for i in range(5):
        g = jnp.sin(p * (i + 1))
        u1, s1 = tx.update(g, s1, p)
        u2, s2 = ref.update(g, s2, p)
        np.testing.assert_allclose(u1, u2, rtol=1e-6)
