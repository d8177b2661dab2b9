"""SM3: memory-efficient adaptive step sizes from one accumulator per tensor dimension."""

from __future__ import annotations

import functools
from typing import Any, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    abs_sq_in,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    check_scalar,
    stat_dtype,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._multi import tree_map_multi
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`: per leaf, its ``accumulators`` (for tensors of rank
    >= 2 the per-dimension vectors concatenated, ``sum(shape)`` numbers; for vectors and
    scalars one accumulator shaped like the leaf) and the momentum ``mu`` of the scaled
    gradient. One array per leaf, so the state is a tree shaped like the parameters."""

    accumulators: Any
    mu: Any


def _expand(acc: jax.Array, axis: int, ndim: int) -> jax.Array:
    """A dimension's accumulator reshaped to broadcast along ``axis`` of a rank-``ndim``
    tensor."""
    shape = [1] * ndim
    shape[axis] = acc.shape[0]
    return acc.reshape(shape)


def scale_by_sm3(b1: Scalar = 0.9, b2: Scalar = 1.0, eps: Scalar = 1e-8) -> GradientTransformation:
    """SM3-II's scaled gradient, averaged with momentum ``b1``.

    For a leaf of rank ``k >= 2`` with accumulators ``a_1 .. a_k`` (``a_i`` one entry per
    index of dimension ``i``)::

        nu   = (1 - b2 or 1 if b2 == 1) * g^2 + b2 * min_i a_i     (broadcast)
        u    = g / sqrt(nu + eps)   (0 where nu == 0)
        a_i <- max of nu over every dimension but i
        m   <- b1 * m + (1 - b1) * u

    Vectors and scalars keep ``nu`` itself (AdaGrad). ``b2 = 1`` is the paper's sum.

    Args:
      b1: momentum of the output, in [0, 1).
      b2: weight of the old accumulator, in [0, 1] (1: a sum of squares, as in the paper).
      eps: added inside the square root.

    Returns:
      An ``optax.GradientTransformation`` (complex parameters accumulate ``|g|^2``; optax
      rejects them).

    Example:
      >>> tx = jz.chain(jz.scale_by_sm3(), jz.scale_by_learning_rate(1e-1))
      >>> params = {"w": jnp.ones((3, 2))}
      >>> updates, state = tx.update({"w": jnp.ones((3, 2))}, tx.init(params), params)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_scalar("b2", b2, low=0.0, high=1.0, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    new_weight = 1.0 if (isinstance(b2, (int, float)) and b2 == 1.0) else 1 - b2

    def accumulators_for(p: jax.Array) -> jax.Array:
        dt = stat_dtype(p.dtype)
        return jnp.zeros(p.shape if p.ndim < 2 else (sum(p.shape),), dt)

    def split(acc: jax.Array, shape: Tuple[int, ...]) -> List[jax.Array]:
        offsets = np.cumsum((0,) + shape)
        return [acc[offsets[i] : offsets[i + 1]] for i in range(len(shape))]

    def init_fn(params):
        accs = jax.tree.map(accumulators_for, params)
        mu = jax.tree.map(jnp.zeros_like, params)
        return ScaleBySM3State(accumulators=accs, mu=mu)

    def leaf(g, acc, m):
        dt = acc.dtype
        g2 = abs_sq_in(g, dt)
        if g.ndim < 2:
            old = acc
        else:
            accs = split(acc, g.shape)
            old = functools.reduce(jnp.minimum, [_expand(a, i, g.ndim) for i, a in enumerate(accs)])
        nu = new_weight * g2 + b2 * old
        u = jnp.where(nu > 0, g.astype(m.dtype) * jax.lax.rsqrt(nu + eps).astype(m.dtype), 0)
        m = (b1 * m + (1 - b1) * u.astype(m.dtype)).astype(m.dtype)
        if g.ndim < 2:
            return m, nu.astype(dt)
        axes = range(g.ndim)
        new_accs = [
            jnp.max(nu, axis=tuple(j for j in axes if j != i), initial=0.0).astype(dt) for i in axes
        ]
        return m, jnp.concatenate(new_accs)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_sm3")
        mu, accs = tree_map_multi(leaf, 2, updates, state.accumulators, state.mu)
        out = jax.tree.map(lambda m, g: m.astype(g.dtype), mu, updates)
        return out, ScaleBySM3State(accumulators=accs, mu=mu)

    return describe(GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_sm3"))


def sm3(
    learning_rate: ScalarOrSchedule, momentum: Scalar = 0.9, *, eps: Scalar = 1e-8
) -> GradientTransformation:
    """SM3 (Anil et al. 2019, "Memory-Efficient Adaptive Optimization",
    https://arxiv.org/abs/1901.11150), SM3-II with momentum.

    For a tensor of rank ``k >= 2`` the state is one accumulator per index of each dimension
    (``sum(shape)`` numbers instead of ``prod(shape)``)::

        nu_t = g_t^2 + min_i a_i                 (a_i broadcast along dimension i)
        a_i  = max of nu_t over every dimension but i
        m_t  = momentum * m_{t-1} + (1 - momentum) * g_t / sqrt(nu_t + eps)
        p_t  = p_{t-1} - lr * m_t

    Vectors get a full accumulator (AdaGrad). Identical to ``optax.sm3`` (whose ``eps`` is
    fixed at 1e-8), except that optax fails on scalar parameters (an ``IndexError``) where
    this keeps a scalar accumulator, as ``pytorch_optimizer.SM3`` does. ``pytorch_optimizer``
    also matches (its momentum is the same moving average), with its default ``eps=1e-30``
    and ``beta=0``; its ``beta > 0`` keeps the accumulators as running maxima, which optax
    and this do not.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      momentum: the moving-average rate of the scaled gradient, in [0, 1).
      eps: added inside the square root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.sm3(0.1)
      >>> params = {"w": jnp.ones((3, 2))}
      >>> updates, state = tx.update({"w": jnp.ones((3, 2))}, tx.init(params), params)
    """
    return chain(scale_by_sm3(momentum, 1.0, eps), scale_by_learning_rate(learning_rate))
