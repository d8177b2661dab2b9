"""AdaMax: Adam with the infinity norm."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    bias_correction,
    check_same_structure,
    ema_update,
    increment,
    inv_bias_correction,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay
from jaxopt_zoo.optim.adam import check_betas


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`: step ``count``, first moment ``mu`` and the
    exponentially weighted infinity norm ``nu = max(b2 * nu, |g|)``."""

    count: StepCount
    mu: Any
    nu: Any


def scale_by_adamax(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    """``m_hat / u_t`` with ``u_t = max(b2 * u_{t-1}, |g_t| + eps)``.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the infinity norm, in [0, 1).
      eps: added to the infinity norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adamax(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps)

    def init_fn(params):
        mu, nu = init_moments(params)
        return ScaleByAdamaxState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_adamax")
        mu = ema_update(updates, state.mu, b1)
        nu = jax.tree.map(
            lambda g, u: jnp.maximum(b2 * u, jnp.abs(g).astype(u.dtype) + eps).astype(u.dtype),
            updates,
            state.nu,
        )
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        out = jax.tree.map(lambda m, u, g: (m / u).astype(g.dtype), mu_hat, nu, updates)
        return out, ScaleByAdamaxState(count=count, mu=mu, nu=nu)

    spec = BlockSpec(
        "scale_by_adamax",
        elementwise=True,
        stage="adamax",
        scalars={
            "b1": b1,
            "one_minus_b1": 1 - b1,
            "b2": b2,
            "eps": eps,
            "inv_bc1": inv_bias_correction(b1),
        },
        buffers=("mu", "nu"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def adamax(
    learning_rate: ScalarOrSchedule, b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    """AdaMax (Kingma & Ba 2015, section 7.1).

    ::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / u_t

    Identical to PyTorch's Adamax and optax's ``adamax``; Keras adds eps outside the max
    (``compat.keras.adamax``).

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the infinity norm, in [0, 1).
      eps: added to the infinity norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adamax(2e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_adamax(b1, b2, eps), learning_rate)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    mask: Any = None,
) -> GradientTransformation:
    """AdaMax with decoupled weight decay (Kingma & Ba 2015; Loshchilov & Hutter 2019).

    ::

        p_t = p_{t-1} - lr * (m_t / (1 - b1^t) / u_t + weight_decay * p_{t-1})

    with ``m_t`` and ``u_t`` as in :func:`adamax`. Identical to ``optax.adamaxw``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the infinity norm, in [0, 1).
      eps: added to the infinity norm.
      weight_decay: decoupled decay rate (multiplied by the learning rate).
      mask: which parameters decay (a tree of booleans or a function of the params).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adamaxw(2e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_adamax(b1, b2, eps), learning_rate, weight_decay, mask)
