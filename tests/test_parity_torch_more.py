"""``compat.torch`` lbfgs, rprop, asgd, adafactor and sparse_adam against ``torch.optim``.

Rprop, ASGD and Adafactor use the harness of ``tests/test_parity_torch.py``: the same
random gradient stream for 120 steps over leaves of shapes ``()``, ``(7,)``, ``(3, 5)``,
``(2, 3, 4)``, every step of the parameter trajectory compared, float64 (rel < 1e-6) and
float32 (rel < 1e-5). ASGD's averaged parameters (torch's ``state[p]["ax"]``) are compared
too. SparseAdam gets the sparse gradient of the rows that are non-zero on each step (rows
are dropped at random), ours the dense gradient with zeros there.

L-BFGS runs ``LBFGS.step(closure)`` and our ``update(..., value=, value_fn=)`` on the same
problems in float64 -- Rosenbrock in 2-D and 100-D, an L2-regularized logistic regression
-- and compares the parameters after every step, and the counts of iterations and of
function evaluations. The 100-D Rosenbrock starts near its minimum: from the classic
start ``(-1.2, 1, ...)`` its L-BFGS iterates are chaotic (every iteration in the curved
valley multiplies a difference by about 2), and torch and XLA sum the loss in different
orders, so their trajectories part after about 50 iterations though every formula agrees
(the 2-D start (-1.2, 1) stays within 1e-11 to the end).

Where the references disagree (docs/verification.md): ``compat.torch.adafactor`` is not
``jaxopt_zoo.adafactor`` (optax's); ``compat.torch.sparse_adam`` is not Adam (lazy rows),
and a row whose gradient is exactly zero although it was looked up moves in torch (it is
in the sparse gradient) and not here.
"""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_zoo as jz
from jaxopt_zoo.compat import torch as tc
from tests.helpers import stand_in_extra_args
from tests.test_parity_torch import (
    STEPS,
    TOL,
    TORCH_ONLY,
    displacement,
    make_problem,
    rel_err,
    run_ours,
    run_torch,
    torch_default_dtype,
)

OPTIMIZERS = {
    "rprop": (tc.rprop, torch.optim.Rprop),
    "asgd": (tc.asgd, torch.optim.ASGD),
    "adafactor": (tc.adafactor, torch.optim.Adafactor),
    "sparse_adam": (tc.sparse_adam, torch.optim.SparseAdam),
    "lbfgs": (tc.lbfgs, torch.optim.LBFGS),
}

# (optimizer, torch keyword arguments); each in float64, the second of each in float32 too.
CASES = [
    ("rprop", dict(lr=0.01)),
    ("rprop", dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True)),
    ("asgd", dict(lr=0.01)),
    ("asgd", dict(lr=0.05, lambd=1e-2, alpha=0.6, t0=30, weight_decay=0.1)),
    ("adafactor", dict(lr=0.01)),
    (
        "adafactor",
        dict(lr=0.05, beta2_decay=-0.6, eps=(1e-3, 1e-2), d=2.0, weight_decay=0.1, maximize=True),
    ),
]


