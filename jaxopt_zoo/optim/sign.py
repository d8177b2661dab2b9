"""Sign descent: signSGD and Signum (sign of the momentum)."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_decay,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import scaled_with_decay
from jaxopt_zoo.transforms.momentum import ema


def scale_by_sign() -> GradientTransformation:
    """Replace each update element by its sign (``-1``, ``0`` or ``1``; ``u / |u|`` for
    complex updates).

    Returns:
      An ``optax.GradientTransformation`` without state.

    Example:
      >>> tx = jz.chain(jz.scale_by_sign(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": -jnp.ones(3)}, tx.init(params), params)
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(jnp.sign, updates), state

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_sign", elementwise=True, stage="sign"),
    )


def sign_sgd(
    learning_rate: ScalarOrSchedule, weight_decay: Scalar = 0.0, mask: MaskOrFn = None
) -> GradientTransformation:
    """signSGD (Bernstein et al. 2018, "signSGD: Compressed Optimisation for Non-Convex
    Problems", https://arxiv.org/abs/1802.04434).

    ::

        p_t = p_{t-1} - lr * (sign(g_t) + weight_decay * p_{t-1})

    Identical to ``optax.sign_sgd`` (which has no weight decay: the default 0 here) and to
    ``pytorch_optimizer.SignSGD(momentum=0, weight_decouple=True)``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      weight_decay: decoupled decay rate (multiplied by the learning rate).
      mask: which parameters decay (a tree of booleans or a function of the params).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.sign_sgd(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_sign(), learning_rate, weight_decay, mask)


def signum(
    learning_rate: ScalarOrSchedule,
    beta: Scalar = 0.9,
    accumulator_dtype: Optional[Any] = None,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """Signum: the sign of an exponential moving average of the gradients (Bernstein et al.
    2018, "signSGD: Compressed Optimisation for Non-Convex Problems",
    https://arxiv.org/abs/1802.04434).

    ::

        m_t = beta * m_{t-1} + (1 - beta) * g_t
        p_t = p_{t-1} - lr * (sign(m_t) + weight_decay * p_{t-1})

    The average is not debiased (its sign would not change). Identical to ``optax.signum``
    (no weight decay there: the default 0 here) and to ``pytorch_optimizer.SignSGD``
    (``momentum=beta``, ``weight_decouple=True``). Blocks: ``ema(beta, debias=False) ->
    scale_by_sign -> add_decayed_weights -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      beta: decay rate of the moving average, in [0, 1).
      accumulator_dtype: dtype of the average (default: the parameter's).
      weight_decay: decoupled decay rate (multiplied by the learning rate).
      mask: which parameters decay (a tree of booleans or a function of the params).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.signum(1e-3, beta=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("beta", beta, schedule_ok=False)
    sign_part = scaled_with_decay(scale_by_sign(), learning_rate, weight_decay, mask)
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype), *sign_part.spec.parts
    )
