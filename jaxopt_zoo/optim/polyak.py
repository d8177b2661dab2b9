"""The Polyak step size: SGD whose step is the loss gap over the squared gradient norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_nonneg,
    check_scalar,
    tree_sum_squares,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim.sgd import sgd

_VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: Scalar = 0.0,
    max_learning_rate: Scalar = 1.0,
    eps: Scalar = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """Multiply the updates ``u`` by ``min((f(p) - f_min) / (||u||^2 + eps), max_learning_rate)``,
    where ``f(p)`` is the ``value`` keyword argument of ``update`` (the loss at ``params``)
    and ``||.||`` the norm over the whole tree.

    The step is 0 where ``||u||^2 + eps`` is at most float64's machine epsilon
    (``2.2e-16``), as in optax. ``variant="sps+"`` clips a negative gap at 0.

    Args:
      f_min: a lower bound of the loss (0 for interpolating models).
      max_learning_rate: the largest step, > 0.
      eps: added to the squared norm, >= 0.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``: call ``update(g, state, params,
      value=loss)``.

    Example:
      >>> tx = jz.scale_by_polyak()
      >>> params = {"w": jnp.ones(3)}
      >>> u, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=jnp.array(1.5))
      >>> u["w"]
      Array([0.5, 0.5, 0.5], dtype=float32)
    """
    check_scalar("max_learning_rate", max_learning_rate, low=0.0, low_open=True, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    if variant not in _VARIANTS:
        raise ValueError(f"Invalid variant: {variant!r}. Expected one of {_VARIANTS}.")

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError(
                "scale_by_polyak needs the loss at the current parameters: call "
                "`update(grads, state, params, value=loss)`."
            )
        sq = tree_sum_squares(updates)
        gap = jnp.asarray(value - f_min).astype(sq.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denom = sq + eps
        step = jnp.where(
            denom <= jnp.finfo(jnp.float64).eps,
            jnp.zeros_like(denom),
            jnp.minimum(gap / denom, max_learning_rate),
        )
        out = jax.tree.map(lambda u: (u * step.astype(u.dtype)).astype(u.dtype), updates)
        return out, state

    return describe(
        GradientTransformationExtraArgs(init_fn, update_fn), BlockSpec("scale_by_polyak")
    )


def polyak_sgd(
    max_learning_rate: Scalar = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: Scalar = 0.0,
    eps: Scalar = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """SGD with the Polyak step size (Polyak 1987; Loizou et al. 2021, "Stochastic Polyak
    Step-size for SGD", https://arxiv.org/abs/2002.10542; Berrada et al. 2020).

    ::

        d_t = -scaling * g_t
        p_t = p_{t-1} + min((f(p_{t-1}) - f_min) / (||d_t||^2 + eps), max_learning_rate) * d_t

    With ``scaling = 1`` this is SPS_max: ``step = min(gap / ||g||^2, max_learning_rate)``.
    ``update`` needs the loss: ``update(g, state, params, value=loss)``. ``variant="sps+"``
    clips a negative gap (a loss below ``f_min``) at 0. Identical to ``optax.polyak_sgd``
    (blocks ``sgd(scaling) -> scale_by_polyak``, so ``scaling`` enters the norm too).

    Args:
      max_learning_rate: the largest step, > 0.
      scaling: multiplies the gradient before the step (a number or a schedule).
      f_min: a lower bound of the loss (0 for interpolating models).
      eps: added to the squared norm, >= 0.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> tx = jz.polyak_sgd(max_learning_rate=1.0)
      >>> params = {"w": jnp.ones(3)}
      >>> g, loss = params, 1.5  # the loss 0.5 * ||w||^2 and its gradient
      >>> updates, state = tx.update(g, tx.init(params), params, value=loss)
    """
    return chain(
        sgd(learning_rate=scaling),
        scale_by_polyak(f_min=f_min, max_learning_rate=max_learning_rate, eps=eps, variant=variant),
    )
