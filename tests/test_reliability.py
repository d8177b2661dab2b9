"""Non-finite steps in the trainer, and bad input the other test files do not cover.

RELIABILITY.md lists every failure mode with the test that shows it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.train import (
    LoopState,
    NonFiniteError,
    NonFiniteWarning,
    TrainConfig,
    epoch_order,
    init_loop_state,
    train_and_evaluate,
)
from tests.helpers import stand_in_extra_args

ALL_NAMES = jz.available() + jz.available("torch.") + jz.available("keras.")


# --------------------------------------------------------------------------- #
# A model whose gradients can be poisoned example by example
# --------------------------------------------------------------------------- #

NAN_GRAD, INF_GRAD, NAN_LOSS = 1, 2, 3  # codes written into pixel 0 of an image


@jax.custom_vjp
def _inject(gate, code):
    """Forward: 0 (nan for NAN_LOSS examples). Backward: d/dgate is nan or inf as soon as
    the batch holds a NAN_GRAD or INF_GRAD example, else 0."""
    return jnp.where(code == NAN_LOSS, jnp.nan, 0.0) + 0.0 * gate


def _inject_fwd(gate, code):
    return _inject(gate, code), code


def _inject_bwd(code, g):
    bad = jnp.where(code == NAN_GRAD, jnp.nan, jnp.where(code == INF_GRAD, jnp.inf, 0.0))
    return jnp.sum(bad) + 0.0 * jnp.sum(g), None


_inject.defvjp(_inject_fwd, _inject_bwd)


class Poisoned(nn.Module):
    """A small MLP that ignores pixel 0 and reads it as a poison code instead; with
    ``active=False`` the codes do nothing (the control model, same parameters)."""

    active: bool = True

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape((x.shape[0], -1))
        code = jnp.round(x[:, 0]).astype(jnp.int32)
        x = x.at[:, 0].set(0.0)
        gate = self.param("gate", nn.initializers.zeros, ())
        logits = nn.Dense(10)(nn.relu(nn.Dense(16)(x)))
        poison = _inject(gate, code) if self.active else 0.0 * gate + jnp.zeros(x.shape[0])
        return logits + poison[:, None]


N, BS, EPOCHS, SEED = 128, 16, 3, 0
SPE = N // BS  # no partial batch: padding rows never repeat a poisoned example
_rng = np.random.default_rng(0)
IMAGES = _rng.uniform(0.0, 0.45, (N, 28, 28, 1)).astype(np.float32)
LABELS = _rng.integers(0, 10, N).astype(np.int32)
TX = optax.adam(1e-2)


def cfg(**kw):
    kw = {"batch_size": BS, "epochs": EPOCHS, "seed": SEED, "progress": False, **kw}
    return TrainConfig(**kw)


def step_of(example: int, epoch: int) -> int:
    """The global step (from 0) whose batch holds ``example`` in ``epoch``."""
    order = np.asarray(epoch_order(jax.random.PRNGKey(SEED), epoch, N))
    return epoch * SPE + int(np.flatnonzero(order == example)[0]) // BS


def poison(codes):
    """Images with ``{example: code}`` written in, and the set of steps (from 0) that
    meet a poisoned example."""
    images = IMAGES.copy()
    for i, c in codes.items():
        images[i, 0, 0, 0] = float(c)
    bad = {step_of(i, e) for i in codes for e in range(EPOCHS)}
    return images, bad


def pick_examples(codes_and_epochs):
    """One example per (code, epoch) that does not fall in the first batch of an epoch
    (the control run below cannot skip a first batch) and whose steps don't collide."""
    chosen, used = {}, set()
    for code in codes_and_epochs:
        for i in range(N):
            steps = {step_of(i, e) for e in range(EPOCHS)}
            if i in chosen or steps & used or any(s % SPE == 0 for s in steps):
                continue
            chosen[i], used = code, used | steps
            break
    return chosen


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def same_history(a, b):
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    return strip(a) == strip(b)


def control_run(bad_steps):
    """Plain training (no finiteness check) with the clean model that skips ``bad_steps``
    by hand: stop just before each, advance the step and the data position, resume."""
    model, data = Poisoned(active=False), (IMAGES, LABELS)
    state, history = init_loop_state(model, TX, IMAGES[:1], SEED), []
    for target in sorted(bad_steps) + [None]:
        if target is None or state.step < target:
            state, history = train_and_evaluate(
                model, TX, data, None, cfg(), state=state, callbacks=lambda s: s.step == target
            )
        if target is None:
            return state, history
        assert state.step == target
        state = jax.device_get(state)._replace(step=state.step + 1, batch=state.batch + 1)


