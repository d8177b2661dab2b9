"""Schedule-free, Prodigy, ADOPT, MARS, AdEMAMix and the cautious mask against their
authors' code and the other references, step for step.

Every case runs 120 steps of a noisy quadratic, ``g_t = h * (p - p_star) + 0.3 * xi_t`` per
element (curvatures ``h`` in [0.5, 2], so the gradient depends on where the optimizer is),
on a matrix, a 4-D conv kernel, a vector and a scalar, and compares the whole parameter
trajectory: relative error ``max|ours - ref| / max|ref|`` per leaf below 1e-6 in float64 and
1e-5 in float32. Torch references run with the same dtype. Every reference must move.

Where the references disagree (each is reproduced by a documented option; the size of each
disagreement is asserted in ``test_references_disagree``):

- schedule-free (``schedulefree`` 1.4.1 vs ``optax.contrib``): identical without warmup. With
  ``warmup_steps``, optax's base optimizer counts from 0 and its warmup starts at 0, while
  its averaging weight counts from 1: the ``z`` step uses ``lr_{t-1}``, the weight ``lr_t``,
  and the first step does not move. The authors' code (and the paper) use one ``lr_t`` for
  both: optax is off by one (``optax_warmup=True`` reproduces it). The package's
  ``AdamWScheduleFreePaper`` (and its releases before 1.3) bias-correct the learning rate,
  ``lr * sqrt(1 - b2^t)``, instead of ``v``, so the averaging weights grow with it
  (``bias_correct_lr=True``).
  ``keras.optimizers.ScheduleFreeAdamW`` averages uniformly, ``c_t = 1/t``
  (``weight_lr_power=0``, a departure from the paper's ``lr^2`` weights), and applies Keras'
  generic weight decay to ``y`` outside ``z``.
  Weight decay is taken at ``y`` (the gradient point) by the package, optax and the paper;
  the package's ``AdamWScheduleFreeReference`` can take it at ``z`` (``decay_at_z=True``).
- Prodigy (``prodigyopt`` 1.1.2 vs ``optax.contrib``): optax always applies Adam's bias
  correction to ``d * lr``, the authors' default is ``use_bias_correction=False``
  (``bias_correction=True`` reproduces optax). The
  paper's Adam version has no bias correction, so the authors' default is the paper's and
  optax's always-on correction is an option of the authors' made mandatory. optax also
  lacks ``growth_rate``, coupled decay and the early return on a zero gradient (it gives
  NaN there). Both codes use the new ``d`` in ``d * eps``; the paper the old one.
- ADOPT (``pytorch_optimizer`` 4.1.0, which follows the authors' code, vs ``optax.contrib``):
  the clipping bound is ``step^(1/4)`` with the authors' 1-based step (2 at the first update)
  and optax's 0-based count (1 at the first update): ``clip_step_offset=0`` for optax. By
  the paper (``v_0 = g_0^2``, updates ``t >= 1`` clipped at ``t^(1/4)``) optax's indexing
  is the paper's; the authors' code counts the initial ``v``-only call too.
- MARS: only ``pytorch_optimizer`` implements it (approximate correction). Its 1-D
  parameters get AdamW with their own ``lr_1d`` (3e-3 regardless of ``lr``) and
  ``weight_decay_1d=0.1``; its denominator is ``sqrt(v + 1e-15) + eps`` before the bias
  correction. The exact correction is checked by feeding its ``last_grad`` the gradient of
  the current batch at the previous parameters, as the authors' exact mode does.
- AdEMAMix: ``optax.contrib`` and ``pytorch_optimizer`` agree; the warmups exist only in
  ``pytorch_optimizer`` (one ``t_alpha_beta3`` for both; 1-based step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import prodigyopt
import pytest
import pytorch_optimizer as po
import schedulefree
import torch

import jaxopt_zoo as jz
from tests.helpers import max_rel_err
from tests.helpers import torch_precision as precision

SHAPES = {"matrix": (4, 3), "conv": (3, 2, 2, 2), "vector": (5,), "scalar": ()}
STEPS = 120
TOL = {"float64": 1e-6, "float32": 1e-5}
_rng = np.random.default_rng(0)
P0 = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
H = {k: _rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
PSTAR = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}


def grad_np(p: dict, t: int) -> dict:
    return {k: H[k] * (p[k] - PSTAR[k]) + NOISE[k][t] for k in SHAPES}


# ----------------------------------------------------------------------------- ours


def ours(
    tx,
    dtype: str,
    *,
    eval_point: bool = False,
    exact: bool = False,
    eval_fn: Callable = jz.schedule_free_eval_params,
):
    """Parameter trajectory (and the schedule-free evaluation point) of ``tx``."""
    dt = jnp.dtype(dtype)
    h = {k: jnp.asarray(v, dt) for k, v in H.items()}
    ps = {k: jnp.asarray(v, dt) for k, v in PSTAR.items()}
    noise = {k: jnp.asarray(v, dt) for k, v in NOISE.items()}

    def grad(p, xi):
        return jax.tree.map(lambda p_, h_, s_, x_: h_ * (p_ - s_) + x_, p, h, ps, xi)

    @jax.jit
    def run(p0):
        def body(carry, xi):
            p, s = carry
            extra = {"grad_fn": lambda q: grad(q, xi)} if exact else {}
            u, s = tx.update(grad(p, xi), s, p, **extra)
            p = optax.apply_updates(p, u)
            x = eval_fn(s, p) if eval_point else p
            return (p, s), (p, x)

        return jax.lax.scan(body, (p0, tx.init(p0)), noise)[1]

    return run({k: jnp.asarray(v, dt) for k, v in P0.items()})


# ----------------------------------------------------------------------------- torch


def torch_run(
    make: Callable[[list], Any], *, eval_point: bool = False, before_step: Callable | None = None
):
    params = [
        torch.tensor(P0[k], dtype=torch.get_default_dtype(), requires_grad=True) for k in SHAPES
    ]
    opt = make(params)
    if eval_point:
        opt.train()
    ys, xs = [], []
    for t in range(STEPS):
        cur = {k: p.detach().numpy().copy() for k, p in zip(SHAPES, params)}
        g = grad_np(cur, t)
        for k, p in zip(SHAPES, params):
            p.grad = torch.tensor(g[k], dtype=p.dtype)
        if before_step is not None:
            before_step(opt, params, t)
        opt.step()
        ys.append([p.detach().numpy().copy() for p in params])
        if eval_point:
            opt.eval()
            xs.append([p.detach().numpy().copy() for p in params])
            opt.train()
    stack = lambda rows: {k: np.stack([r[i] for r in rows]) for i, k in enumerate(SHAPES)}
    return stack(ys), (stack(xs) if eval_point else None)


def optax_run(tx, dtype, *, eval_point=False):
    return ours(
        tx,
        dtype,
        eval_point=eval_point,
        eval_fn=lambda s, p: optax.contrib.schedule_free_eval_params(s, p),
    )


def check(got, want, dtype, name):
    moved = max_rel_err(jax.tree.map(lambda t: t[-1], want), P0)
    assert moved > 1e-2, f"{name}: the reference barely moved ({moved})"
    err = max_rel_err(got, want)
    assert err < TOL[dtype], f"{name} ({dtype}): max relative error {err:.3g}"


# ----------------------------------------------------------------------------- cases


def mars_exact_hook():
    """Feed pytorch_optimizer's MARS the gradient of this step's batch at the previous
    parameters as ``last_grad`` (the authors' exact mode), before each step."""
    prev = {k: P0[k].copy() for k in SHAPES}

    def hook(opt, params, t):
        g_prev = grad_np(prev, t)
        opt.init_group(opt.param_groups[0])
        for k, p in zip(SHAPES, params):
            opt.state[p]["last_grad"].copy_(torch.tensor(g_prev[k], dtype=p.dtype))
            prev[k] = p.detach().numpy().copy()

    return hook


def c_adopt(**kw):
    return jz.chain(
        jz.cautious(jz.scale_by_adopt(**kw), direction="gradient"), jz.scale_by_learning_rate(0.01)
    )


# (id, ours, torch reference or None, optax reference or None, options, float32 too)
# float32 runs once or twice per family. Prodigy's estimate of d is sensitive to rounding:
# on this problem its own float32 and float64 paths differ by 6% (ours and prodigyopt's
# alike), so float32 parity holds only where the summation order happens to agree
# (prodigy: 1.8e-6; prodigy-options: 3e-5, checked in float64 only).
# options: "eval" (compare the evaluation point too), "exact" (MARS grad_fn / hook)
CASES = [
    # schedule-free: the authors' package
    (
        "sf-sgd",
        lambda: jz.schedule_free_sgd(0.2),
        lambda ps: schedulefree.SGDScheduleFree(ps, lr=0.2),
        None,
        {"eval"},
        True,
    ),
    (
        "sf-sgd-warmup-wd-r",
        lambda: jz.schedule_free_sgd(
            0.2, warmup_steps=10, b1=0.8, weight_decay=0.05, weight_lr_power=1.0, r=1.0
        ),
        lambda ps: schedulefree.SGDScheduleFree(
            ps, lr=0.2, momentum=0.8, warmup_steps=10, weight_decay=0.05, weight_lr_power=1.0, r=1.0
        ),
        None,
        {"eval"},
        False,
    ),
    (
        "sf-adamw",
        lambda: jz.schedule_free_adamw(0.02),
        lambda ps: schedulefree.AdamWScheduleFree(ps, lr=0.02),
        None,
        {"eval"},
        False,
    ),
    (
        "sf-adamw-warmup-wd-r",
        lambda: jz.schedule_free_adamw(
            0.05, warmup_steps=20, b1=0.95, b2=0.99, eps=1e-6, weight_decay=0.1, r=0.5
        ),
        lambda ps: schedulefree.AdamWScheduleFree(
            ps, lr=0.05, warmup_steps=20, betas=(0.95, 0.99), eps=1e-6, weight_decay=0.1, r=0.5
        ),
        None,
        {"eval"},
        True,
    ),
    (
        "sf-adamw-paper",
        lambda: jz.schedule_free_adamw(
            0.05, warmup_steps=5, weight_decay=0.01, bias_correct_lr=True
        ),
        lambda ps: schedulefree.AdamWScheduleFreePaper(
            ps, lr=0.05, warmup_steps=5, weight_decay=0.01
        ),
        None,
        {"eval"},
        False,
    ),
    (
        "sf-adamw-reference-decay-at-y",
        lambda: jz.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.2),
        lambda ps: schedulefree.AdamWScheduleFreeReference(
            ps, lr=0.05, warmup_steps=5, weight_decay=0.2
        ),
        None,
        {"eval"},
        False,
    ),
    (
        "sf-adamw-reference-decay-at-z",
        lambda: jz.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.2, decay_at_z=True),
        lambda ps: schedulefree.AdamWScheduleFreeReference(
            ps, lr=0.05, warmup_steps=5, weight_decay=0.2, decay_at_z=True
        ),
        None,
        {"eval"},
        False,
    ),
    # schedule-free: optax.contrib through optax_warmup
    (
        "sf-sgd-optax",
        lambda: jz.schedule_free_sgd(0.2, warmup_steps=10, weight_decay=0.05, optax_warmup=True),
        None,
        lambda: optax.contrib.schedule_free_sgd(0.2, warmup_steps=10, weight_decay=0.05),
        {"eval"},
        False,
    ),
    (
        "sf-adamw-optax",
        lambda: jz.schedule_free_adamw(
            0.05, warmup_steps=20, b2=0.99, weight_decay=0.1, optax_warmup=True
        ),
        None,
        lambda: optax.contrib.schedule_free_adamw(0.05, warmup_steps=20, b2=0.99, weight_decay=0.1),
        {"eval"},
        False,
    ),
    (
        "sf-adamw-optax-nowarmup",
        lambda: jz.schedule_free_adamw(0.05, weight_lr_power=1.0),
        None,
        lambda: optax.contrib.schedule_free_adamw(0.05, weight_lr_power=1.0),
        {"eval"},
        False,
    ),
    # prodigy: the authors' package and optax.contrib
    ("prodigy", lambda: jz.prodigy(), lambda ps: prodigyopt.Prodigy(ps), None, set(), True),
    (
        "prodigy-options",
        lambda: jz.prodigy(
            0.5,
            betas=(0.8, 0.99),
            beta3=0.95,
            eps=1e-6,
            estim_lr0=1e-4,
            estim_lr_coef=2.0,
            weight_decay=0.1,
            safeguard_warmup=True,
            bias_correction=True,
            growth_rate=1.05,
        ),
        lambda ps: prodigyopt.Prodigy(
            ps,
            lr=0.5,
            betas=(0.8, 0.99),
            beta3=0.95,
            eps=1e-6,
            d0=1e-4,
            d_coef=2.0,
            weight_decay=0.1,
            safeguard_warmup=True,
            use_bias_correction=True,
            growth_rate=1.05,
        ),
        None,
        set(),
        False,
    ),
    (
        "prodigy-coupled",
        lambda: jz.prodigy(weight_decay=0.05, decouple=False),
        lambda ps: prodigyopt.Prodigy(ps, weight_decay=0.05, decouple=False),
        None,
        set(),
        False,
    ),
    (
        "prodigy-b1-0",
        lambda: jz.prodigy(betas=(0.0, 0.999)),
        lambda ps: prodigyopt.Prodigy(ps, betas=(0.0, 0.999)),
        None,
        set(),
        False,
    ),
    (
        "prodigy-optax",
        lambda: jz.prodigy(bias_correction=True),
        None,
        lambda: optax.contrib.prodigy(),
        set(),
        True,
    ),
    (
        "prodigy-optax-options",
        lambda: jz.prodigy(
            0.5,
            estim_lr0=1e-4,
            estim_lr_coef=2.0,
            weight_decay=0.1,
            safeguard_warmup=True,
            bias_correction=True,
        ),
        None,
        lambda: optax.contrib.prodigy(
            0.5, estim_lr0=1e-4, estim_lr_coef=2.0, weight_decay=0.1, safeguard_warmup=True
        ),
        set(),
        False,
    ),
    # ADOPT: pytorch_optimizer (the authors' formulas) and optax.contrib
    ("adopt", lambda: jz.adopt(0.01), lambda ps: po.ADOPT(ps, lr=0.01), None, set(), True),
    (
        "adopt-wd",
        lambda: jz.adopt(0.01, b2=0.999, weight_decay=0.1),
        lambda ps: po.ADOPT(
            ps, lr=0.01, betas=(0.9, 0.999), weight_decay=0.1, weight_decouple=True
        ),
        None,
        set(),
        False,
    ),
    (
        "adopt-coupled",
        lambda: jz.chain(jz.add_l2_regularization(0.1), jz.adopt(0.01)),
        lambda ps: po.ADOPT(ps, lr=0.01, weight_decay=0.1),
        None,
        set(),
        False,
    ),
    (
        "adopt-optax",
        lambda: jz.adopt(0.01, clip_step_offset=0),
        None,
        lambda: optax.contrib.adopt(0.01),
        set(),
        False,
    ),
    (
        "adopt-optax-nesterov",
        lambda: jz.adopt(0.01, b1=0.8, clip_step_offset=0, nesterov=True),
        None,
        lambda: optax.contrib.adopt(0.01, b1=0.8, nesterov=True),
        set(),
        False,
    ),
    (
        "adopt-optax-noclip",
        lambda: jz.adopt(0.01, use_clipping=False),
        None,
        lambda: optax.contrib.adopt(0.01, use_clipping=False),
        set(),
        False,
    ),
    # MARS: pytorch_optimizer (approximate; exact through the hook)
    ("mars", lambda: jz.mars(), lambda ps: po.MARS(ps), None, set(), False),
    (
        "mars-options",
        lambda: jz.mars(
            0.01,
            b1=0.9,
            b2=0.98,
            gamma=0.05,
            weight_decay=0.1,
            learning_rate_1d=0.02,
            b1_1d=0.8,
            b2_1d=0.9,
            weight_decay_1d=0.05,
        ),
        lambda ps: po.MARS(
            ps,
            lr=0.01,
            betas=(0.9, 0.98),
            gamma=0.05,
            weight_decay=0.1,
            lr_1d=0.02,
            betas_1d=(0.8, 0.9),
            weight_decay_1d=0.05,
        ),
        None,
        set(),
        False,
    ),
    (
        "mars-cautious",
        lambda: jz.mars(0.01, cautious=True, weight_decay=0.1),
        lambda ps: po.MARS(ps, lr=0.01, cautious=True, weight_decay=0.1, lr_1d=0.01),
        None,
        set(),
        True,
    ),
    (
        "mars-optimize-1d",
        lambda: jz.mars(0.01, optimize_1d=True, gamma=0.1),
        lambda ps: po.MARS(ps, lr=0.01, optimize_1d=True, gamma=0.1),
        None,
        set(),
        False,
    ),
    (
        "mars-exact",
        lambda: jz.mars(0.01, exact=True, gamma=0.1),
        lambda ps: po.MARS(ps, lr=0.01, gamma=0.1, lr_1d=0.01),
        None,
        {"exact"},
        True,
    ),
    # AdEMAMix: pytorch_optimizer and optax.contrib
    (
        "ademamix",
        lambda: jz.ademamix(0.01),
        lambda ps: po.AdEMAMix(ps, lr=0.01),
        None,
        set(),
        False,
    ),
    (
        "ademamix-warmup-wd",
        lambda: jz.ademamix(
            0.01, b3=0.999, alpha=8.0, weight_decay=0.1, alpha_warmup_steps=50, b3_warmup_steps=50
        ),
        lambda ps: po.AdEMAMix(
            ps,
            lr=0.01,
            betas=(0.9, 0.999, 0.999),
            alpha=8.0,
            t_alpha_beta3=50,
            weight_decay=0.1,
            weight_decouple=True,
        ),
        None,
        set(),
        True,
    ),
    (
        "ademamix-optax",
        lambda: jz.ademamix(0.01, b1=0.8, b3=0.99, alpha=3.0, eps_root=1e-10, weight_decay=0.05),
        None,
        lambda: optax.contrib.ademamix(
            0.01, b1=0.8, b3=0.99, alpha=3.0, eps_root=1e-10, weight_decay=0.05
        ),
        set(),
        False,
    ),
    (
        "ademamix-optax-warmup",
        lambda: jz.ademamix(0.01, b3=0.999, alpha_warmup_steps=40, b3_warmup_steps=60),
        None,
        lambda: optax.contrib.ademamix(
            0.01,
            b3=lambda c: _b3_warmup(c, 0.9, 0.999, 60),
            alpha=lambda c: jnp.minimum((c + 1) * 5.0 / 40, 5.0),
        ),
        set(),
        False,
    ),
    # the cautious wrapper on ADOPT: pytorch_optimizer's ADOPT(cautious=True)
    (
        "cautious-adopt",
        lambda: c_adopt(),
        lambda ps: po.ADOPT(ps, lr=0.01, cautious=True),
        None,
        set(),
        True,
    ),
]


