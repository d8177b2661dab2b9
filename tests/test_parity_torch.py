"""``jaxopt_zoo.compat.torch`` against ``torch.optim``, step for step.

Each case builds the torch optimizer and ours from the same keyword arguments (the names
are torch's), feeds both the same random gradient stream for 120 steps (torch through
``p.grad``, no losses) over a pytree of several shapes, and compares every step of the
parameter trajectory: in float64 (torch with float64 default dtype, ours under a scoped
``jax.enable_x64``) and in float32. A schedule case drives torch with ``LambdaLR`` and ours
with the same function of the step count.
"""

from __future__ import annotations

import contextlib
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxopt_zoo import optim as native
from jaxopt_zoo.compat import torch as tc
from tests.helpers import trajectory

SHAPES = [(), (7,), (3, 5), (2, 3, 4)]
STEPS = 120
TOL = {"float64": 1e-6, "float32": 1e-5}

OPTIMIZERS = {
    "sgd": (tc.sgd, torch.optim.SGD),
    "adam": (tc.adam, torch.optim.Adam),
    "adamw": (tc.adamw, torch.optim.AdamW),
    "rmsprop": (tc.rmsprop, torch.optim.RMSprop),
    "adagrad": (tc.adagrad, torch.optim.Adagrad),
    "adadelta": (tc.adadelta, torch.optim.Adadelta),
    "adamax": (tc.adamax, torch.optim.Adamax),
    "nadam": (tc.nadam, torch.optim.NAdam),
    "radam": (tc.radam, torch.optim.RAdam),
}


def decay(t):
    """A learning-rate factor written so that it works on Python ints and JAX counts."""
    return 0.97**t


def warmup(t):
    return (1 - 0.9 * 0.8**t) * 0.99**t


