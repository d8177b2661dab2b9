"""Lion: sign momentum."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    check_decay,
    check_same_structure,
    ema_update,
    increment,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import moment_dtype, scaled_with_decay


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`: step ``count`` and the momentum ``mu`` (one per leaf)."""

    count: StepCount
    mu: Any


def scale_by_lion(
    b1: Scalar = 0.9, b2: Scalar = 0.99, mu_dtype: Optional[Any] = None
) -> GradientTransformation:
    """``sign(b1 * m + (1 - b1) * g)``, then ``m <- b2 * m + (1 - b2) * g``.

    Args:
      b1: interpolation between momentum and gradient inside the sign, in [0, 1).
      b2: decay rate of the momentum, in [0, 1).
      mu_dtype: dtype of the momentum (default: the gradient's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_lion(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)

    def init_fn(params):
        return ScaleByLionState(
            count=zero_count(),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=moment_dtype(p, mu_dtype)), params),
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_lion")
        out = jax.tree.map(
            lambda g, m: jnp.sign(b1 * m + (1 - b1) * g.astype(m.dtype)).astype(g.dtype),
            updates,
            state.mu,
        )
        mu = ema_update(updates, state.mu, b2)
        return out, ScaleByLionState(count=increment(state.count), mu=mu)

    spec = BlockSpec(
        "scale_by_lion",
        elementwise=True,
        stage="lion",
        scalars={"b1": b1, "one_minus_b1": 1 - b1, "b2": b2, "one_minus_b2": 1 - b2},
        buffers=("mu",),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    mu_dtype: Optional[Any] = None,
    weight_decay: Scalar = 1e-3,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
    https://arxiv.org/abs/2302.06675).

    ::

        c_t = sign(b1 * m_{t-1} + (1 - b1) * g_t)
        p_t = p_{t-1} - lr * (c_t + weight_decay * p_{t-1})
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Use a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: interpolation between momentum and gradient inside the sign, in [0, 1).
      b2: decay rate of the momentum, in [0, 1).
      mu_dtype: dtype of the momentum (default: the parameter's).
      weight_decay: decoupled decay rate (multiplied by the learning rate).
      mask: which parameters decay: a tree of booleans or a function of the params returning
        one (None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.lion(1e-4, weight_decay=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_lion(b1, b2, mu_dtype), learning_rate, weight_decay, mask)
