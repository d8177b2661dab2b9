"""Run a real-valued transformation on complex parameters as pairs of real arrays."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import GradientTransformation, GradientTransformationExtraArgs


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex array as its two real parts (a pytree node of two leaves)."""

    real: Any
    imaginary: Any


class SplitRealAndImaginaryState(NamedTuple):
    """The inner transformation's state, on the split parameters."""

    inner_state: Any


def _split(x: Any) -> Any:
    if jnp.iscomplexobj(x):
        return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
    return x


def _merge(x: Any) -> Any:
    if isinstance(x, SplitRealAndImaginaryArrays):
        return jax.lax.complex(x.real, x.imaginary)
    return x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    """Apply ``inner`` to the real and imaginary parts of complex leaves as two real leaves.

    Each complex parameter and gradient ``z`` becomes the pair ``(Re z, Im z)`` (a
    ``SplitRealAndImaginaryArrays`` node) for ``inner``, and its two updates are merged
    back into ``u_re + i u_im``; real leaves pass through unchanged. So an optimizer whose
    complex rule differs from treating ``C`` as ``R^2`` (a sign, ``|g|^2`` per element)
    runs as on ``R^2``: ``split_real_and_imaginary(adam)`` keeps a second moment per part.

    Args:
      inner: the transformation to run on real arrays. Extra keyword arguments to
        ``update`` are forwarded to it if it accepts them.

    Returns:
      A ``GradientTransformationExtraArgs`` with state ``SplitRealAndImaginaryState``.

    Example:
      >>> tx = jz.split_real_and_imaginary(jz.scale_by_adam())
      >>> params = {"w": jnp.ones(2, jnp.complex64)}
      >>> updates, _ = tx.update({"w": jnp.array([1 + 2j, -3j])}, tx.init(params), params)
      >>> updates["w"].dtype, tx.init(params).inner_state.mu["w"].real.dtype
      (dtype('complex64'), dtype('float32'))

    Equals ``optax.contrib.split_real_and_imaginary`` (0.2.8).
    """

    def init_fn(params):
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update_fn(updates, state, params=None, **extra_args):
        split_updates = jax.tree.map(_split, updates)
        split_params = None if params is None else jax.tree.map(_split, params)
        if isinstance(inner, GradientTransformationExtraArgs):
            out, inner_state = inner.update(
                split_updates, state.inner_state, split_params, **extra_args
            )
        else:
            out, inner_state = inner.update(split_updates, state.inner_state, split_params)
        merged = jax.tree.map(_merge, out, is_leaf=_is_pair)
        merged = jax.tree.map(lambda m, u: m.astype(u.dtype), merged, updates)
        return merged, SplitRealAndImaginaryState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)
