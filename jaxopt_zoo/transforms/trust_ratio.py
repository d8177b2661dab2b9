"""Layer-wise trust ratio (LARS, LAMB)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    check_nonneg,
    check_same_structure,
    require_params,
    sum_sq,
)


def scale_by_trust_ratio(min_norm=0.0, trust_coefficient=1.0, eps=0.0) -> GradientTransformation:
    """Scale each leaf's update by ``trust_coefficient * ||p|| / (||u|| + eps)``.

    Norms are per leaf and floored at ``min_norm``; where either norm is zero the ratio is 1.
    (You et al. 2017, LARS; You et al. 2020, LAMB.)

    Args:
      min_norm: floor of both norms.
      trust_coefficient: ``eta``.
      eps: added to ``||u||``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_trust_ratio(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("min_norm", min_norm, schedule_ok=False)
    check_nonneg("trust_coefficient", trust_coefficient, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_trust_ratio")
        check_same_structure(updates, params, "scale_by_trust_ratio")

        def leaf(u, p):
            # norms, ratio and product in float32 for float16/bfloat16 leaves: a float16
            # norm overflows, and ||p|| / ||u|| with ||u|| at the floor is ~1e5 (times a
            # zero update that was nan)
            p_norm = jnp.maximum(jnp.sqrt(sum_sq(p)), min_norm)
            u_norm = jnp.maximum(jnp.sqrt(sum_sq(u)), min_norm)
            ratio = trust_coefficient * p_norm / (u_norm + eps)
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, ratio)
            return (u * ratio).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)
