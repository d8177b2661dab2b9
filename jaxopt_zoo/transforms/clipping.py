"""Gradient clipping: by value, by global norm, by per-block RMS."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    check_scalar,
    global_norm,
    mean_sq,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe


def _stateless(fn) -> GradientTransformation:
    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return fn(updates), state

    return GradientTransformation(init_fn, update_fn)


def clip(max_delta) -> GradientTransformation:
    """Clip every element of the updates to ``[-max_delta, max_delta]``.

    Args:
      max_delta: the bound, > 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.clip(1.0), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_scalar("max_delta", max_delta, low=0.0, schedule_ok=False)
    return describe(
        _stateless(
            lambda u: jax.tree.map(lambda x: jnp.clip(x, -max_delta, max_delta).astype(x.dtype), u)
        ),
        BlockSpec("clip", elementwise=True),
    )


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """Rescale all updates together so that their global L2 norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / ||g||)`` where ``||g||`` is the norm over every leaf.

    Args:
      max_norm: the largest global norm, > 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.clip_by_global_norm(1.0), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_scalar("max_norm", max_norm, low=0.0, low_open=True, schedule_ok=False)

    def fn(updates):
        norm = global_norm(updates)
        factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
        return jax.tree.map(lambda x: (x * factor.astype(x.dtype)).astype(x.dtype), updates)

    return _stateless(fn)


def clip_by_block_rms(threshold) -> GradientTransformation:
    """Rescale each leaf so that its root-mean-square is at most ``threshold`` (Adafactor).

    Args:
      threshold: the largest root-mean-square of a leaf, > 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.clip_by_block_rms(1.0), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_scalar("threshold", threshold, low=0.0, low_open=True, schedule_ok=False)

    def leaf(x):
        if x.size == 0:
            return x
        rms = jnp.sqrt(mean_sq(x))
        return (x / jnp.maximum(1.0, rms / threshold).astype(x.dtype)).astype(x.dtype)

    return _stateless(lambda u: jax.tree.map(leaf, u))