# (optimizer, torch keyword arguments, LambdaLR factor or None, also run in float32).
# Every case runs in float64; one or two per optimizer, with most options on, also in
# float32 (each case is one compile: this keeps the file fast).
CASES = [
    ("sgd", dict(lr=0.05), None, False),
    ("sgd", dict(lr=0.05, momentum=0.9), None, False),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.1), None, True),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05), None, False),
    ("sgd", dict(lr=0.05, momentum=0.9, maximize=True), None, False),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01), decay, False),
    ("adam", dict(lr=0.02), None, False),
    ("adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), None, False),
    ("adam", dict(lr=0.02, amsgrad=True), None, False),
    ("adam", dict(lr=0.02, betas=(0.9, 0.99), amsgrad=True, weight_decay=0.05), None, True),
    ("adam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True), None, False),
    ("adam", dict(lr=0.02, maximize=True), None, False),
    ("adam", dict(lr=0.05, amsgrad=True), warmup, True),
    ("adamw", dict(lr=0.02), None, False),
    ("adamw", dict(lr=0.02, weight_decay=0.5, amsgrad=True), None, True),
    ("adamw", dict(lr=0.05, weight_decay=0.2), decay, False),
    ("rmsprop", dict(lr=0.01), None, False),
    ("rmsprop", dict(lr=0.01, centered=True), None, False),
    ("rmsprop", dict(lr=0.005, momentum=0.9), None, False),
    (
        "rmsprop",
        dict(lr=0.005, alpha=0.9, eps=1e-4, centered=True, momentum=0.5, weight_decay=0.1),
        None,
        True,
    ),
    ("rmsprop", dict(lr=0.01, maximize=True), None, False),
    ("rmsprop", dict(lr=0.01, momentum=0.9), decay, False),  # lr outside the momentum buffer
    ("adagrad", dict(lr=0.1), None, False),
    ("adagrad", dict(lr=0.1, lr_decay=0.01), None, False),
    (
        "adagrad",
        dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6, weight_decay=0.1),
        None,
        False,
    ),
    ("adagrad", dict(lr=0.2, lr_decay=0.05), warmup, True),
    ("adadelta", dict(eps=1e-3), None, False),
    ("adadelta", dict(lr=5.0, rho=0.95, eps=1e-4, weight_decay=0.1), None, True),
    ("adadelta", dict(lr=3.0, eps=1e-3, maximize=True), decay, False),
    ("adamax", dict(lr=0.02), None, False),
    ("adamax", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1), None, True),
    ("nadam", dict(lr=0.02), None, False),
    ("nadam", dict(lr=0.02, betas=(0.8, 0.99), momentum_decay=0.01, weight_decay=0.1), None, True),
    ("nadam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True), None, False),
    ("nadam", dict(lr=0.05), warmup, False),
    ("radam", dict(lr=0.02, eps=0.1), None, False),  # eps placement matters
    ("radam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1), None, False),
    ("radam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True), None, True),
    ("radam", dict(lr=0.05, maximize=True), warmup, True),
]


def _case_id(case):
    name, kw, factor = case[:3]
    parts = [name] + [f"{k}={v}" for k, v in kw.items()]
    if factor is not None:
        parts.append(f"sched={factor.__name__}")
    return ",".join(parts)


PARITY = [
    pytest.param(c[:3], dt, id=f"{_case_id(c)}-{dt}")
    for c in CASES
    for dt in (("float64", "float32") if c[3] else ("float64",))
]


# --------------------------------------------------------------------------- #
# Harness
# --------------------------------------------------------------------------- #


def make_problem(dtype, complex_leaf=False, seed=0):
    """Initial parameters and a (STEPS, ...) gradient stream per leaf, as NumPy arrays.

    Gradient scales differ across leaves and swing over time (so that AMSGrad's maximum,
    eps and the moving averages all matter)."""
    rng = np.random.default_rng(seed)
    shapes = SHAPES + ([(4,)] if complex_leaf else [])
    leaf_scale = [1.0, 0.3, 3.0, 0.05, 1.0]
    time_scale = np.exp(np.sin(np.arange(STEPS) / 9.0))
    p0, grads = [], []
    for i, s in enumerate(shapes):
        cplx = complex_leaf and i == len(shapes) - 1
        p = rng.normal(size=s) + (1j * rng.normal(size=s) if cplx else 0)
        g = rng.normal(size=(STEPS,) + s) + (1j * rng.normal(size=(STEPS,) + s) if cplx else 0)
        g = g * leaf_scale[i] * time_scale.reshape((STEPS,) + (1,) * len(s))
        dt = np.dtype(dtype) if not cplx else np.result_type(dtype, np.complex64)
        p0.append(np.asarray(p).astype(dt))
        grads.append(g.astype(dt))
    return p0, grads


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch keeps scalar state (step, NAdam's mu_product) in its default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def run_torch(cls, kwargs, factor, p0, grads, dtype):
    with torch_default_dtype(dtype):
        params = [torch.tensor(p, requires_grad=True) for p in p0]
        opt = cls(params, foreach=False, **kwargs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor) if factor else None
        traj = [np.empty((STEPS,) + p.shape, p.dtype) for p in p0]
        for t in range(STEPS):
            for p, g in zip(params, grads):
                p.grad = torch.from_numpy(np.array(g[t]))
            opt.step()
            if sched is not None:
                sched.step()
            for k, p in enumerate(params):
                traj[k][t] = p.detach().numpy()
    return traj


def run_ours(tx, p0, grads, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = {f"p{i}": jnp.asarray(p) for i, p in enumerate(p0)}
        stream = {f"p{i}": jnp.asarray(g) for i, g in enumerate(grads)}
        assert all(x.dtype == p.dtype for x, p in zip(jax.tree.leaves(params), p0))
        traj = trajectory(tx, params, stream)
        return [np.asarray(traj[f"p{i}"]) for i in range(len(p0))]


def rel_err(ours, ref):
    """max over steps of max|ours - ref| / max|ref|, the maxima over all leaves."""
    diff = np.max(
        [np.max(np.abs(a - b).reshape(STEPS, -1), axis=1) for a, b in zip(ours, ref)], axis=0
    )
    scale = np.max([np.max(np.abs(b).reshape(STEPS, -1), axis=1) for b in ref], axis=0)
    return float(np.max(diff / scale))


def displacement(ref, p0):
    """How far the reference moved, relative to the initial scale (the test's sensitivity)."""
    moved = max(float(np.max(np.abs(b - p))) for b, p in zip(ref, p0))
    return moved / max(float(np.max(np.abs(p))) for p in p0)


def lr_arg(kwargs, factor):
    kw = dict(kwargs)
    if factor is not None:
        base = kw["lr"]
        kw["lr"] = lambda count: base * factor(count)
    return kw


# --------------------------------------------------------------------------- #
# Parity
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case,dtype", PARITY)
def test_trajectory_matches_torch(case, dtype):
    name, kwargs, factor = case
    ours_fn, torch_cls = OPTIMIZERS[name]
    p0, grads = make_problem(dtype)
    ref = run_torch(torch_cls, kwargs, factor, p0, grads, dtype)
    got = run_ours(ours_fn(**lr_arg(kwargs, factor)), p0, grads, dtype)
    assert jnp.asarray(1.0).dtype == jnp.float32, "x64 leaked out of its scope"
    assert displacement(ref, p0) > 0.05, "the reference barely moved: the case tests nothing"
    err = rel_err(got, ref)
    assert err < TOL[dtype], f"{name}{kwargs}: relative error {err:.3g} in {dtype}"


COMPLEX_CASES = [
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.1), None),
    ("adam", dict(lr=0.02, amsgrad=True), None),
    ("rmsprop", dict(lr=0.01, centered=True, momentum=0.5), None),
    ("nadam", dict(lr=0.02), None),
]


@pytest.mark.parametrize("case", COMPLEX_CASES, ids=[_case_id(c) for c in COMPLEX_CASES])
def test_complex_parameters_match_torch(case):
    """torch optimizes complex parameters as view_as_real pairs; so do we."""
    name, kwargs, factor = case
    ours_fn, torch_cls = OPTIMIZERS[name]
    p0, grads = make_problem("float64", complex_leaf=True)
    assert np.iscomplexobj(p0[-1])
    ref = run_torch(torch_cls, kwargs, factor, p0, grads, "float64")
    got = run_ours(ours_fn(**lr_arg(kwargs, factor)), p0, grads, "float64")
    assert rel_err(got, ref) < TOL["float64"]


@pytest.mark.parametrize(
    "name,kwargs,other",
    [
        ("adam", dict(lr=0.02, amsgrad=True), lambda: native.adam(0.02, amsgrad=True)),
        ("nadam", dict(lr=0.02), lambda: native.nadam(0.02)),
        ("radam", dict(lr=0.02, eps=0.1), lambda: native.radam(0.02, eps=0.1)),
        ("adagrad", dict(lr=0.1), lambda: native.adagrad(0.1)),
    ],
)
def test_harness_tells_torch_formulas_apart(name, kwargs, other):
    """The native (paper / optax) variants differ from torch's and the harness sees it;
    the same settings of the compat versions pass in ``test_trajectory_matches_torch``."""
    p0, grads = make_problem("float64")
    ref = run_torch(OPTIMIZERS[name][1], kwargs, None, p0, grads, "float64")
    assert rel_err(run_ours(other(), p0, grads, "float64"), ref) > 1e-4


# --------------------------------------------------------------------------- #
# Signatures and defaults
# --------------------------------------------------------------------------- #

TORCH_ONLY = {"self", "params", "foreach", "capturable", "differentiable", "fused"}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_signature_and_defaults_match_torch(name):
    ours_fn, torch_cls = OPTIMIZERS[name]
    theirs = {
        k: p
        for k, p in inspect.signature(torch_cls.__init__).parameters.items()
        if k not in TORCH_ONLY
    }
    ours = inspect.signature(ours_fn).parameters
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for k, p in theirs.items():
        assert ours[k].default == p.default, (
            f"{name}({k}=...): ours {ours[k].default!r}, torch {p.default!r}"
        )
    # Our positional arguments mean what torch's positional arguments (after params) mean.
    pos_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    ours_pos = [k for k, p in ours.items() if p.kind in pos_kinds]
    theirs_pos = [k for k, p in theirs.items() if p.kind in pos_kinds]
    assert ours_pos == theirs_pos[: len(ours_pos)]


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #

BAD = [
    ("sgd", dict(lr=-0.1)),
    ("sgd", dict(momentum=-0.5)),
    ("sgd", dict(weight_decay=-1e-3)),
    ("sgd", dict(nesterov=True)),
    ("sgd", dict(nesterov=True, momentum=0.9, dampening=0.1)),
    ("adam", dict(lr=-1.0)),
    ("adam", dict(eps=-1e-8)),
    ("adam", dict(betas=(1.0, 0.999))),
    ("adam", dict(betas=(0.9, -0.1))),
    ("adam", dict(weight_decay=-0.1)),
    ("adamw", dict(betas=(0.9, 1.0))),
    ("adamw", dict(weight_decay=-0.01)),
    ("rmsprop", dict(alpha=-0.1)),
    ("rmsprop", dict(eps=-1.0)),
    ("rmsprop", dict(momentum=-0.1)),
    ("rmsprop", dict(weight_decay=-0.1)),
    ("adagrad", dict(lr_decay=-0.1)),
    ("adagrad", dict(initial_accumulator_value=-1.0)),
    ("adagrad", dict(eps=-1e-10)),
    ("adadelta", dict(rho=1.5)),
    ("adadelta", dict(lr=-1.0)),
    ("adamax", dict(betas=(-0.5, 0.999))),
    ("adamax", dict(weight_decay=-1.0)),
    ("nadam", dict(momentum_decay=-0.1)),
    ("nadam", dict(betas=(0.9, 1.5))),
    ("radam", dict(betas=(0.9, 1.0))),
    ("radam", dict(eps=-1.0)),
]


@pytest.mark.parametrize("name,kwargs", BAD, ids=[f"{n}-{k}" for n, k in BAD])
def test_invalid_hyperparameters_raise_like_torch(name, kwargs):
    ours_fn, torch_cls = OPTIMIZERS[name]
    with pytest.raises(ValueError) as theirs:
        torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
    # Our message starts with torch's ("Invalid learning rate: -0.1") and then says more.
    with pytest.raises(ValueError, match="^" + re.escape(str(theirs.value))):
        ours_fn(**kwargs)


def test_degenerate_decays_are_rejected():
    """torch accepts alpha = 1 (RMSprop) and rho = 1 (Adadelta), where the averages never
    move; we reject them with an explanation."""
    with pytest.raises(ValueError, match=r"Invalid alpha value: 1\.0\. Expected .* < 1"):
        tc.rmsprop(alpha=1.0)
    with pytest.raises(ValueError, match=r"Invalid rho value: 1\.0\. Expected .* < 1"):
        tc.adadelta(rho=1.0)
    with pytest.raises(ValueError, match=r"Invalid betas: 0\.9\. Expected a pair"):
        tc.adam(betas=0.9)


def test_schedules_and_arrays_pass_validation():
    """Schedules and (traced) arrays are not checked at construction, as in the core."""
    tc.sgd(lr=lambda c: 0.1 * 0.9**c, momentum=0.9)
    tc.adagrad(lr=lambda c: 0.1, lr_decay=0.1)
    tx = tc.sgd(lr=jnp.asarray(0.5))
    g = {"w": jnp.arange(3.0)}
    u, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(u["w"], -0.5 * np.arange(3.0))
