"""ACProp: AdaBelief with the denominator of the previous step (Zhuang et al. 2021)."""

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
    check_betas,
    check_same_structure,
    compute_dtype,
    ema_update,
    increment,
    moment_scalars,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay


class ScaleByAcpropState(NamedTuple):
    """Step ``count``, first moment ``mu`` and ``nu``, the EMA of the squared prediction
    error ``|g - mu|^2`` (optax keeps these in a ``ScaleByBeliefState``)."""

    count: StepCount
    mu: Any
    nu: Any


def scale_by_acprop(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-16, eps_root: Scalar = 1e-16
) -> GradientTransformation:
    """``g_t / (sqrt(s_hat_{t-1}) + eps)``: the gradient over the belief of the previous step.

    The equations are in :func:`acprop`.

    Args:
      b1: decay rate of the first moment ``m``, in [0, 1).
      b2: decay rate of ``s``, the EMA of ``|g - m|^2``, in [0, 1).
      eps: added outside the square root.
      eps_root: added to ``s`` at every step.

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByAcpropState``.

    Example:
      >>> tx = jz.chain(jz.scale_by_acprop(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> updates["w"]  # the first step divides by 1: s_hat_0 is taken as 1
      Array([-0.01, -0.01, -0.01], dtype=float32)
    """
    check_betas(b1, b2, eps, eps_root)

    def init_fn(params):
        mu, nu = init_moments(params)
        return ScaleByAcpropState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_acprop")
        k = state.count
        mu = ema_update(updates, state.mu, b1)
        nu = jax.tree.map(
            lambda g, m, s: (
                b2 * s + (1 - b2) * abs_sq_in(g.astype(m.dtype) - m, s.dtype) + eps_root
            ).astype(s.dtype),
            updates,
            state.mu,  # the prediction error is measured against the previous mean
            state.nu,
        )

        def scale(g, s):
            dt = compute_dtype(s.dtype)
            corr = 1 - jnp.asarray(b2, dt) ** jnp.maximum(k, 1).astype(dt)
            s_hat = jnp.where(k == 0, 1, s.astype(dt) / corr)
            return (g / (jnp.sqrt(s_hat) + eps).astype(g.real.dtype)).astype(g.dtype)

        out = jax.tree.map(scale, updates, state.nu)
        return out, ScaleByAcpropState(count=increment(k), mu=mu, nu=nu)

    def inv_prev_bc2(k):  # 1 / corr: the previous step's bias correction (k >= 1)
        return 1 / (1 - jnp.asarray(b2, jnp.float32) ** jnp.maximum(k, 1).astype(jnp.float32))

    spec = BlockSpec(
        "scale_by_acprop",
        elementwise=True,
        stage="acprop",
        scalars={
            **moment_scalars(b1, b2, eps, eps_root, debias=False),
            "inv_prev_bc2": inv_prev_bc2,
            "first": lambda k: (k == 0).astype(jnp.float32),
        },
        buffers=("mu", "nu"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""ACProp (Zhuang et al. 2021, "Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods", https://arxiv.org/abs/2110.05454).

    AdaBelief's centred second moment, used asynchronously: the step at ``t`` divides the
    gradient by the statistic of steps ``< t``, so numerator and denominator are independent.
    At step ``t = 1, 2, ...``::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_{t-1}|^2 + eps_root
        s_hat_{t-1} = s_{t-1} / (1 - b2^(t-1))      (s_hat_0 = 1)
        p_t = p_{t-1} - lr_t (g_t / (sqrt(s_hat_{t-1}) + eps) + wd p_{t-1})

    As ``optax.contrib.acprop`` (0.2.8), whose code measures the prediction error against
    the previous mean ``m_{t-1}`` (its docstring writes ``m_t``) and whose numerator is the
    gradient itself; ``m`` enters only through ``s``.

    The step is unbounded: an element whose gradients were exactly 0 so far has
    ``s_hat = eps_root / (1 - b2^(t-1))``, so its first nonzero gradient is multiplied by
    ``~3e5`` (defaults, t = 2) before the learning rate. In float16 that intermediate passes
    65504 and the update is ``inf``, as ``optax.contrib.acprop``'s is (measured: -inf in
    float16, -2213.6 in float32 at lr 1e-3 for gradients 0 then 0.7). Use float32 or bfloat16
    parameters, or a larger ``eps_root``, where gradients can be exactly 0.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1: decay rate of ``m``, in [0, 1).
      b2: decay rate of ``s``, in [0, 1).
      eps: added outside the square root.
      eps_root: added to ``s`` at every step.
      weight_decay, mask: decoupled weight decay, multiplied by the learning rate.

    Returns:
      ``chain(scale_by_acprop, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.acprop(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(
        scale_by_acprop(b1, b2, eps, eps_root), learning_rate, weight_decay, mask
    )
