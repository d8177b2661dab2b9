"""ADOPT: Adam with the second moment taken before the current gradient (Taniguchi et al.
2024)."""

from __future__ import annotations

from collections.abc import Callable
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
    scalar_dtype,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.optim._common import moment_dtype, scaled_with_decay


class ScaleByAdoptState(NamedTuple):
    """Step count, first moment ``mu`` (of the normalized gradients) and second moment ``nu``."""

    count: StepCount
    mu: Any
    nu: Any


def _quarter_power(t: jax.Array) -> jax.Array:
    return t**0.25


def _clip(x: jax.Array, c: jax.Array) -> jax.Array:
    """Clip to ``[-c, c]``; real and imaginary parts apart for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jax.lax.complex(jnp.clip(x.real, -c, c), jnp.clip(x.imag, -c, c))
    return jnp.clip(x, -c, c)


def scale_by_adopt(
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] | None = None,
    clip_step_offset: Scalar = 1,
) -> GradientTransformation:
    """ADOPT's direction ``m_t`` (equations in :func:`adopt`); the first call only fills
    ``nu`` and returns zeros.

    Args:
      b1: decay of the momentum of the normalized gradients, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: the floor of ``sqrt(v)``.
      mu_dtype: dtype of ``m`` (default: the parameter's).
      nesterov: return ``b1 m_t + (1 - b1) * clipped`` instead of ``m_t``.
      use_clipping: clip the normalized gradient at ``c(t)``.
      clip_value_fn: the bound ``c`` as a function of the step (``None``: ``t ** 0.25``).
      clip_step_offset: added to the 0-based count before ``clip_value_fn`` (see
        :func:`adopt`).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByAdoptState``.

    Example:
      >>> tx = jz.scale_by_adopt()
      >>> g = {"w": jnp.ones(2)}
      >>> state = tx.init(g)
      >>> u1, state = tx.update(g, state)  # fills nu only
      >>> u2, state = tx.update(g, state)  # (1 - b1) * g / sqrt(nu)
      >>> float(u1["w"][0]), round(float(u2["w"][0]), 4)
      (0.0, 0.1)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("clip_step_offset", clip_step_offset, schedule_ok=False)

    def init_fn(params):
        return ScaleByAdoptState(
            count=zero_count(),
            mu=jax.tree.map(lambda p: jnp.zeros(p.shape, moment_dtype(p, mu_dtype)), params),
            nu=jax.tree.map(lambda p: jnp.zeros(p.shape, stat_dtype(p.dtype)), params),
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_adopt")
        k = state.count
        first = k == 0
        clip = (clip_value_fn or _quarter_power)(
            (k + clip_step_offset).astype(scalar_dtype(updates))
        )

        def normed(g, v):
            wide = jnp.promote_types(v.dtype, g.dtype)  # float32 for float16 gradients
            n = g.astype(wide) / jnp.maximum(jnp.sqrt(v), eps).astype(wide)
            return _clip(n, jnp.asarray(clip, v.dtype)) if use_clipping else n

        ns = jax.tree.map(normed, updates, state.nu)
        mu = jax.tree.map(
            lambda m, n: jnp.where(first, m, b1 * m + (1 - b1) * n.astype(m.dtype)).astype(m.dtype),
            state.mu,
            ns,
        )
        if nesterov:
            out = jax.tree.map(
                lambda m, n, g: jnp.where(first, 0, b1 * m + (1 - b1) * n.astype(m.dtype)).astype(
                    g.dtype
                ),
                mu,
                ns,
                updates,
            )
        else:
            out = jax.tree.map(lambda m, g: jnp.where(first, 0, m).astype(g.dtype), mu, updates)
        nu = jax.tree.map(
            lambda v, g: jnp.where(
                first, abs_sq_in(g, v.dtype), b2 * v + (1 - b2) * abs_sq_in(g, v.dtype)
            ).astype(v.dtype),
            state.nu,
            updates,
        )
        return out, ScaleByAdoptState(count=increment(k), mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    mu_dtype: Any | None = None,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] | None = None,
    clip_step_offset: Scalar = 1,
) -> GradientTransformation:
    r"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate", https://arxiv.org/abs/2411.02853).

    The second moment divides the gradient *before* it takes that gradient in, and
    momentum is applied after the division. With ``g_t`` the gradient of call ``t = 1, 2,
    ...``::

        t = 1:   v_1 = g_1^2;   no step (m_1 = 0)
        t >= 2:  m_t = b1 m_{t-1} + (1 - b1) clip(g_t / max(sqrt(v_{t-1}), eps), c(t))
                 p_t = p_{t-1} - lr * (m_t + weight_decay * p_{t-1})
                 v_t = b2 v_{t-1} + (1 - b2) g_t^2

    with ``c(t) = clip_value_fn(t - 1 + clip_step_offset)`` (default ``t^(1/4)``).

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2, eps: moment decays and the floor of ``sqrt(v)``.
      mu_dtype: dtype of ``m`` (default: the parameter's).
      weight_decay, mask: decoupled weight decay, scaled by the learning rate.
      nesterov: step along ``b1 m_t + (1 - b1) * clipped`` (optax's option).
      use_clipping, clip_value_fn: the clipping and its bound as a function of the step
        (``None``: ``t ** 0.25``).
      clip_step_offset: 1 (default): ``clip_value_fn`` gets the 1-based count of calls, as in
        the authors' code and ``pytorch_optimizer.ADOPT`` (2^(1/4) at the first step that
        moves); 0: ``optax.contrib.adopt``'s count of previous calls (1^(1/4)), which is the
        paper's indexing (``v_0 = g_0^2``, updates ``t >= 1`` clipped at ``t^(1/4)``). The
        two are 0.37% apart over 120 steps of a noisy quadratic.

    Returns:
      ``chain(scale_by_adopt, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.adopt(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Coupled weight decay (``pytorch_optimizer``'s default ``weight_decouple=False``):
    ``chain(add_l2_regularization(wd), adopt(lr))``.
    """
    return scaled_with_decay(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
            clip_step_offset=clip_step_offset,
        ),
        learning_rate,
        weight_decay,
        mask,
    )
