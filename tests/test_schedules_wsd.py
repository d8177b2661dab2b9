"""``schedules.wsd``, ``schedules.inverse_sqrt`` and ``reduce_on_plateau`` against torch's
schedulers, pytorch_optimizer's ``get_wsd_schedule`` and optax."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from optax import contrib
from pytorch_optimizer.lr_scheduler.wsd import get_wsd_schedule

import jaxopt_zoo as jz
from jaxopt_zoo import schedules as S

T = 160


def ours(fn):
    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(fn))(jnp.arange(T)))


def torch_lrs(make_sched, lr):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt", "1-square"])
@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_wsd_matches_pytorch_optimizer(decay_type, min_ratio):
    ref = torch_lrs(
        lambda o: get_wsd_schedule(o, 20, 60, 50, min_lr_ratio=min_ratio, cooldown_type=decay_type),
        0.5,
    )
    got = ours(S.wsd(0.5, 20, 60, 50, end_value=0.5 * min_ratio, decay_type=decay_type))
    assert ref.max() == pytest.approx(0.5) and ref[-1] == pytest.approx(0.5 * min_ratio)
    if min_ratio == 0 or decay_type == "cosine":
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    else:
        # pytorch_optimizer decays these to 0, ignoring the floor, then jumps to it at
        # t = W + S + D (a discontinuity: a bug); ours decays to end_value. Both agree
        # outside the decay and at its start.
        decay = slice(80, 130)
        np.testing.assert_allclose(got[:81], ref[:81], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got[130:], ref[130:], rtol=1e-9)
        assert ref[129] < 0.05 < got[129]
        assert np.all(np.diff(got[decay]) <= 1e-7)


def test_wsd_linear_matches_torch_sequential_and_optax_join():
    init, peak, end, w, s, d = 0.05, 0.5, 0.01, 10, 40, 60
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, init / peak, 1.0, total_iters=w),
                torch.optim.lr_scheduler.ConstantLR(o, 1.0, total_iters=s),
                torch.optim.lr_scheduler.LinearLR(o, 1.0, end / peak, total_iters=d),
            ],
            milestones=[w, w + s],
        ),
        peak,
    )
    got = ours(S.wsd(peak, w, s, d, end_value=end, init_value=init, decay_type="linear"))
    ox = ours(
        optax.join_schedules(
            [
                optax.linear_schedule(init, peak, w),
                optax.constant_schedule(peak),
                optax.linear_schedule(peak, end, d),
            ],
            [w, w + s],
        )
    )
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    np.testing.assert_allclose(got, ox, rtol=1e-9)
    assert got[0] == pytest.approx(init) and got[-1] == pytest.approx(end)


@pytest.mark.parametrize("warmup,timescale", [(10, None), (10, 30), (0, 20)])
def test_inverse_sqrt_matches_its_definition_and_torch_lambda(warmup, timescale):
    peak = 0.3
    ts = timescale or warmup

    def factor(t):  # Hugging Face's get_inverse_sqrt_schedule, written out
        if t < warmup:
            return t / max(1, warmup)
        return 1.0 / math.sqrt((t + ts - warmup) / ts)

    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.LambdaLR(o, factor), peak)
    got = ours(S.inverse_sqrt(peak, warmup, timescale))
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    if warmup:
        assert got[warmup] == pytest.approx(peak) and got[4 * warmup] == pytest.approx(
            peak * math.sqrt(ts / (3 * warmup + ts))
        )


def test_wsd_and_inverse_sqrt_validate():
    with pytest.raises(ValueError, match="Invalid decay_type: 'exp'"):
        S.wsd(1.0, 1, 1, 1, decay_type="exp")
    with pytest.raises(ValueError, match="Invalid timescale"):
        S.inverse_sqrt(1.0, 0)


# --------------------------------------------------------------------------- #
# reduce_on_plateau
# --------------------------------------------------------------------------- #


def losses(seed, n=200):
    """A loss that falls, plateaus with noise, falls again, plateaus: several reductions."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = np.where(t < 60, 2.0 - t / 40, 0.5) - np.where(t > 120, (t - 120) / 200, 0)
    return np.maximum(base, 0.1) + 0.02 * rng.normal(size=n)


def scales(tx, values):
    @jax.jit
    def go(vals):
        def body(s, v):
            u, s = tx.update({"w": jnp.ones(())}, s, value=v)
            return s, u["w"]

        return jax.lax.scan(body, tx.init({"w": jnp.ones(())}), vals)[1]

    with jax.enable_x64(True):
        return np.asarray(go(jnp.asarray(values)))


TORCH_CASES = [  # torch kwargs
    dict(patience=5),
    dict(patience=3, threshold=0.05, threshold_mode="abs", cooldown=4),
    dict(patience=0, factor=0.5, cooldown=2, min_lr=0.02),
    dict(mode="max", patience=4, threshold=1e-3, factor=0.3),
]


@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_reduce_on_plateau_matches_torch(case):
    kw = TORCH_CASES[case]
    lr = 0.4
    vals = losses(case) * (-1 if kw.get("mode") == "max" else 1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    # eps=0: torch skips a reduction smaller than eps (1e-8 in lr units), which stops this
    # long plateau at lr ~ 4e-9; ours has no such floor other than min_scale
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, eps=0.0, **kw)
    ref = []
    for v in vals:  # the torch loop: scheduler.step(loss) decides the next step's lr
        sched.step(float(v))
        ref.append(opt.param_groups[0]["lr"] / lr)
    th = kw.get("threshold", 1e-4)
    abs_mode = kw.get("threshold_mode", "rel") == "abs"
    tx = jz.reduce_on_plateau(
        factor=kw.get("factor", 0.1),
        patience=kw["patience"] + 1,
        rtol=0.0 if abs_mode else th,
        atol=th if abs_mode else 0.0,
        cooldown=kw.get("cooldown", 0),
        min_scale=kw.get("min_lr", 0.0) / lr,
        mode=kw.get("mode", "min"),
    )
    got = scales(tx, vals)
    assert len(set(ref)) >= 3, ref  # at least two reductions happened
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        dict(factor=0.5, patience=3, rtol=1e-3, atol=0.0),
        dict(
            factor=0.2,
            patience=2,
            rtol=0.01,
            atol=0.01,
            cooldown=3,
            accumulation_size=4,
            min_scale=0.05,
        ),
    ],
)
def test_reduce_on_plateau_matches_optax_contrib(kw):
    vals = losses(7)
    ref = scales(contrib.reduce_on_plateau(**kw), vals)
    got = scales(jz.reduce_on_plateau(**kw), vals)
    assert len(set(ref.tolist())) >= 3
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_reduce_on_plateau_in_a_chain_scales_the_step_and_needs_a_value():
    tx = jz.chain(jz.sgd(0.1), jz.reduce_on_plateau(factor=0.5, patience=1))
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    u1, s = tx.update(p, s, p, value=1.0)
    u2, s = tx.update(p, s, p, value=1.0)  # no improvement: patience 1 -> halve now
    np.testing.assert_allclose(u2["w"], 0.5 * u1["w"])
    with pytest.raises(ValueError, match="needs the monitored value"):
        tx.update(p, s, p)
    with pytest.raises(ValueError, match="Invalid factor: 1.5"):
        jz.reduce_on_plateau(factor=1.5)