def _id(name, kw):
    return ",".join([name] + [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.parametrize(
    "name,kwargs,dtype",
    [
        pytest.param(n, kw, dt, id=f"{_id(n, kw)}-{dt}")
        for k, (n, kw) in enumerate(CASES)
        for dt in (("float64", "float32") if k % 2 else ("float64",))
    ],
)
def test_trajectory_matches_torch(name, kwargs, dtype):
    ours_fn, torch_cls = OPTIMIZERS[name]
    p0, grads = make_problem(dtype)
    ref = run_torch(torch_cls, kwargs, None, p0, grads, dtype)
    got = run_ours(ours_fn(**kwargs), p0, grads, dtype)
    assert displacement(ref, p0) > 0.05, "the reference barely moved: the case tests nothing"
    err = rel_err(got, ref)
    assert err < TOL[dtype], f"{name}{kwargs}: relative error {err:.3g} in {dtype}"


def test_rprop_complex_parameters_match_torch():
    p0, grads = make_problem("float64", complex_leaf=True)
    kw = dict(lr=0.02, etas=(0.4, 1.3))
    ref = run_torch(torch.optim.Rprop, kw, None, p0, grads, "float64")
    assert rel_err(run_ours(tc.rprop(**kw), p0, grads, "float64"), ref) < TOL["float64"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_asgd_averaged_params_match_torch(dtype):
    """torch's ``state[p]["ax"]`` after 120 steps, averaging from step 30 on."""
    kw = dict(lr=0.05, lambd=1e-2, alpha=0.6, t0=30, weight_decay=0.1)
    p0, grads = make_problem(dtype)
    with torch_default_dtype(dtype):
        params = [torch.tensor(p, requires_grad=True) for p in p0]
        opt = torch.optim.ASGD(params, foreach=False, **kw)
        for t in range(STEPS):
            for p, g in zip(params, grads):
                p.grad = torch.from_numpy(np.array(g[t]))
            opt.step()
        ref = [opt.state[p]["ax"].numpy() for p in params]
        last = [p.detach().numpy() for p in params]
    with jax.enable_x64(dtype == "float64"):
        tx = tc.asgd(**kw)
        params = {f"p{i}": jnp.asarray(p) for i, p in enumerate(p0)}
        state = tx.init(params)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        for t in range(STEPS):
            u, state = step(
                {f"p{i}": jnp.asarray(g[t]) for i, g in enumerate(grads)}, state, params
            )
            params = optax.apply_updates(params, u)
        ax = tc.asgd_averaged_params(state, params)
        got = [np.asarray(ax[f"p{i}"]) for i in range(len(p0))]
    # The average is not the last iterate (the test would pass vacuously otherwise).
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(ref, last)) > 1e-2
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype] * np.max(np.abs(b)))
    with pytest.raises(ValueError, match="expected one TorchASGDState"):
        tc.asgd_averaged_params(tc.sgd().init(params), params)


# --------------------------------------------------------------------------- #
# SparseAdam: lazy Adam against torch's sparse gradients
# --------------------------------------------------------------------------- #

SPARSE_SHAPES = [(7,), (6, 5), (4, 3, 2)]


def sparse_problem(dtype, seed=0):
    """Dense gradients with about half the rows zero on each step (embedding lookups)."""
    rng = np.random.default_rng(seed)
    p0, grads = [], []
    for s in SPARSE_SHAPES:
        g = rng.normal(size=(STEPS,) + s)
        rows = rng.random((STEPS, s[0])) < 0.5
        g = g * rows.reshape((STEPS, s[0]) + (1,) * (len(s) - 1))
        p0.append(rng.normal(size=s).astype(dtype))
        grads.append(g.astype(dtype))
    return p0, grads


