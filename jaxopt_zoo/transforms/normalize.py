"""Divide the updates by their global norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import EmptyState, GradientTransformation, global_norm

#: ``normalize`` keeps no state (optax.contrib's name for it).
NormalizeState = EmptyState


def normalize() -> GradientTransformation:
    """``g / ||g||``, with ``||g||`` the global L2 norm over every leaf (real for complex).

    An all-zero gradient gives zero updates (optax.contrib's ``normalize`` divides 0 by 0
    there and returns NaN); otherwise equal to it.

    Returns:
      An ``optax.GradientTransformation`` (state ``NormalizeState``, i.e. ``EmptyState``).

    Example:
      >>> tx = jz.normalize()
      >>> updates, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
      >>> updates["a"], updates["b"]
      (Array([0.6], dtype=float32), Array([0.8], dtype=float32))
    """

    def init_fn(params):
        del params
        return NormalizeState()

    def update_fn(updates, state, params=None):
        del params
        norm = global_norm(updates)
        inv = jnp.where(norm > 0, 1 / jnp.where(norm > 0, norm, 1), 0)
        return jax.tree.map(
            lambda g: (g * inv).astype(g.dtype),
            updates,  # 1/||g|| may pass float16's range
        ), state

    return GradientTransformation(init_fn, update_fn)
