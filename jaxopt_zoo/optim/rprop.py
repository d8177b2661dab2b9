"""Rprop: per-element step sizes adapted from the sign agreement of successive gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    chain,
    check_same_structure,
    check_scalar,
    real_dtype,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._multi import tree_map_multi
from jaxopt_zoo.transforms.learning_rate import scale


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: the per-element ``step_sizes`` and the previous
    output ``prev_updates`` (``step_size * sign(g)``, or 0 after a sign change)."""

    step_sizes: Any
    prev_updates: Any


def scale_by_rprop(
    learning_rate: Scalar,
    eta_minus: Scalar = 0.5,
    eta_plus: Scalar = 1.2,
    min_step_size: Scalar = 1e-6,
    max_step_size: Scalar = 50.0,
    *,
    current_step: bool = False,
    clamp_unchanged: bool = False,
) -> GradientTransformation:
    """Rprop's step ``step_size * sign(g)`` (a descent direction to subtract).

    Per element, with ``s = g_t * u_{t-1}`` (``u`` the previous output):
    ``s > 0``: ``step *= eta_plus``; ``s < 0``: ``step *= eta_minus`` and the output is 0
    (the gradient is forgotten, so the next step does not shrink again); then the step is
    clipped to ``[min_step_size, max_step_size]``. Where ``s == 0`` optax leaves the step
    size as it is, unclipped; ``torch.optim.Rprop`` clips it too (``clamp_unchanged=True``),
    which differs only while a step size lies outside the bounds (``learning_rate`` outside
    them).

    optax outputs the *previous* step's ``u_{t-1}`` (0 where ``s < 0``), so its steps lag
    one behind and its first update is 0; ``current_step=True`` outputs this step's ``u_t``
    (the paper and ``torch.optim.Rprop``).

    Complex parameters use ``s = Re(g_t * conj(u_{t-1}))`` and ``sign(g) = g / |g|``, with
    real step sizes.

    Args:
      learning_rate: the initial step size, > 0.
      eta_minus: shrink factor after a sign change, in (0, 1].
      eta_plus: growth factor while the sign holds, >= 1.
      min_step_size: the smallest step size, >= 0.
      max_step_size: the largest step size, >= ``min_step_size``.
      current_step: output this step's ``u_t`` rather than optax's ``u_{t-1}``.
      clamp_unchanged: clip the step size also where ``s == 0`` (``torch.optim.Rprop``).

    Returns:
      An ``optax.GradientTransformation`` (its output is to be negated: see :func:`rprop`).

    Example:
      >>> tx = jz.chain(jz.scale_by_rprop(1e-2), jz.scale(-1.0))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_scalar("learning_rate", learning_rate, low=0.0, low_open=True, schedule_ok=False)
    check_scalar("eta_minus", eta_minus, low=0.0, high=1.0, low_open=True, schedule_ok=False)
    check_scalar("eta_plus", eta_plus, low=1.0, schedule_ok=False)
    check_scalar("min_step_size", min_step_size, low=0.0, schedule_ok=False)
    check_scalar("max_step_size", max_step_size, low=0.0, schedule_ok=False)
    if (
        isinstance(min_step_size, (int, float))
        and isinstance(max_step_size, (int, float))
        and min_step_size > max_step_size
    ):
        raise ValueError(
            f"Invalid step size bounds: min_step_size={min_step_size!r} > "
            f"max_step_size={max_step_size!r}. Expected min_step_size <= max_step_size."
        )

    def init_fn(params):
        return ScaleByRpropState(
            step_sizes=jax.tree.map(
                lambda p: jnp.full(p.shape, learning_rate, real_dtype(p.dtype)), params
            ),
            prev_updates=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.step_sizes, "scale_by_rprop")

        def leaf(g, step, prev):
            g = g.astype(prev.dtype)
            s = jnp.real(g * jnp.conj(prev))  # g * prev for real; direction agreement for complex
            factor = jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1.0))
            grown = jnp.clip(step * factor.astype(step.dtype), min_step_size, max_step_size)
            new_step = grown if clamp_unchanged else jnp.where(s == 0, step, grown)
            new_step = new_step.astype(step.dtype)
            new = jnp.where(s < 0, jnp.zeros_like(g), new_step * jnp.sign(g)).astype(prev.dtype)
            out = new if current_step else jnp.where(s < 0, jnp.zeros_like(prev), prev)
            return out, new, new_step

        out, new, steps = tree_map_multi(leaf, 3, updates, state.step_sizes, state.prev_updates)
        out = jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates)
        return out, ScaleByRpropState(step_sizes=steps, prev_updates=new)

    spec = BlockSpec(
        "scale_by_rprop",
        elementwise=True,
        stage="rprop",
        scalars={
            "eta_minus": eta_minus,
            "eta_plus": eta_plus,
            "min_step_size": min_step_size,
            "max_step_size": max_step_size,
            "current_step": float(current_step),
            "clamp_unchanged": float(clamp_unchanged),
        },
        buffers=("step_sizes", "prev_updates"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def rprop(
    learning_rate: Scalar,
    eta_minus: Scalar = 0.5,
    eta_plus: Scalar = 1.2,
    min_step_size: Scalar = 1e-6,
    max_step_size: Scalar = 50.0,
    *,
    current_step: bool = False,
    clamp_unchanged: bool = False,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun 1993, "A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm"; the variant without weight backtracking, iRprop-).

    ::

        s      = g_t * u_{t-1}
        step_t = clip(step_{t-1} * (eta_plus if s > 0, eta_minus if s < 0), min, max)
                 (unchanged where s == 0)
        u_t    = 0 if s < 0 else step_t * sign(g_t)
        p_t    = p_{t-1} - (0 if s < 0 else u_{t-1})         (optax, the default)
        p_t    = p_{t-1} - u_t                                (current_step=True)

    Meant for full-batch training. The default is ``optax.rprop``, which applies each step
    one step late (the stored ``u_{t-1}``; its first update is 0). The paper and
    ``torch.optim.Rprop`` apply ``u_t``: ``current_step=True``. ``torch.optim.Rprop`` also
    clips the step size where ``s == 0`` (``clamp_unchanged=True``; this matters only for a
    ``learning_rate`` outside ``[min_step_size, max_step_size]``).

    Args:
      learning_rate: the initial step size (a number, not a schedule), > 0.
      eta_minus: shrink factor after a sign change, in (0, 1].
      eta_plus: growth factor while the sign holds, >= 1.
      min_step_size: the smallest step size.
      max_step_size: the largest step size.
      current_step: apply this step's ``u_t`` (paper, torch) rather than optax's ``u_{t-1}``.
      clamp_unchanged: clip the step size also where ``s == 0`` (``torch.optim.Rprop``).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.rprop(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return chain(
        scale_by_rprop(
            learning_rate,
            eta_minus,
            eta_plus,
            min_step_size,
            max_step_size,
            current_step=current_step,
            clamp_unchanged=clamp_unchanged,
        ),
        scale(-1.0),
    )
