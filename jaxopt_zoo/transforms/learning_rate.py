"""Scaling by a constant, a learning rate or a schedule."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    StepCount,
    check_nonneg,
    increment,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe, spec_of


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule` and :func:`scale_by_learning_rate` with a schedule:
    the step ``count`` the schedule is evaluated at."""

    count: StepCount


def scale_leaf(u: jax.Array, s: Any) -> jax.Array:
    """``u * s`` in ``u``'s dtype."""
    return u * jnp.asarray(s).astype(u.dtype)


def scale(step_size: Any) -> GradientTransformation:
    """Multiply every update by ``step_size``.

    Args:
      step_size: the factor (a number or an array).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale(0.5), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: scale_leaf(u, step_size), updates), state

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale", elementwise=True, stage="scale", scalars={"step_size": step_size}),
    )


def scale_by_schedule(step_size_fn: Callable[[jax.Array], Any]) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(count)``; count starts at 0.

    Args:
      step_size_fn: a function of the step count (e.g. from ``jaxopt_zoo.schedules``).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_schedule(jz.schedules.cosine(1.0, 1000)),
      ...               jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    if not callable(step_size_fn):
        raise TypeError(
            f"scale_by_schedule expects a function of the step count, got {step_size_fn!r}."
        )

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update_fn(updates, state, params=None):
        del params
        s = step_size_fn(state.count)
        updates = jax.tree.map(lambda u: scale_leaf(u, s), updates)
        return updates, ScaleByScheduleState(count=increment(state.count))

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec(
            "scale_by_schedule",
            elementwise=True,
            stage="scale",
            scalars={"step_size": step_size_fn},
        ),
    )


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiply by ``-learning_rate`` (or ``+`` with ``flip_sign=False``).

    ``learning_rate`` is a number, an array (e.g. from ``optax.inject_hyperparams``) or a
    schedule: a function of the step count.

    Args:
      learning_rate: a number or a schedule of the step count.
      flip_sign: multiply by ``-learning_rate`` (descent); False: by ``+learning_rate``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adam(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        tx = scale_by_schedule(lambda count: sign * learning_rate(count))
    else:
        tx = scale(sign * learning_rate)
    spec = spec_of(tx)
    assert spec is not None  # scale and scale_by_schedule carry theirs
    return describe(tx, dataclasses.replace(spec, name="scale_by_learning_rate"))
