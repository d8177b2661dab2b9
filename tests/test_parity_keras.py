"""``jaxopt_zoo.compat.keras`` against Keras 3 (JAX backend).

Each case gives both the same random gradient stream for 100 steps over a pytree of several
shapes, with the same keyword arguments (the compat module uses Keras' names), and compares
the whole parameter trajectory in float64 (Keras' variables are float64 under
``jax.enable_x64``). Keras stores a constant learning rate in a float32 variable, so ours is
given that float32 value too; the trajectories then agree to rounding (~1e-15).
"""

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import inspect
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo.compat import keras as kz  # noqa: E402
from tests.helpers import make_grad_stream, make_params, max_rel_err, trajectory  # noqa: E402

assert keras.backend.backend() == "jax", "set KERAS_BACKEND=jax before keras is imported"

SHAPES = [(), (7,), (3, 5), (2, 3, 4)]
STEPS = 100
RTOL64 = 1e-12  # float64, the same learning rate: only rounding differs (seen: <= 2e-15)
RTOL64_LR = 1e-6  # float64, ours keeps the float64 lr that Keras rounds to float32 (~1e-8)
RTOL32 = 1e-5  # float32 (seen: ~1e-6)

KERAS = {
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "adamax": keras.optimizers.Adamax,
    "lion": keras.optimizers.Lion,
    "lamb": keras.optimizers.Lamb,
    "adafactor": keras.optimizers.Adafactor,
    "ftrl": keras.optimizers.Ftrl,
    "schedule_free_adamw": keras.optimizers.ScheduleFreeAdamW,
    "muon": keras.optimizers.Muon,  # trajectories: tests/test_muon.py
}


def keras_trajectory(opt, params, grads, steps):
    """Drive a Keras optimizer with ``apply_gradients``; the parameters after each step."""
    keys = sorted(params)  # the leaf order of a dict pytree
    dtype = str(jnp.asarray(params[keys[0]]).dtype)
    variables = [keras.Variable(np.asarray(params[k]), dtype=dtype, name=k) for k in keys]
    out = {k: [] for k in keys}
    for t in range(steps):
        opt.apply_gradients(zip([np.asarray(grads[k][t]) for k in keys], variables))
        for k, v in zip(keys, variables):
            out[k].append(np.asarray(v.value))
    return {k: np.stack(out[k]) for k in keys}


def eager_trajectory(tx, params, grads, steps):
    """``trajectory`` without jit: cheaper than a compile for a few steps."""
    state, out = tx.init(params), []
    for t in range(steps):
        u, state = tx.update(jax.tree.map(lambda g: g[t], grads), state, params)
        params = jax.tree.map(lambda p, d: p + d, params, u)
        out.append(params)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out)


def compare(ours, theirs, dtype=jnp.float64, steps=STEPS, grad_scale=1.0):
    """Max relative error between the two trajectories (one jit + scan for ours; eager for
    short runs)."""
    params = make_params(SHAPES, dtype)
    grads = make_grad_stream(params, steps, scale=grad_scale)
    ref = keras_trajectory(theirs, params, grads, steps)
    run = trajectory if steps >= 50 else lambda tx, p, g: eager_trajectory(tx, p, g, steps)
    got = run(ours, params, grads)
    assert jax.tree.map(lambda x: x.dtype, got) == jax.tree.map(lambda x: x.dtype, params)
    return max_rel_err(got, ref)