def _b3_warmup(count, b1, b3, steps):
    s = jnp.minimum((count + 1) / steps, 1.0)
    lb1, lb3 = jnp.log(b1), jnp.log(b3)
    return jnp.minimum(jnp.exp(lb1 * lb3 / ((1 - s) * lb3 + s * lb1)), b3)


PARAMS = [pytest.param(c, "float64", id=f"{c[0]}-float64") for c in CASES] + [
    pytest.param(c, "float32", id=f"{c[0]}-float32") for c in CASES if c[5]
]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_trajectory_matches_reference(case, dtype):
    name, mine, torch_ref, optax_ref, opts, _ = case
    with precision(dtype):
        ys, xs = ours(mine(), dtype, eval_point="eval" in opts, exact="exact" in opts)
        if torch_ref is not None:
            hook = mars_exact_hook() if "exact" in opts else None
            want_y, want_x = torch_run(torch_ref, eval_point="eval" in opts, before_step=hook)
        else:
            want_y, want_x = optax_run(optax_ref(), dtype, eval_point="eval" in opts)
        check(ys, want_y, dtype, name)
        if "eval" in opts:
            check(xs, want_x, dtype, name + " (evaluation point x)")
            # x and y really differ, so the x comparison is a second check
            assert max_rel_err(xs, ys) > 1e-3, name


