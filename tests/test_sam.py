"""SAM and ASAM (``jaxopt_zoo.sam``, ``sam_gradient``) against pytorch_optimizer and optax.

The loss is a small tanh MLP with softmax cross-entropy on fixed random data (float64):
ours computes gradients with ``jax.grad``, the references with torch autograd or the same
``jax.grad``. Trajectories are compared over 100 steps.

References and how they differ:

- ``pytorch_optimizer.SAM`` (follows the authors' code: ``first_step`` adds
  ``e = rho * [|w|^2] g / (||[|w|] g|| + eps)``, the closure recomputes the gradient there,
  ``second_step`` restores ``w`` and runs the base optimizer). It accumulates the squared
  norm in float32 even for float64 parameters (``get_global_gradient_norm`` calls
  ``.float()``), so in float64 we agree to ~1e-8, not to rounding; with that norm patched
  to float64 the trajectories agree to ~1e-14 (tested), so that is the only difference.
- ``optax.contrib.sam(base, chain(normalize(), sgd(rho)), sync_period=2,
  opaque_mode=True)`` is SAM (no ASAM); its ``normalize`` has no ``eps`` (a zero gradient
  gives NaN, ours a zero perturbation). Its default transparent mode is the same algorithm
  spread over two ``update`` calls (the caller's parameters are the perturbed ones after
  every odd call); ``sync_period > 2`` takes several ascent steps, which ours does not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from pytorch_optimizer import SAM as TorchSAM
from pytorch_optimizer.optimizer import sam as po_sam

import jaxopt_zoo as jz
from tests.helpers import max_rel_err

STEPS = 100
RTOL64 = 1e-6  # seen: <= 3e-8 (pytorch_optimizer's float32 norm)
RTOL_EXACT = 1e-11  # seen: ~1e-14 (the same algorithm in the same precision)

N, D, H, C = 48, 5, 7, 3
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, D))
Y = _rng.integers(0, C, size=N)
P0 = {
    "W1": _rng.normal(size=(D, H)) * 0.5,
    "b1": _rng.normal(size=H) * 0.1,
    "W2": _rng.normal(size=(H, C)) * 0.5,
    "b2": _rng.normal(size=C) * 0.1,
}
KEYS = sorted(P0)  # the leaf order of a dict pytree


def loss(p, x, y):
    z = jnp.tanh(x @ p["W1"] + p["b1"][None]) @ p["W2"] + p["b2"][None]
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


def torch_loss(p, x, y):
    z = torch.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    return torch.nn.functional.cross_entropy(z, y)


# (ours, pytorch's) base optimizers, built from the same hyperparameters.
BASES = {
    "sgd_momentum": (
        lambda: jz.sgd(0.1, momentum=0.9),
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    ),
    "adamw": (
        lambda: jz.adamw(0.01, weight_decay=0.1),
        (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ),
}
CASES = [
    ("sgd_momentum", a, r) for a, r in ((False, 0.02), (False, 0.1), (True, 0.5), (True, 2.0))
] + [("adamw", a, r) for a, r in ((False, 0.05), (True, 1.0))]


_RUNS = {}


def ours(base, adaptive, rho, steps=STEPS):
    """Our parameter trajectory; one compile per (base, adaptive), rho traced."""
    if (base, adaptive) not in _RUNS:

        @jax.jit
        def run(rho):
            tx = jz.sam(BASES[base][0](), rho=rho, adaptive=adaptive)
            grad_fn = jax.grad(lambda p: loss(p, jnp.asarray(X), jnp.asarray(Y)))

            def body(carry, _):
                p, s = carry
                u, s = tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
                p = optax.apply_updates(p, u)
                return (p, s), p

            p0 = jax.tree.map(jnp.asarray, P0)
            return jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)[1]

        _RUNS[base, adaptive] = run
    with jax.enable_x64(True):
        return jax.tree.map(np.asarray, _RUNS[base, adaptive](jnp.asarray(rho, jnp.float64)))


def theirs(base, adaptive, rho, steps=STEPS):
    cls, kw = BASES[base][1]
    p = {k: torch.tensor(P0[k], dtype=torch.float64, requires_grad=True) for k in KEYS}
    x, y = torch.tensor(X), torch.tensor(Y)
    opt = TorchSAM([p[k] for k in KEYS], cls, rho=rho, adaptive=adaptive, **kw)

    def closure():
        opt.zero_grad()
        value = torch_loss(p, x, y)
        value.backward()
        return value

    out = {k: [] for k in KEYS}
    for _ in range(steps):
        closure()  # the gradient at w, as pytorch_optimizer's SAM.step expects
        opt.step(closure)
        for k in KEYS:
            out[k].append(p[k].detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def moved(traj):
    return max(float(np.max(np.abs(traj[k][-1] - P0[k]))) for k in KEYS)


@pytest.mark.parametrize("base,adaptive,rho", CASES)
def test_matches_pytorch_optimizer_sam(base, adaptive, rho):
    with jax.enable_x64(True):
        got = ours(base, adaptive, rho)
    want = theirs(base, adaptive, rho)
    assert moved(want) > 0.05
    err = max_rel_err(got, want)
    assert err < RTOL64, err
    # SAM really changes the trajectory: the base optimizer alone ends elsewhere.
    assert max_rel_err(got, ours(base, adaptive, 0.0)) > 1e3 * RTOL64


def _float64_norm(param_groups, device=None, *, weight_adaptive=False):
    total = torch.zeros(1, dtype=torch.float64)
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None:
                g = p.grad * p.abs() if weight_adaptive and group.get("adaptive") else p.grad
                total += torch.sum(g * g)
    return total


@pytest.mark.parametrize("adaptive,rho", [(False, 0.1), (True, 1.0)])
def test_the_only_difference_from_pytorch_optimizer_is_its_float32_norm(monkeypatch, adaptive, rho):
    monkeypatch.setattr(po_sam, "get_global_gradient_norm", _float64_norm)
    with jax.enable_x64(True):
        got = ours("adamw", adaptive, rho)
    err = max_rel_err(got, theirs("adamw", adaptive, rho))
    assert err < RTOL_EXACT, err


def _optax_trajectory(opaque, rho, steps=STEPS):
    grad_fn = jax.grad(lambda p: loss(p, jnp.asarray(X), jnp.asarray(Y)))
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    tx = optax.contrib.sam(jz.sgd(0.1, momentum=0.9), adv, sync_period=2, opaque_mode=opaque)
    calls = 1 if opaque else 2

    @jax.jit
    def run(p0):
        def body(carry, _):
            p, s = carry
            for _ in range(calls):  # transparent: ascent call, then the outer update
                u, s = tx.update(grad_fn(p), s, p, grad_fn=lambda q, i: grad_fn(q))
                p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)[1]

    return jax.tree.map(np.asarray, run(jax.tree.map(jnp.asarray, P0)))


@pytest.mark.parametrize("opaque", [True, False], ids=["opaque", "transparent"])
def test_matches_optax_contrib_sam(opaque):
    with jax.enable_x64(True):
        got = ours("sgd_momentum", False, 0.1)
        want = _optax_trajectory(opaque, 0.1)
    assert moved(want) > 0.05
    err = max_rel_err(got, want)
    assert err < RTOL_EXACT, err


# --------------------------------------------------------------------------- #
# Composition: sam_gradient, chain, optax bases, skip_not_finite, jit
# --------------------------------------------------------------------------- #


def _grad_fn32():
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y)
    return jax.grad(lambda p: loss(p, x, y))


def _p32():
    return {k: jnp.asarray(v, jnp.float32) for k, v in P0.items()}


def _run_eager(tx, steps, call):
    p, s, grad_fn = _p32(), None, _grad_fn32()
    s = tx.init(p)
    step = jax.jit(lambda p, s: call(tx, p, s, grad_fn))
    out = []
    for _ in range(steps):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
        out.append(p)
    return jax.tree.map(lambda *x: np.stack(x), *out)


def _wrapped(tx, p, s, grad_fn):
    return tx.update(grad_fn(p), s, p, grad_fn=grad_fn)


def test_sam_gradient_equals_the_wrapper():
    want = _run_eager(jz.sam(jz.adam(0.01), 0.5, True), 10, _wrapped)
    sg = jz.sam_gradient(_grad_fn32(), 0.5, True)

    def given(tx, p, s, grad_fn):  # the caller's gradient at p is reused
        return tx.update(sg(p, grad_fn(p)), s, p)

    def computed(tx, p, s, grad_fn):  # sam_gradient computes it
        return tx.update(sg(p), s, p)

    for call in (given, computed):
        got = _run_eager(jz.adam(0.01), 10, call)
        assert max_rel_err(got, want) < 1e-6


def test_inside_chain_and_around_an_optax_optimizer():
    want = _run_eager(jz.sam(optax.adam(0.01)), 10, _wrapped)
    got = _run_eager(jz.chain(jz.sam(optax.adam(0.01))), 10, _wrapped)
    assert max_rel_err(got, want) < 1e-6
    assert moved(want) > 0.02


def test_incoming_gradient_is_not_recomputed():
    calls = []
    grad_fn = _grad_fn32()

    def counting(p):
        calls.append(1)
        return grad_fn(p)

    tx, p = jz.sam(jz.sgd(0.1)), _p32()
    tx.update(grad_fn(p), tx.init(p), p, grad_fn=counting)
    assert len(calls) == 1


def test_skip_not_finite_skips_a_non_finite_sam_gradient():
    p = _p32()
    g = _grad_fn32()(p)

    def nan_grad(q):
        return jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), q)

    tx = jz.sam(jz.skip_not_finite(jz.sgd(0.1, momentum=0.9)))
    s = tx.init(p)
    u, s2 = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=nan_grad))(g, s, p)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    assert int(s2.inner_state.total_skipped) == 1
    # outside: a non-finite first gradient skips the step
    tx = jz.skip_not_finite(jz.sam(jz.sgd(0.1)))
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), g)
    u, s2 = tx.update(bad, tx.init(p), p, grad_fn=_grad_fn32())
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    assert int(s2.total_skipped) == 1


def test_zero_gradient_gives_no_perturbation():
    p = _p32()
    zero = jax.tree.map(jnp.zeros_like, p)
    for adaptive in (False, True):
        e = jz.sam_perturbation(p, zero, 0.05, adaptive)
        assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(e))


def test_perturbation_has_radius_rho():
    p, g = _p32(), _grad_fn32()(_p32())
    e = jz.sam_perturbation(p, g, 0.3)
    assert abs(float(jz.global_norm(e)) - 0.3) < 1e-5
    # ASAM: radius rho in the scaled metric ||e / |w| ||
    e = jz.sam_perturbation(p, g, 0.3, adaptive=True)
    scaled = jax.tree.map(lambda x, w: x / jnp.abs(w), e, p)
    assert abs(float(jz.global_norm(scaled)) - 0.3) < 1e-4


def test_no_recompilation_and_half_precision():
    traces = []
    grad_fn = _grad_fn32()
    tx = jz.sam(jz.adam(1e-2), adaptive=True, rho=0.5)

    @jax.jit
    def step(p, s):
        traces.append(1)
        return tx.update(grad_fn(p), s, p, grad_fn=grad_fn)

    p = _p32()
    s = tx.init(p)
    for _ in range(3):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
    assert len(traces) == 1
    want = u
    for dtype in (jnp.bfloat16, jnp.float16):
        ph = jax.tree.map(lambda x: x.astype(dtype), _p32())

        def gh(q):
            return jax.tree.map(
                lambda x: x.astype(dtype), grad_fn(jax.tree.map(lambda x: x.astype(jnp.float32), q))
            )

        txh = jz.sam(jz.adam(1e-2), adaptive=True, rho=0.5)
        sh = txh.init(ph)
        steph = jax.jit(lambda p, s: txh.update(gh(p), s, p, grad_fn=gh))  # noqa: B023
        for _ in range(3):
            uh, sh = steph(ph, sh)
            ph = optax.apply_updates(ph, uh)
        for a, b in zip(jax.tree.leaves(uh), jax.tree.leaves(want)):
            assert a.dtype == dtype and bool(jnp.all(jnp.isfinite(a)))
            np.testing.assert_allclose(
                np.asarray(a, np.float32),
                np.asarray(b),
                rtol=0,
                atol=0.1 * float(jnp.max(jnp.abs(b))),
            )


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(rho=-0.1), r"Invalid rho: -0\.1\. Expected a number >= 0"),
        (dict(rho=float("nan")), r"Invalid rho: nan"),
        (dict(eps=-1.0), r"Invalid eps: -1\.0"),
    ],
)
def test_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        jz.sam(jz.sgd(0.1), **kw)
    with pytest.raises(ValueError, match=match):
        jz.sam_gradient(_grad_fn32(), **kw)


def test_missing_grad_fn_and_params():
    tx, p = jz.sam(jz.sgd(0.1)), _p32()
    g = _grad_fn32()(p)
    with pytest.raises(
        ValueError,
        match=r"sam needs the gradient function: call "
        r"`update\(grads, state, params, grad_fn=grad_fn\)`",
    ):
        tx.update(g, tx.init(p), p)
    with pytest.raises(ValueError, match="sam needs the gradient function"):
        jz.chain(tx).update(g, jz.chain(tx).init(p), p)
    with pytest.raises(ValueError, match="sam needs the current parameters"):
        tx.update(g, tx.init(p), None, grad_fn=_grad_fn32())
    with pytest.raises(TypeError, match="grad_fn must be callable"):
        jz.sam_gradient(None)


def test_grad_fn_returning_the_loss_too_is_explained():
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y)
    vg = jax.value_and_grad(lambda p: loss(p, x, y))
    tx, p = jz.sam(jz.sgd(0.1)), _p32()
    with pytest.raises(ValueError, match=r"not `jax.value_and_grad\(loss\)`"):
        tx.update(vg(p)[1], tx.init(p), p, grad_fn=vg)