# (name, keyword arguments given to both ours and Keras)
CASES = [
    ("sgd", dict(learning_rate=0.05)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9, weight_decay=0.1, clipnorm=1.0)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, centered=True)),
    ("rmsprop", dict(learning_rate=0.01, momentum=0.9)),
    (
        "rmsprop",
        dict(
            learning_rate=0.01,
            rho=0.8,
            momentum=0.5,
            centered=True,
            epsilon=1e-4,
            weight_decay=0.05,
            global_clipnorm=2.0,
        ),
    ),
    ("adagrad", dict(learning_rate=0.1)),
    (
        "adagrad",
        dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-5, clipvalue=0.5),
    ),
    ("adadelta", dict(learning_rate=1.0)),
    ("adadelta", dict(learning_rate=0.5, rho=0.9, epsilon=1e-5, weight_decay=0.01)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.01, amsgrad=True)),
    ("adam", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3, clipnorm=0.5)),
    ("adam", dict(learning_rate=0.01, weight_decay=0.1)),
    ("adamw", dict(learning_rate=0.01)),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True, global_clipnorm=1.0)),
    ("nadam", dict(learning_rate=0.01)),
    ("nadam", dict(learning_rate=0.01, beta_1=0.95, beta_2=0.98, epsilon=1e-4, weight_decay=0.05)),
    ("adamax", dict(learning_rate=0.01)),
    ("adamax", dict(learning_rate=0.01, beta_1=0.8, epsilon=1e-3, clipvalue=0.3)),
    ("lion", dict(learning_rate=0.001)),
    ("lion", dict(learning_rate=0.003, beta_1=0.95, beta_2=0.98, weight_decay=0.5)),
    ("lamb", dict(learning_rate=0.01)),
    (
        "lamb",
        dict(
            learning_rate=0.01,
            beta_1=0.8,
            beta_2=0.99,
            epsilon=1e-4,
            weight_decay=0.1,
            clipnorm=1.0,
        ),
    ),
    ("adafactor", dict(learning_rate=0.01)),
    (
        "adafactor",
        dict(
            learning_rate=0.5,
            beta_2_decay=-0.6,
            epsilon_2=1e-2,
            clip_threshold=0.5,
            relative_step=False,
            weight_decay=0.05,
        ),
    ),
    ("ftrl", dict(learning_rate=0.1)),
    (
        "ftrl",
        dict(
            learning_rate=0.1,
            learning_rate_power=-0.7,
            initial_accumulator_value=0.5,
            l1_regularization_strength=0.01,
            l2_regularization_strength=0.1,
            l2_shrinkage_regularization_strength=0.05,
            beta=0.2,
            weight_decay=0.01,
        ),
    ),
    ("schedule_free_adamw", dict(learning_rate=0.01)),
    (
        "schedule_free_adamw",
        dict(
            learning_rate=0.02,
            beta_1=0.8,
            beta_2=0.99,
            epsilon=1e-4,
            warmup_steps=10,
            weight_decay=0.1,
            global_clipnorm=2.0,
        ),
    ),
]


def as_keras_stores_it(lr):
    """A constant learning rate lives in a float32 variable in Keras."""
    return float(np.float32(lr))


def _case_id(case):
    name, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items() if k != "learning_rate")


@pytest.mark.parametrize("name,kwargs", CASES, ids=[_case_id(c) for c in CASES])
def test_trajectory_matches_keras_float64(name, kwargs):
    ours = dict(kwargs, learning_rate=as_keras_stores_it(kwargs["learning_rate"]))
    with jax.enable_x64(True):
        err = compare(getattr(kz, name)(**ours), KERAS[name](**kwargs))
    assert err < RTOL64, f"{name}{kwargs}: max relative error {err:.3g}"


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("adam", dict(learning_rate=0.01, amsgrad=True, weight_decay=0.1, clipnorm=1.0)),
    ],
)
def test_trajectory_matches_keras_float32(name, kwargs):
    err = compare(getattr(kz, name)(**kwargs), KERAS[name](**kwargs), dtype=jnp.float32)
    assert err < RTOL32, f"{name}{kwargs}: max relative error {err:.3g}"


def _exp_decay(init, steps, rate, staircase=False):
    """Keras' ExponentialDecay written as a function of the 0-based step count."""

    def schedule(count):
        p = jnp.asarray(count, jnp.float64) / steps
        return init * rate ** (jnp.floor(p) if staircase else p)

    return schedule


def test_schedule_sgd_momentum_weight_decay():
    # the decay term must use the same step's learning rate as the update
    with jax.enable_x64(True):
        ours = kz.sgd(_exp_decay(0.1, 20, 0.5), momentum=0.9, weight_decay=0.2)
        theirs = keras.optimizers.SGD(
            keras.optimizers.schedules.ExponentialDecay(0.1, 20, 0.5),
            momentum=0.9,
            weight_decay=0.2,
        )
        err = compare(ours, theirs)
    assert err < RTOL64, err


def test_schedule_adam_staircase():
    with jax.enable_x64(True):
        ours = kz.adam(_exp_decay(0.02, 15, 0.7, staircase=True), amsgrad=True)
        theirs = keras.optimizers.Adam(
            keras.optimizers.schedules.ExponentialDecay(0.02, 15, 0.7, staircase=True), amsgrad=True
        )
        err = compare(ours, theirs)
    assert err < RTOL64, err


