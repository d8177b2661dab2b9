"""RMSProp: plain, centered, with heavy-ball or Nesterov momentum."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    bias_correction,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    ema_update,
    increment,
    is_zero,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import trace


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: step ``count`` and ``nu``, the moving average of ``|g|^2``."""

    count: StepCount
    nu: Any


class ScaleByStddevState(NamedTuple):
    """State of ``scale_by_rms(centered=True)``: step ``count``, the moving averages ``mu``
    of ``g`` and ``nu`` of ``|g|^2`` (the variance estimate is ``nu - |mu|^2``)."""

    count: StepCount
    mu: Any
    nu: Any


def scale_by_rms(
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction_: bool = False,
    *,
    centered: bool = False,
) -> GradientTransformation:
    """Divide by the root of an EMA of squared gradients.

    ``v_t = decay * v_{t-1} + (1 - decay) * g^2`` (``v_0 = initial_scale``); with
    ``centered`` also ``m_t = decay * m_{t-1} + (1 - decay) * g`` and ``v_t - m_t^2``
    replaces ``v_t``. The output is ``g / sqrt(v + eps)`` or, with ``eps_in_sqrt=False``,
    ``g / (sqrt(v) + eps)``. ``bias_correction_`` divides ``v`` (and ``m``) by
    ``1 - decay^t``.

    Args:
      decay: decay rate of the moving average of ``g^2``, in [0, 1).
      eps: added inside or outside the square root.
      initial_scale: ``v_0``.
      eps_in_sqrt: where eps goes.
      bias_correction_: divide by ``1 - decay^t``.
      centered: subtract the squared moving average of ``g``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_rms(decay=0.99), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("decay", decay, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("initial_scale", initial_scale, schedule_ok=False)

    def init_fn(params):
        nu = jax.tree.map(lambda p: jnp.full(p.shape, initial_scale, stat_dtype(p.dtype)), params)
        if centered:
            return ScaleByStddevState(
                count=zero_count(), mu=jax.tree.map(jnp.zeros_like, params), nu=nu
            )
        return ScaleByRmsState(count=zero_count(), nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.nu, "scale_by_rms")
        nu = ema_update(updates, state.nu, decay, order=2)
        count = increment(state.count)
        nu_hat = bias_correction(nu, decay, count) if bias_correction_ else nu
        if centered:
            mu = ema_update(updates, state.mu, decay)
            mu_hat = bias_correction(mu, decay, count) if bias_correction_ else mu
            var = jax.tree.map(lambda v, m: v - abs_sq_in(m, v.dtype), nu_hat, mu_hat)
        else:
            var = nu_hat
        if eps_in_sqrt:
            out = jax.tree.map(
                lambda g, v: (g * jax.lax.rsqrt(v + eps)).astype(g.dtype), updates, var
            )
        else:
            out = jax.tree.map(lambda g, v: (g / (jnp.sqrt(v) + eps)).astype(g.dtype), updates, var)
        if centered:
            return out, ScaleByStddevState(count=count, mu=mu, nu=nu)
        return out, ScaleByRmsState(count=count, nu=nu)

    tx = GradientTransformation(init_fn, update_fn)
    if centered or bias_correction_:
        return describe(tx, BlockSpec("scale_by_rms", elementwise=True))
    return describe(
        tx,
        BlockSpec(
            "scale_by_rms",
            elementwise=True,
            stage="rms",
            scalars={
                "decay": decay,
                "one_minus_decay": 1 - decay,
                "eps": eps,
                "eps_in_sqrt": float(eps_in_sqrt),
            },
            buffers=("nu",),
        ),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Optional[Scalar] = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSProp (Hinton 2012, Lecture 6e), optionally centered (Graves 2013) and with momentum.

    ::

        v_t = decay * v_{t-1} + (1 - decay) * g_t^2             (v_0 = initial_scale)
        s_t = v_t - m_t^2  with  m_t = decay * m_{t-1} + (1 - decay) * g_t   if centered
        d_t = lr * g_t / sqrt(s_t + eps)                          (eps_in_sqrt)
        b_t = momentum * b_{t-1} + d_t;   p_t = p_{t-1} - b_t    (momentum: lr inside b)
        p_t = p_{t-1} - (d_t + momentum * b_t)                   (nesterov)

    With ``nesterov=True`` this is the textbook's "RMSProp with Nesterov momentum"
    (Goodfellow et al. 2016, Algorithm 8.6) written without the look-ahead evaluation. The
    learning rate sits inside the momentum buffer, as in optax, Keras and the textbook
    (PyTorch keeps it outside; see ``compat.torch.rmsprop``).

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      decay: decay rate of the moving average of ``g^2``, in [0, 1).
      eps: added inside (``eps_in_sqrt``) or outside the square root.
      initial_scale: ``v_0``.
      eps_in_sqrt: where eps goes (True: optax's and Keras' form).
      centered: subtract the squared moving average of ``g`` (Graves 2013).
      momentum: momentum coefficient (None or 0: none); the learning rate is inside the buffer.
      nesterov: Nesterov momentum.
      bias_correction: divide ``v`` (and ``m``) by ``1 - decay^t``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.rmsprop(1e-3, centered=True)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    parts = [
        scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=centered),
        scale_by_learning_rate(learning_rate),
    ]
    has_momentum = momentum is not None and not is_zero(momentum)
    if nesterov and not has_momentum:
        raise ValueError(f"Invalid momentum: {momentum!r}. Nesterov momentum needs momentum > 0.")
    if has_momentum:
        parts.append(trace(momentum, nesterov))
    return chain(*parts)
