"""Mechanic: a learned scale for any optimizer's updates (Cutkosky et al. 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    StepCount,
    check_int,
    check_nonneg,
    check_same_structure,
    fresh_copy,
    increment,
    require_params,
    scalar_dtype,
    sum_sq,
    tree_real_vdot,
    zero_count,
)


class MechanicState(NamedTuple):
    """The base optimizer's state, the step count, Mechanic's per-beta statistics ``r``,
    ``m``, ``v`` and scales ``s`` (vectors of ``num_betas``) and the reference point ``x0``.
    Field names as in optax.contrib."""

    base_optimizer_state: Any
    count: StepCount
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Any


def _sq_norm(tree: Any, dt: Any) -> jax.Array:
    total = jnp.zeros([], dt)
    for x in jax.tree.leaves(tree):
        total = total + sum_sq(x).astype(dt)
    return total


def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: Scalar = 1e-2,
    eps: Scalar = 1e-8,
    s_init: Scalar = 1e-6,
    num_betas: int = 6,
) -> GradientTransformationExtraArgs:
    r"""Mechanic (Cutkosky, Defazio & Mehta 2023, "Mechanic: A Learning Rate Tuner",
    https://arxiv.org/abs/2306.00144): learns the scale of ``base_optimizer``'s updates.

    Mechanic keeps the sum ``Delta`` of the base optimizer's updates and plays
    ``x_t = x0 + S_t Delta_t`` with ``S_t = sum(s)``, a scale learned by coin betting for each
    of ``num_betas`` decays ``beta_i = 1 - 0.1^i``. At step ``t`` with gradient ``g``, base
    update ``u`` and ``x = x_{t-1}`` (``Delta_{t-1} = (x0 - x) / (S + eps)``, recomputed, so
    no extra buffer; ``x0`` is the parameters at the first ``update``)::

        g' = g + weight_decay S ||g|| / (||x|| + eps) x
        h = <g', Delta_{t-1}>;   Delta_t = Delta_{t-1} - u
        m_i = max(beta_i m_i, |h| + eps);   v_i = beta_i^2 v_i + h^2
        r_i = beta_i r_i + clip(h, -m_i_old, m_i_old) s_i
        s_i = (s_init / num_betas m_i + max(r_i, 0)) / (sqrt(v_i) + eps)
        x_t = x0 - sum(s) Delta_t

    and the update returned is ``x_t - x``. Keep the base optimizer's learning rate at 1 (a
    schedule with peak 1 is fine): Mechanic finds the scale.

    Args:
      base_optimizer: the optimizer whose updates are scaled (extra ``update`` keyword
        arguments are forwarded to it if it accepts them).
      weight_decay: Mechanic's own decay toward 0, on the gradient it sees, >= 0.
      eps: small constant, >= 0.
      s_init: the initial scale, > 0.
      num_betas: the number of decays, >= 1.

    Returns:
      A ``GradientTransformationExtraArgs`` with state ``MechanicState``; ``update`` needs the
      parameters.

    Example:
      >>> tx = jz.mechanize(jz.adam(1.0))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.mechanize`` (0.2.8), whose clip of ``h`` (added after the paper)
    is kept. The statistics are float32 (float64 with float64 parameters; optax: the
    parameters' lowest dtype).
    """
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("s_init", s_init, schedule_ok=False)
    num_betas = check_int("num_betas", num_betas, low=1)
    extra_ok = isinstance(base_optimizer, GradientTransformationExtraArgs)

    def init_fn(params):
        dt = scalar_dtype(params)
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params),
            count=zero_count(),
            r=jnp.zeros([num_betas], dt),
            m=jnp.zeros([num_betas], dt),
            v=jnp.zeros([num_betas], dt),
            s=jnp.full([num_betas], s_init, dt),
            x0=jax.tree.map(fresh_copy, params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "mechanize")
        check_same_structure(updates, state.x0, "mechanize")
        if extra_ok:
            base_updates, base_state = base_optimizer.update(
                updates, state.base_optimizer_state, params, **extra_args
            )
        else:
            base_updates, base_state = base_optimizer.update(
                updates, state.base_optimizer_state, params
            )
        dt = state.s.dtype
        first = state.count == 0
        x0 = jax.tree.map(lambda a, p: jnp.where(first, p, a).astype(a.dtype), state.x0, params)
        s_sum = jnp.sum(state.s)
        decay = (
            weight_decay
            * s_sum
            * jnp.sqrt(_sq_norm(updates, dt))
            / (jnp.sqrt(_sq_norm(params, dt)) + eps)
        )

        def wide(x):
            return x.astype(jnp.promote_types(x.dtype, dt))

        grads = jax.tree.map(lambda g, p: wide(g) + decay * wide(p), updates, params)
        delta_prev = jax.tree.map(lambda x, a: (wide(a) - wide(x)) / (s_sum + eps), params, x0)
        h = tree_real_vdot(grads, delta_prev, dt)
        betas = jnp.asarray([1.0 - 0.1**i for i in range(1, num_betas + 1)], dt)
        clipped_h = jnp.clip(h, -state.m, state.m)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r + clipped_h * state.s
        s = ((s_init / num_betas) * m + jnp.maximum(r, 0)) / (jnp.sqrt(v) + eps)
        s_new = jnp.sum(s)

        def out(x, a, d, u):
            delta = d - wide(u)
            return (wide(a) - s_new * delta - wide(x)).astype(u.dtype)

        new_updates = jax.tree.map(out, params, x0, delta_prev, base_updates)
        return new_updates, MechanicState(
            base_optimizer_state=base_state,
            count=increment(state.count),
            r=r,
            m=m,
            v=v,
            s=s,
            x0=x0,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