def test_keras_schedule_object_is_accepted():
    # a Keras LearningRateSchedule is a function of the step count, so it works as is
    with jax.enable_x64(True):
        ours = kz.rmsprop(
            keras.optimizers.schedules.CosineDecay(0.01, 80, alpha=0.1),
            momentum=0.5,
            weight_decay=0.1,
        )
        theirs = keras.optimizers.RMSprop(
            keras.optimizers.schedules.CosineDecay(0.01, 80, alpha=0.1),
            momentum=0.5,
            weight_decay=0.1,
        )
        err = compare(ours, theirs)
    # CosineDecay computes in float32: jit (ours) and eager (Keras) may differ by an ulp
    assert err < RTOL64_LR, err


# --------------------------------------------------------------------------- #
# The Keras forms differ from the native ones (so the parity above is not vacuous)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "ours,native",
    [
        (lambda: kz.adam(0.01, epsilon=1e-3), lambda: jz.adam(0.01, eps=1e-3)),
        (lambda: kz.adam(0.01, amsgrad=True), lambda: jz.amsgrad(0.01, eps=1e-7)),
        (lambda: kz.nadam(0.01), lambda: jz.nadam(0.01, eps=1e-7)),
        (lambda: kz.adamax(0.01, epsilon=0.05), lambda: jz.adamax(0.01, eps=0.05)),
        (
            lambda: kz.sgd(0.05, momentum=0.9, weight_decay=0.1),
            lambda: jz.sgd(0.05, momentum=0.9, weight_decay=0.1),
        ),
    ],
    ids=["adam-eps", "amsgrad", "nadam", "adamax", "sgd-wd"],
)
def test_keras_forms_differ_from_native(ours, native):
    params = make_params(SHAPES)
    grads = make_grad_stream(params, 20, scale=0.1)
    assert (
        max_rel_err(
            eager_trajectory(ours(), params, grads, 20),
            eager_trajectory(native(), params, grads, 20),
        )
        > 1e-4
    )


@pytest.mark.parametrize(
    "ours,native",
    [
        (lambda: kz.adagrad(0.1), lambda: jz.adagrad(0.1, 0.1, 1e-7)),
        (lambda: kz.adadelta(0.5, rho=0.9), lambda: jz.adadelta(0.5, rho=0.9, eps=1e-7)),
        (
            lambda: kz.rmsprop(0.01, centered=True),
            lambda: jz.rmsprop(0.01, eps=1e-7, centered=True),
        ),
        (lambda: kz.lion(0.001), lambda: jz.lion(0.001, weight_decay=0.0)),
    ],
    ids=["adagrad", "adadelta", "rmsprop", "lion"],
)
def test_shared_forms_equal_native(ours, native):
    params = make_params(SHAPES)
    grads = make_grad_stream(params, 20)
    assert (
        max_rel_err(
            eager_trajectory(ours(), params, grads, 20),
            eager_trajectory(native(), params, grads, 20),
        )
        < RTOL32
    )


# --------------------------------------------------------------------------- #
# Defaults, get, validation
# --------------------------------------------------------------------------- #

# Keras' EMA options are ours too (keras_base_options; tests/test_averaging.py checks them).
BASE_ONLY = {"self", "loss_scale_factor", "gradient_accumulation_steps", "name", "kwargs"}


@pytest.mark.parametrize("name", sorted(KERAS))
def test_signature_and_defaults_match_keras(name):
    ours = inspect.signature(getattr(kz, name)).parameters
    theirs = inspect.signature(KERAS[name].__init__).parameters
    # Same names in the same order; the EMA options (added to every optimizer by
    # keras_base_options, keyword-only at the end) sit where Keras has them only in order.
    ema = ("use_ema", "ema_momentum", "ema_overwrite_frequency")
    assert [k for k in theirs if k not in BASE_ONLY and k not in ema] == [
        k for k in ours if k not in ema
    ]
    assert set(ema) <= set(ours) and set(ema) <= set(theirs)
    for k, p in ours.items():
        assert p.default == theirs[k].default, (name, k, p.default, theirs[k].default)


def test_available_lists_every_optimizer():
    assert kz.available() == sorted(KERAS)


