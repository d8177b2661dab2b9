"""AdEMAMix: Adam with a second, slow momentum (Pagliardini et al. 2024)."""

from __future__ import annotations

import math
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
    check_int,
    check_nonneg,
    check_same_structure,
    increment,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.optim._common import init_moments, moment_dtype, scaled_with_decay


def _log(b: Any, dt: Any, count: Any = None) -> jax.Array:
    """``log(b)``, in float64 for a Python number (``b`` near 1 loses digits in float32)."""
    if isinstance(b, (int, float)):
        return jnp.asarray(math.log(b), dt)
    return jnp.log(jnp.asarray(resolve(b, count), dt))


class ScaleByAdemamixState(NamedTuple):
    """Step count, fast EMA ``m1``, slow EMA ``m2`` and second moment ``nu``."""

    count: StepCount
    m1: Any
    m2: Any
    nu: Any


def scale_by_ademamix(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any | None = None,
    *,
    alpha_warmup_steps: int | None = None,
    b3_warmup_steps: int | None = None,
) -> GradientTransformation:
    """AdEMAMix's direction ``(m1_hat + alpha_t * m2) / (sqrt(nu_hat + eps_root) + eps)``.

    The moments, the warmups and the references are in :func:`ademamix`.

    Args:
      b1: decay of the fast EMA ``m1``, in [0, 1).
      b2: decay of the second moment ``nu``, in [0, 1).
      b3: decay of the slow EMA ``m2`` (a number or a schedule of the 0-based count).
      alpha: weight of the slow EMA (a number or a schedule).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of ``m1`` and ``m2`` (default: the parameter's).
      alpha_warmup_steps: linear warmup of ``alpha`` over this many steps (``None``: none).
      b3_warmup_steps: warmup of ``b3`` from ``b1``, linear in half-life (``None``: none).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByAdemamixState``.

    Example:
      >>> tx = jz.scale_by_ademamix(alpha=5.0)
      >>> g = {"w": jnp.ones(2)}
      >>> updates, state = tx.update(g, tx.init(g))
      >>> round(float(updates["w"][0]), 4)  # 1 + alpha * (1 - b3): m2 is not bias-corrected
      1.0005
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_decay("b3", b3)
    check_nonneg("alpha", alpha)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("eps_root", eps_root, schedule_ok=False)
    for name, w in (
        ("alpha_warmup_steps", alpha_warmup_steps),
        ("b3_warmup_steps", b3_warmup_steps),
    ):
        if w is not None:
            check_int(name, w, low=1)

    def init_fn(params):
        m1, nu = init_moments(params, mu_dtype)
        m2 = jax.tree.map(lambda p: jnp.zeros(p.shape, moment_dtype(p, mu_dtype)), params)
        return ScaleByAdemamixState(count=zero_count(), m1=m1, m2=m2, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.m1, "scale_by_ademamix")
        dt = scalar_dtype(updates)
        k = state.count
        t = k.astype(dt) + 1
        a = jnp.asarray(resolve(alpha, k), dt)
        if alpha_warmup_steps is not None:
            a = jnp.minimum(t * a / alpha_warmup_steps, a)
        # w3 = 1 - b3_t, computed without cancellation (b3 is close to 1)
        w3 = 1 - jnp.asarray(resolve(b3, k), dt)
        if b3_warmup_steps is not None:
            s = jnp.minimum(t / b3_warmup_steps, 1)
            lb1, lb3 = _log(b1, dt), _log(b3, dt, k)
            w3 = jnp.maximum(-jnp.expm1(lb1 * lb3 / ((1 - s) * lb3 + s * lb1)), w3)
        m1 = jax.tree.map(
            lambda g, m: (b1 * m + (1 - b1) * g.astype(m.dtype)).astype(m.dtype), updates, state.m1
        )
        m2 = jax.tree.map(  # m + w3 (g - m): the slow EMA, as a lerp
            lambda g, m: (m + w3.astype(m.real.dtype) * (g.astype(m.dtype) - m)).astype(m.dtype),
            updates,
            state.m2,
        )
        nu = jax.tree.map(
            lambda g, v: (b2 * v + (1 - b2) * abs_sq_in(g, v.dtype)).astype(v.dtype),
            updates,
            state.nu,
        )
        bc1 = 1 - jnp.asarray(b1, dt) ** t
        bc2 = 1 - jnp.asarray(b2, dt) ** t

        def direction(g, f, s, v):
            num = f / bc1.astype(f.real.dtype) + a.astype(s.real.dtype) * s
            den = jnp.sqrt(v / bc2.astype(v.dtype) + eps_root) + eps
            return (num / den).astype(g.dtype)

        out = jax.tree.map(direction, updates, m1, m2, nu)
        return out, ScaleByAdemamixState(count=increment(k), m1=m1, m2=m2, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    *,
    alpha_warmup_steps: int | None = None,
    b3_warmup_steps: int | None = None,
) -> GradientTransformation:
    r"""AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older",
    https://arxiv.org/abs/2409.03032).

    AdamW whose numerator adds a slow EMA of the gradients (``b3`` close to 1, no bias
    correction, so it fills slowly). At step ``t = 1, 2, ...``::

        m1_t = b1 m1_{t-1} + (1 - b1) g_t;   m2_t = b3_t m2_{t-1} + (1 - b3_t) g_t
        nu_t = b2 nu_{t-1} + (1 - b2) g_t^2
        p_t = p_{t-1} - lr * ((m1_t / (1 - b1^t) + alpha_t m2_t)
                              / (sqrt(nu_t / (1 - b2^t) + eps_root) + eps) + wd * p_{t-1})

    Warmups (the paper's schedulers; ``T_a = alpha_warmup_steps``, ``T_3 =
    b3_warmup_steps``): ``alpha_t = alpha * min(t / T_a, 1)``, and ``b3_t`` moves from
    ``b1`` to ``b3`` linearly in half-life, ``log b3_t = log b1 log b3 / ((1 - s) log b3 +
    s log b1)`` with ``s = min(t / T_3, 1)``. Without them, ``alpha`` and ``b3`` may also be
    schedules of the 0-based step count, as in optax.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2, b3: decays of the fast EMA, the second moment and the slow EMA.
      alpha: weight of the slow EMA.
      eps, eps_root: added outside / inside the square root.
      mu_dtype: dtype of the two EMAs (default: the parameter's).
      weight_decay, mask: decoupled weight decay (the paper's AdamW form).
      alpha_warmup_steps, b3_warmup_steps: the warmups above (``None``: none).

    Returns:
      ``chain(scale_by_ademamix, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.ademamix(1e-3, alpha_warmup_steps=1000, b3_warmup_steps=1000)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.ademamix`` (no warmup options there: pass them as ``alpha`` and
    ``b3`` schedules of ``count + 1``) and ``pytorch_optimizer.AdEMAMix`` (one
    ``t_alpha_beta3`` for both warmups; its weight decay is coupled unless
    ``weight_decouple=True``).
    """
    return scaled_with_decay(
        scale_by_ademamix(
            b1,
            b2,
            b3,
            alpha,
            eps,
            eps_root,
            mu_dtype,
            alpha_warmup_steps=alpha_warmup_steps,
            b3_warmup_steps=b3_warmup_steps,
        ),
        learning_rate,
        weight_decay,
        mask,
    )
