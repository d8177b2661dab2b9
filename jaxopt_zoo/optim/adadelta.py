"""AdaDelta."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    ema_update,
    is_zero,
    stat_dtype,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: running averages ``e_g`` of squared gradients and
    ``e_x`` of squared updates."""

    e_g: Any  # running average of squared gradients
    e_x: Any  # running average of squared updates


def scale_by_adadelta(rho: Scalar = 0.9, eps: Scalar = 1e-6) -> GradientTransformation:
    """AdaDelta's unit-correcting rescaling ``sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g``.

    Args:
      rho: decay rate of ``E[g^2]`` and ``E[dx^2]``, in [0, 1).
      eps: added inside both square roots.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adadelta(rho=0.95), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("rho", rho, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        z = jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params)
        return ScaleByAdaDeltaState(e_g=z, e_x=jax.tree.map(jnp.zeros_like, z))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.e_g, "scale_by_adadelta")
        e_g = ema_update(updates, state.e_g, rho, order=2)
        # One square root of the ratio, not sqrt(ex + eps) / sqrt(eg + eps): the latter's
        # sqrt(ex + eps) reads only the state, so XLA:CPU computes it as a separate pass over
        # every parameter that its scheduler starts at the top of the train step, beside the
        # forward and backward passes; this made the fused CNN step about 1.5-2x slower
        # (BENCHMARKS.md, "Adadelta's slow step"). Same value up to rounding.
        out = jax.tree.map(
            lambda g, eg, ex: (g * jnp.sqrt((ex + eps) / (eg + eps))).astype(g.dtype),
            updates,
            e_g,
            state.e_x,
        )
        e_x = ema_update(out, state.e_x, rho, order=2)
        return out, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return describe(
        GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_adadelta", elementwise=True)
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformation:
    """AdaDelta (Zeiler 2012, https://arxiv.org/abs/1212.5701).

    ::

        g_t   = grad_t + weight_decay * p_{t-1}
        E[g^2]_t  = rho * E[g^2]_{t-1} + (1 - rho) * g_t^2
        dx_t  = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho * E[dx^2]_{t-1} + (1 - rho) * dx_t^2
        p_t   = p_{t-1} - lr * dx_t

    The default ``learning_rate=1.0`` is the paper's and PyTorch's, so ``adadelta()``
    descends (optax 0.2.8's ``adadelta()`` with no learning rate ascends). Keras' defaults
    differ: ``compat.keras.adadelta``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
        Default 1.0 (the paper's).
      rho: decay rate of the running averages, in [0, 1).
      eps: added inside both square roots (it also starts the first steps).
      weight_decay: coupled L2 penalty ``weight_decay * p`` added to the gradient.
      weight_decay_mask: which parameters the penalty applies to (tree of booleans or a
        function of the params; None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adadelta()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    parts = []
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, weight_decay_mask))
    parts += [scale_by_adadelta(rho, eps), scale_by_learning_rate(learning_rate)]
    return chain(*parts)
