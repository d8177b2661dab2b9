"""D-Adaptation for Adam(W): the step size estimated from the iterates (Defazio &
Mishchenko 2023)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    check_decay,
    check_nonneg,
    check_same_structure,
    check_scalar,
    increment,
    is_zero,
    require_params,
    resolve,
    scalar_dtype,
    stat_dtype,
    tree_real_vdot,
    zero_count,
)


class DAdaptAdamWState(NamedTuple):
    """``exp_avg`` (``m``, which carries ``d lr``), ``exp_avg_sq`` (``v``), ``grad_sum``
    (``s``), the estimate ``estim_lr`` (``d``), the weighted numerator ``r``, the step
    ``count`` (calls to ``update``: the schedule's clock) and ``taken``, the steps not
    skipped (the bias correction's ``t``; the authors' ``k``). Field names as in
    optax.contrib, which has no ``taken`` (it skips no step)."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: StepCount
    taken: jax.Array


def _wide(dtype: Any) -> Any:
    """float16 state in float32 (``d lr g`` with ``d ~ 1e-6`` underflows float16)."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype) == jnp.float16 else jnp.dtype(dtype)


def _c(x: jax.Array, like: jax.Array) -> jax.Array:
    """A scalar ``x`` in the real dtype of ``like``."""
    return x.astype(like.real.dtype)


def _tree_sum(tree: Any, dt: Any) -> jax.Array:
    return sum((jnp.sum(x).astype(dt) for x in jax.tree.leaves(tree)), jnp.zeros([], dt))


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    estim_lr0: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    *,
    bias_correction: bool = True,
    decouple: bool = True,
    growth_rate: Scalar = math.inf,
    skip_zero_lr: bool = False,
) -> GradientTransformationExtraArgs:
    r"""D-Adapt AdamW (Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by
    D-Adaptation", https://arxiv.org/abs/2301.07733): Adam whose step size ``d`` is a lower
    bound on the distance to the solution, estimated as it goes.

    At step ``t = 1, 2, ...`` with ``d = d_{t-1}`` (``d_0 = estim_lr0``), ``(b1, b2) =
    betas``, ``sb2 = sqrt(b2)`` and all sums over every element of every parameter::

        dlr = d lr_t (sqrt(1 - b2^t) / (1 - b1^t)  if bias_correction else 1)
        r_t = sb2 r_{t-1} + (1 - sb2) dlr <g_t, s_{t-1} / (sqrt(v_{t-1}) + eps)>
        m_t = b1 m_{t-1} + (1 - b1) dlr g_t;   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        s_t = sb2 s_{t-1} + (1 - sb2) dlr g_t
        d_t = max(d, min(r_t / ((1 - sb2) ||s_t||_1), d growth_rate))
        x_t = x_{t-1} - m_t / (sqrt(v_t) + eps) - wd dlr x_{t-1}

    Args:
      learning_rate: a multiplier of ``d`` (keep 1; the authors recommend a schedule with
        peak 1, e.g. linear decay to 0 after a warmup).
      betas: Adam's decay rates.
      eps: added to ``sqrt(v)``.
      estim_lr0: ``d_0``, a small under-estimate, > 0.
      weight_decay: decoupled (``decouple=True``, as written above) or, ``decouple=False``,
        L2 added to the gradient before anything else (the authors' default).
      bias_correction: Adam's bias correction in ``dlr`` (optax: always; the authors'
        ``use_bias_correction``, default False).
      decouple: see ``weight_decay``.
      growth_rate: bound on ``d_t / d_{t-1}`` (the authors' option; optax has none).
      skip_zero_lr: a step with ``lr_t = 0`` changes nothing but the schedule's clock
        ``count`` (parameters, moments, ``d``, ``r`` and ``taken`` stay), as the authors'
        code returns early there; False (optax): it updates the
        moments with ``dlr = 0`` (``m`` and ``s`` decay) and applies ``m / (sqrt(v) + eps)``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (extra arguments are ignored); ``update``
      needs the parameters.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.dadapt_adamw()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    The defaults reproduce ``optax.contrib.dadapt_adamw`` (0.2.8). The authors'
    ``dadaptation.DAdaptAdam`` (3.2) differs in four ways, each an option here:
    ``use_bias_correction=False`` by default (``bias_correction=False``), L2 weight decay by
    default (``decouple=False``), ``growth_rate``, and steps with ``lr = 0`` that freeze the
    statistics and the parameters (``skip_zero_lr=True``); ``jz.dadapt_adamw(bias_correction=False,
    decouple=False)`` is ``DAdaptAdam()`` with its defaults. A step whose ``||s_t||_1`` is 0
    (every gradient so far zero) leaves the parameters, ``taken``, ``r`` and ``d`` as they
    are, as the authors' code returns early; optax divides 0 by 0 there and ``d`` becomes
    NaN. The statistics are float32 for float16 parameters (optax: the parameters'
    lowest dtype). The authors' per-group ``layer_scale`` has no counterpart (use
    ``jz.partition`` with separate optimizers).
    """
    b1, b2 = betas
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_scalar("estim_lr0", estim_lr0, low=0.0, low_open=True, schedule_ok=False)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    check_scalar("growth_rate", growth_rate, low=1.0, schedule_ok=False)
    check_nonneg("learning_rate", learning_rate)
    sb2 = b2**0.5

    def init_fn(params):
        dt = scalar_dtype(params)

        def wide(p):
            return jnp.zeros(p.shape, _wide(p.dtype))

        return DAdaptAdamWState(
            exp_avg=jax.tree.map(wide, params),
            exp_avg_sq=jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params),
            grad_sum=jax.tree.map(wide, params),
            estim_lr=jnp.asarray(estim_lr0, dt),
            numerator_weighted=jnp.zeros([], dt),
            count=zero_count(),
            taken=zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(params, "dadapt_adamw")
        check_same_structure(updates, state.exp_avg, "dadapt_adamw")
        dt = state.estim_lr.dtype
        d, k = state.estim_lr, state.count
        t = state.taken.astype(dt) + 1
        lr = jnp.asarray(resolve(learning_rate, k), dt)
        bc = (
            jnp.sqrt(1 - jnp.asarray(b2, dt) ** t) / (1 - jnp.asarray(b1, dt) ** t)
            if bias_correction
            else 1.0
        )
        dlr = d * lr * bc
        grads = (
            updates
            if decouple or is_zero(weight_decay)
            else jax.tree.map(
                lambda g, p: (g + weight_decay * p.astype(g.dtype)).astype(g.dtype),
                updates,
                params,
            )
        )
        active = (lr > 0) if skip_zero_lr else None

        def keep(new, old):
            return (new if active is None else jnp.where(active, new, old)).astype(old.dtype)

        weighted = jax.tree.map(
            lambda s, v: s / (jnp.sqrt(v).astype(s.dtype) + eps), state.grad_sum, state.exp_avg_sq
        )
        acc = tree_real_vdot(
            jax.tree.map(lambda g, s: g.astype(s.dtype), grads, weighted), weighted, dt
        )
        r = sb2 * state.numerator_weighted + (1 - sb2) * dlr * acc
        exp_avg = jax.tree.map(
            lambda m, g: keep(
                b1 * m + ((1 - b1) * dlr).astype(m.real.dtype) * g.astype(m.dtype), m
            ),
            state.exp_avg,
            grads,
        )
        exp_avg_sq = jax.tree.map(
            lambda v, g: keep(b2 * v + (1 - b2) * abs_sq_in(g, v.dtype), v),
            state.exp_avg_sq,
            grads,
        )
        grad_sum = jax.tree.map(
            lambda s, g: keep(
                sb2 * s + ((1 - sb2) * dlr).astype(s.real.dtype) * g.astype(s.dtype), s
            ),
            state.grad_sum,
            grads,
        )
        l1 = _tree_sum(jax.tree.map(lambda s: jnp.sum(jnp.abs(s)), grad_sum), dt)
        skip = l1 == 0
        if active is not None:
            skip = skip | ~active
        d_hat = r / ((1 - sb2) * jnp.where(l1 == 0, 1, l1))
        d_new = jnp.where(skip, d, jnp.maximum(d, jnp.minimum(d_hat, d * growth_rate)))
        wd = weight_decay if decouple else 0.0

        def step(p, m, v, g):
            u = -m / (jnp.sqrt(v).astype(m.dtype) + eps)
            if not is_zero(wd):
                u = u - (wd * dlr).astype(m.real.dtype) * p.astype(m.dtype)
            return jnp.where(skip, 0, u).astype(g.dtype)

        out = jax.tree.map(step, params, exp_avg, exp_avg_sq, updates)
        new = DAdaptAdamWState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            estim_lr=d_new,
            numerator_weighted=jnp.where(skip, state.numerator_weighted, r),
            count=increment(k),
            taken=jnp.where(skip, state.taken, increment(state.taken)),
        )
        return out, new

    return GradientTransformationExtraArgs(init_fn, update_fn)
