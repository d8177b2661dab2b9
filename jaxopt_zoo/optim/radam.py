"""RAdam: Adam with a rectified adaptive learning rate."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    bias_correction,
    check_nonneg,
    check_same_structure,
    increment,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay
from jaxopt_zoo.optim.adam import ScaleByAdamState, adam_moments, check_betas


def radam_rectification(count: jax.Array, b2: Any):
    """(rho_t, r_t) of RAdam at step ``count`` (1-based): the variance rectification term.

    ``r_t`` is only meaningful where ``rho_t > 4``; elsewhere it is finite but unused.
    """
    rho_inf = 2.0 / (1.0 - b2) - 1.0  # in Python precision when b2 is a Python number
    b2t = b2**count
    rho_t = rho_inf - 2 * count * b2t / (1 - b2t)
    safe = jnp.where(rho_t > 4.0, rho_t, 5.0)
    r_t = jnp.sqrt(
        (safe - 4.0) * (safe - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * safe)
    )
    return rho_t, r_t


def scale_by_radam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    threshold: Scalar = 5.0,
) -> GradientTransformation:
    """RAdam's rescaling: ``r_t * m_hat / (sqrt(v_hat + eps_root) + eps)`` when
    ``rho_t >= threshold``, else the un-adapted ``m_hat``.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      threshold: the smallest ``rho_t`` for the rectified (adaptive) direction.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_radam(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)
    check_nonneg("threshold", threshold, schedule_ok=False)

    def init_fn(params):
        mu, nu = init_moments(params)
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_radam")
        mu, nu = adam_moments(updates, state.mu, state.nu, b1, b2)
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        rho_t, r_t = radam_rectification(count, b2)
        adaptive = rho_t >= threshold

        def leaf(m, v, g):
            rect = r_t.astype(m.dtype) * m / (jnp.sqrt(v + eps_root) + eps)
            return jnp.where(adaptive, rect, m).astype(g.dtype)

        return jax.tree.map(leaf, mu_hat, nu_hat, updates), ScaleByAdamState(count, mu, nu)

    return describe(
        GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_radam", elementwise=True)
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    threshold: Scalar = 5.0,
) -> GradientTransformation:
    """RAdam (Liu et al. 2020, https://arxiv.org/abs/1908.03265).

    ::

        m_t, v_t, m_hat, v_hat as in Adam
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p_t = p_{t-1} - lr * r_t * m_hat / (sqrt(v_hat + eps_root) + eps)   if rho_t >= threshold
        p_t = p_{t-1} - lr * m_hat                                          otherwise

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      threshold: the rectified update is used when ``rho_t`` is above this (5 in the paper;
        below it the step is momentum SGD).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.radam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_radam(b1, b2, eps, eps_root, threshold), learning_rate)
