"""Muon against its three references: optax.contrib.muon, torch.optim.Muon, keras Muon.

How the references differ (each reproduced by one of ours, whole trajectories over 100 steps):

- optax.contrib.muon (``jaxopt_zoo.muon``): momentum ``m = b m + (1 - b) g`` *with bias
  correction* (Nesterov: ``b m_t / (1 - b^(t+1)) + (1 - b) g / (1 - b^t)``); ``X / (||X|| +
  eps)``, eps 1e-8; Newton-Schulz in the momentum's dtype; scale ``sqrt(max(1, fan_out /
  fan_in))`` of a JAX ``(in, out)`` kernel or ``consistent_rms * sqrt(max(fan_in, fan_out))``;
  non-2-D leaves take NAdamW (Nesterov as Muon's flag).
- torch.optim.Muon (``compat.torch.muon``): the same EMA momentum *without* bias correction
  (its docstring writes ``B = mu B + g``, its code ``lerp``s); ``X / max(||X||, eps)``,
  eps 1e-7; Newton-Schulz in bfloat16 on the CPU as well; ``lr * sqrt(max(1, A / B))`` of an
  ``(out, in)`` weight ("original"; the same factor as optax's for the transposed layout) or
  ``0.2 sqrt(max(A, B))``; decay ``p (1 - lr wd)`` by the unscaled lr; 2-D parameters only.
- keras.optimizers.Muon (``compat.keras.muon``): momentum ``m = mu m + g`` (undamped: torch's
  times ``1 / (1 - mu)``, the same direction up to eps), no bias correction; ``X / (||X|| +
  1e-7)``; Newton-Schulz in the variable's dtype; ``rms_rate * sqrt(max(A, B))`` (0.2) or no
  scale; non-2-D and "embedding" variables take Keras' Adam (epsilon hat), with their own
  weight decay, both decays scaled by lr.

Since the orthogonalization is scale-free, bias correction matters only through Nesterov's
mix of ``m`` and ``g`` (and eps). Measured on this file's torch problem (float64, 100 steps,
lr 0.02, no decay): optax vs torch with torch's Newton-Schulz run in float64, 18% when both
get the same arrays (the shape factor reads the other axis: ``(in, out)`` vs ``(out, in)``),
0.4% with optax told the torch layout (``MuonDimensionNumbers(1, 0)``: what is left is the
bias correction); stock torch (bfloat16) vs the same torch in float64: 0.2%.
"""

import inspect
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import optax.contrib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.optim._muon as torch_muon_module  # noqa: E402

import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo.compat import keras as kz  # noqa: E402
from jaxopt_zoo.compat import torch as tc  # noqa: E402
from jaxopt_zoo.optim.muon import muon_labels  # noqa: E402
from tests.helpers import make_grad_stream, max_rel_err, trajectory  # noqa: E402

STEPS = 100
D = jz.MuonDimensionNumbers
OD = optax.contrib.MuonDimensionNumbers


def problem(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}
    return params, make_grad_stream(params, STEPS, seed=seed + 1)


def moved(traj, params):
    """How far the reference moved over the run, relative to the parameters' scale."""
    return max(
        float(jnp.max(jnp.abs(traj[k][-1] - params[k])))
        / max(float(jnp.max(jnp.abs(params[k]))), 1e-30)
        for k in params
    )


# --------------------------------------------------------------------------- #
# optax.contrib.muon
# --------------------------------------------------------------------------- #

SHAPES = {
    "tall": (9, 4),
    "wide": (3, 8),
    "square": (5, 5),
    "tall2": (9, 4),
    "conv": (3, 3, 2, 4),
    "vec": (6,),
    "scalar": (),
}


def dims(kind, cls):
    """Dimension-number trees: conv as one (18, 4) matrix, or as 9 (2, 4) matrices."""
    if kind is None:
        return None
    conv = cls((0, 1, 2), 3) if kind == "flat" else cls(2, 3)
    return {
        "tall": cls(),
        "wide": cls(),
        "square": cls(),
        "tall2": cls(),
        "conv": conv,
        "vec": None,
        "scalar": None,
    }