# ----------------------------------------------------------------------------- disagreements

DISAGREE = [
    # (id, authors' default, the other reference, lower bound of their relative difference)
    (
        "sf-sgd-warmup",
        lambda: jz.schedule_free_sgd(0.2, warmup_steps=10),
        lambda: jz.schedule_free_sgd(0.2, warmup_steps=10, optax_warmup=True),
        1e-2,
    ),
    (
        "sf-adamw-warmup",
        lambda: jz.schedule_free_adamw(0.05, warmup_steps=20),
        lambda: jz.schedule_free_adamw(0.05, warmup_steps=20, optax_warmup=True),
        1e-2,
    ),
    (
        "sf-adamw-paper",
        lambda: jz.schedule_free_adamw(0.05),
        lambda: jz.schedule_free_adamw(0.05, bias_correct_lr=True),
        1e-2,
    ),
    (
        "sf-adamw-decay-at-z",
        lambda: jz.schedule_free_adamw(0.05, weight_decay=0.2),
        lambda: jz.schedule_free_adamw(0.05, weight_decay=0.2, decay_at_z=True),
        1e-3,
    ),
    ("prodigy", lambda: jz.prodigy(), lambda: jz.prodigy(bias_correction=True), 1e-1),
    ("adopt", lambda: jz.adopt(0.01), lambda: jz.adopt(0.01, clip_step_offset=0), 1e-4),
]


