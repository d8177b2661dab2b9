"""``lookahead`` against pytorch_optimizer.Lookahead and optax.lookahead, float64, 120 steps.

The gradient depends on the parameters (a noisy quadratic), so a wrong synchronization
shows in every later step. pytorch_optimizer's wrapper pulls ``p <- lerp(p, slow, 1 -
alpha)`` and copies ``slow <- p`` after every ``k``-th inner step; optax.lookahead does
the same on ``LookaheadParams`` (our parameters are its ``fast``, our ``state.slow`` its
``slow``). They agree with each other, and ours with both, to rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_optimizer import Lookahead

import jaxopt_zoo as jz
from jaxopt_zoo.compat import torch as tc

STEPS = 120
SHAPES = [(3, 4), (5,), ()]
RNG = np.random.default_rng(0)
P0 = [RNG.normal(size=s) for s in SHAPES]
CENTER = [RNG.normal(size=s) for s in SHAPES]
CURV = [1.0, 0.3, 2.0]
NOISE = [RNG.normal(size=(STEPS,) + s) * 0.3 for s in SHAPES]


def grad_np(ps, t):
    return [a * (p - c) + n[t] for p, c, a, n in zip(ps, CENTER, CURV, NOISE)]


def grad_jnp(ps, t):
    return [a * (p - c) + jnp.asarray(n)[t] for p, c, a, n in zip(ps, CENTER, CURV, NOISE)]


def run_torch(make_inner, k, alpha, pullback="none"):
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in P0]
    opt = Lookahead(make_inner(params), k=k, alpha=alpha, pullback_momentum=pullback)
    traj = [np.empty((STEPS,) + s) for s in SHAPES]
    for t in range(STEPS):
        for p, g in zip(params, grad_np([q.detach().numpy() for q in params], t)):
            p.grad = torch.from_numpy(np.array(g))
        opt.step()
        for i, p in enumerate(params):
            traj[i][t] = p.detach().numpy()
    return traj


def run_ours(tx):
    @jax.jit
    def go(p0):
        def body(carry, t):
            p, s = carry
            u, s = tx.update(grad_jnp(p, t), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, s.slow)

        return jax.lax.scan(body, (p0, tx.init(p0)), jnp.arange(STEPS))[1]

    with jax.enable_x64(True):
        traj, slow = go([jnp.asarray(p) for p in P0])
        return [np.asarray(x) for x in traj], [np.asarray(x) for x in slow]


def run_optax(fast_tx, k, alpha, reset=False):
    tx = optax.lookahead(fast_tx, sync_period=k, slow_step_size=alpha, reset_state=reset)

    @jax.jit
    def go(p0):
        def body(carry, t):
            p, s = carry
            u, s = tx.update(grad_jnp(p.fast, t), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p.fast, p.slow)

        init = optax.LookaheadParams.init_synced(p0)
        return jax.lax.scan(body, (init, tx.init(init)), jnp.arange(STEPS))[1]

    with jax.enable_x64(True):
        fast, slow = go([jnp.asarray(p) for p in P0])
        return [np.asarray(x) for x in fast], [np.asarray(x) for x in slow]


def rel(a, b):
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b))


def moved(traj):
    return min(float(np.max(np.abs(x - p))) for x, p in zip(traj, P0))


CASES = [  # (torch inner optimizer, ours, optax's, k, alpha)
    (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        lambda: jz.sgd(0.05, 0.9),
        lambda: optax.sgd(0.05, 0.9),
        5,
        0.5,
    ),
    (
        lambda ps: torch.optim.Adam(ps, lr=0.03),
        lambda: tc.adam(lr=0.03),
        lambda: optax.adam(0.03),
        7,
        0.8,
    ),
    (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda: jz.sgd(0.1), lambda: optax.sgd(0.1), 1, 0.3),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_lookahead_matches_pytorch_optimizer_and_optax(case):
    make_torch, ours_tx, optax_tx, k, alpha = CASES[case]
    ref = run_torch(make_torch, k, alpha)
    ours, slow = run_ours(jz.lookahead(ours_tx(), k, alpha))
    fast_o, slow_o = run_optax(optax_tx(), k, alpha)
    assert moved(ref) > 0.1
    assert rel(ours, ref) < 1e-12, rel(ours, ref)
    assert rel(ours, fast_o) < 1e-12 and rel(slow, slow_o) < 1e-12
    # at every synchronization the parameters are the slow weights (p + (s - p), to rounding)
    for x, s in zip(ours, slow):
        np.testing.assert_allclose(x[k - 1 :: k], s[k - 1 :: k], rtol=1e-14, atol=1e-15)
    # and lookahead changed the path (it is not the inner optimizer alone)
    plain, _ = run_ours(jz.lookahead(ours_tx(), 10**6, alpha))
    if k > 1 or alpha < 1:
        assert rel(plain, ours) > 1e-3


def test_reset_state_matches_torch_reset_momentum_and_optax():
    make = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    ref = run_torch(make, 4, 0.5, pullback="reset")
    ours, _ = run_ours(jz.lookahead(jz.sgd(0.05, 0.9), 4, 0.5, reset_state=True))
    fast_o, _ = run_optax(optax.sgd(0.05, 0.9), 4, 0.5, reset=True)
    assert rel(ours, ref) < 1e-12 and rel(ours, fast_o) < 1e-12


def test_lookahead_validates_and_needs_params():
    with pytest.raises(ValueError, match="Invalid sync_period: 0"):
        jz.lookahead(jz.sgd(0.1), 0)
    with pytest.raises(ValueError, match="Invalid slow_step_size: 1.5"):
        jz.lookahead(jz.sgd(0.1), 5, 1.5)
    tx = jz.lookahead(jz.sgd(0.1))
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
