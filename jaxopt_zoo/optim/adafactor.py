"""Adafactor: factored second moments for sublinear memory."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_int,
    check_nonneg,
    check_same_structure,
    increment,
    mean_sq,
    require_params,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.transforms.clipping import clip_by_block_rms
from jaxopt_zoo.transforms.learning_rate import scale, scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import ema
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`: step ``count``; per leaf either the row and
    column statistics ``v_row``, ``v_col`` (factored, for leaves with two large dimensions)
    or the full second moment ``v`` (the others hold ``(1,)`` placeholders)."""

    count: StepCount
    v_row: Any  # per leaf: row statistics (factored leaves) or a (1,) placeholder
    v_col: Any  # per leaf: column statistics (factored leaves) or a (1,) placeholder
    v: Any  # per leaf: full second moment (unfactored leaves) or a (1,) placeholder


def factored_dims(shape, factored: bool, min_dim_size_to_factor: int):
    """The two largest axes (second largest, largest), or None if the leaf is not factored."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def decay_rate_pow(step: jax.Array, exponent: Scalar = 0.8) -> jax.Array:
    """Adafactor's second-moment decay ``1 - (t + 1)^(-exponent)``."""
    return 1.0 - (step.astype(jnp.float32) + 1.0) ** (-exponent)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: Scalar = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: Scalar = 1e-30,
) -> GradientTransformation:
    """Divide by a factored estimate of the RMS gradient (Shazeer & Stern 2018).

    For a leaf whose two largest axes ``(r, c)`` both have at least
    ``min_dim_size_to_factor`` entries, keep row means ``R`` (mean over ``c``) and column
    means ``C`` (mean over ``r``) of ``g^2 + epsilon``, each an EMA with decay
    ``1 - (t+1)^-decay_rate``; the update is ``g / sqrt(R C / mean(R))``. Other leaves keep
    the full EMA ``V`` and get ``g / sqrt(V)``.

    Args:
      factored: keep row and column statistics for large matrices (False: full).
      decay_rate: ``b2_t = 1 - t^(-decay_rate)``.
      step_offset: subtracted from ``t`` in ``b2_t``.
      min_dim_size_to_factor: the smallest dimension size that is factored.
      epsilon: added to the squared gradient.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_factored_rms(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("decay_rate", decay_rate, schedule_ok=False)
    check_int("min_dim_size_to_factor", min_dim_size_to_factor, low=1)
    check_nonneg("epsilon", epsilon, schedule_ok=False)

    def init_leaf(p):
        dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
        dt = stat_dtype(p.dtype)

        def placeholder():  # a new array each call: a state holding one array twice
            return jnp.zeros((1,), dt)  # cannot be donated ("donate the same buffer twice")

        if dims is None:
            return placeholder(), placeholder(), jnp.zeros(p.shape, dt)
        d_row, d_col = dims  # d_row: the smaller of the two axes; we average over the other
        row = jnp.zeros(tuple(s for i, s in enumerate(p.shape) if i != d_col), dt)
        col = jnp.zeros(tuple(s for i, s in enumerate(p.shape) if i != d_row), dt)
        return row, col, placeholder()

    def init_fn(params):
        parts = [init_leaf(p) for p in jax.tree.leaves(params)]
        treedef = jax.tree.structure(params)
        unflat = [jax.tree.unflatten(treedef, [x[i] for x in parts]) for i in range(3)]
        return FactoredState(count=zero_count(), v_row=unflat[0], v_col=unflat[1], v=unflat[2])

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_factored_rms")
        check_same_structure(updates, params, "scale_by_factored_rms")
        beta = decay_rate_pow(state.count - step_offset, decay_rate)

        def leaf(g, r, c, v, p):
            dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
            g2 = abs_sq_in(g, v.dtype) + epsilon
            if dims is None:
                v = (beta * v + (1 - beta) * g2).astype(v.dtype)
                return (g * v**-0.5).astype(g.dtype), r, c, v
            d_row, d_col = dims
            r = (beta * r + (1 - beta) * jnp.mean(g2, axis=d_col)).astype(r.dtype)
            c = (beta * c + (1 - beta) * jnp.mean(g2, axis=d_row)).astype(c.dtype)
            r_axis = d_row - 1 if d_row > d_col else d_row  # d_row's position inside r
            row_factor = (r / jnp.mean(r, axis=r_axis, keepdims=True)) ** -0.5
            col_factor = c**-0.5
            out = g * jnp.expand_dims(row_factor, d_col) * jnp.expand_dims(col_factor, d_row)
            return out.astype(g.dtype), r, c, v

        treedef: Any  # its stub lacks flatten_up_to
        leaves_g, treedef = jax.tree.flatten(updates)
        results = [
            leaf(*xs)
            for xs in zip(
                leaves_g,
                treedef.flatten_up_to(state.v_row),
                treedef.flatten_up_to(state.v_col),
                treedef.flatten_up_to(state.v),
                treedef.flatten_up_to(params),
            )
        ]
        out, r, c, v = (jax.tree.unflatten(treedef, [x[i] for x in results]) for i in range(4))
        return out, FactoredState(count=increment(state.count), v_row=r, v_col=c, v=v)

    return GradientTransformation(init_fn, update_fn)


def scale_by_param_block_rms(min_scale: Scalar = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by ``max(rms(param), min_scale)``.

    Args:
      min_scale: lower bound of the parameter RMS the updates are multiplied by.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_param_block_rms(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("min_scale", min_scale, schedule_ok=False)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_param_block_rms")

        def leaf(u, p):
            rms = jnp.sqrt(mean_sq(p)) if p.size else jnp.zeros((), p.dtype)
            return (u * jnp.maximum(rms, min_scale).astype(u.dtype)).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)


def adafactor(
    learning_rate: Optional[ScalarOrSchedule] = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Scalar = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Scalar = 1.0,
    momentum: Optional[Scalar] = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: Optional[Scalar] = None,
    eps: Scalar = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018, https://arxiv.org/abs/1804.04235).

    ::

        u_t = g_t / sqrt(R_t C_t / mean(R_t))        (factored rms; see scale_by_factored_rms)
        u_t = u_t / max(1, rms(u_t) / clipping_threshold)
        u_t = lr * u_t * max(rms(p_{t-1}), 1e-3)     (multiply_by_parameter_scale)
        u_t = EMA_momentum(u_t)                       (if momentum)
        p_t = p_{t-1} - (u_t + weight_decay_rate * p_{t-1})

    ``learning_rate=None`` means 0.01 (the paper's relative step uses a schedule; pass one).

    Args:
      learning_rate: a number or a schedule; None: 0.01.
      min_dim_size_to_factor: factor the second moment of a leaf only if its two largest
        dimensions are at least this large.
      decay_rate: ``b2_t = 1 - t^(-decay_rate)``.
      decay_offset: subtracted from ``t`` in ``b2_t`` (for fine-tuning).
      multiply_by_parameter_scale: scale the step by ``max(RMS(p), 1e-3)``.
      clipping_threshold: clip the update's RMS per leaf to this (None: no clipping).
      momentum: first-moment decay (None: no first moment).
      dtype_momentum: dtype of the first moment.
      weight_decay_rate: decoupled decay ``weight_decay_rate * p``, added after the learning
        rate (None: off).
      eps: regularizes the squared gradient.
      factored: factor the second moment of large matrices (False: full, like RMSProp).
      weight_decay_mask: which parameters decay (None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adafactor(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    lr = 0.01 if learning_rate is None else learning_rate
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    parts.append(scale_by_learning_rate(lr, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    parts.append(scale(-1.0))
    return chain(*parts)
