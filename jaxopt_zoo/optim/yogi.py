"""Yogi: additive second-moment updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    abs_sq_in,
    bias_correction,
    check_nonneg,
    check_same_structure,
    ema_update,
    increment,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay
from jaxopt_zoo.optim.adam import ScaleByAdamState, check_betas


def scale_by_yogi(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-3,
    eps_root: Scalar = 0.0,
    initial_accumulator_value: Scalar = 1e-6,
) -> GradientTransformation:
    """``m_hat / (sqrt(v_hat + eps_root) + eps)`` with Yogi's
    ``v_t = v_{t-1} - (1 - b2) * sign(v_{t-1} - g^2) * g^2``.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: the rate of the additive second-moment update, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      initial_accumulator_value: ``m_0`` and ``v_0`` (both start at this value, as in
        optax).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_yogi(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)
    check_nonneg("initial_accumulator_value", initial_accumulator_value, schedule_ok=False)

    def init_fn(params):
        mu, nu = init_moments(params, fill=initial_accumulator_value)
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_yogi")
        mu = ema_update(updates, state.mu, b1)

        def nu_leaf(g, v):
            g2 = abs_sq_in(g, v.dtype)
            return (v - (1 - b2) * jnp.sign(v - g2) * g2).astype(v.dtype)

        nu = jax.tree.map(nu_leaf, updates, state.nu)
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        out = jax.tree.map(
            lambda m, v, g: (m / (jnp.sqrt(v + eps_root) + eps)).astype(g.dtype),
            mu_hat,
            nu_hat,
            updates,
        )
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return describe(
        GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_yogi", elementwise=True)
    )


def yogi(
    learning_rate: ScalarOrSchedule, b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-3
) -> GradientTransformation:
    """Yogi (Zaheer et al. 2018, NeurIPS, "Adaptive Methods for Nonconvex Optimization").

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t                      (m_0 = v_0 = 1e-6)
        v_t = v_{t-1} - (1 - b2) * sign(v_{t-1} - g_t^2) * g_t^2
        p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: the rate of Yogi's additive second-moment update, in [0, 1).
      eps: added outside the square root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.yogi(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_yogi(b1, b2, eps), learning_rate)
