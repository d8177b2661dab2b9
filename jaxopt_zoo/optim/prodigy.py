"""Prodigy: Adam whose step size ``d`` is estimated on the fly (Mishchenko & Defazio 2024)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
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
    zero_count,
)


class ProdigyState(NamedTuple):
    """``exp_avg`` (``m``; ``()`` when ``b1 == 0``), ``exp_avg_sq`` (``v``), ``grad_sum``
    (``s``), ``params0`` (``x_0``), the estimate ``estim_lr`` (``d``) and its running maximum,
    the weighted numerator ``r`` and the step count. Names as in optax.contrib."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    params0: Any
    estim_lr: jax.Array
    estim_lr_max: jax.Array
    numerator_weighted: jax.Array
    count: StepCount


def _wide(dtype: Any) -> Any:
    """float16 state in float32 (``d * g`` with ``d ~ 1e-6`` underflows float16)."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype) == jnp.float16 else jnp.dtype(dtype)


def _tree_sum(tree: Any, dt: Any) -> jax.Array:
    leaves = [jnp.sum(x).astype(dt) for x in jax.tree.leaves(tree)]
    return sum(leaves, jnp.zeros([], dt))


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: Optional[Scalar] = None,
    eps: Scalar = 1e-8,
    estim_lr0: Scalar = 1e-6,
    estim_lr_coef: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
    safeguard_warmup: bool = False,
    *,
    bias_correction: bool = False,
    growth_rate: Scalar = math.inf,
    decouple: bool = True,
) -> GradientTransformation:
    r"""Prodigy (Mishchenko & Defazio 2024, https://arxiv.org/abs/2306.06101): Adam with the
    step size ``d`` estimated from the distance travelled, learning-rate free.

    At step ``t = 1, 2, ...`` with ``d = d_{t-1}`` (``d_0 = estim_lr0``), ``x_0`` the initial
    parameters and ``(b1, b2) = betas``, ``b3 = beta3`` (default ``sqrt(b2)``)::

        dlr = d * lr_t * (sqrt(1 - b2^t) / (1 - b1^t)  if bias_correction else 1)
        r_t = b3 r_{t-1} + (d / d_0) dlr <g_t, x_0 - x_{t-1}>
        s_t = b3 s_{t-1} + (d / d_0) (d if safeguard_warmup else dlr) g_t
        m_t = b1 m_{t-1} + (1 - b1) d g_t;   v_t = b2 v_{t-1} + (1 - b2) d^2 g_t^2
        d_hat = estim_lr_coef * r_t / ||s_t||_1
        d_max = max(d_max, d_hat);   d_t = min(d_max, d * growth_rate)
        x_t = x_{t-1} - dlr * (m_t / (sqrt(v_t) + d_t eps) + weight_decay * x_{t-1})

    (on the first growth, ``d_t = max(d, d_hat)``; a step whose ``||s_t||_1`` is 0 leaves the
    parameters, the count, ``r`` and ``d`` unchanged, as the authors' code returns early).

    Args:
      learning_rate: a multiplier of the estimated step (keep 1; a schedule is allowed).
      betas, beta3: the moment decays and the decay of ``r`` and ``s``.
      eps: added to ``sqrt(v)`` after scaling by ``d``.
      estim_lr0, estim_lr_coef: ``d_0`` and a multiplier of ``d_hat`` (the authors' ``d0``,
        ``d_coef``).
      weight_decay, decouple: decoupled weight decay (as written) or, ``decouple=False``,
        L2 added to the gradient first.
      safeguard_warmup: leave ``lr`` out of ``s`` (for warmup schedules).
      bias_correction: Adam's bias correction folded into ``dlr`` (the authors'
        ``use_bias_correction``).
      growth_rate: bound on ``d_t / d_{t-1}``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.prodigy()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    The defaults reproduce ``prodigyopt.Prodigy`` 1.1.2 (``use_bias_correction=False``;
    ``slice_p`` is not offered). ``optax.contrib.prodigy`` always bias-corrects, so it is
    ``bias_correction=True`` here; at its defaults it differs from the authors' by that
    alone (169% over 120 steps of a noisy quadratic: the first steps are
    ``sqrt(1 - b2) / (1 - b1) = 0.32`` times as long, and ``d`` grows from there). The
    paper's Adam version has no bias correction, so the authors' default is the paper's.
    optax also has no ``growth_rate`` (infinite), no coupled decay and no zero-gradient
    guard (0/0 gives NaN). Both codes put the new ``d_t`` in ``d_t eps``; the paper writes
    the old ``d`` there (immaterial for small ``eps``).
    """
    b1, b2 = betas
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    b3 = b2**0.5 if beta3 is None else beta3
    check_decay("beta3", b3, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_scalar("estim_lr0", estim_lr0, low=0.0, low_open=True, schedule_ok=False)
    check_nonneg("estim_lr_coef", estim_lr_coef, schedule_ok=False)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    check_scalar("growth_rate", growth_rate, low=1.0, schedule_ok=False)
    check_nonneg("learning_rate", learning_rate)
    use_m = not (isinstance(b1, (int, float)) and b1 == 0)

    def init_fn(params):
        dt = scalar_dtype(params)

        def wide(p):
            return jnp.zeros(p.shape, _wide(p.dtype))

        return ProdigyState(
            exp_avg=jax.tree.map(wide, params) if use_m else (),
            exp_avg_sq=jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params),
            grad_sum=jax.tree.map(wide, params),
            params0=jax.tree.map(jnp.array, params),
            estim_lr=jnp.asarray(estim_lr0, dt),
            estim_lr_max=jnp.asarray(estim_lr0, dt),
            numerator_weighted=jnp.zeros([], dt),
            count=zero_count(),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "prodigy")
        check_same_structure(updates, state.grad_sum, "prodigy")
        dt = state.estim_lr.dtype
        d, k = state.estim_lr, state.count
        t = k.astype(dt) + 1
        lr = jnp.asarray(resolve(learning_rate, k), dt)
        bc = (
            jnp.sqrt(1 - jnp.asarray(b2, dt) ** t) / (1 - jnp.asarray(b1, dt) ** t)
            if bias_correction
            else 1.0
        )
        dlr = d * lr * bc
        active = lr > 0
        grads = (
            updates
            if decouple or is_zero(weight_decay)
            else jax.tree.map(lambda g, p: g + weight_decay * p.astype(g.dtype), updates, params)
        )

        def keep(new, old):
            return jnp.where(active, new, old).astype(old.dtype)

        dots = jax.tree.map(
            lambda g, p0, p: jnp.sum(
                jnp.real(jnp.conj(g.astype(_wide(g.dtype))) * (p0 - p).astype(_wide(g.dtype)))
            ),
            grads,
            state.params0,
            params,
        )
        delta_r = jnp.where(active, (d / estim_lr0) * dlr * _tree_sum(dots, dt), 0)
        s_scale = (d / estim_lr0) * (d if safeguard_warmup else dlr)
        grad_sum = jax.tree.map(
            lambda s, g: keep(b3 * s + (s_scale.astype(s.real.dtype) * g.astype(s.dtype)), s),
            state.grad_sum,
            grads,
        )
        exp_avg_sq = jax.tree.map(
            lambda v, g: keep(
                b2 * v + (1 - b2) * (d * d).astype(v.dtype) * abs_sq_in(g, v.dtype), v
            ),
            state.exp_avg_sq,
            grads,
        )
        exp_avg = (
            jax.tree.map(
                lambda m, g: keep(
                    b1 * m + (1 - b1) * d.astype(m.real.dtype) * g.astype(m.dtype), m
                ),
                state.exp_avg,
                grads,
            )
            if use_m
            else ()
        )
        denom = _tree_sum(jax.tree.map(lambda s: jnp.sum(jnp.abs(s)), grad_sum), dt)
        skip = denom == 0
        r = b3 * state.numerator_weighted + delta_r
        d_hat = estim_lr_coef * r / jnp.where(skip, 1, denom)
        d_first = jnp.where(d == estim_lr0, jnp.maximum(d, d_hat), d)
        d_max = jnp.maximum(state.estim_lr_max, d_hat)
        d_new = jnp.minimum(d_max, d_first * growth_rate)
        grow = active & ~skip
        d_new = jnp.where(grow, d_new, d)
        d_max = jnp.where(grow, d_max, state.estim_lr_max)

        def step(p, v, g, m=None):
            num = m if m is not None else d_new * g.astype(_wide(g.dtype))
            wd = weight_decay if decouple else 0.0
            u = -(wd * dlr) * p.astype(num.dtype) - dlr * num / (jnp.sqrt(v) + d_new * eps)
            return jnp.where(skip, 0, u).astype(g.dtype)

        if use_m:
            out = jax.tree.map(
                lambda p, v, g, m: step(p, v, g, m), params, exp_avg_sq, updates, exp_avg
            )
        else:
            out = jax.tree.map(step, params, exp_avg_sq, updates)
        new = ProdigyState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            params0=state.params0,
            estim_lr=d_new,
            estim_lr_max=d_max,
            numerator_weighted=jnp.where(skip, state.numerator_weighted, r),
            count=jnp.where(skip, k, increment(k)),
        )
        return out, new

    return GradientTransformation(init_fn, update_fn)
