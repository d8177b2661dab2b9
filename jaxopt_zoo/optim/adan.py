"""Adan: adaptive Nesterov momentum from a moving average of gradient differences."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_betas,
    check_decay,
    check_nonneg,
    check_same_structure,
    compute_dtype,
    increment,
    inv_bias_correction,
    is_zero,
    require_params,
    resolve,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay
from jaxopt_zoo.optim._multi import tree_map_multi
from jaxopt_zoo.transforms.learning_rate import ScaleByScheduleState, scale_by_learning_rate
from jaxopt_zoo.transforms.masking import masked


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`: step ``count``, the moving averages of the gradient
    ``mu``, of the gradient difference ``delta`` and of the squared look-ahead gradient
    ``nu``, and the previous gradient ``prev_grad``."""

    count: StepCount
    mu: Any
    delta: Any
    nu: Any
    prev_grad: Any


def scale_by_adan(
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    *,
    paper_weights: bool = False,
) -> GradientTransformation:
    """Adan's direction ``(m_hat + c * d_hat) / (sqrt(n_hat + eps_root) + eps)``.

    ``c`` is ``1 - b2`` (optax) or, with ``paper_weights``, ``b2`` (the paper's
    ``1 - beta_2``, the authors' code and ``pytorch_optimizer``); the same ``c`` weights the
    difference inside ``n``. See :func:`adan`.

    Args:
      b1: decay rate of the gradient average, in [0, 1).
      b2: decay rate of the gradient-difference average, in [0, 1).
      b3: decay rate of the squared look-ahead gradient, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      paper_weights: weight the gradient difference by ``b2`` instead of ``1 - b2``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adan(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)
    check_decay("b3", b3, schedule_ok=False)
    c = b2 if paper_weights else 1 - b2

    def init_fn(params):
        mu, nu = init_moments(params)
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return ScaleByAdanState(zero_count(), mu, zeros(), nu, zeros())

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_adan")
        count = increment(state.count)
        first = state.count == 0

        def leaf(g, m, d, n, prev):
            dt = compute_dtype(m.dtype)
            t = count.astype(dt)
            diff = jnp.where(first, 0, g - prev.astype(g.dtype)).astype(m.dtype)
            g_m = g.astype(m.dtype)
            m = (b1 * m + (1 - b1) * g_m).astype(m.dtype)
            d = (b2 * d + (1 - b2) * diff).astype(d.dtype)
            n = (b3 * n + (1 - b3) * abs_sq_in(g_m + c * diff, n.dtype)).astype(n.dtype)
            m_hat = m / (1 - jnp.asarray(b1, dt) ** t).astype(m.dtype)
            d_hat = d / (1 - jnp.asarray(b2, dt) ** t).astype(d.dtype)
            n_hat = n / (1 - jnp.asarray(b3, dt) ** t).astype(n.dtype)
            out = (m_hat + c * d_hat) / (jnp.sqrt(n_hat + eps_root) + eps)
            return out.astype(g.dtype), m, d, n

        out, mu, delta, nu = tree_map_multi(
            leaf, 4, updates, state.mu, state.delta, state.nu, state.prev_grad
        )
        prev = jax.tree.map(lambda g, p: g.astype(p.dtype), updates, state.prev_grad)
        return out, ScaleByAdanState(count, mu, delta, nu, prev)

    spec = BlockSpec(
        "scale_by_adan",
        elementwise=True,
        stage="adan",
        scalars={
            "b1": b1,
            "one_minus_b1": 1 - b1,
            "b2": b2,
            "one_minus_b2": 1 - b2,
            "b3": b3,
            "one_minus_b3": 1 - b3,
            "c": c,
            "eps": eps,
            "eps_root": eps_root,
            "inv_bc1": inv_bias_correction(b1),
            "inv_bc2": inv_bias_correction(b2),
            "inv_bc3": inv_bias_correction(b3),
            "first": lambda count: (count == 0).astype(jnp.float32),
        },
        buffers=("mu", "delta", "nu", "prev_grad"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def proximal_decay(
    learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule, mask: MaskOrFn = None
) -> GradientTransformation:
    """Turn the step ``u`` (already scaled by ``-learning_rate``) into the proximal weight
    decay step: ``p_new = (p + u) / (1 + learning_rate * weight_decay)``, i.e. the output is
    ``(u - learning_rate * weight_decay * p) / (1 + learning_rate * weight_decay)``.

    Adan's paper and ``pytorch_optimizer.Adan(weight_decouple=False)`` decay this way; to
    first order in ``lr * wd`` it is decoupled weight decay.

    Args:
      learning_rate: a number or a schedule of the step count (the one the step used).
      weight_decay: the rate, >= 0 (a number or a schedule).
      mask: which parameters decay (a tree of booleans or a function of the params).

    Returns:
      An ``optax.GradientTransformation`` (needs ``params``).

    Example:
      >>> tx = jz.chain(jz.scale_by_adan(), jz.scale_by_learning_rate(1e-3),
      ...               jz.proximal_decay(1e-3, 0.02))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("weight_decay", weight_decay)
    scheduled = callable(learning_rate) or callable(weight_decay)

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params, "proximal_decay")
        check_same_structure(updates, params, "proximal_decay")
        if scheduled:
            k = resolve(learning_rate, state.count) * resolve(weight_decay, state.count)
        else:
            k = learning_rate * weight_decay

        def leaf(u, p):
            k_ = jnp.asarray(k).astype(u.dtype)
            return ((u - k_ * p.astype(u.dtype)) / (1 + k_)).astype(u.dtype)

        out = jax.tree.map(leaf, updates, params)
        new_state = ScaleByScheduleState(count=increment(state.count)) if scheduled else state
        return out, new_state

    def lr_wd(count):
        return resolve(learning_rate, count) * resolve(weight_decay, count)

    spec = BlockSpec(
        "proximal_decay",
        elementwise=True,
        stage="proximal_decay",
        scalars={"lr_wd": lr_wd if scheduled else learning_rate * weight_decay},
    )
    tx = describe(GradientTransformation(init_fn, update_fn), spec)
    return tx if mask is None else masked(tx, mask)