OPTAX_CASES = {
    "defaults": dict(learning_rate=0.02),
    "no-nesterov-decay": dict(
        learning_rate=0.02,
        nesterov=False,
        beta=0.9,
        weight_decay=0.1,
        adam_weight_decay=0.01,
        adam_b1=0.8,
        adam_learning_rate=0.005,
    ),
    "rms-3-steps-conv": dict(
        learning_rate=0.01, consistent_rms=0.2, ns_steps=3, muon_weight_dimension_numbers="flat"
    ),
    "dion-adaptive-batched-conv": dict(
        learning_rate=0.01,
        ns_coeffs=((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037)),
        adaptive=True,
        muon_weight_dimension_numbers="batched",
    ),
    "schedule-mask-eps": dict(
        learning_rate=lambda c: 0.02 / (1.0 + 0.05 * c),
        eps=1e-4,
        weight_decay=0.05,
        weight_decay_mask={
            "tall": True,
            "wide": False,
            "square": True,
            "tall2": False,
            "conv": False,
            "vec": False,
            "scalar": False,
        },
    ),
}


OPTAX_CASES["defaults-standard-ns"] = dict(learning_rate=0.02, ns_method="standard")
OPTAX_PARITY = [(c, "float64", 1e-6) for c in sorted(OPTAX_CASES) if "standard" not in c] + [
    (c, "float32", 1e-5) for c in ("defaults", "defaults-standard-ns", "rms-3-steps-conv")
]


@pytest.mark.parametrize("case,dtype,tol", OPTAX_PARITY)
def test_matches_optax_contrib_muon(case, dtype, tol):
    with jax.enable_x64(dtype == "float64"):
        params, grads = problem(SHAPES, dtype)
        kw = dict(OPTAX_CASES[case])
        kind = kw.pop("muon_weight_dimension_numbers", None)
        ours_only = {k: kw.pop(k) for k in ("ns_method",) if k in kw}
        ref = trajectory(
            optax.contrib.muon(**kw, muon_weight_dimension_numbers=dims(kind, OD)), params, grads
        )
        kw.update(ours_only)
        got = trajectory(jz.muon(**kw, muon_weight_dimension_numbers=dims(kind, D)), params, grads)
        assert moved(ref, params) > 0.05
        err = max_rel_err(got, ref)
        assert err < tol, (case, dtype, err)


def test_same_shape_matrices_share_one_batched_iteration():
    # Two (9, 4) matrices and the transposed-equal (4, 9) one: a single batched dot_general
    # chain, i.e. the iteration's matmuls appear once per step, with a batch of 3.
    tx = jz.orthogonalize_by_newton_schulz(ns_steps=1)
    tree = {
        "a": jnp.ones((9, 4)),
        "b": jnp.ones((9, 4)) * 2,
        "c": jnp.ones((4, 9)),
        "d": jnp.ones((3, 3)),
    }
    hlo = jax.jit(lambda t: tx.update(t, tx.init(t))[0]).lower(tree).as_text()
    assert hlo.count("dot_general") == 2 * 3  # (batch 3) and (batch 1): 3 matmuls each
    assert "3x4x4" in hlo and "1x3x3" in hlo