# --------------------------------------------------------------------------- #
# on_nonfinite
# --------------------------------------------------------------------------- #


def test_on_nonfinite_is_validated_and_defaults_to_ignore():
    assert TrainConfig().on_nonfinite == "ignore"
    with pytest.raises(
        ValueError,
        match=r"Invalid on_nonfinite: 'raise'. Expected one of "
        r"'ignore', 'skip', 'stop'",
    ):
        TrainConfig(on_nonfinite="raise")


def test_skip_equals_a_control_run_that_skips_those_steps():
    codes = pick_examples([NAN_GRAD, INF_GRAD, NAN_LOSS])
    images, bad = poison(codes)
    assert len(codes) == 3 and len(bad) >= 3
    with pytest.warns(NonFiniteWarning) as record:
        state, history = train_and_evaluate(
            Poisoned(), TX, (images, LABELS), None, cfg(on_nonfinite="skip")
        )
    skipped = sorted(
        int(s) for w in record for s in str(w.message).split("(steps ")[1].rstrip(").").split(", ")
    )
    assert skipped == sorted(k + 1 for k in bad)  # messages count steps from 1
    assert state.step == EPOCHS * SPE and all(np.isfinite(h["train_loss"]) for h in history)

    control, control_history = control_run(bad)
    assert leaves_equal(state.params, control.params)
    assert leaves_equal(state.opt_state, control.opt_state)
    assert same_history(history, control_history)


@pytest.mark.parametrize(
    "code,leaf,what",
    [
        (INF_GRAD, "['gate']", "the gradient of ['gate'] is not finite (loss 2."),
        (NAN_GRAD, "['gate']", "the gradient of ['gate'] is not finite"),
        (NAN_LOSS, "['Dense_0']['bias']", "(loss nan)"),
    ],
)
def test_stop_names_the_step_and_the_first_nonfinite_leaf(code, leaf, what):
    codes = pick_examples([code])
    images, bad = poison(codes)
    first = min(bad)
    with pytest.raises(NonFiniteError) as info:
        train_and_evaluate(Poisoned(), TX, (images, LABELS), None, cfg(on_nonfinite="stop"))
    e = info.value
    where = f"step {first + 1} (epoch {first // SPE + 1}, batch {first % SPE + 1})"
    assert f"Non-finite values at {where}: " in str(e) and what in str(e)
    assert (e.step, e.leaf) == (first + 1, leaf)
    # The state it carries is the one before the failing step, exactly.
    before, _ = train_and_evaluate(
        Poisoned(), TX, (images, LABELS), None, cfg(), callbacks=lambda s: s.step == first
    )
    assert isinstance(e.state, LoopState) and e.state.step == first
    assert leaves_equal(e.state.params, before.params)
    assert leaves_equal(e.state.opt_state, before.opt_state)


def test_stop_names_a_nonfinite_update_from_finite_gradients():
    # eps=0 and a zero gradient (the kernel row of pixel 0, which the model zeroes): adam's
    # update is 0/0 there although every gradient is finite.
    images = IMAGES.copy()
    tx = optax.adam(1e-2, eps=0.0)
    with pytest.raises(
        NonFiniteError,
        match=r"step 1 \(epoch 1, batch 1\): the gradients are "
        r"finite .* but the optimizer's update makes "
        r"\['Dense_0'\]\['kernel'\] non-finite",
    ):
        train_and_evaluate(
            Poisoned(active=False), tx, (images, LABELS), None, cfg(on_nonfinite="stop")
        )


def test_skip_gives_up_when_a_whole_epoch_is_nonfinite():
    images = IMAGES.copy()
    images[:, 0, 0, 0] = NAN_LOSS  # every example, every step
    with pytest.raises(
        NonFiniteError,
        match=r"Every step of epoch 1 \(8 steps: 1, 2, 3, 4, 5, "
        r"6, 7, 8\) .* the run has diverged",
    ):
        train_and_evaluate(Poisoned(), TX, (images, LABELS), None, cfg(on_nonfinite="skip"))


def test_ignore_applies_nonfinite_steps_as_before():
    images, bad = poison(pick_examples([NAN_GRAD]))
    state, _ = train_and_evaluate(Poisoned(), TX, (images, LABELS), None, cfg())
    assert np.isnan(np.asarray(state.params["gate"]))


def test_skip_on_a_clean_run_changes_nothing():
    plain, plain_history = train_and_evaluate(Poisoned(), TX, (IMAGES, LABELS), None, cfg())
    guarded, guarded_history = train_and_evaluate(
        Poisoned(), TX, (IMAGES, LABELS), None, cfg(on_nonfinite="skip")
    )
    assert leaves_equal(plain.params, guarded.params)
    assert same_history(plain_history, guarded_history)


