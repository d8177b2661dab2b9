"""MADGRAD: momentumized, adaptive, dual-averaged gradient descent (Defazio & Jelassi 2021)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_nonneg,
    check_same_structure,
    check_scalar,
    fresh_copy,
    increment,
    is_zero,
    require_params,
    resolve,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]


def _wide(dtype: Any) -> Any:
    """float16 sums in float32 (``lambda_k g_k`` grows like ``k^1.5``)."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype) == jnp.float16 else jnp.dtype(dtype)


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad` (names as in optax.contrib): the step ``count``,
    the weighted sum of squared gradients ``grad_sum_sq`` (``G_k``), the weighted sum of
    gradients ``s`` (``s_k``) and the dual-averaging anchor ``x0``."""

    count: StepCount
    grad_sum_sq: Any
    s: Any
    x0: Any


def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar = 0.9,
    eps: Scalar = 1e-6,
    *,
    decoupled_weight_decay: Scalar = 0.0,
) -> GradientTransformation:
    """MADGRAD's step ``x_{k+1} - x_k`` (the learning rate is inside; see :func:`madgrad`).

    Args:
      learning_rate: a number or a schedule of the step count.
      momentum: the interpolation ``c = 1 - momentum`` towards the dual-averaged point, in
        [0, 1).
      eps: added to the learning rate and to the cube root.
      decoupled_weight_decay: the authors' ``decouple_decay``: ``-(lr + eps) * wd * x_k``
        added to the step.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`MadgradState` (it needs
      ``params``).

    Example:
      >>> tx = jz.scale_by_madgrad(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("weight_decay", decoupled_weight_decay, schedule_ok=False)
    decay = not is_zero(decoupled_weight_decay)

    def init_fn(params):
        return MadgradState(
            count=zero_count(),
            grad_sum_sq=jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params),
            s=jax.tree.map(lambda p: jnp.zeros(p.shape, _wide(p.dtype)), params),
            x0=jax.tree.map(lambda p: fresh_copy(p, _wide(p.dtype)), params),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_madgrad")
        check_same_structure(updates, state.s, "scale_by_madgrad")
        k = state.count
        lr = resolve(learning_rate, k) + eps
        lamb = lr * jnp.sqrt(k + 1.0)

        def leaf(g, gsq, s, x0, p):
            gsq = (gsq + lamb * abs_sq_in(g, gsq.dtype)).astype(gsq.dtype)
            s = (s + lamb * g.astype(s.dtype)).astype(s.dtype)
            sigma = jnp.cbrt(gsq) + eps
            # 0 / 0 (eps = 0 and no gradient yet) is no step, as in the authors' code
            ratio = jnp.where(sigma == 0, jnp.zeros_like(s), s / sigma.astype(s.dtype))
            z = x0 - ratio
            x = p.astype(s.dtype)
            u = (1 - momentum) * (z - x)  # (1 - momentum) * z + momentum * x - x
            if decay:
                wd = lr * decoupled_weight_decay * x
                u = u - wd
                # with momentum 0 the authors re-derive x0 from the decayed parameters
                x0 = x0 - jnp.where(jnp.asarray(momentum) == 0, wd, jnp.zeros_like(wd))
            return u.astype(g.dtype), gsq, s, x0.astype(s.dtype)

        tdef = jax.tree.structure(updates)
        out = [
            leaf(*xs)
            for xs in zip(
                *(jax.tree.leaves(t) for t in (updates, state.grad_sum_sq, state.s, state.x0)),
                jax.tree.leaves(params),
            )
        ]
        u, gsq, s, x0 = (jax.tree.unflatten(tdef, [o[i] for o in out]) for i in range(4))
        return u, MadgradState(count=increment(k), grad_sum_sq=gsq, s=s, x0=x0)

    def lr_at(k):  # the step's lr + eps, as update_fn computes it
        return resolve(learning_rate, k) + eps

    spec = BlockSpec(
        "scale_by_madgrad",
        elementwise=True,
        stage="madgrad",
        scalars={
            "lamb": lambda k: lr_at(k) * jnp.sqrt(k + 1.0),
            "one_minus_momentum": 1 - momentum,
            "eps": eps,
            "lr_wd": lambda k: lr_at(k) * decoupled_weight_decay,
            "decay": float(decay),
            "decay_x0": lambda k: jnp.logical_and(decay, jnp.asarray(momentum) == 0).astype(
                jnp.float32
            ),
        },
        buffers=("grad_sum_sq", "s", "x0"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar = 0.9,
    weight_decay: Scalar = 0.0,
    eps: Scalar = 1e-6,
    *,
    decouple_decay: bool = False,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi 2021, https://arxiv.org/abs/2101.11075).

    At step ``k = 0, 1, ...`` with ``lambda_k = (lr_k + eps) * sqrt(k + 1)`` and ``x_0`` the
    initial parameters::

        g_k  <- g_k + weight_decay * x_k          (L2, unless decouple_decay)
        G_{k+1} = G_k + lambda_k g_k^2;   s_{k+1} = s_k + lambda_k g_k
        z_{k+1} = x_0 - s_{k+1} / (G_{k+1}^(1/3) + eps)
        x_{k+1} = momentum * x_k + (1 - momentum) * z_{k+1}
                  (- (lr_k + eps) * weight_decay * x_k   if decouple_decay)

    Blocks: ``add_decayed_weights -> scale_by_madgrad`` (the learning rate is inside).
    Matches ``optax.contrib.madgrad``, the authors' ``madgrad.MADGRAD`` and
    pytorch_optimizer's ``MADGRAD`` to rounding. Where they differ: the authors' code skips
    ``+ eps`` when ``lr == 0`` (both here and optax always add it); with ``momentum = 0``
    the authors re-derive ``x_0 = x_k + s_k / sigma_k`` each step instead of storing it (the
    same point, unless the parameters change outside the step: their decoupled decay then
    moves ``x_0``, as it does here); with ``eps = 0`` and a coordinate that has seen no
    gradient, optax computes ``0 / 0 = nan``, the authors' code (and this one) no step.
    ``decouple_decay`` is the authors' experimental AdamW-style decay (pytorch_optimizer's
    ``weight_decouple``); optax has only the L2 form.

    Args:
      learning_rate: a number or a schedule of the step count.
      momentum: in [0, 1); 0 is plain dual averaging.
      weight_decay: L2 strength (or the decoupled decay's, with ``decouple_decay``).
      eps: added to the learning rate and to the cube root of ``G``.
      decouple_decay: decay the parameters directly instead of adding ``wd * x`` to the
        gradient.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.madgrad(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    if decouple_decay:
        return scale_by_madgrad(learning_rate, momentum, eps, decoupled_weight_decay=weight_decay)
    block = scale_by_madgrad(learning_rate, momentum, eps)
    return block if is_zero(weight_decay) else chain(add_decayed_weights(weight_decay), block)