@pytest.mark.parametrize(
    "kwargs,dtype",
    [
        (dict(lr=0.02), "float64"),
        (dict(lr=0.05, betas=(0.8, 0.99), eps=1e-4, maximize=True), "float64"),
        (dict(lr=0.05, betas=(0.8, 0.99), eps=1e-4, maximize=True), "float32"),
    ],
)
def test_sparse_adam_matches_torch(kwargs, dtype):
    p0, grads = sparse_problem(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # dense.add_(sparse) spins a thread pool: 100x slower on 2 cores
    with torch_default_dtype(dtype):
        params = [torch.tensor(p, requires_grad=True) for p in p0]
        opt = torch.optim.SparseAdam(params, **kwargs)
        ref = [np.empty((STEPS,) + p.shape, p.dtype) for p in p0]
        for t in range(STEPS):
            for p, g in zip(params, grads):
                sparse = torch.from_numpy(np.array(g[t])).to_sparse(sparse_dim=1)
                assert sparse._nnz() == int(np.sum(np.any(g[t].reshape(len(g[t]), -1), 1)))
                p.grad = sparse
            opt.step()
            for k, p in enumerate(params):
                ref[k][t] = p.detach().numpy()
    torch.set_num_threads(threads)
    got = run_ours(tc.sparse_adam(**kwargs), p0, grads, dtype)
    assert displacement(ref, p0) > 0.05
    assert rel_err(got, ref) < TOL[dtype]
    if kwargs == dict(lr=0.02):
        # Dense Adam on the same stream is far away: the laziness is what matches.
        dense = run_ours(tc.adam(**kwargs), p0, grads, dtype)
        assert rel_err(dense, ref) > 1e-2


def test_sparse_adam_leaves_inactive_rows_alone():
    tx = tc.sparse_adam(lr=0.1)
    tx = tx._replace(update=jax.jit(tx.update))
    params = {"emb": jnp.ones((3, 2)), "s": jnp.asarray(1.0)}
    g = {"emb": jnp.zeros((3, 2)).at[1, 0].set(2.0), "s": jnp.asarray(0.0)}
    u, state = tx.update(g, tx.init(params), params)
    assert np.all(np.asarray(u["emb"])[[0, 2]] == 0) and float(u["s"]) == 0.0
    assert float(u["emb"][1, 0]) < 0
    # Next step row 1 is active through element [1, 1]: element [1, 0], whose gradient is
    # 0, moves with its momentum (rows are lazy, not elements); rows 0 and 2 still do not.
    g = {"emb": jnp.zeros((3, 2)).at[1, 1].set(1.0), "s": jnp.asarray(0.0)}
    u, state = tx.update(g, state, params)
    assert float(u["emb"][1, 0]) < 0 and np.all(np.asarray(u["emb"])[[0, 2]] == 0)
    inner = jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "nu"))
    inner = [s for s in inner if hasattr(s, "nu")][0]
    assert int(inner.count) == 2 and np.all(np.asarray(inner.mu["emb"])[[0, 2]] == 0)


# --------------------------------------------------------------------------- #
# L-BFGS
# --------------------------------------------------------------------------- #


def rosenbrock_torch(ps):
    (x,) = ps
    return torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def rosenbrock_jax(p):
    x = p["x"]
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


_rng = np.random.default_rng(3)
_X = _rng.normal(size=(200, 10))
_Y = (_X @ _rng.normal(size=10) + 0.5 * _rng.normal(size=200) > 0).astype(np.float64)
_LAM = 0.1


def logreg_torch(ps):
    w, b = ps
    z = torch.from_numpy(_X) @ w + b
    s = 2 * torch.from_numpy(_Y) - 1
    return torch.nn.functional.softplus(-s * z).mean() + 0.5 * _LAM * torch.sum(w * w)


def logreg_jax(p):
    z = jnp.asarray(_X) @ p["w"] + p["b"]
    s = 2 * jnp.asarray(_Y) - 1
    return jnp.mean(jax.nn.softplus(-s * z)) + 0.5 * _LAM * jnp.sum(p["w"] * p["w"])


PROBLEMS = {
    "rosenbrock2": (rosenbrock_torch, rosenbrock_jax, lambda: [np.array([-1.2, 1.0])]),
    "rosenbrock100": (
        rosenbrock_torch,
        rosenbrock_jax,
        lambda: [1 + 0.3 * np.random.default_rng(0).normal(size=100)],
    ),
    "logreg": (logreg_torch, logreg_jax, lambda: [np.zeros(10), np.zeros(())]),
}

# (problem, LBFGS keyword arguments, steps). One compile per case: few cases, each with
# >= 100 iterations in all, the ring buffer wrapping in two (history_size < iterations).
LBFGS_CASES = [
    (
        "rosenbrock2",
        dict(line_search_fn="strong_wolfe", max_iter=1, max_eval=25, history_size=3),
        120,
    ),
    ("rosenbrock100", dict(line_search_fn="strong_wolfe", history_size=5), 6),
    ("logreg", dict(line_search_fn="strong_wolfe", max_iter=4, history_size=100), 30),
    ("logreg", dict(lr=0.5, max_iter=10, history_size=4, tolerance_change=0.0), 12),
]


