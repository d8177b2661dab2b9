"""Fromage: a step whose size is relative to each layer's norm."""

from __future__ import annotations

import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_nonneg,
)
from jaxopt_zoo.fast.spec import BlockSpec
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.trust_ratio import scale_by_trust_ratio
from jaxopt_zoo.transforms.weight_decay import add_scaled_params

_SHRINK_SPEC = BlockSpec("add_scaled_params", elementwise=True)


def fromage(learning_rate: ScalarOrSchedule, min_norm: Scalar = 1e-6) -> GradientTransformation:
    """Fromage (Bernstein et al. 2020, "On the distance between two neural networks and the
    stability of learning", https://arxiv.org/abs/2002.03432).

    Per leaf (layer), with ``||.||`` its Euclidean norm floored at ``min_norm``::

        p_t = (p_{t-1} - lr * ||p_{t-1}|| / ||g_t|| * g_t) / sqrt(1 + lr^2)

    (the ratio is 1 where either norm is 0). Blocks: ``scale_by_trust_ratio(min_norm) ->
    scale_by_learning_rate(lr / sqrt(1 + lr^2)) -> + (1 / sqrt(1 + lr^2) - 1) * p``.
    Identical to ``optax.fromage`` and, for norms above ``min_norm``, to
    ``pytorch_optimizer.Fromage`` (which has no floor, and an optional bound ``p_bound`` on
    the parameter norm relative to its initial value that optax lacks).

    Args:
      learning_rate: a number or a schedule of the step count, >= 0.
      min_norm: floor of the parameter and gradient norms, >= 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.fromage(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("min_norm", min_norm, schedule_ok=False)
    if callable(learning_rate):
        lr_fn = learning_rate

        def mult(c):
            return 1 / jnp.sqrt(1 + lr_fn(c) ** 2)

        step: ScalarOrSchedule = lambda c: mult(c) * lr_fn(c)  # noqa: E731
        shrink: ScalarOrSchedule = lambda c: mult(c) - 1  # noqa: E731
    else:
        m = 1 / (1 + learning_rate**2) ** 0.5
        step, shrink = learning_rate * m, m - 1
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(step),
        add_scaled_params(shrink, "fromage", _SHRINK_SPEC),
    )