@pytest.mark.parametrize("name,a,b,low", DISAGREE, ids=[d[0] for d in DISAGREE])
def test_references_disagree(name, a, b, low):
    """The options above are not no-ops: each reference's behaviour is measurably its own
    (so the parity cases above tell them apart)."""
    with precision("float64"):
        diff = max_rel_err(ours(a(), "float64")[0], ours(b(), "float64")[0])
    assert diff > low, f"{name}: {diff:.3g}"


# ----------------------------------------------------------------------------- API


def test_schedule_free_eval_params_finds_the_state_in_a_chain():
    params = {"w": jnp.ones(3)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), jz.schedule_free_adamw(0.1))
    state = tx.init(params)
    u, state = tx.update({"w": jnp.array([1.0, -2.0, 0.5])}, state, params)
    p = optax.apply_updates(params, u)
    x = jz.schedule_free_eval_params(state, p)
    sf = next(s for s in state if isinstance(s, jz.ScheduleFreeState))
    np.testing.assert_allclose(x["w"], (p["w"] - 0.1 * sf.z["w"]) / 0.9, rtol=1e-6)
    with pytest.raises(ValueError, match="expected one ScheduleFreeState"):
        jz.schedule_free_eval_params(jz.adam(0.1).init(params), params)


def test_mars_exact_needs_grad_fn():
    tx = jz.mars(exact=True)
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.schedule_free_sgd(b1=1.0), "Invalid b1"),
        (lambda: jz.schedule_free_adamw(warmup_steps=0), "Invalid warmup_steps"),
        (lambda: jz.prodigy(estim_lr0=0.0), "Invalid estim_lr0"),
        (lambda: jz.prodigy(growth_rate=0.5), "Invalid growth_rate"),
        (lambda: jz.adopt(1e-3, b2=1.0), "Invalid b2"),
        (lambda: jz.mars(gamma=-1.0), "Invalid gamma"),
        (lambda: jz.ademamix(1e-3, b3=1.5), "Invalid b3"),
        (lambda: jz.cautious(jz.adam(1e-3), direction="up"), "Invalid direction"),
    ],
)
def test_invalid_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_cautious_step_and_gradient_directions_agree():
    """``cautious(adam(lr))`` (a step, negative along the gradient) equals
    ``chain(cautious(scale_by_adam(), direction="gradient"), -lr)``, and the mask keeps
    exactly the components whose step opposes the gradient, scaled by n / (kept + 1)."""
    params = {"w": jnp.zeros(4)}
    g1, g2 = jnp.array([10.0, -10.0, 20.0, 5.0]), jnp.array([-1.0, -1.0, 2.0, -3.0])
    a = jz.cautious(jz.adam(0.1))
    b = jz.chain(
        jz.cautious(jz.scale_by_adam(), direction="gradient"), jz.scale_by_learning_rate(0.1)
    )
    plain = jz.adam(0.1)
    sa, sb, sp = a.init(params), b.init(params), plain.init(params)
    for g in (g1, g2):
        ua, sa = a.update({"w": g}, sa, params)
        ub, sb = b.update({"w": g}, sb, params)
        up, sp = plain.update({"w": g}, sp, params)
    np.testing.assert_allclose(ua["w"], ub["w"], rtol=1e-6)
    keep = np.asarray(up["w"] * g2 < 0)
    assert 0 < keep.sum() < 4
    np.testing.assert_allclose(
        ua["w"], np.where(keep, up["w"] * 4 / (keep.sum() + 1), 0), rtol=1e-6
    )


