"""Simplified AdEMAMix: one undamped momentum mixed with the gradient (Morwani et al. 2025)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    check_decay,
    check_nonneg,
    check_same_structure,
    increment,
    inv_bias_correction,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """Step count ``t``, the momentum ``m`` (a sum, not an average) and the second moment
    ``n``. Field names as in optax.contrib."""

    t: StepCount
    m: Any
    n: Any


def scale_by_simplified_ademamix(
    b1: Scalar = 0.99,
    b2: Scalar = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
) -> GradientTransformation:
    """``(m_t + alpha_t g_t) / (sqrt(n_hat_t + eps_root) + eps)`` with ``m_t = b1 m_{t-1} + g_t``.

    The equations are in :func:`simplified_ademamix`.

    Args:
      b1: decay of the momentum ``m``, in [0, 1).
      b2: decay of the second moment ``n``, in [0, 1).
      alpha: weight of the current gradient (a number or a schedule of the 0-based count).
      eps: added outside the square root.
      eps_root: added inside the square root.

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleBySimplifiedAdEMAMixState``.

    Example:
      >>> tx = jz.scale_by_simplified_ademamix(alpha=2.0)
      >>> g = {"w": jnp.ones(2)}
      >>> updates, state = tx.update(g, tx.init(g))
      >>> round(float(updates["w"][0]), 4)  # (1 + alpha) / (1 + eps)
      3.0
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("alpha", alpha)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("eps_root", eps_root, schedule_ok=False)

    def init_fn(params):
        m, n = init_moments(params)
        return ScaleBySimplifiedAdEMAMixState(t=zero_count(), m=m, n=n)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.m, "scale_by_simplified_ademamix")
        dt = scalar_dtype(updates)
        a = jnp.asarray(resolve(alpha, state.t), dt)
        t = increment(state.t)
        m = jax.tree.map(
            lambda g, m: (b1 * m + g.astype(m.dtype)).astype(m.dtype), updates, state.m
        )
        n = jax.tree.map(
            lambda g, v: (b2 * v + (1 - b2) * abs_sq_in(g, v.dtype)).astype(v.dtype),
            updates,
            state.n,
        )
        bc2 = 1 - jnp.asarray(b2, dt) ** t.astype(dt)

        def direction(g, m, v):
            num = m + a.astype(m.real.dtype) * g.astype(m.dtype)
            den = jnp.sqrt(v / bc2.astype(v.dtype) + eps_root) + eps
            return (num / den).astype(g.dtype)

        out = jax.tree.map(direction, updates, m, n)
        return out, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)

    spec = BlockSpec(
        "scale_by_simplified_ademamix",
        elementwise=True,
        stage="simplified_ademamix",
        scalars={
            "b1": b1,
            "b2": b2,
            "one_minus_b2": 1 - b2,
            "alpha": lambda t: resolve(alpha, t),
            "eps": eps,
            "eps_root": eps_root,
            "inv_bc2": inv_bias_correction(b2),
        },
        buffers=("m", "n"),
        counter="t",
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.99,
    b2: Scalar = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Simplified AdEMAMix (Morwani et al. 2025, "Connections between Schedule-Free
    Optimizers, AdEMAMix, and Accelerated SGD Variants", https://arxiv.org/abs/2502.02431).

    AdEMAMix with one momentum: an undamped sum ``m`` (no ``1 - b1`` factor, so it is about
    ``1 / (1 - b1)`` times an average gradient) plus ``alpha`` times the current gradient,
    over Adam's bias-corrected denominator. At step ``t = 1, 2, ...``::

        m_t = b1 m_{t-1} + g_t
        n_t = b2 n_{t-1} + (1 - b2) |g_t|^2
        p_t = p_{t-1} - lr_t ((m_t + alpha_{t-1} g_t) / (sqrt(n_t / (1 - b2^t) + eps_root) + eps)
                              + wd p_{t-1})

    (``alpha`` a schedule of the 0-based count). ``alpha = 0`` is Adam with the learning
    rate ``lr / (1 - b1)`` and no bias correction of the first moment.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1: decay of the momentum, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      alpha: weight of the current gradient (a number or a schedule).
      eps, eps_root: added outside / inside the square root.
      weight_decay, mask: decoupled weight decay, multiplied by the learning rate.

    Returns:
      ``chain(scale_by_simplified_ademamix, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.simplified_ademamix(1e-4, alpha=10.0)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.simplified_ademamix`` (0.2.8). ``pytorch_optimizer``'s
    ``SimplifiedAdEMAMix`` is another formula (an averaged momentum, ``lerp`` with
    ``1 - b1``, and a different bias correction) and is not a reference here.
    """
    return scaled_with_decay(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        learning_rate,
        weight_decay,
        mask,
    )
