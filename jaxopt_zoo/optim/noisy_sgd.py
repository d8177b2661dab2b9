"""Noisy SGD: annealed Gaussian noise added to the gradient."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_nonneg,
    increment,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`: step ``count`` and the raw bits (``jax.random.key_data``,
    uint32) of the PRNG key of the next step's noise: a plain array, so that the state
    checkpoints, donates and is measured like any other."""

    count: StepCount
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.key(key)


def add_noise(
    eta: Scalar = 0.01,
    gamma: Scalar = 0.55,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
) -> GradientTransformation:
    """Add ``N(0, eta / t^gamma)`` noise to each update element (``t`` from 1).

    The key lives in the state: each step splits it into the next key and a sample key,
    and the sample key is split once per leaf (in tree order), so runs are reproducible and
    the noise equals optax's ``add_noise`` for the same key. float16 and bfloat16 leaves draw
    their noise in float32 (optax draws it in the leaf's dtype), so the noise does not
    depend on the precision.

    Args:
      eta: the noise variance at the first step, >= 0.
      gamma: the variance decays as ``t^-gamma``, >= 0.
      key: a PRNG key or an integer seed (None: 0, as optax).
      seed: the older name of an integer ``key`` (optax's deprecated argument).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.add_noise(0.01, 0.55, key=0), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("eta", eta, schedule_ok=False)
    check_nonneg("gamma", gamma, schedule_ok=False)
    if seed is not None:
        if key is not None:
            raise ValueError("add_noise: give either key or seed, not both.")
        warnings.warn("add_noise: `seed` is deprecated; pass `key`.", DeprecationWarning, 2)
        key = seed
    if key is None:
        key = 0
    impl = jax.random.key_impl(_as_key(key))

    def init_fn(params):
        del params
        return AddNoiseState(count=zero_count(), rng_key=jax.random.key_data(_as_key(key)))

    def update_fn(updates, state, params=None):
        del params
        count = increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        rng_key = jax.random.wrap_key_data(state.rng_key, impl=impl)
        next_key, sample_key = jax.random.split(rng_key)
        keys = jax.random.split(sample_key, len(leaves))

        std = jnp.sqrt(eta / count**gamma)

        def leaf(g, k):
            # half-precision leaves draw in float32 (the same noise as float32 leaves)
            # (integer leaves too: their update is cast back, as every optimizer's)
            exact = jnp.issubdtype(g.dtype, jnp.inexact) and g.dtype.itemsize >= 4
            dt = g.dtype if exact else jnp.float32
            noise = std.astype(dt) * jax.random.normal(k, g.shape, dt)
            return (g.astype(dt) + noise).astype(g.dtype)

        out = jax.tree.unflatten(treedef, [leaf(g, keys[i]) for i, g in enumerate(leaves)])
        return out, AddNoiseState(count=count, rng_key=jax.random.key_data(next_key))

    return describe(GradientTransformation(init_fn, update_fn), BlockSpec("add_noise"))


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: Scalar = 0.01,
    gamma: Scalar = 0.55,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
) -> GradientTransformation:
    """SGD with annealed Gaussian gradient noise (Neelakantan et al. 2015, "Adding Gradient
    Noise Improves Learning for Very Deep Networks", https://arxiv.org/abs/1511.06807).

    ::

        p_t = p_{t-1} - lr * (g_t + N(0, eta / t^gamma))

    The PRNG key is kept in the state (``update(g, state, params)`` needs no key) and the
    noise is bit-for-bit optax's ``noisy_sgd`` for the same ``key``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      eta: the noise variance at the first step, >= 0.
      gamma: the variance decays as ``t^-gamma``, >= 0.
      key: a PRNG key or an integer seed (None: 0, as optax).
      seed: the older name of an integer ``key`` (optax's deprecated argument).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.noisy_sgd(1e-2, key=0)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
