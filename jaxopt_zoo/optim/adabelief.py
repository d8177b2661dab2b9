"""AdaBelief: Adam with the variance of the gradient around its EMA."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    abs_sq_in,
    bias_correction,
    check_same_structure,
    ema_update,
    increment,
    moment_scalars,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay
from jaxopt_zoo.optim.adam import ScaleByAdamState, check_betas


def scale_by_belief(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-16, eps_root: Scalar = 1e-16
) -> GradientTransformation:
    """``m_hat / (sqrt(s_hat) + eps)`` with ``s_t = b2 s_{t-1} + (1-b2)(g_t - m_t)^2 + eps_root``.

    Args:
      b1: decay rate of the first moment ``m``, in [0, 1).
      b2: decay rate of ``s``, the moving average of ``(g - m)^2``, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_belief(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)

    def init_fn(params):
        mu, nu = init_moments(params)
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_belief")
        mu = ema_update(updates, state.mu, b1)
        nu = jax.tree.map(
            lambda g, m, s: (
                b2 * s + (1 - b2) * abs_sq_in(g.astype(m.dtype) - m, s.dtype) + eps_root
            ).astype(s.dtype),
            updates,
            mu,
            state.nu,
        )
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        out = jax.tree.map(
            lambda m, s, g: (m / (jnp.sqrt(s) + eps)).astype(g.dtype), mu_hat, nu_hat, updates
        )
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    spec = BlockSpec(
        "scale_by_belief",
        elementwise=True,
        stage="belief",
        scalars=moment_scalars(b1, b2, eps, eps_root),
        buffers=("mu", "nu"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al. 2020, https://arxiv.org/abs/2010.07468).

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * (g_t - m_t)^2 + eps_root
        p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + eps)

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the "belief" ``(g - m)^2``, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added to the belief inside the root (and to ``s_t``, as in the paper).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adabelief(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_belief(b1, b2, eps, eps_root), learning_rate)
