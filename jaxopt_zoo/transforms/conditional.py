"""Skip updates whose gradients contain NaN or Inf."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import GradientTransformation, GradientTransformationExtraArgs, check_int


class SkipNotFiniteState(NamedTuple):
    """State of :func:`skip_not_finite`: the inner state (unchanged by skipped steps), the
    number of ``consecutive`` non-finite steps, ``total_skipped`` and ``last_finite``."""

    inner_state: Any
    consecutive: jax.Array  # non-finite steps in a row, up to and including the last one
    total_skipped: jax.Array  # steps skipped so far
    last_finite: jax.Array  # whether the last gradient was finite


def all_finite(tree: Any) -> jax.Array:
    """A scalar boolean array: True when every element of every leaf of ``tree`` is finite
    (no NaN, no +-Inf); True for an empty tree. Works under ``jit``.

    Args:
      tree: a pytree of arrays.

    Example:
      >>> all_finite({"w": jnp.ones(3), "b": jnp.array([jnp.nan])})
      Array(False, dtype=bool)
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def skip_not_finite(
    inner: GradientTransformation, max_consecutive: Optional[int] = None
) -> GradientTransformationExtraArgs:
    """Run ``inner`` only on steps whose gradients are all finite.

    On a step with any NaN or Inf gradient the update is zero and ``inner``'s state is
    left untouched, so the step is as if it never happened; ``total_skipped`` counts
    such steps. After ``max_consecutive`` non-finite steps in a row it gives up skipping
    and lets the (non-finite) update through, so that a run that has diverged does not
    silently stand still (the trainer's ``on_nonfinite="stop"`` then stops with a message
    naming the step and the leaf). A finite step resets the count. ``None``: skip forever.

    Args:
      inner: the transformation to protect.
      max_consecutive: give up skipping after this many non-finite steps in a row (None:
        never).

    Returns:
      A transformation whose state is a :class:`SkipNotFiniteState`.

    Example:
      >>> tx = jz.skip_not_finite(jz.adam(1e-3), max_consecutive=10)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan, 0.0])}, tx.init(params), params)
      >>> int(state.total_skipped), float(jnp.abs(updates["w"]).max())
      (1, 0.0)
    """
    if max_consecutive is not None:
        check_int("max_consecutive", max_consecutive, low=1)

    def init_fn(params):
        return SkipNotFiniteState(
            inner_state=inner.init(params),
            consecutive=jnp.zeros([], jnp.int32),
            total_skipped=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
        )

    def update_fn(updates, state, params=None, **extra):
        finite = all_finite(updates)
        if isinstance(inner, GradientTransformationExtraArgs):
            new_u, new_inner = inner.update(updates, state.inner_state, params, **extra)
        else:
            new_u, new_inner = inner.update(updates, state.inner_state, params)
        consecutive = jnp.where(finite, 0, state.consecutive + 1).astype(jnp.int32)
        take = finite if max_consecutive is None else finite | (consecutive > max_consecutive)
        out = jax.tree.map(lambda u: jnp.where(take, u, jnp.zeros_like(u)), new_u)
        inner_state = jax.tree.map(lambda n, o: jnp.where(take, n, o), new_inner, state.inner_state)
        return out, SkipNotFiniteState(
            inner_state=inner_state,
            consecutive=consecutive,
            total_skipped=state.total_skipped + (~take).astype(jnp.int32),
            last_finite=finite,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
