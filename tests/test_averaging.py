"""Weight averaging (``swa``, ``ema_weights``, ``averaged_params``, ``schedules.swa_lr`` in
use) against ``torch.optim.swa_utils`` and Keras' ``use_ema``.

Both sides run the same optimizer on the same gradient stream (100 steps, float64, a tree of
several shapes): PyTorch's SGD with momentum (which ``jaxopt_zoo.sgd`` reproduces) with
``AveragedModel.update_parameters`` after the optimizer steps that ours averages, and
Keras' optimizers with ``use_ema``. The averaged parameters are compared at every step.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest
import torch
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn

import jaxopt_zoo as jz
from jaxopt_zoo.compat import keras as kz
from tests.helpers import make_grad_stream, make_params, max_rel_err, trajectory

STEPS = 100
RTOL64 = 1e-12  # the same arithmetic up to the order of operations (seen: ~1e-15)
SHAPES = [(), (4,), (2, 3)]


def _torch_run(params, grads, lr, averaged, when, scheduler=None):
    """Parameters of ``averaged`` (an AveragedModel factory) after every step."""
    keys = sorted(params)
    model = torch.nn.ParameterDict(
        {k: torch.nn.Parameter(torch.tensor(np.asarray(params[k]))) for k in keys}
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = scheduler(opt) if scheduler else None
    avg = averaged(model)
    out = {k: [] for k in keys}
    for t in range(STEPS):
        for k in keys:
            model[k].grad = torch.tensor(np.asarray(grads[k][t]))
        opt.step()
        if when(t + 1):
            avg.update_parameters(model)
        if sched is not None:
            sched.step()
        for k in keys:
            out[k].append(avg.module[k].detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def _ours(tx, params, grads):
    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), jz.averaged_params(s)

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    return jax.tree.map(np.asarray, run(params, grads))


def _data():
    params = make_params(SHAPES, jnp.float64)
    return params, make_grad_stream(params, STEPS, scale=0.5)


@pytest.mark.parametrize("start,every", [(0, 1), (1, 1), (10, 3), (37, 10)])
def test_swa_matches_torch_averaged_model(start, every):
    with jax.enable_x64(True):
        params, grads = _data()
        got = _ours(jz.swa(jz.sgd(0.05, momentum=0.9), start, every), params, grads)
    want = _torch_run(
        params, grads, 0.05, AveragedModel, lambda n: n >= start and (n - start) % every == 0
    )
    assert max_rel_err(got, want) < RTOL64
    assert np.max(np.abs(want["p1"][-1] - np.asarray(params["p1"]))) > 0.1  # it moved


@pytest.mark.parametrize("strategy,anneal", [("cos", 20), ("linear", 5), ("cos", 0)])
def test_swa_with_swa_lr_matches_torch_swalr(strategy, anneal):
    # SWALR from the first step (k = 0 at the constructor, one scheduler.step() a step).
    lr = jz.schedules.swa_lr(0.05, 0.01, anneal, strategy)
    with jax.enable_x64(True):
        params, grads = _data()
        got = _ours(jz.swa(jz.sgd(lr, momentum=0.9), 30, 2), params, grads)
    want = _torch_run(
        params,
        grads,
        0.05,
        AveragedModel,
        lambda n: n >= 30 and n % 2 == 0,
        scheduler=lambda o: SWALR(o, swa_lr=0.01, anneal_epochs=anneal, anneal_strategy=strategy),
    )
    assert max_rel_err(got, want) < 1e-10  # SWALR's recursion rounds differently (~1e-15)


@pytest.mark.parametrize("decay", [0.9, 0.99, 0.5])
def test_ema_weights_match_torch_ema(decay):
    with jax.enable_x64(True):
        params, grads = _data()
        got = _ours(jz.ema_weights(jz.sgd(0.05, momentum=0.9), decay), params, grads)
    want = _torch_run(
        params,
        grads,
        0.05,
        lambda m: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(decay)),
        lambda n: True,
    )
    assert max_rel_err(got, want) < RTOL64


def test_definitions_by_hand():
    # Independent of torch: the averages are of params + updates, as documented.
    with jax.enable_x64(True):
        params, grads = _data()
        base = jz.sgd(0.05, momentum=0.9)
        traj = jax.tree.map(np.asarray, trajectory(base, params, grads))
        swa = _ours(jz.swa(base, 7, 5), params, grads)
        ema = _ours(jz.ema_weights(base, 0.8, copy_first=False), params, grads)
    for k in params:
        taken = [n for n in range(1, STEPS + 1) if n >= 7 and (n - 7) % 5 == 0]
        np.testing.assert_allclose(
            swa[k][-1], np.mean(traj[k][[n - 1 for n in taken]], 0), rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(swa[k][5], np.asarray(params[k]))  # before the first: init
        a = np.asarray(params[k])
        for n in range(STEPS):
            a = 0.8 * a + 0.2 * traj[k][n]
        np.testing.assert_allclose(ema[k][-1], a, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- #
# Keras' use_ema, ema_momentum, ema_overwrite_frequency
# --------------------------------------------------------------------------- #


def _keras_run(opt, params, grads):
    keys = sorted(params)
    variables = [keras.Variable(np.asarray(params[k]), dtype="float64", name=k) for k in keys]
    out = {k: [] for k in keys}
    avg = {k: [] for k in keys}
    for t in range(STEPS):
        opt.apply_gradients(zip([np.asarray(grads[k][t]) for k in keys], variables))
        for i, k in enumerate(keys):
            out[k].append(np.asarray(variables[i].value))
            avg[k].append(np.asarray(opt._model_variables_moving_average[i].value))
    return ({k: np.stack(v) for k, v in out.items()}, {k: np.stack(v) for k, v in avg.items()})


def _ours_with_params(tx, params, grads):
    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, jz.averaged_params(s))

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    return jax.tree.map(np.asarray, run(params, grads))


KERAS_CASES = {
    "sgd-momentum": ("SGD", dict(learning_rate=0.0625, momentum=0.9, ema_momentum=0.9)),
    "adam-overwrite-3": (
        "Adam",
        dict(learning_rate=0.0078125, ema_momentum=0.8, ema_overwrite_frequency=3),
    ),
    "adamw-overwrite-1": ("AdamW", dict(learning_rate=0.0078125, ema_overwrite_frequency=1)),
}


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_keras_ema_options_match_keras(case):
    cls, kw = KERAS_CASES[case]
    with jax.enable_x64(True):
        params, grads = _data()
        theirs = getattr(keras.optimizers, cls)(use_ema=True, **kw)
        want_p, want_a = _keras_run(theirs, params, grads)
        got_p, got_a = _ours_with_params(
            getattr(kz, cls.lower())(use_ema=True, **kw), params, grads
        )
        if case == "adam-overwrite-3":  # and from Keras' config
            via_get = _ours_with_params(kz.get(keras.optimizers.serialize(theirs)), params, grads)
            assert max_rel_err(via_get[1], want_a) < RTOL64
    assert max_rel_err(got_a, want_a) < RTOL64
    assert max_rel_err(got_p, want_p) < RTOL64
    # the average is not the parameters (unless overwritten every step), and both moved
    if kw.get("ema_overwrite_frequency") != 1:
        assert max_rel_err(want_a, want_p) > 1e-3
    assert np.max(np.abs(want_p["p1"][-1] - np.asarray(params["p1"]))) > 0.005


def test_keras_without_ema_is_unchanged():
    tx = kz.adam(use_ema=False, ema_momentum=5.0)  # ignored without use_ema, as in Keras
    assert not isinstance(tx.init({"w": jnp.ones(2)}), jz.EmaWeightsState)
    with pytest.raises(ValueError, match=r"Invalid ema_momentum: 1\.5"):
        kz.sgd(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match=r"Invalid overwrite_every: 0"):
        kz.sgd(use_ema=True, ema_overwrite_frequency=0)


def test_every_keras_optimizer_takes_the_ema_options():
    p = {"w": jnp.ones(3)}
    for name in kz.available():
        tx = getattr(kz, name)(use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
        s = tx.init(p)
        for _ in range(2):
            u, s = tx.update({"w": jnp.full(3, 0.5)}, s, p)
        assert isinstance(s, jz.EmaWeightsState), name


# --------------------------------------------------------------------------- #
# averaged_params, dtypes, jit, errors
# --------------------------------------------------------------------------- #


def test_averaged_params_finds_the_average_anywhere():
    p = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    g = {"w": jnp.ones(3), "b": jnp.ones(())}
    wrapped = [
        jz.swa(jz.adam(0.1)),
        jz.chain(jz.ema_weights(jz.adam(0.1), 0.5)),
        jz.skip_not_finite(jz.swa(jz.sgd(0.1))),
        jz.sam(jz.ema_weights(jz.sgd(0.1), 0.5)),
        optax.chain(optax.identity(), jz.swa(jz.sgd(0.1))),
    ]
    for tx in wrapped:
        s = tx.init(p)
        u, s = tx.update(g, s, p, grad_fn=lambda q: g)
        np.testing.assert_allclose(
            jz.averaged_params(s)["w"], np.asarray(optax.apply_updates(p, u)["w"])
        )
    with pytest.raises(ValueError, match="holds no averaged parameters"):
        jz.averaged_params(jz.adam(0.1).init(p))


def test_half_precision_averages_in_float32_and_cast_back():
    p32 = {"w": jnp.linspace(-1, 1, 8)}
    for dtype in (jnp.bfloat16, jnp.float16):
        p = jax.tree.map(lambda x: x.astype(dtype), p32)
        tx = jz.ema_weights(jz.sgd(1e-2), 0.999, copy_first=False)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))  # noqa: B023
        s = tx.init(p)
        for _ in range(5):
            u, s = step({"w": jnp.ones(8, dtype)}, s, p)
            assert u["w"].dtype == dtype
            p = optax.apply_updates(p, u)
        avg = jz.averaged_params(s)
        assert avg["w"].dtype == jnp.float32
        # 5 steps of 1e-2 with weight 1e-3 each: the average moved by ~1.5e-4, which a
        # bfloat16 average (spacing ~4e-3 near 1) could not hold
        moved = float(jnp.max(jnp.abs(avg["w"] - p32["w"].astype(dtype).astype(jnp.float32))))
        assert 1e-4 < moved < 2e-4, (dtype, moved)
        assert jz.averaged_params(s, like=p)["w"].dtype == dtype


def test_no_recompilation():
    traces = []
    tx = jz.swa(jz.ema_weights(jz.adamw(1e-2), 0.9), 2, 2)

    @jax.jit
    def step(g, s, p):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    s = tx.init(p)
    for i in range(4):
        p, s = step(jax.tree.map(lambda x: x * 0 + i, p), s, p)
    assert len(traces) == 1 and int(s.n_averaged) == 2


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.ema_weights(jz.sgd(0.1), -0.1), r"Invalid decay: -0\.1"),
        (lambda: jz.ema_weights(jz.sgd(0.1), 1.5), r"Invalid decay: 1\.5"),
        (lambda: jz.ema_weights(jz.sgd(0.1), float("nan")), r"Invalid decay: nan"),
        (lambda: jz.ema_weights(jz.sgd(0.1), 0.9, overwrite_every=0), r"Invalid overwrite_every"),
        (lambda: jz.swa(jz.sgd(0.1), -1), r"Invalid start_step: -1\. Expected an integer >= 0"),
        (lambda: jz.swa(jz.sgd(0.1), 0, 0), r"Invalid every_steps: 0\. Expected an integer >= 1"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_needs_params():
    for tx in (jz.swa(jz.sgd(0.1)), jz.ema_weights(jz.sgd(0.1), 0.9)):
        p = {"w": jnp.ones(2)}
        with pytest.raises(ValueError, match="needs the current parameters"):
            tx.update(p, tx.init(p))