@pytest.mark.parametrize(
    "problem,kwargs,steps",
    LBFGS_CASES,
    ids=[f"{p}-{_id('lbfgs', kw)}" for p, kw, _ in LBFGS_CASES],
)
def test_lbfgs_iterates_match_torch(problem, kwargs, steps):
    f_torch, f_jax, start = PROBLEMS[problem]
    x0 = start()
    with torch_default_dtype("float64"):
        tparams = [torch.tensor(x, requires_grad=True) for x in x0]
        opt = torch.optim.LBFGS(tparams, **kwargs)

        def closure():
            opt.zero_grad()
            loss = f_torch(tparams)
            loss.backward()
            return loss

        ref = []
        for _ in range(steps):
            opt.step(closure)
            ref.append([p.detach().numpy().copy() for p in tparams])
        tstate = opt.state[tparams[0]]
    names = ["x"] if problem.startswith("rosen") else ["w", "b"]
    with jax.enable_x64(True):
        tx = tc.lbfgs(**kwargs)
        params = {k: jnp.asarray(x) for k, x in zip(names, x0)}
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(f_jax)(params)
            u, state = tx.update(grad, state, params, value=value, value_fn=f_jax)
            return optax.apply_updates(params, u), state

        got = []
        for _ in range(steps):
            params, state = step(params, state)
            got.append([np.asarray(params[k]) for k in names])
    scale = max(float(np.max(np.abs(np.stack([r[i] for r in ref])))) for i in range(len(x0)))
    err = max(float(np.max(np.abs(a - b))) for rs, gs in zip(ref, got) for a, b in zip(rs, gs))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ref[-1], x0))
    assert moved > 0.1, "the reference barely moved: the case tests nothing"
    assert err / scale < 1e-6, f"relative error {err / scale:.3g}"
    assert int(state.n_iter) == tstate["n_iter"]
    assert int(state.func_evals) == tstate["func_evals"]


def test_lbfgs_needs_value_fn_and_stays_finite_on_registry_stand_in():
    tx = tc.lbfgs()
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    with pytest.raises(ValueError, match="needs value_fn="):
        tx.update(grads, tx.init(params), params)
    # The registry-wide tests' stand-in: random gradients, loss 0.5 |p|^2.
    tx = jz.get("torch.lbfgs")

    @jax.jit
    def step(g, state, params):
        extra = stand_in_extra_args("torch.lbfgs", params, g)
        u, state = tx.update(g, state, params, **extra)
        return optax.apply_updates(params, u), state

    state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        params, state = step(g, state, params)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
    # It minimizes the stand-in loss 0.5 |p|^2: with its own gradients (p) it ends near 0.
    for _ in range(2):
        params, state = step(params, state, params)
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params)) < 1e-3


def test_lbfgs_complex_parameters_match_torch():
    """torch optimizes complex parameters as real pairs; so does ours (with torch's
    gradient convention for the complex ``grads``)."""
    z0 = np.array([1.0 + 2.0j, -0.5 + 0.3j])
    target = np.array([0.2 - 1.0j, 1.0 + 1.0j])
    kw = dict(lr=0.05, max_iter=5)
    with torch_default_dtype("float64"):
        z = torch.tensor(z0, requires_grad=True)
        opt = torch.optim.LBFGS([z], **kw)

        def closure():
            opt.zero_grad()
            loss = torch.sum(torch.abs(z - torch.from_numpy(target)) ** 4)
            loss.backward()
            return loss

        ref = []
        for _ in range(4):
            opt.step(closure)
            ref.append(z.detach().numpy().copy())
    with jax.enable_x64(True):

        def f(p):
            return jnp.sum(jnp.abs(p["z"] - jnp.asarray(target)) ** 4)

        tx = tc.lbfgs(**kw)
        params = {"z": jnp.asarray(z0)}
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            g = jax.tree.map(jnp.conj, jax.grad(f)(params))
            u, state = tx.update(g, state, params, value=f(params), value_fn=f)
            return optax.apply_updates(params, u), state

        for k in range(4):
            params, state = step(params, state)
            np.testing.assert_allclose(np.asarray(params["z"]), ref[k], rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(ref[-1] - z0)) > 0.5


