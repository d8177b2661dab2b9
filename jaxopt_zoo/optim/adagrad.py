"""AdaGrad."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    abs_sq_in,
    check_nonneg,
    check_same_structure,
    stat_dtype,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import scaled_with_decay


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: ``sum_of_squares``, the running sum of ``|g|^2`` per leaf
    (started at ``initial_accumulator_value``)."""

    sum_of_squares: Any


def scale_by_rss(
    initial_accumulator_value: Scalar = 0.1, eps: Scalar = 1e-7, eps_in_sqrt: bool = True
) -> GradientTransformation:
    """Divide by the root of the running sum of squared gradients.

    ``s_t = s_{t-1} + g_t^2`` (``s_0 = initial_accumulator_value``); the output is
    ``g / sqrt(s_t + eps)`` (0 where ``s_t == 0``) or, with ``eps_in_sqrt=False``,
    ``g / (sqrt(s_t) + eps)``.

    Args:
      initial_accumulator_value: ``s_0``.
      eps: added inside (``eps_in_sqrt``) or outside the square root.
      eps_in_sqrt: where eps goes (True: optax's and Keras' form; False: PyTorch's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_rss(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("initial_accumulator_value", initial_accumulator_value, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        return ScaleByRssState(
            sum_of_squares=jax.tree.map(
                lambda p: jnp.full(p.shape, initial_accumulator_value, stat_dtype(p.dtype)), params
            )
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.sum_of_squares, "scale_by_rss")
        s = jax.tree.map(
            lambda g, s: (s + abs_sq_in(g, s.dtype)).astype(s.dtype), updates, state.sum_of_squares
        )
        if eps_in_sqrt:

            def leaf(g, s):
                return jnp.where(s > 0, g * jax.lax.rsqrt(s + eps), 0).astype(g.dtype)
        else:

            def leaf(g, s):
                return (g / (jnp.sqrt(s) + eps)).astype(g.dtype)

        return jax.tree.map(leaf, updates, s), ScaleByRssState(sum_of_squares=s)

    spec = BlockSpec(
        "scale_by_rss",
        elementwise=True,
        stage="rss",
        scalars={"eps": eps, "eps_in_sqrt": float(eps_in_sqrt)},
        buffers=("sum_of_squares",),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def adagrad(
    learning_rate: ScalarOrSchedule, initial_accumulator_value: Scalar = 0.1, eps: Scalar = 1e-7
) -> GradientTransformation:
    """AdaGrad (Duchi, Hazan & Singer 2011, JMLR 12).

    ::

        s_t = s_{t-1} + g_t^2            (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr * g_t / sqrt(s_t + eps)

    The same formula as optax and Keras; PyTorch puts ``eps`` outside the root and starts
    the sum at 0 (``compat.torch.adagrad``).

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      initial_accumulator_value: the starting value of the sum of squares ``s_0``.
      eps: added inside the square root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adagrad(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(scale_by_rss(initial_accumulator_value, eps), learning_rate)
