"""Differentially private aggregation of per-example gradients (DP-SGD's clip and noise)."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import GradientTransformation, Scalar, abs_sq, check_nonneg


class DifferentiallyPrivateAggregateState(NamedTuple):
    """The PRNG key of the next step's noise, as raw key data (``uint32``; typed keys are
    unwrapped so that the state can be donated, saved and sharded like any array)."""

    rng_key: jax.Array


def _key_data(key: Any) -> tuple[jax.Array, Any]:
    """Raw key data and the key's implementation (None: the default)."""
    if isinstance(key, (numbers.Integral,)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    elif (
        isinstance(key, jax.Array) and key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer)
    ):  # a seed as an array (optax.inject_hyperparams turns int arguments into arrays)
        key = jax.random.key(key)
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), jax.random.key_impl(key)
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32:
        return key, None
    raise TypeError(
        f"Invalid key: {key!r}. Expected an int seed (or an integer scalar array), a typed key "
        "(jax.random.key) or a raw uint32 key (jax.random.PRNGKey)."
    )


def _noise_dtype(dtype: Any) -> Any:
    """Noise is drawn in the gradient's dtype, but in float32 for float16 and bfloat16 (so
    half-precision runs see the float32 noise rounded once)."""
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.float16, jnp.bfloat16) or not jnp.issubdtype(dtype, jnp.inexact):
        return jnp.dtype(jnp.float32)  # half precision, and integer leaves (cast back)
    return dtype


def differentially_private_aggregate(
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
    per_example: bool = True,
) -> GradientTransformation:
    r"""DP-SGD's aggregation (Abadi et al. 2016, "Deep Learning with Differential Privacy",
    https://arxiv.org/abs/1607.00133): clip each example's gradient, sum, add noise, average.

    The input is per-example gradients, every leaf with the batch on axis 0 (from
    ``jax.vmap(jax.grad(loss), in_axes=(None, 0))``). With ``B`` examples, ``C =
    l2_norm_clip`` and ``||g_i||`` example ``i``'s global norm over all leaves::

        u = (sum_i g_i min(1, C / ||g_i||) + C noise_multiplier xi) / B,   xi ~ N(0, I)

    Put it first in a chain (it turns per-example gradients into one). The noise key lives
    in the state, so ``update(g, state)`` is reproducible; a new key is split off each step.

    Args:
      l2_norm_clip: the largest per-example norm ``C``, >= 0.
      noise_multiplier: the noise's standard deviation over ``C``, >= 0.
      key: an int seed, a typed key (``jax.random.key``) or a raw one
        (``jax.random.PRNGKey``); None: seed 0.
      seed: an int seed (optax's older spelling); give ``key`` or ``seed``, not both.
      per_example: False: the gradients have no batch axis and are one example's (``B =
        1``: clip the whole gradient to norm ``C``, add noise of std ``C noise_multiplier``).

    Returns:
      An ``optax.GradientTransformation`` with state ``DifferentiallyPrivateAggregateState``.

    Example:
      >>> tx = jz.differentially_private_aggregate(1.0, 0.0, key=0)
      >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}
      >>> updates, state = tx.update(per_example, tx.init(None))
      >>> [round(float(x), 4) for x in updates["w"]]  # the first example clipped to norm 1
      [0.45, 0.6]

    Equals ``optax.contrib.differentially_private_aggregate`` (0.2.8) to the bit of the noise
    for float32 and float64 gradients. float16 and bfloat16 gradients are clipped and
    noised in float32 (optax draws their noise in the half dtype). An empty tree gives an
    empty update (optax fails on it).
    """
    check_nonneg("l2_norm_clip", l2_norm_clip, schedule_ok=False)
    check_nonneg("noise_multiplier", noise_multiplier, schedule_ok=False)
    if seed is not None:
        if key is not None:
            raise ValueError("Give only one of key and seed.")
        key = seed
    raw, impl = _key_data(0 if key is None else key)
    noise_std = l2_norm_clip * noise_multiplier

    def init_fn(params):
        del params
        return DifferentiallyPrivateAggregateState(rng_key=jnp.array(raw, copy=True))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates, state
        if not per_example:
            leaves = [g[None] for g in leaves]
        for g in leaves:
            if g.ndim == 0:
                raise ValueError(
                    "differentially_private_aggregate: every gradient leaf needs a batch axis "
                    "0 (per-example gradients); got a scalar leaf. For gradients of one "
                    "example, pass per_example=False."
                )
        batch = leaves[0].shape[0]
        wide = [g.astype(_noise_dtype(g.dtype)) for g in leaves]
        norm_dt = jnp.promote_types(jnp.float32, jnp.finfo(wide[0].dtype).dtype)
        sq = sum(
            (jnp.sum(abs_sq(g).reshape(batch, -1), axis=1).astype(norm_dt) for g in wide),
            jnp.zeros([batch], norm_dt),
        )
        mult = jnp.nan_to_num(jnp.minimum(l2_norm_clip / jnp.sqrt(sq), 1.0), nan=1.0)
        key = raw_key = state.rng_key
        if impl is not None:
            key = jax.random.wrap_key_data(raw_key, impl=impl)
        new_key, *keys = jax.random.split(key, len(leaves) + 1)
        out = []
        for g, g_orig, k in zip(wide, leaves, keys):
            summed = jnp.tensordot(mult.astype(g.real.dtype), g, axes=1)
            xi = jax.random.normal(k, summed.shape, g.dtype)
            out.append(((summed + noise_std * xi) / batch).astype(g_orig.dtype))
        if impl is not None:
            new_key = jax.random.key_data(new_key)
        return jax.tree.unflatten(treedef, out), DifferentiallyPrivateAggregateState(new_key)

    return GradientTransformation(init_fn, update_fn)