@pytest.mark.parametrize(
    "spelling",
    ["Adam", "SGD", "RMSprop", "Adagrad", "adadelta", "ADAMW", "Nadam", "adamax", "lion"],
)
def test_get_by_name_uses_keras_defaults(spelling):
    with jax.enable_x64(True):
        err = compare(kz.get(spelling), keras.optimizers.get(spelling), steps=20, grad_scale=0.1)
    assert err < RTOL64_LR, err


def test_get_from_keras_config():
    theirs = keras.optimizers.SGD(
        learning_rate=0.05, momentum=0.9, nesterov=True, clipnorm=1.0, weight_decay=0.01
    )
    ours = kz.get(keras.optimizers.serialize(theirs))
    with jax.enable_x64(True):
        err = compare(ours, theirs, steps=20)
    assert err < RTOL64, err
    tx = kz.get({"class_name": "Adam", "config": {"amsgrad": True}})
    assert len(tx.init({"w": jnp.ones(2)})[0]) == 4  # count, mu, nu, nu_max


def test_get_passthrough_and_none():
    tx = kz.adam()
    assert kz.get(tx) is tx
    assert kz.get(None) is None


def test_get_rejects_unknown_names():
    with pytest.raises(
        ValueError,
        match=r"Unknown Keras optimizer 'adamm'\. Did you mean 'adam'.*Known: "
        + re.escape(", ".join(kz.available()) + "."),
    ):
        kz.get("adamm")
    with pytest.raises(ValueError, match=r"Unknown Keras optimizer 'Adagrd'.*Known: adadelta"):
        kz.get("Adagrd")
    with pytest.raises(TypeError, match="Could not interpret optimizer identifier 3"):
        kz.get(3)


def test_get_rejects_unsupported_config():
    with pytest.raises(ValueError, match="loss_scale_factor=2.0 is not supported"):
        kz.get({"class_name": "Adam", "config": {"loss_scale_factor": 2.0}})
    with pytest.raises(ValueError, match=r"argument\(s\) not recognized: \['momentum'\]"):
        kz.get({"class_name": "Adam", "config": {"momentum": 0.9}})
    with pytest.raises(ValueError, match="expected a dict with a 'class_name'"):
        kz.get({"config": {}})


@pytest.mark.parametrize(
    "fn,kwargs,match",
    [
        (
            kz.sgd,
            dict(learning_rate=-0.1),
            r"Invalid learning_rate: -0\.1\. Expected a number >= 0",
        ),
        (kz.sgd, dict(momentum=1.5), r"Invalid momentum: 1\.5\. Expected a number >= 0 and <= 1"),
        (kz.rmsprop, dict(rho=1.0), r"Invalid rho: 1\.0\. Expected a number >= 0 and < 1"),
        (kz.rmsprop, dict(momentum=-0.9), r"Invalid momentum: -0\.9"),
        (kz.rmsprop, dict(epsilon=-1e-7), r"Invalid epsilon: -1e-07"),
        (kz.adagrad, dict(initial_accumulator_value=-0.1), r"Invalid initial_accumulator_value"),
        (kz.adadelta, dict(rho=-0.1), r"Invalid rho: -0\.1"),
        (kz.adam, dict(beta_1=1.0), r"Invalid beta_1: 1\.0\. Expected a number >= 0 and < 1"),
        (kz.adam, dict(beta_2=-0.5), r"Invalid beta_2: -0\.5"),
        (kz.adam, dict(weight_decay=-0.1), r"Invalid weight_decay: -0\.1"),
        (kz.adamw, dict(weight_decay=None), r"Invalid weight_decay: None\. Expected a number"),
        (kz.nadam, dict(epsilon=float("nan")), r"Invalid epsilon: nan"),
        (kz.adamax, dict(clipnorm=0.0), r"Invalid clipnorm: 0\.0\. Expected a number > 0"),
        (kz.adamax, dict(global_clipnorm=-1.0), r"Invalid global_clipnorm: -1\.0"),
        (kz.lion, dict(beta_1=0.0), r"Invalid beta_1: 0\.0\. Expected a number > 0 and < 1"),
        (kz.lion, dict(learning_rate=-1e-3), r"Invalid learning_rate: -0\.001"),
        (
            kz.adam,
            dict(clipnorm=1.0, clipvalue=0.5),
            r"Only one of clipnorm, clipvalue and global_clipnorm can be set .*clipnorm=1\.0, "
            r"clipvalue=0\.5",
        ),
    ],
)
def test_invalid_hyperparameters(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
