"""Decays: constant, linear, polynomial, exponential, piecewise-constant and cosine.

Also the ``Schedule`` type and the step count as a float, which the other schedule modules
share.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import jax.numpy as jnp

from jaxopt_zoo.core import check_int, check_nonneg, check_scalar

Schedule = Callable[..., jnp.ndarray]


def _f32(count):
    """The step count as a float of JAX's default precision (float64 under x64)."""
    return jnp.asarray(count, jnp.result_type(float))


def constant(value: float) -> Schedule:
    """``lr(t) = value``.

    Args:
      value: the learning rate, >= 0.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.constant(0.1)
      >>> [round(float(lr(t)), 6) for t in (0, 100)]
      [0.1, 0.1]
    """
    check_nonneg("value", value, schedule_ok=False)
    return lambda count: jnp.asarray(value, jnp.result_type(float))


def linear(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """The textbook's linear decay: ``(1 - a) * init + a * end`` with ``a = t / tau``
    clipped to [0, 1], so constant at ``end_value`` after ``tau = transition_steps``
    (Goodfellow et al. 2016, eq. 8.14). ``transition_begin`` delays the start.

    Args:
      init_value: the value at ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      transition_steps: ``tau``, >= 1.
      transition_begin: steps at ``init_value`` before the decay starts.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.linear(0.1, 0.01, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.055, 0.01]
    """
    check_nonneg("init_value", init_value, schedule_ok=False)
    check_nonneg("end_value", end_value, schedule_ok=False)
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)

    def schedule(count):
        a = jnp.clip((_f32(count) - transition_begin) / transition_steps, 0.0, 1.0)
        return (1 - a) * init_value + a * end_value

    return schedule


def polynomial(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``end + (init - end) * (1 - a)^power``, ``a = clip((t - begin) / steps, 0, 1)``.

    Args:
      init_value: the value at ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      power: the exponent, > 0.
      transition_steps: length of the decay, >= 1.
      transition_begin: steps at ``init_value`` before the decay starts.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.polynomial(0.1, 0.0, 2.0, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.025, 0.0]
    """
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)
    check_scalar("power", power, low=0.0, low_open=True, schedule_ok=False)

    def schedule(count):
        a = jnp.clip((_f32(count) - transition_begin) / transition_steps, 0.0, 1.0)
        return end_value + (init_value - end_value) * (1 - a) ** power

    return schedule


def exponential(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[float] = None,
) -> Schedule:
    """``init * decay_rate^((t - begin) / steps)`` (floored exponent with ``staircase``),
    bounded by ``end_value`` when given.

    Args:
      init_value: the value at ``transition_begin``.
      transition_steps: the number of steps per factor of ``decay_rate``, >= 1.
      decay_rate: the factor per ``transition_steps`` (< 1 decays, > 1 grows).
      transition_begin: steps at ``init_value`` before the decay starts.
      staircase: decay in whole steps of ``transition_steps``.
      end_value: a lower bound when decaying (an upper bound when growing).

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.exponential(0.1, 50, 0.5)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.05, 0.025]
    """
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)
    check_scalar("decay_rate", decay_rate, low=0.0, low_open=True, schedule_ok=False)

    def schedule(count):
        p = jnp.maximum(_f32(count) - transition_begin, 0.0) / transition_steps
        if staircase:
            p = jnp.floor(p)
        v = init_value * jnp.asarray(decay_rate, jnp.result_type(float)) ** p
        if end_value is not None:
            v = jnp.maximum(v, end_value) if decay_rate < 1 else jnp.minimum(v, end_value)
        return v

    return schedule


def piecewise_constant(init_value: float, boundaries_and_scales: Dict[int, float]) -> Schedule:
    """Start at ``init_value``; at each boundary step ``b`` multiply by its scale.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``; from ``step`` on the value is multiplied
        by ``scale``.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.piecewise_constant(0.1, {50: 0.1, 100: 0.1})
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.01, 0.001]
    """
    check_nonneg("init_value", init_value, schedule_ok=False)
    items = sorted((int(b), float(s)) for b, s in (boundaries_and_scales or {}).items())
    for b, s in items:
        check_int("boundary", b, low=0)
        check_nonneg("scale", s, schedule_ok=False)

    def schedule(count):
        v = jnp.asarray(init_value, jnp.result_type(float))
        for b, s in items:
            v = jnp.where(count >= b, v * s, v)
        return v

    return schedule


def cosine(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay (Loshchilov & Hutter 2017) from ``init_value`` to ``alpha * init_value``
    over ``decay_steps``, then constant.

    ``lr(t) = init_value * ((1 - alpha) * c^exponent + alpha)`` with
    ``c = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2``.

    Args:
      init_value: the value at step 0.
      decay_steps: length of the decay, >= 1.
      alpha: the final value as a fraction of ``init_value``.
      exponent: the power of the cosine factor.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.cosine(0.1, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.05, 0.0]
    """
    check_int("decay_steps", decay_steps, low=1)
    check_scalar("alpha", alpha, low=0.0, high=1.0, schedule_ok=False)

    def schedule(count):
        a = jnp.minimum(_f32(count), decay_steps) / decay_steps
        c = (0.5 * (1 + jnp.cos(math.pi * a))) ** exponent
        return init_value * ((1 - alpha) * c + alpha)

    return schedule
