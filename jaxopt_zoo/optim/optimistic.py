"""Optimistic gradient descent and optimistic Adam (for min-max games)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_nonneg,
    check_same_structure,
    increment,
    resolve,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim.adam import scale_by_adam
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`: step ``count`` (0 before the first
    update) and the previous update ``previous_gradient``."""

    count: StepCount
    previous_gradient: Any


def scale_by_optimistic_gradient(
    alpha: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 1.0
) -> GradientTransformation:
    """``(alpha + beta) * g_t - beta * g_{t-1}``, with ``g_0 = g_1`` (so the first update is
    ``alpha * g_1``, as in optax since its issue 1082).

    Args:
      alpha: weight of the current gradient, >= 0 (a number or a schedule of the step).
      beta: weight of the optimistic correction ``g_t - g_{t-1}``, >= 0 (likewise).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_optimistic_gradient(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("alpha", alpha)
    check_nonneg("beta", beta)

    def init_fn(params):
        return ScaleByOptimisticGradientState(
            count=zero_count(), previous_gradient=jax.tree.map(jnp.zeros_like, params)
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.previous_gradient, "scale_by_optimistic_gradient")
        a, b = resolve(alpha, state.count), resolve(beta, state.count)
        first = state.count == 0

        def leaf(g, prev):
            prev = jnp.where(first, g, prev.astype(g.dtype))
            return ((a + b) * g - b * prev).astype(g.dtype)

        out = jax.tree.map(leaf, updates, state.previous_gradient)
        prev = jax.tree.map(lambda g, p: g.astype(p.dtype), updates, state.previous_gradient)
        return out, ScaleByOptimisticGradientState(increment(state.count), prev)

    spec = BlockSpec(
        "scale_by_optimistic_gradient",
        elementwise=True,
        stage="optimistic",
        scalars={
            "alpha_plus_beta": lambda count: resolve(alpha, count) + resolve(beta, count),
            "beta": lambda count: resolve(beta, count),
            "first": lambda count: (count == 0).astype(jnp.float32),
        },
        buffers=("previous_gradient",),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule, alpha: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 1.0
) -> GradientTransformation:
    """Optimistic gradient descent (Popov 1980; Daskalakis et al. 2018, "Training GANs with
    Optimism", https://arxiv.org/abs/1711.00141; Mokhtari et al. 2020).

    ::

        p_t = p_{t-1} - lr * ((alpha + beta) * g_t - beta * g_{t-1}),   g_0 = g_1

    ``alpha = beta = 1`` is the classic optimistic step ``2 g_t - g_{t-1}``. Identical to
    ``optax.optimistic_gradient_descent``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      alpha: weight of the current gradient, >= 0.
      beta: weight of the correction ``g_t - g_{t-1}``, >= 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.optimistic_gradient_descent(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: Scalar = 1.0,
    beta: Scalar = 1.0,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al. 2018, "Training GANs with Optimism",
    https://arxiv.org/abs/1711.00141): the optimistic step on Adam's direction.

    ::

        d_t = scale_by_adam(g_t)            (NAdam's look-ahead moment if nesterov)
        p_t = p_{t-1} - lr * ((alpha + beta) * d_t - beta * d_{t-1}),   d_0 = d_1

    Identical to ``optax.optimistic_adam_v2``. Compared with :func:`optimistic_adam` (optax's
    first version), the learning rate multiplies the whole step and may be a schedule:
    ``optimistic_adam(lr, optimism)`` is ``optimistic_adam_v2(1.0, alpha=lr, beta=optimism)``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      alpha: weight of the current direction, >= 0.
      beta: weight of the correction ``d_t - d_{t-1}``, >= 0.
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).
      nesterov: use NAdam's look-ahead first moment (optax's default, True).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.optimistic_adam_v2(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: Scalar,
    optimism: Optional[Scalar] = None,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam in optax's first form (``optax.optimistic_adam``, deprecated there in
    favour of ``optimistic_adam_v2``; identical to it here).

    ::

        d_t = scale_by_adam(g_t)
        p_t = p_{t-1} - ((lr + optimism) * d_t - optimism * d_{t-1}),   d_0 = d_1

    ``optimism`` defaults to ``learning_rate``. The learning rate enters the optimistic
    weights, so it cannot be a schedule (use :func:`optimistic_adam_v2`).

    Args:
      learning_rate: a number (not a schedule), > 0.
      optimism: weight of the correction ``d_t - d_{t-1}`` (default: ``learning_rate``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).
      nesterov: use NAdam's look-ahead first moment (optax's default, True).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for a schedule as ``learning_rate``.

    Example:
      >>> tx = jz.optimistic_adam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    if callable(learning_rate):
        raise ValueError(
            "optimistic_adam: the learning rate is one of the optimistic weights and cannot "
            "be a schedule; use optimistic_adam_v2(schedule, alpha=1.0, beta=...) instead."
        )
    check_nonneg("learning_rate", learning_rate)
    if optimism is None:
        optimism = learning_rate
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(learning_rate, optimism),
        scale_by_learning_rate(1.0),
    )
