"""Native optimizers against optax, wherever optax defines the same algorithm.

Each case feeds both implementations the same random gradient stream for 120 steps over a
pytree of several shapes and compares the whole parameter trajectory.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxopt_zoo as jz
from tests.helpers import make_grad_stream, make_params, max_rel_err, trajectory

SHAPES = [(), (7,), (3, 5), (2, 3, 4)]
STEPS = 120


def decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# (id, ours, reference)
CASES = [
    ("sgd", lambda: jz.sgd(0.05), lambda: optax.sgd(0.05)),
    ("momentum", lambda: jz.sgd(0.05, momentum=0.9), lambda: optax.sgd(0.05, momentum=0.9)),
    (
        "nesterov",
        lambda: jz.sgd(0.05, momentum=0.8, nesterov=True),
        lambda: optax.sgd(0.05, momentum=0.8, nesterov=True),
    ),
    (
        "sgd-schedule",
        lambda: jz.sgd(jz.schedules.cosine(0.1, 100), momentum=0.9),
        lambda: optax.sgd(optax.cosine_decay_schedule(0.1, 100), momentum=0.9),
    ),
    ("adagrad", lambda: jz.adagrad(0.1), lambda: optax.adagrad(0.1)),
    (
        "adagrad-init",
        lambda: jz.adagrad(0.1, initial_accumulator_value=0.5, eps=1e-5),
        lambda: optax.adagrad(0.1, initial_accumulator_value=0.5, eps=1e-5),
    ),
    ("rmsprop", lambda: jz.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    (
        "rmsprop-eps-out",
        lambda: jz.rmsprop(0.01, decay=0.95, eps=1e-3, eps_in_sqrt=False),
        lambda: optax.rmsprop(0.01, decay=0.95, eps=1e-3, eps_in_sqrt=False),
    ),
    (
        "rmsprop-centered",
        lambda: jz.rmsprop(0.01, centered=True, initial_scale=0.1),
        lambda: optax.rmsprop(0.01, centered=True, initial_scale=0.1),
    ),
    (
        "rmsprop-nesterov",
        lambda: jz.rmsprop(0.01, momentum=0.9, nesterov=True),
        lambda: optax.rmsprop(0.01, momentum=0.9, nesterov=True),
    ),
    # (not centered: at step 1 the centered variance is exactly g^2 - g^2 = 0, so any
    # rounding difference is amplified by 1/sqrt(eps))
    (
        "rmsprop-bias",
        lambda: jz.rmsprop(0.01, bias_correction=True),
        lambda: optax.rmsprop(0.01, bias_correction=True),
    ),
    ("adadelta", lambda: jz.adadelta(), lambda: optax.adadelta(learning_rate=1.0)),
    (
        "adadelta-wd",
        lambda: jz.adadelta(0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
        lambda: optax.adadelta(0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
    ),
    ("adam", lambda: jz.adam(1e-2), lambda: optax.adam(1e-2)),
    (
        "adam-eps-root",
        lambda: jz.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda: optax.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    ),
    (
        "adam-schedule",
        lambda: jz.adam(jz.schedules.warmup_cosine(0.0, 1e-2, 10, 100)),
        lambda: optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)),
    ),
    (
        "adamw",
        lambda: jz.adamw(1e-2, weight_decay=0.1),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
    ),
    (
        "adamw-mask",
        lambda: jz.adamw(1e-2, weight_decay=0.1, mask=decay_mask),
        lambda: optax.adamw(1e-2, weight_decay=0.1, mask=decay_mask),
    ),
    ("amsgrad", lambda: jz.amsgrad(1e-2), lambda: optax.amsgrad(1e-2)),
    ("adamax", lambda: jz.adamax(1e-2), lambda: optax.adamax(1e-2)),
    ("nadam", lambda: jz.nadam(1e-2), lambda: optax.nadam(1e-2)),
    (
        "nadamw",
        lambda: jz.nadamw(1e-2, weight_decay=0.05),
        lambda: optax.nadamw(1e-2, weight_decay=0.05),
    ),
    ("radam", lambda: jz.radam(1e-2), lambda: optax.radam(1e-2)),
    ("adabelief", lambda: jz.adabelief(1e-2), lambda: optax.adabelief(1e-2)),
    ("yogi", lambda: jz.yogi(1e-2), lambda: optax.yogi(1e-2)),
    ("lion", lambda: jz.lion(1e-3), lambda: optax.lion(1e-3)),
    (
        "lion-wd",
        lambda: jz.lion(1e-3, b1=0.95, b2=0.98, weight_decay=0.1),
        lambda: optax.lion(1e-3, b1=0.95, b2=0.98, weight_decay=0.1),
    ),
    ("lamb", lambda: jz.lamb(1e-2, weight_decay=0.01), lambda: optax.lamb(1e-2, weight_decay=0.01)),
    ("lars", lambda: jz.lars(0.1, weight_decay=0.01), lambda: optax.lars(0.1, weight_decay=0.01)),
    (
        "lars-nesterov",
        lambda: jz.lars(0.1, momentum=0.8, nesterov=True, eps=1e-6),
        lambda: optax.lars(0.1, momentum=0.8, nesterov=True, eps=1e-6),
    ),
    (
        "adafactor",
        lambda: jz.adafactor(0.01, min_dim_size_to_factor=3),
        lambda: optax.adafactor(0.01, min_dim_size_to_factor=3),
    ),
    (
        "adafactor-momentum",
        lambda: jz.adafactor(
            0.01, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=0.01, decay_rate=0.7
        ),
        lambda: optax.adafactor(
            0.01, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=0.01, decay_rate=0.7
        ),
    ),
    (
        "adafactor-unfactored",
        lambda: jz.adafactor(0.01, factored=False, clipping_threshold=None),
        lambda: optax.adafactor(0.01, factored=False, clipping_threshold=None),
    ),
    (
        "clip-global-norm",
        lambda: jz.chain(jz.clip_by_global_norm(1.0), jz.adam(1e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    ),
    (
        "clip",
        lambda: jz.chain(jz.clip(0.5), jz.sgd(0.1)),
        lambda: optax.chain(optax.clip(0.5), optax.sgd(0.1)),
    ),
    (
        "ema",
        lambda: jz.chain(jz.ema(0.9), jz.sgd(0.1)),
        lambda: optax.chain(optax.ema(0.9), optax.sgd(0.1)),
    ),
]


@pytest.mark.parametrize(
    "dtype,tol", [(jnp.float32, 1e-5), ("float64", 1e-6)], ids=["float32", "float64"]
)
@pytest.mark.parametrize("name,ours,ref", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_optax(name, ours, ref, dtype, tol):
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.float64 if dtype == "float64" else dtype
        params = make_params(SHAPES, dt)
        grads = make_grad_stream(params, STEPS)
        got = trajectory(ours(), params, grads)
        want = trajectory(ref(), params, grads)
        # the trajectories must actually move, or the comparison says nothing
        moved = max_rel_err(jax.tree.map(lambda t: t[-1], want), params)
        assert moved > 1e-3, f"{name}: the reference barely moved ({moved})"
        err = max_rel_err(got, want)
        assert err < tol, f"{name} ({dtype}): max relative error {err:.3g} >= {tol}"
