"""MoMo and MoMo-Adam: momentum with a Polyak-type step size from a model of the loss
(Schaipp, Ohana, Eickenberg, Defazio & Gower 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    check_betas,
    check_decay,
    check_nonneg,
    check_same_structure,
    increment,
    require_params,
    resolve,
    stat_dtype,
    zero_count,
)

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam"]


class MomoState(NamedTuple):
    """State of :func:`momo` (names as in optax.contrib): the gradient average
    ``exp_avg`` (``d_k``), the averaged loss ``barf``, the averaged ``<g, x>`` ``gamma``, the
    lower-bound estimate ``lb`` and the step ``count``."""

    exp_avg: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: StepCount


class MomoAdamState(NamedTuple):
    """State of :func:`momo_adam`: :class:`MomoState` plus the second moment
    ``exp_avg_sq``."""

    exp_avg: Any
    exp_avg_sq: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: StepCount


def _lowest_dtype(params: Any) -> Any:
    """The narrowest real dtype among the leaves (the dtype of the scalar state, so that
    the updates keep the parameters' dtypes)."""
    dts = [
        jnp.finfo(jnp.result_type(x)).dtype
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    low = min(dts, key=lambda d: d.itemsize) if dts else jnp.dtype(jnp.float32)
    return jnp.dtype(jnp.float32) if low.itemsize < 4 else low  # half precision: float32


def _vdot(a: Any, b: Any, dt: Any) -> jax.Array:
    """``sum Re(conj(a) * b)`` over all leaves, in ``dt``."""
    parts = [
        jnp.sum(jnp.real(jnp.conj(x) * y.astype(x.dtype))).astype(dt)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return sum(parts, jnp.zeros([], dt))


def _need_value(value: Any, where: str) -> None:
    if value is None:
        raise ValueError(
            f"{where} needs the loss at the current parameters: call "
            "`update(grads, state, params, value=loss)` (e.g. from jax.value_and_grad)."
        )


# ``eps`` below which the model's slope is taken as zero (optax uses float64's epsilon).
_TINY = float(jnp.finfo(jnp.float64).eps)


def _step_size(barf, gamma, iprod, norm, lb, alpha, weight_decay, bc1, lower_bound, adapt):
    """The lower bound to use, the step size ``tau`` and the next lower bound."""
    rho = 1 + alpha * weight_decay
    if adapt:
        cap = rho * (barf - gamma) + iprod
        this_lb = jnp.where(
            cap < rho * bc1 * lb, jnp.maximum(cap / (2 * bc1 * rho), lower_bound), lb
        )
    else:
        this_lb = lb
    t1 = jnp.maximum(rho * (barf - bc1 * this_lb - gamma) + iprod, 0.0) / norm
    t1 = jnp.where(norm <= _TINY, 0.0, t1)
    tau = jnp.minimum(alpha / bc1, t1)
    if adapt:
        new_lb = jnp.maximum(((barf + iprod - gamma) - 0.5 * tau * norm) / bc1, lower_bound)
    else:
        new_lb = lb
    return tau, rho, new_lb


def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: Scalar = 0.9,
    lower_bound: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    """MoMo (Schaipp et al. 2023, https://arxiv.org/abs/2305.07583): SGD with momentum whose
    step is ``min(lr, Polyak step of the momentum model)``. ``update`` needs ``value=``,
    the loss at ``params``.

    At step ``k`` (``b = 0`` at the first step, ``beta`` after), with ``f_k`` the loss,
    ``alpha = lr_k``, ``rho = 1 + alpha * wd`` and ``f_*`` the lower bound::

        d_k = b d_{k-1} + (1 - b) g_k;     barf_k = b barf_{k-1} + (1 - b) f_k
        gamma_k = b gamma_{k-1} + (1 - b) <g_k, x_k>
        tau_k = min(alpha, max(rho (barf_k - f_* - gamma_k) + <d_k, x_k>, 0) / ||d_k||^2)
        x_{k+1} = x_k / rho - tau_k d_k       (i.e. - alpha wd / rho x_k - tau_k d_k)

    ``tau_k = 0`` when ``||d_k||^2`` is below float64's epsilon. With ``adapt_lower_bound``
    ``f_*`` is re-estimated each step (the paper's section 4). Matches
    ``optax.contrib.momo`` (the only reference installed).

    Args:
      learning_rate: the largest step (a number or a schedule); the paper suggests 1.
      beta: momentum of the averages, in [0, 1).
      lower_bound: a lower bound of the loss (0 for most losses).
      weight_decay: decoupled decay strength, applied implicitly (the ``1 / rho``).
      adapt_lower_bound: estimate the lower bound on the fly.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`MomoState`.

    Example:
      >>> tx = jz.momo()
      >>> params = {"w": jnp.ones(3)}
      >>> u, s = tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=1.5)
    """
    check_nonneg("learning_rate", learning_rate)
    check_decay("beta", beta, schedule_ok=False)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)

    def init_fn(params):
        dt = _lowest_dtype(params)
        return MomoState(
            exp_avg=jax.tree.map(jnp.zeros_like, params),
            barf=jnp.zeros([], dt),
            gamma=jnp.zeros([], dt),
            lb=jnp.asarray(lower_bound, dt),
            count=zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        require_params(params, "momo")
        _need_value(value, "momo")
        check_same_structure(updates, state.exp_avg, "momo")
        dt = state.barf.dtype
        k = state.count
        b = jnp.where(k == 0, 0.0, beta).astype(dt)
        barf = b * state.barf + (1 - b) * jnp.asarray(value, dt)
        exp_avg = jax.tree.map(
            lambda d, g: (b * d + (1 - b) * g.astype(d.dtype)).astype(d.dtype),
            state.exp_avg,
            updates,
        )
        gamma = b * state.gamma + (1 - b) * _vdot(updates, params, dt)
        norm = _vdot(exp_avg, exp_avg, dt)
        iprod = _vdot(exp_avg, params, dt)
        alpha = resolve(learning_rate, k)
        tau, rho, lb = _step_size(
            barf,
            gamma,
            iprod,
            norm,
            state.lb,
            alpha,
            weight_decay,
            1.0,
            lower_bound,
            adapt_lower_bound,
        )
        out = jax.tree.map(
            lambda d, p, g: (-(alpha * weight_decay) / rho * p - tau * d).astype(g.dtype),
            exp_avg,
            params,
            updates,
        )
        return out, MomoState(exp_avg, barf, gamma, lb.astype(dt), increment(k))

    return GradientTransformationExtraArgs(init_fn, update_fn)


def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    lower_bound: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    """MoMo-Adam (Schaipp et al. 2023): Adam(W) whose step is the Polyak-type step of the
    momentum model in Adam's metric. ``update`` needs ``value=``, the loss at ``params``.

    At step ``t = k + 1``, with ``bc1 = 1 - b1^t``, ``D_k = eps + sqrt(v_k / (1 - b2^t))``
    and ``rho = 1 + alpha * wd``::

        d_k = b1 d_{k-1} + (1 - b1) g_k;   v_k = b2 v_{k-1} + (1 - b2) g_k^2
        barf_k, gamma_k: averages of f_k and <g_k, x_k> with b1 (no special first step)
        tau_k = min(alpha / bc1,
                    max(rho (barf_k - bc1 f_* - gamma_k) + <d_k, x_k>, 0) / <d_k, d_k / D_k>)
        x_{k+1} = x_k - alpha wd / rho x_k - tau_k d_k / D_k

    Matches ``optax.contrib.momo_adam`` (the only reference installed).

    Args:
      learning_rate: the largest step (a number or a schedule).
      b1, b2: Adam's decay rates, in [0, 1).
      eps: added to Adam's denominator.
      lower_bound: a lower bound of the loss.
      weight_decay: decoupled decay strength.
      adapt_lower_bound: estimate the lower bound on the fly.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`MomoAdamState`.

    Example:
      >>> tx = jz.momo_adam()
      >>> params = {"w": jnp.ones(3)}
      >>> u, s = tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=1.5)
    """
    check_nonneg("learning_rate", learning_rate)
    check_betas(b1, b2, eps)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)

    def init_fn(params):
        dt = _lowest_dtype(params)
        return MomoAdamState(
            exp_avg=jax.tree.map(jnp.zeros_like, params),
            exp_avg_sq=jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params),
            barf=jnp.zeros([], dt),
            gamma=jnp.zeros([], dt),
            lb=jnp.asarray(lower_bound, dt),
            count=zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        require_params(params, "momo_adam")
        _need_value(value, "momo_adam")
        check_same_structure(updates, state.exp_avg, "momo_adam")
        dt = state.barf.dtype
        k = state.count
        t = increment(k)
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value, dt)
        exp_avg = jax.tree.map(
            lambda d, g: (b1 * d + (1 - b1) * g.astype(d.dtype)).astype(d.dtype),
            state.exp_avg,
            updates,
        )
        exp_avg_sq = jax.tree.map(
            lambda v, g: (b2 * v + (1 - b2) * abs_sq_in(g, v.dtype)).astype(v.dtype),
            state.exp_avg_sq,
            updates,
        )
        bc2 = (1 - b2**t).astype(dt)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / bc2.astype(v.dtype)), exp_avg_sq)
        weighted = jax.tree.map(
            lambda d, q: d.astype(jnp.result_type(d.dtype, q.dtype)) / q, exp_avg, precond
        )
        norm = _vdot(exp_avg, weighted, dt)
        gamma = b1 * state.gamma + (1 - b1) * _vdot(updates, params, dt)
        iprod = _vdot(exp_avg, params, dt)
        alpha = resolve(learning_rate, k)
        bc1 = (1 - b1**t).astype(dt)
        tau, rho, lb = _step_size(
            barf,
            gamma,
            iprod,
            norm,
            state.lb,
            alpha,
            weight_decay,
            bc1,
            lower_bound,
            adapt_lower_bound,
        )
        out = jax.tree.map(
            lambda w, p, g: (-(alpha * weight_decay) / rho * p - tau * w).astype(g.dtype),
            weighted,
            params,
            updates,
        )
        new = MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb.astype(dt), t)
        return out, new

    return GradientTransformationExtraArgs(init_fn, update_fn)