# --------------------------------------------------------------------------- #
# Signatures, defaults, validation
# --------------------------------------------------------------------------- #


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
        assert ours[k].default == p.default, f"{name}({k}=...)"
    pos = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    ours_pos = [k for k, p in ours.items() if p.kind in pos]
    theirs_pos = [k for k, p in theirs.items() if p.kind in pos]
    assert ours_pos == theirs_pos[: len(ours_pos)]


BAD = [
    ("rprop", dict(lr=-0.1)),
    ("rprop", dict(etas=(1.5, 1.2))),
    ("rprop", dict(etas=(0.5, 0.9))),
    ("asgd", dict(lr=-1.0)),
    ("asgd", dict(weight_decay=-0.1)),
    ("adafactor", dict(lr=-0.1)),
    ("adafactor", dict(beta2_decay=0.5)),
    ("adafactor", dict(eps=(-1.0, 1e-3))),
    ("adafactor", dict(eps=(None, -1e-3))),
    ("adafactor", dict(d=0.5)),
    ("adafactor", dict(weight_decay=-0.1)),
    ("sparse_adam", dict(lr=0.0)),
    ("sparse_adam", dict(eps=0.0)),
    ("sparse_adam", dict(betas=(1.0, 0.999))),
    ("sparse_adam", dict(betas=(0.9, -0.1))),
    ("lbfgs", dict(lr=-1.0)),
]


@pytest.mark.parametrize("name,kwargs", BAD, ids=[f"{n}-{k}" for n, k in BAD])
def test_invalid_hyperparameters_raise_like_torch(name, kwargs):
    ours_fn, torch_cls = OPTIMIZERS[name]
    with pytest.raises(ValueError) as theirs:
        torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match="^" + re.escape(str(theirs.value))):
        ours_fn(**kwargs)


def test_invalid_hyperparameters_torch_accepts():
    """Checked here at construction; torch accepts them (or fails at the first step)."""
    with pytest.raises(ValueError, match="Invalid line_search_fn: 'armijo'"):
        tc.lbfgs(line_search_fn="armijo")
    with pytest.raises(ValueError, match="Invalid max_iter: 0"):
        tc.lbfgs(max_iter=0)
    with pytest.raises(ValueError, match="Invalid history_size: 0"):
        tc.lbfgs(history_size=0)
    with pytest.raises(ValueError, match="Invalid step_sizes: 1.0, 0.1"):
        tc.rprop(step_sizes=(1.0, 0.1))
    with pytest.raises(ValueError, match="Invalid lambd value: -1"):
        tc.asgd(lambd=-1.0)
    with pytest.raises(ValueError, match="Adafactor does not support complex"):
        tc.adafactor().init({"z": jnp.ones(2, jnp.complex64)})


def test_adafactor_against_optax_adafactor():
    """optax's Adafactor (``jaxopt_zoo.adafactor``) factoring every matrix agrees with
    torch's while ``lr <= 1 / sqrt(t)`` (up to the eps terms); once torch's cap
    ``1 / sqrt(t)`` binds (lr = 0.5 from step 5 on) they part."""
    p0, grads = make_problem("float64")
    for lr, agree in ((0.01, True), (0.5, False)):
        ref = run_torch(torch.optim.Adafactor, dict(lr=lr), None, p0, grads, "float64")
        other = run_ours(jz.adafactor(lr, min_dim_size_to_factor=1), p0, grads, "float64")
        err = rel_err(other, ref)
        assert (err < 1e-6) if agree else (err > 1e-2), (lr, err)
