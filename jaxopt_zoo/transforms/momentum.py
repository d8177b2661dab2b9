"""Momentum (heavy ball / Nesterov, with dampening) and exponential moving averages."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    StepCount,
    bias_correction,
    check_decay,
    check_nonneg,
    check_same_structure,
    ema_update,
    increment,
    inv_bias_correction,
    tree_zeros_like,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe


class TraceState(NamedTuple):
    """State of :func:`trace`: step ``count`` and the momentum buffer ``trace`` per leaf."""

    count: StepCount
    trace: Any


def trace(
    decay: Any,
    nesterov: bool = False,
    dampening: Scalar = 0.0,
    accumulator_dtype: Optional[Any] = None,
) -> GradientTransformation:
    """Momentum: ``b <- decay * b + (1 - dampening) * g`` (``b_1 = g``).

    The update is ``b`` (heavy ball) or ``g + decay * b`` (Nesterov). As in PyTorch, the
    buffer is set to the raw gradient on the first step, so dampening does not shrink it.

    Args:
      decay: the momentum coefficient (>= 0).
      nesterov: output ``g + decay * b`` instead of ``b``.
      dampening: scales the gradient entering the buffer (PyTorch's ``dampening``).
      accumulator_dtype: dtype of the buffer (default: the gradient's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.trace(0.9, nesterov=True), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("momentum", decay)
    check_nonneg("dampening", dampening)
    if nesterov and isinstance(dampening, (int, float)) and dampening != 0:
        raise ValueError(
            f"Invalid dampening: {dampening!r}. Nesterov momentum requires dampening=0."
        )

    def init_fn(params):
        return TraceState(count=zero_count(), trace=tree_zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.trace, "trace")
        first = state.count == 0

        def new_buf(g, b):
            g = g.astype(b.dtype)
            b_new = decay * b + (1 - dampening) * g
            return jnp.where(first, g, b_new).astype(b.dtype)

        buf = jax.tree.map(new_buf, updates, state.trace)
        if nesterov:
            out = jax.tree.map(lambda g, b: (g + decay * b).astype(g.dtype), updates, buf)
        else:
            out = jax.tree.map(lambda g, b: b.astype(g.dtype), updates, buf)
        return out, TraceState(count=increment(state.count), trace=buf)

    spec = BlockSpec(
        "trace",
        elementwise=True,
        stage="trace",
        scalars={
            "decay": decay,
            "one_minus_dampening": 1 - dampening,
            "first": lambda count: (count == 0).astype(jnp.float32),
            "nesterov": float(nesterov),
        },
        buffers=("trace",),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


class EmaState(NamedTuple):
    """State of :func:`ema`: step ``count`` (for debiasing) and the moving average ``ema``."""

    count: StepCount
    ema: Any


def ema(
    decay: Any, debias: bool = True, accumulator_dtype: Optional[Any] = None
) -> GradientTransformation:
    """Exponential moving average of the updates: ``m <- decay * m + (1 - decay) * g``.

    With ``debias`` the output is ``m / (1 - decay**t)``.

    Args:
      decay: the averaging rate, in [0, 1).
      debias: divide by ``1 - decay^t`` (an unbiased average from the first step).
      accumulator_dtype: dtype of the average (default: the gradient's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.ema(0.9), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("decay", decay)

    def init_fn(params):
        return EmaState(count=zero_count(), ema=tree_zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.ema, "ema")
        m = ema_update(updates, state.ema, decay)
        count = increment(state.count)
        out = bias_correction(m, decay, count) if debias else m
        out = jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates)
        return out, EmaState(count=count, ema=m)

    spec = BlockSpec(
        "ema",
        elementwise=True,
        stage="ema",
        scalars={
            "decay": decay,
            "one_minus_decay": 1 - decay,
            "inv_bc": inv_bias_correction(decay) if debias else 1.0,
        },
        buffers=("ema",),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)