def keras_run(opt, dtype):
    """Keras 3 (JAX backend) driven with ``apply_gradients`` on the same noisy quadratic."""
    import keras

    variables = [keras.Variable(np.asarray(P0[k], dtype), dtype=dtype, name=k) for k in SHAPES]
    out = {k: [] for k in SHAPES}
    for t in range(STEPS):
        g = grad_np({k: np.asarray(v.value, np.float64) for k, v in zip(SHAPES, variables)}, t)
        opt.apply_gradients([(np.asarray(g[k], dtype), v) for k, v in zip(SHAPES, variables)])
        for k, v in zip(SHAPES, variables):
            out[k].append(np.asarray(v.value))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("warmup", [0, 10])
def test_schedule_free_adamw_matches_keras_with_uniform_weights(warmup):
    """Keras' ScheduleFreeAdamW averages uniformly (``c_t = 1/t``, i.e.
    ``weight_lr_power=0``) and warms up as the authors do (``(t + 1) / warmup_steps``).
    Its weight decay is Keras' generic one, applied to ``y`` itself outside ``z`` (not
    the paper's): compared without it. Keras keeps the learning rate in float32."""
    import keras

    lr = float(np.float32(0.05))
    with precision("float64"):
        want = keras_run(keras.optimizers.ScheduleFreeAdamW(0.05, warmup_steps=warmup), "float64")
        got, _ = ours(
            jz.schedule_free_adamw(lr, warmup_steps=warmup or None, weight_lr_power=0.0), "float64"
        )
    check(got, want, "float64", f"keras warmup={warmup}")