def adan(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    *,
    paper_weights: bool = False,
    proximal: bool = False,
) -> GradientTransformation:
    """Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models", https://arxiv.org/abs/2208.06677).

    ::

        d_t = g_t - g_{t-1}                       (0 at the first step)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * d_t
        n_t = b3 * n_{t-1} + (1 - b3) * (g_t + c * d_t)^2
        u_t = (m_t / (1 - b1^t) + c * v_t / (1 - b2^t)) / (sqrt(n_t / (1 - b3^t) + eps_root) + eps)
        p_t = p_{t-1} - lr * (u_t + weight_decay * p_{t-1})

    with ``c = 1 - b2``, as ``optax.adan`` (the default). The paper writes the decays as
    ``beta = 1 - b`` and weights the difference by ``1 - beta_2``, i.e. ``c = b2`` (0.92, not
    0.08), as the authors' code and ``pytorch_optimizer.Adan`` do: ``paper_weights=True``.
    The paper and ``pytorch_optimizer``'s default decay proximally, ``p_t = (p_{t-1} - lr *
    u_t) / (1 + lr * weight_decay)``: ``proximal=True``; optax's decoupled form is
    ``pytorch_optimizer``'s ``weight_decouple=True``. ``pytorch_optimizer`` has no
    ``eps_root`` (``eps_root=0`` there).

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the gradient average, in [0, 1).
      b2: decay rate of the gradient-difference average, in [0, 1).
      b3: decay rate of the squared look-ahead gradient, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      weight_decay: decay rate (multiplied by the learning rate).
      mask: which parameters decay (a tree of booleans or a function of the params).
      paper_weights: ``c = b2`` (paper, authors, ``pytorch_optimizer``) instead of ``1 - b2``.
      proximal: the paper's proximal weight decay instead of decoupled decay.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adan(1e-3, weight_decay=0.02)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    scaler = scale_by_adan(b1, b2, b3, eps, eps_root, paper_weights=paper_weights)
    if not proximal or is_zero(weight_decay):
        return scaled_with_decay(scaler, learning_rate, weight_decay, mask)
    return chain(
        scaler,
        scale_by_learning_rate(learning_rate),
        proximal_decay(learning_rate, weight_decay, mask),
    )