# --------------------------------------------------------------------------- #
# Integer parameters, dtype mismatches
# --------------------------------------------------------------------------- #


class WithIntParam(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        self.param("table", lambda key: jnp.arange(3, dtype=jnp.int32))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def test_trainer_refuses_integer_parameters_naming_the_leaf():
    with pytest.raises(
        TypeError,
        match=r"leaf \['table'\] has dtype int32; gradient training "
        r"needs floating-point parameters",
    ):
        train_and_evaluate(WithIntParam(), TX, (IMAGES, LABELS), None, cfg(epochs=1))


# Line searches take jax.grad of the loss over every leaf: integer leaves have no gradient.
NEEDS_FLOAT_LOSS = {"lbfgs"}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_integer_leaves_get_integer_updates_and_float_leaves_are_unaffected(name):
    # Documented behaviour (RELIABILITY.md): optimizers do not refuse integer leaves; their
    # updates are computed in float and cast to the leaf's dtype (truncated), so use
    # `masked`/`partition` to keep them out. The float leaves train as they would alone.
    tx = jz.get(name)
    p = {"f": jnp.array([1.0, -2.0]), "i": jnp.array([3, 4], jnp.int32)}
    g = {"f": jnp.array([0.5, -0.25]), "i": jnp.array([1, 1], jnp.int32)}
    if name in NEEDS_FLOAT_LOSS:
        # its line search differentiates the loss over every leaf: jax.grad's own error,
        # naming the integer dtype, instead of a silent truncation
        with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
            tx.update(g, tx.init(p), p, **stand_in_extra_args(name, p, g))
        return
    if name == "torch.muon":  # refuses non-matrix leaves, as torch.optim.Muon
        p, g = jax.tree.map(lambda x: x[None], p), jax.tree.map(lambda x: x[None], g)
    u, _ = tx.update(g, tx.init(p), p, **stand_in_extra_args(name, p, g))
    f_only = {"f": p["f"]}
    alone, _ = tx.update(
        {"f": g["f"]}, tx.init(f_only), f_only, **stand_in_extra_args(name, f_only, f_only)
    )
    assert u["i"].dtype == jnp.int32
    if name not in (
        "lamb",
        "lars",
        "adafactor",
        "soap",
        "shampoo",
        "torch.lbfgs",  # one search direction over all leaves, the int leaf's too
        "dog",  # these three: global norms over every leaf include the int leaf's
        "dowg",
        "dpsgd",
        "momo",
        "momo_adam",
    ):  # block-wise: the int leaf is its own block; MoMo: <g, x> sums over every leaf
        np.testing.assert_array_equal(u["f"], alone["f"])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradients_of_another_dtype_keep_the_state_dtypes(name):
    # State built for float32 parameters, bfloat16 gradients: the update takes the gradients'
    # dtype, the state keeps its float32 (no silent downcast, no recompilation per dtype).
    tx = jz.get(name)
    p = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    state = tx.init(p)
    dtypes = [x.dtype for x in jax.tree.leaves(state)]
    g = {"w": (p["w"] * 0.5).astype(jnp.bfloat16)}
    u, state = tx.update(g, state, p, **stand_in_extra_args(name, p, g))
    assert u["w"].dtype == jnp.bfloat16
    assert [x.dtype for x in jax.tree.leaves(state)] == dtypes
    assert bool(jnp.all(jnp.isfinite(u["w"].astype(jnp.float32))))


def test_resume_state_of_another_model_is_refused():
    other = init_loop_state(Poisoned(), TX, IMAGES[:1], SEED)
    other = other._replace(params={"x": jnp.zeros(3)}, opt_state=TX.init({"x": jnp.zeros(3)}))
    with pytest.raises(
        ValueError,
        match=r"Invalid state: it does not fit this model and "
        r"optimizer \(params\['Dense_0'\]\['bias'\]: expected "
        r"\(10,\), got nothing\)",
    ):
        train_and_evaluate(Poisoned(), TX, (IMAGES, LABELS), None, cfg(epochs=1), state=other)
    state = init_loop_state(Poisoned(), TX, IMAGES[:1], SEED)
    sgd_state = state._replace(opt_state=optax.sgd(0.1).init(state.params))
    with pytest.raises(ValueError, match=r"opt_state\[0\].count: expected \(\), got nothing"):
        train_and_evaluate(Poisoned(), TX, (IMAGES, LABELS), None, cfg(epochs=1), state=sgd_state)