def test_orthogonalizes_and_routes_by_shape():
    g = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(6, 4))), "b": jnp.ones(4)}
    out, _ = jz.orthogonalize_by_newton_schulz(
        ns_coeffs=(1.5, -0.5, 0.0), ns_steps=40, weight_dimension_numbers={"w": D(), "b": None}
    ).update(g, jz.EmptyState())
    np.testing.assert_allclose(out["w"].T @ out["w"], np.eye(4), atol=1e-4)  # cubic NS -> UV^T
    np.testing.assert_array_equal(out["b"], g["b"])
    labels = muon_labels(None, {"w": g["w"], "b": g["b"], "k": jnp.ones((2, 2, 2))})
    assert labels == {"w": "muon", "b": "adam", "k": "adam"}


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="Invalid ns_coeffs"):
        jz.muon(0.1, ns_coeffs=(1.0, 2.0))
    with pytest.raises(ValueError, match="Invalid ns_coeffs"):
        jz.muon(0.1, ns_coeffs="polar")
    with pytest.raises(ValueError, match="Invalid beta"):
        jz.muon(0.1, beta=1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        jz.muon(0.1, ns_steps=0)
    with pytest.raises(ValueError, match="dimension numbers"):
        tx = jz.muon(0.1, muon_weight_dimension_numbers={"w": D(0, 0)})
        tx.init({"w": jnp.ones((2, 2))})


# --------------------------------------------------------------------------- #
# torch.optim.Muon
# --------------------------------------------------------------------------- #

TORCH_SHAPES = {"tall": (9, 4), "wide": (3, 8), "square": (5, 5), "tall2": (9, 4)}
TORCH_CASES = {
    "defaults": dict(lr=0.02),
    "no-nesterov-match-rms": dict(
        lr=0.02, nesterov=False, momentum=0.9, weight_decay=0.01, adjust_lr_fn="match_rms_adamw"
    ),
    "original-3-steps": dict(
        lr=0.01, adjust_lr_fn="original", ns_steps=3, eps=1e-3, ns_coefficients=(3.0, -3.2, 1.2)
    ),
}


def torch_ns_in(dtype_call):
    """torch's own ``_zeropower_via_newtonschulz`` with its ``grad.bfloat16()`` replaced by
    ``dtype_call`` (``"clone()"``: the parameter's dtype): the reference's arithmetic, at
    another precision."""
    src = inspect.getsource(torch_muon_module._zeropower_via_newtonschulz)
    assert src.count("grad.bfloat16()") == 1, "torch's Muon changed: revisit this test"
    namespace = dict(vars(torch_muon_module))
    exec(src.replace("grad.bfloat16()", f"grad.{dtype_call}"), namespace)  # noqa: S102
    return namespace["_zeropower_via_newtonschulz"]


def run_torch(kwargs, params, grads, ns=None):
    keys = sorted(params)
    dtype = torch.float64 if params[keys[0]].dtype == jnp.float64 else torch.float32
    ps = [torch.tensor(np.asarray(params[k]), dtype=dtype, requires_grad=True) for k in keys]
    opt = torch.optim.Muon(ps, **kwargs)
    out = {k: [] for k in keys}
    original = torch_muon_module._zeropower_via_newtonschulz
    if ns is not None:
        torch_muon_module._zeropower_via_newtonschulz = ns
    try:
        for t in range(STEPS):
            for k, p in zip(keys, ps):
                p.grad = torch.from_numpy(np.array(grads[k][t]))
            opt.step()
            for k, p in zip(keys, ps):
                out[k].append(p.detach().numpy().copy())
    finally:
        torch_muon_module._zeropower_via_newtonschulz = original
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_matches_torch_muon_formulas_in_float64(case):
    # torch's exact code with its Newton-Schulz run in float64 instead of bfloat16; ours with
    # ns_dtype=None runs it in float64 too: all other formulas must agree to rounding.
    with jax.enable_x64(True):
        params, grads = problem(TORCH_SHAPES, "float64")
        kw = TORCH_CASES[case]
        ref = run_torch(kw, params, grads, ns=torch_ns_in("clone()"))
        got = trajectory(tc.muon(**kw, ns_dtype=None), params, grads)
        assert moved(ref, params) > 0.05
        assert max_rel_err(got, ref) < 1e-6, case


# Stock torch (bfloat16 Newton-Schulz) vs ours in bfloat16 (float32 accumulation, each
# product and the norm rounded to bfloat16, as torch): one iteration on the same input is
# bitwise equal. Over a trajectory, the momentum's float32 roundings differ in the last bit
# (torch lerps), now and then a bfloat16 rounding falls the other way, and five chaotic
# iterations spread it. Measured max relative trajectory error: 8e-6 (1 iteration),
# 2e-4 .. 2.6e-4 (5); ours in float32 against stock torch: 1.2e-3 .. 1.9e-3.
BF16_TOL = 1e-3


@pytest.mark.parametrize("case", ["defaults", "no-nesterov-match-rms"])
def test_matches_stock_torch_muon_in_bfloat16(case):
    params, grads = problem(TORCH_SHAPES, "float32")
    kw = TORCH_CASES[case]
    ref = run_torch(kw, params, grads)
    got = trajectory(tc.muon(**kw), params, grads)
    assert moved(ref, params) > 0.05
    err = max_rel_err(got, ref)
    assert err < BF16_TOL, (case, err)
    if case == "defaults":  # the bfloat16 path, not float32, is what reproduces torch
        err_f32 = max_rel_err(trajectory(tc.muon(**kw, ns_dtype=None), params, grads), ref)
        assert err < err_f32 / 4, (case, err, err_f32)


def test_torch_muon_refuses_what_torch_refuses():
    tx = tc.muon()
    with pytest.raises(ValueError, match="only supports 2D parameters"):
        tx.init({"w": jnp.ones((2, 2)), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match="complex"):
        tx.init({"w": jnp.ones((2, 2), jnp.complex64)})
    with pytest.raises(ValueError, match="not supported"):
        tc.muon(adjust_lr_fn="sqrt")
    with pytest.raises(ValueError, match="less than 100"):
        tc.muon(ns_steps=100)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        tc.muon(lr=-1.0)


def test_torch_signature_and_defaults():
    theirs = inspect.signature(torch.optim.Muon).parameters
    ours = inspect.signature(tc.muon).parameters
    want = {k: p.default for k, p in theirs.items() if k != "params"}
    assert {k: ours[k].default for k in want} == want


# --------------------------------------------------------------------------- #
# keras.optimizers.Muon
# --------------------------------------------------------------------------- #

KERAS_SHAPES = {
    "tall": (9, 4),
    "wide": (3, 8),
    "square": (5, 5),
    "embedding": (6, 3),
    "conv": (2, 3, 4),
    "vec": (6,),
    "scalar": (),
}
KERAS_CASES = {
    "defaults": dict(learning_rate=0.02),
    "no-nesterov-no-rms-exclude": dict(
        learning_rate=0.01,
        nesterov=False,
        rms_rate=None,
        momentum=0.9,
        exclude_layers=["wi"],
        adam_lr_ratio=0.5,
        weight_decay=0.1,
        adam_weight_decay=None,
        epsilon=1e-4,
    ),
    "embeddings-in-muon-clipnorm": dict(
        learning_rate=0.01,
        exclude_embeddings=False,
        ns_steps=3,
        muon_a=3.0,
        muon_b=-3.2,
        muon_c=1.2,
        clipnorm=2.0,
        adam_beta_1=0.8,
    ),
}


def run_keras(kwargs, params, grads):
    keys = sorted(params)
    dtype = str(params[keys[0]].dtype)
    variables = [keras.Variable(np.asarray(params[k]), dtype=dtype, name=k) for k in keys]
    opt = keras.optimizers.Muon(**kwargs)
    out = {k: [] for k in keys}
    for t in range(STEPS):
        opt.apply_gradients(zip([np.asarray(grads[k][t]) for k in keys], variables))
        for k, v in zip(keys, variables):
            out[k].append(np.asarray(v.value))
    return {k: np.stack(v) for k, v in out.items()}


KERAS_PARITY = [
    ("defaults", "float64", 1e-6),
    ("embeddings-in-muon-clipnorm", "float64", 1e-6),
    ("no-nesterov-no-rms-exclude", "float32", 1e-5),
]


@pytest.mark.parametrize("case,dtype,tol", KERAS_PARITY)
def test_matches_keras_muon(case, dtype, tol):
    # Keras keeps a constant learning rate in a float32 variable: ours gets that value.
    with jax.enable_x64(dtype == "float64"):
        params, grads = problem(KERAS_SHAPES, dtype)
        kw = dict(
            KERAS_CASES[case], learning_rate=float(np.float32(KERAS_CASES[case]["learning_rate"]))
        )
        ref = run_keras(kw, params, grads)
        got = trajectory(kz.muon(**kw), params, grads)
        assert moved(ref, params) > 0.05
        err = max_rel_err(got, ref)
        assert err < tol, (case, dtype, err)


def test_keras_signature_defaults_and_get():
    theirs = inspect.signature(keras.optimizers.Muon).parameters
    ours = inspect.signature(kz.muon).parameters
    skip = {
        "self",
        "kwargs",
        "name",
        "use_ema",
        "ema_momentum",
        "ema_overwrite_frequency",
        "loss_scale_factor",
        "gradient_accumulation_steps",
    }
    want = {k: p.default for k, p in theirs.items() if k not in skip}
    assert {k: ours[k].default for k in want} == want
    assert isinstance(kz.get("Muon"), optax.GradientTransformation)
    assert kz.muon_labels(
        {
            "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
            "Embedding_1": jnp.ones((4, 2)),
            "out": [jnp.ones((3, 1))],
        },
        exclude_layers=["^out"],
    ) == {"dense": {"kernel": "muon", "bias": "adam"}, "Embedding_1": "adam", "out": ["adam"]}
