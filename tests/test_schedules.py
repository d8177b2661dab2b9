"""Schedules against optax and PyTorch's schedulers, and their textbook definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_zoo import schedules as S

STEPS = np.arange(0, 130)


def values(fn):
    return np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(STEPS)))


@pytest.mark.parametrize("ours,ref", [
    (S.constant(0.3), optax.constant_schedule(0.3)),
    (S.polynomial(1.0, 0.1, 2.0, 100, 10), optax.polynomial_schedule(1.0, 0.1, 2.0, 100, 10)),
    (S.exponential(1.0, 10, 0.5), optax.exponential_decay(1.0, 10, 0.5)),
    (S.exponential(1.0, 10, 0.5, 5, staircase=True, end_value=0.05),
     optax.exponential_decay(1.0, 10, 0.5, 5, staircase=True, end_value=0.05)),
    (S.piecewise_constant(1.0, {30: 0.1, 80: 0.5}),
     optax.piecewise_constant_schedule(1.0, {30: 0.1, 80: 0.5})),
    (S.cosine(0.5, 100, alpha=0.1), optax.cosine_decay_schedule(0.5, 100, alpha=0.1)),
    (S.warmup_cosine(0.0, 1.0, 20, 110, 0.01),
     optax.warmup_cosine_decay_schedule(0.0, 1.0, 20, 110, 0.01)),
    (S.linear(1.0, 0.01, 100), optax.linear_schedule(1.0, 0.01, 100)),
], ids=["constant", "polynomial", "exponential", "exponential-staircase", "piecewise",
        "cosine", "warmup-cosine", "linear"])
def test_matches_optax(ours, ref):
    np.testing.assert_allclose(values(ours), values(ref), rtol=1e-6, atol=1e-7)


def test_linear_is_the_textbook_decay():
    eps0, eps_tau, tau = 0.1, 0.001, 50
    got = values(S.linear(eps0, eps_tau, tau))
    a = np.minimum(STEPS / tau, 1.0)
    np.testing.assert_allclose(got, (1 - a) * eps0 + a * eps_tau, rtol=1e-5)
    assert np.all(got[tau:] == np.float32(eps_tau))


def _torch_lrs(make_sched, n=len(STEPS), lr=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("t_mult", [1, 2])
def test_sgdr_matches_torch_warm_restarts(t_mult):
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=10, T_mult=t_mult, eta_min=0.01))
    np.testing.assert_allclose(values(S.sgdr(1.0, 10, t_mult, 0.01)), want, rtol=1e-5, atol=1e-6)


def test_one_cycle_matches_torch():
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.5, total_steps=len(STEPS) + 1, pct_start=0.3, anneal_strategy="cos",
        cycle_momentum=False), lr=0.5)
    got = values(S.one_cycle(len(STEPS), 0.5, pct_start=0.3))
    # torch anchors its phases at integer step ends; compare the shape closely
    np.testing.assert_allclose(got, want, rtol=0.05, atol=2e-3)
    assert got[0] == pytest.approx(0.5 / 25, rel=1e-5)
    assert got.max() == pytest.approx(0.5, rel=1e-3)


def test_join_restarts_the_count():
    f = S.join([S.constant(1.0), S.linear(1.0, 0.0, 10)], [5])
    v = values(f)
    assert v[4] == 1.0 and v[5] == 1.0 and v[10] == pytest.approx(0.5) and v[20] == 0.0


def test_schedules_run_under_jit_without_recompiling():
    f = jax.jit(S.warmup_cosine(0.0, 1.0, 10, 100))
    a = [float(f(jnp.int32(i))) for i in range(20)]
    assert f._cache_size() == 1 and a[10] == pytest.approx(1.0) and math.isfinite(sum(a))
