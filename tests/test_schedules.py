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


@pytest.mark.parametrize(
    "ours,ref",
    [
        (S.constant(0.3), optax.constant_schedule(0.3)),
        (S.polynomial(1.0, 0.1, 2.0, 100, 10), optax.polynomial_schedule(1.0, 0.1, 2.0, 100, 10)),
        (S.exponential(1.0, 10, 0.5), optax.exponential_decay(1.0, 10, 0.5)),
        (
            S.exponential(1.0, 10, 0.5, 5, staircase=True, end_value=0.05),
            optax.exponential_decay(1.0, 10, 0.5, 5, staircase=True, end_value=0.05),
        ),
        (
            S.piecewise_constant(1.0, {30: 0.1, 80: 0.5}),
            optax.piecewise_constant_schedule(1.0, {30: 0.1, 80: 0.5}),
        ),
        (S.cosine(0.5, 100, alpha=0.1), optax.cosine_decay_schedule(0.5, 100, alpha=0.1)),
        (
            S.warmup_cosine(0.0, 1.0, 20, 110, 0.01),
            optax.warmup_cosine_decay_schedule(0.0, 1.0, 20, 110, 0.01),
        ),
        (S.linear(1.0, 0.01, 100), optax.linear_schedule(1.0, 0.01, 100)),
    ],
    ids=[
        "constant",
        "polynomial",
        "exponential",
        "exponential-staircase",
        "piecewise",
        "cosine",
        "warmup-cosine",
        "linear",
    ],
)
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
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=10, T_mult=t_mult, eta_min=0.01
        )
    )
    np.testing.assert_allclose(values(S.sgdr(1.0, 10, t_mult, 0.01)), want, rtol=1e-5, atol=1e-6)


def test_one_cycle_matches_torch():
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.5,
            total_steps=len(STEPS) + 1,
            pct_start=0.3,
            anneal_strategy="cos",
            cycle_momentum=False,
        ),
        lr=0.5,
    )
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


def _torch_swalr(lr, swa_lr, anneal, strategy, steps, warm=None, start=0):
    """The lr of each step under torch's recipe: ``warm`` (a LambdaLR factor) drives the lr
    until SWALR's first ``step()`` after ``start`` steps; SWALR is built at the beginning."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    main = torch.optim.lr_scheduler.LambdaLR(opt, warm) if warm else None
    swa = torch.optim.swa_utils.SWALR(opt, swa_lr, anneal_epochs=anneal, anneal_strategy=strategy)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: a no-op that keeps torch's call-order check quiet
        if main is not None and t < start:
            main.step()
        else:
            swa.step()
    return np.array(out)


@pytest.mark.parametrize(
    "strategy,anneal", [("cos", 10), ("linear", 10), ("cos", 1), ("linear", 0), ("cos", 37)]
)
def test_swa_lr_matches_torch_swalr(strategy, anneal):
    want = _torch_swalr(0.3, 0.02, anneal, strategy, len(STEPS))
    with jax.enable_x64(True):
        got = values(S.swa_lr(0.3, 0.02, anneal, strategy))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    np.testing.assert_allclose(values(S.swa_lr(0.3, 0.02, anneal, strategy)), want, rtol=1e-6)
    assert want[0] == (0.02 if anneal == 0 else 0.3) and want[-1] == pytest.approx(0.02)


@pytest.mark.parametrize("anneal", [5, 20])
def test_swa_lr_after_another_schedule_matches_torch_recipe(anneal):
    # LambdaLR decays the lr for 40 steps, then SWALR anneals from where it left off.
    start = 40
    want = _torch_swalr(0.3, 0.02, anneal, "cos", len(STEPS), warm=lambda t: 0.97**t, start=start)
    with jax.enable_x64(True):
        got = values(S.swa_lr(lambda t: 0.3 * 0.97**t, 0.02, anneal, "cos", start_step=start))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert want[start] == pytest.approx(0.3 * 0.97**start) and want[-1] == pytest.approx(0.02)


def test_swa_lr_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"Invalid anneal_strategy: 'cosine'"):
        S.swa_lr(0.1, 0.01, anneal_strategy="cosine")
    with pytest.raises(ValueError, match=r"Invalid swa_lr: -0\.01"):
        S.swa_lr(0.1, -0.01)
    with pytest.raises(ValueError, match=r"Invalid anneal_steps: -1"):
        S.swa_lr(0.1, 0.01, anneal_steps=-1)
    with pytest.raises(ValueError, match=r"Invalid start_step: -5"):
        S.swa_lr(0.1, 0.01, start_step=-5)
