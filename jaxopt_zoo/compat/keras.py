"""Keras 3 optimizers with Keras' exact update formulas, argument names and defaults.

``jaxopt_zoo.compat.keras.adam()`` follows the same trajectory as ``keras.optimizers.Adam()``
given the same gradients (tested against Keras 3 on the JAX backend: in float64 the two
agree to rounding). Keras keeps a constant learning rate in a float32 variable; pass
``float(np.float32(lr))`` to reproduce that rounding too.

Every constructor takes Keras' arguments with Keras' defaults, including the base-optimizer
options ``weight_decay``, ``clipnorm``, ``clipvalue`` and ``global_clipnorm``; ``use_ema``,
``loss_scale_factor`` and ``gradient_accumulation_steps`` are not supported.
``get("Adam")`` mirrors ``keras.optimizers.get``.

What Keras does differently from the native optimizers in ``jaxopt_zoo.optim``:

- ``weight_decay`` on every optimizer is decoupled and scaled by the learning rate, applied
  before the step: ``p <- p - lr_t * weight_decay * p`` (``add_lr_scaled_weight_decay``).
- Adam, AdamW use the "epsilon hat" form: ``eps`` is added to ``sqrt(v_t)``, not to
  ``sqrt(v_hat)``; AMSGrad takes the maximum of the raw ``v_t`` (``scale_by_keras_adam``).
- Nadam uses the momentum schedule ``u_t = beta_1 * (1 - 0.5 * 0.96^t)``
  (``scale_by_keras_nadam``).
- Adamax adds ``eps`` outside the maximum (``scale_by_keras_adamax``).
- SGD and RMSprop keep the learning rate inside the momentum buffer.
- ``clipnorm`` clips each tensor's norm separately (``clip_by_norm``).

``learning_rate`` is a number or a schedule: a function of the 0-based step count, called as
Keras calls a ``LearningRateSchedule`` with ``optimizer.iterations``; a Keras
``LearningRateSchedule`` object itself works too. (Keras also accepts a zero-argument
callable; here a callable always receives the step count.)
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    is_zero,
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    abs_sq,
    abs_sq_in,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    check_scalar,
    compute_dtype,
    increment,
    require_params,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim.adadelta import scale_by_adadelta
from jaxopt_zoo.optim.adagrad import scale_by_rss
from jaxopt_zoo.optim._common import init_moments
from jaxopt_zoo.optim.adam import ScaleByAdamState, ScaleByAmsgradState
from jaxopt_zoo.optim.adamax import ScaleByAdamaxState
from jaxopt_zoo.optim.lion import scale_by_lion
from jaxopt_zoo.optim.rmsprop import scale_by_rms
from jaxopt_zoo.transforms.clipping import clip, clip_by_global_norm
from jaxopt_zoo.transforms.learning_rate import ScaleByScheduleState, scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import trace

__all__ = [
    "ScaleByKerasNadamState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_lr_scaled_weight_decay",
    "available",
    "clip_by_norm",
    "get",
    "lion",
    "nadam",
    "rmsprop",
    "scale_by_keras_adam",
    "scale_by_keras_adamax",
    "scale_by_keras_nadam",
    "sgd",
]


# --------------------------------------------------------------------------- #
# Keras-specific blocks
# --------------------------------------------------------------------------- #

def _step_power(beta: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """``beta ** count`` computed in ``compute_dtype(dtype)``.

    Keras casts both to the variable's dtype. For float32 and float64 variables that is
    the same; for bfloat16 and float16 we compute in float32, because there 0.999 rounds to
    1, ``1 - beta_2^t`` is 0 and Keras' Adam and Nadam lose every update (Nadam divides
    0 by 0 on a zero gradient).
    """
    dt = compute_dtype(dtype)
    return jnp.asarray(beta, dt) ** count.astype(dt)


def _keras_ema(g: jax.Array, m: jax.Array, beta: Any) -> jax.Array:
    """Keras' moment update ``m + (g - m) * (1 - beta)``, in ``m``'s dtype."""
    return (m + (g.astype(m.dtype) - m) * (1 - beta)).astype(m.dtype)


def clip_by_norm(clipnorm: Any) -> GradientTransformation:
    """Keras' ``clipnorm``: rescale each leaf separately to an L2 norm of at most ``clipnorm``.

    ``g <- g * clipnorm / max(||g||, clipnorm)`` with ``||g||`` the norm of that leaf alone
    (``clip_by_global_norm`` is Keras' ``global_clipnorm``).
    """
    check_scalar("clipnorm", clipnorm, low=0.0, low_open=True, schedule_ok=False)

    def leaf(g):
        norm = jnp.sqrt(jnp.sum(abs_sq(g)))
        return (g * clipnorm / jnp.maximum(norm, clipnorm).astype(g.dtype)).astype(g.dtype)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def add_lr_scaled_weight_decay(weight_decay: Any, learning_rate: ScalarOrSchedule
                               ) -> GradientTransformation:
    """Keras' ``weight_decay``: add ``-lr_t * weight_decay * p`` to the final update.

    Keras runs ``p <- p - p * weight_decay * lr_t`` before the optimizer's step, with the
    step's learning rate ``lr_t``; since the step does not read ``p``, adding the term to
    the update at the end of the chain gives the same parameters. Put it last: the updates
    it receives must already be the parameter increments.
    """
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    check_nonneg("learning_rate", learning_rate)

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update_fn(updates, state, params=None):
        require_params(params, "add_lr_scaled_weight_decay")
        check_same_structure(updates, params, "add_lr_scaled_weight_decay")
        lr = resolve(learning_rate, state.count)

        def leaf(u, p):
            dt = u.dtype
            decay = p.astype(dt) * jnp.asarray(weight_decay).astype(dt) * jnp.asarray(lr).astype(dt)
            return (u - decay).astype(dt)

        out = jax.tree.map(leaf, updates, params)
        return out, ScaleByScheduleState(count=increment(state.count))

    return describe(GradientTransformation(init_fn, update_fn),
                    BlockSpec("add_lr_scaled_weight_decay", elementwise=True))


def scale_by_keras_adam(beta_1: Any = 0.9, beta_2: Any = 0.999, epsilon: Any = 1e-7,
                        amsgrad: bool = False) -> GradientTransformation:
    """Keras' Adam direction: ``sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)``.

    With ``amsgrad`` the maximum of the raw ``v_t`` replaces ``v_t``. Multiply by ``-lr``
    afterwards (``scale_by_learning_rate``).
    """
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        mu, nu = init_moments(params)
        if amsgrad:
            return ScaleByAmsgradState(count=zero_count(), mu=mu, nu=nu,
                                       nu_max=jax.tree.map(jnp.zeros_like, nu))
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_adam")
        count = increment(state.count)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: _keras_ema(abs_sq_in(g, v.dtype), v, beta_2), updates, state.nu)
        if amsgrad:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
            denom_src = nu_max
        else:
            denom_src = nu

        def leaf(g, m, v):
            dt = v.dtype
            corr = (jnp.sqrt(1 - _step_power(beta_2, count, dt))
                    / (1 - _step_power(beta_1, count, dt)))
            return (m * corr / (jnp.sqrt(v) + epsilon)).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, denom_src)
        if amsgrad:
            return out, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return describe(GradientTransformation(init_fn, update_fn),
                    BlockSpec("scale_by_keras_adam", elementwise=True))


class ScaleByKerasNadamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any
    u_product: jax.Array  # prod_{i<=t} u_i, a scalar shared by all leaves (Keras' too)


def scale_by_keras_nadam(beta_1: Any = 0.9, beta_2: Any = 0.999, epsilon: Any = 1e-7
                         ) -> GradientTransformation:
    """Keras' Nadam direction, with the momentum schedule ``u_t = b1 * (1 - 0.5 * 0.96^t)``.

    ``m_hat = u_{t+1} m_t / (1 - prod_{i<=t+1} u_i) + (1 - u_t) g_t / (1 - prod_{i<=t} u_i)``,
    ``v_hat = v_t / (1 - b2^t)``; the output is ``m_hat / (sqrt(v_hat) + eps)``.
    """
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        return ScaleByKerasNadamState(
            count=zero_count(),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=init_moments(params)[1],
            u_product=jnp.ones([], scalar_dtype(params)))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_nadam")
        count = increment(state.count)
        sdt = state.u_product.dtype
        t = count.astype(sdt)
        u_product = state.u_product * beta_1 * (1.0 - 0.5 * jnp.asarray(0.96, sdt) ** t)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: _keras_ema(abs_sq_in(g, v.dtype), v, beta_2), updates, state.nu)

        def leaf(g, m, v):
            dt = compute_dtype(v.dtype)
            decay = jnp.asarray(0.96, dt)
            u_t = beta_1 * (1.0 - 0.5 * decay ** t.astype(dt))
            u_next = beta_1 * (1.0 - 0.5 * decay ** (t + 1).astype(dt))
            prod_t = u_product.astype(dt)
            prod_next = prod_t * u_next
            m_hat = (u_next * m / (1 - prod_next)
                     + (1 - u_t) * g.astype(m.dtype) / (1 - prod_t))
            v_hat = v / (1 - _step_power(beta_2, count, dt))
            return (m_hat / (jnp.sqrt(v_hat) + epsilon)).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, nu)
        return out, ScaleByKerasNadamState(count=count, mu=mu, nu=nu, u_product=u_product)

    return describe(GradientTransformation(init_fn, update_fn),
                    BlockSpec("scale_by_keras_nadam", elementwise=True))


def scale_by_keras_adamax(beta_1: Any = 0.9, beta_2: Any = 0.999, epsilon: Any = 1e-7
                          ) -> GradientTransformation:
    """Keras' Adamax direction: ``m_t / ((1 - b1^t) * (u_t + eps))`` with
    ``u_t = max(b2 * u_{t-1}, |g_t|)`` (eps outside the maximum)."""
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        return ScaleByAdamaxState(
            count=zero_count(), mu=jax.tree.map(jnp.zeros_like, params),
            nu=init_moments(params)[1])

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_adamax")
        count = increment(state.count)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, u: jnp.maximum(beta_2 * u, jnp.abs(g).astype(u.dtype)).astype(u.dtype),
            updates, state.nu)

        def leaf(g, m, u):
            corr = 1 - _step_power(beta_1, count, u.dtype)
            return (m / (corr * (u + epsilon))).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, nu)
        return out, ScaleByAdamaxState(count=count, mu=mu, nu=nu)

    return describe(GradientTransformation(init_fn, update_fn),
                    BlockSpec("scale_by_keras_adamax", elementwise=True))


# --------------------------------------------------------------------------- #
# Shared argument handling
# --------------------------------------------------------------------------- #

def _check_betas(beta_1: Any, beta_2: Any, epsilon: Any) -> None:
    check_decay("beta_1", beta_1, schedule_ok=False)
    check_decay("beta_2", beta_2, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)



def _clipping(clipnorm: Any, clipvalue: Any, global_clipnorm: Any) -> List[GradientTransformation]:
    given = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                               ("global_clipnorm", global_clipnorm)) if v is not None}
    if len(given) > 1:
        raise ValueError(
            "Only one of clipnorm, clipvalue and global_clipnorm can be set (as in Keras); got "
            + ", ".join(f"{k}={v!r}" for k, v in given.items()) + ". Keep one, set the others "
            "to None.")
    for k, v in given.items():
        check_scalar(k, v, low=0.0, low_open=True, schedule_ok=False)
    if clipnorm is not None:
        return [clip_by_norm(clipnorm)]
    if global_clipnorm is not None:
        return [clip_by_global_norm(global_clipnorm)]
    if clipvalue is not None:
        return [clip(clipvalue)]
    return []


def _assemble(steps: List[GradientTransformation], learning_rate: ScalarOrSchedule,
              weight_decay: Any, clipnorm: Any, clipvalue: Any, global_clipnorm: Any
              ) -> GradientTransformation:
    """clipping -> the optimizer's steps -> Keras' lr-scaled weight decay (if any)."""
    parts = _clipping(clipnorm, clipvalue, global_clipnorm) + list(steps)
    if weight_decay is not None:
        check_nonneg("weight_decay", weight_decay, schedule_ok=False)
        if not is_zero(weight_decay):
            parts.append(add_lr_scaled_weight_decay(weight_decay, learning_rate))
    return chain(*parts)


# --------------------------------------------------------------------------- #
# The optimizers
# --------------------------------------------------------------------------- #

def sgd(learning_rate: ScalarOrSchedule = 0.01, momentum: Any = 0.0, nesterov: bool = False,
        weight_decay: Any = None, clipnorm: Any = None, clipvalue: Any = None,
        global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.SGD``: the learning rate sits inside the velocity.

    ::

        v_t = momentum * v_{t-1} - lr_t * g_t             (v_0 = 0)
        p_t = p_{t-1} + v_t                                 (momentum > 0)
        p_t = p_{t-1} + momentum * v_t - lr_t * g_t         (nesterov)
        p_t = p_{t-1} - lr_t * g_t                          (momentum == 0)

    Blocks: ``scale_by_learning_rate -> trace(momentum, nesterov)``, plus the base options
    (``clip*`` first, ``add_lr_scaled_weight_decay`` last). ``momentum`` must lie in [0, 1];
    ``nesterov`` has no effect without momentum, as in Keras.
    """
    check_nonneg("learning_rate", learning_rate)
    check_scalar("momentum", momentum, low=0.0, high=1.0, schedule_ok=False)
    steps = [scale_by_learning_rate(learning_rate)]
    if not is_zero(momentum):
        steps.append(trace(momentum, nesterov=bool(nesterov)))
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def rmsprop(learning_rate: ScalarOrSchedule = 0.001, rho: Any = 0.9, momentum: Any = 0.0,
            epsilon: Any = 1e-7, centered: bool = False, weight_decay: Any = None,
            clipnorm: Any = None, clipvalue: Any = None, global_clipnorm: Any = None
            ) -> GradientTransformation:
    """``keras.optimizers.RMSprop``.

    ::

        v_t = rho * v_{t-1} + (1 - rho) * g_t^2
        a_t = rho * a_{t-1} + (1 - rho) * g_t               (centered)
        d_t = lr_t * g_t / sqrt(v_t - a_t^2 + eps)          (a_t = 0 unless centered)
        b_t = momentum * b_{t-1} + d_t;  p_t = p_{t-1} - b_t (momentum > 0)
        p_t = p_{t-1} - d_t                                  (momentum == 0)

    Blocks: ``scale_by_rms(eps_in_sqrt=True) -> scale_by_learning_rate -> trace(momentum)``.
    """
    check_nonneg("learning_rate", learning_rate)
    check_decay("rho", rho, schedule_ok=False)
    check_nonneg("momentum", momentum, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [scale_by_rms(rho, epsilon, 0.0, eps_in_sqrt=True, centered=bool(centered)),
             scale_by_learning_rate(learning_rate)]
    if not is_zero(momentum):
        steps.append(trace(momentum))
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adagrad(learning_rate: ScalarOrSchedule = 0.001, initial_accumulator_value: Any = 0.1,
            epsilon: Any = 1e-7, weight_decay: Any = None, clipnorm: Any = None,
            clipvalue: Any = None, global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.Adagrad``.

    ::

        s_t = s_{t-1} + g_t^2                  (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr_t * g_t / sqrt(s_t + eps)

    Blocks: ``scale_by_rss(eps_in_sqrt=True) -> scale_by_learning_rate``.
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("initial_accumulator_value", initial_accumulator_value, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [scale_by_rss(initial_accumulator_value, epsilon, eps_in_sqrt=True),
             scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adadelta(learning_rate: ScalarOrSchedule = 0.001, rho: Any = 0.95, epsilon: Any = 1e-7,
             weight_decay: Any = None, clipnorm: Any = None, clipvalue: Any = None,
             global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.Adadelta`` (note Keras' ``learning_rate=0.001``, not the paper's 1).

    ::

        E[g^2]_t  = rho * E[g^2]_{t-1} + (1 - rho) * g_t^2
        dx_t      = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho * E[dx^2]_{t-1} + (1 - rho) * dx_t^2
        p_t       = p_{t-1} - lr_t * dx_t

    Blocks: ``scale_by_adadelta -> scale_by_learning_rate``.
    """
    check_nonneg("learning_rate", learning_rate)
    check_decay("rho", rho, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [scale_by_adadelta(rho, epsilon), scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adam(learning_rate: ScalarOrSchedule = 0.001, beta_1: Any = 0.9, beta_2: Any = 0.999,
         epsilon: Any = 1e-7, amsgrad: bool = False, weight_decay: Any = None,
         clipnorm: Any = None, clipvalue: Any = None, global_clipnorm: Any = None
         ) -> GradientTransformation:
    """``keras.optimizers.Adam``, in the "epsilon hat" form of Kingma & Ba (sec. 2).

    ::

        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - b1)
        v_t = v_{t-1} + (g_t^2 - v_{t-1}) * (1 - b2)
        v_t <- max(v_max, v_t)                             (amsgrad; raw v, not v_hat)
        alpha_t = lr_t * sqrt(1 - b2^t) / (1 - b1^t)
        p_t = p_{t-1} - alpha_t * m_t / (sqrt(v_t) + eps)

    Blocks: ``scale_by_keras_adam -> scale_by_learning_rate``. Equal to ``optim.adam``
    only for ``eps = 0``.
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [scale_by_keras_adam(beta_1, beta_2, epsilon, bool(amsgrad)),
             scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adamw(learning_rate: ScalarOrSchedule = 0.001, weight_decay: Any = 0.004,
          beta_1: Any = 0.9, beta_2: Any = 0.999, epsilon: Any = 1e-7, amsgrad: bool = False,
          clipnorm: Any = None, clipvalue: Any = None, global_clipnorm: Any = None
          ) -> GradientTransformation:
    """``keras.optimizers.AdamW``: ``adam`` with its ``weight_decay`` required.

    ``p <- p - lr_t * weight_decay * p`` before Adam's step (``adam`` above); the decay is
    scaled by the learning rate, as in optax's and PyTorch's AdamW.
    """
    if weight_decay is None:
        raise ValueError("Invalid weight_decay: None. Expected a number >= 0; AdamW needs a "
                         "weight decay (use compat.keras.adam for none).")
    return adam(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm,
                clipvalue, global_clipnorm)


def nadam(learning_rate: ScalarOrSchedule = 0.001, beta_1: Any = 0.9, beta_2: Any = 0.999,
          epsilon: Any = 1e-7, weight_decay: Any = None, clipnorm: Any = None,
          clipvalue: Any = None, global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.Nadam`` (Dozat 2016 with Keras' momentum schedule).

    ::

        u_t = b1 * (1 - 0.5 * 0.96^t),    P_t = u_1 * ... * u_t
        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - b1)
        v_t = v_{t-1} + (g_t^2 - v_{t-1}) * (1 - b2)
        m_hat = u_{t+1} * m_t / (1 - P_{t+1}) + (1 - u_t) * g_t / (1 - P_t)
        p_t = p_{t-1} - lr_t * m_hat / (sqrt(v_t / (1 - b2^t)) + eps)

    (PyTorch's NAdam uses ``0.96^(0.004 t)``; Keras uses ``0.96^t``.) Blocks:
    ``scale_by_keras_nadam -> scale_by_learning_rate``.
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [scale_by_keras_nadam(beta_1, beta_2, epsilon),
             scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def adamax(learning_rate: ScalarOrSchedule = 0.001, beta_1: Any = 0.9, beta_2: Any = 0.999,
           epsilon: Any = 1e-7, weight_decay: Any = None, clipnorm: Any = None,
           clipvalue: Any = None, global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.Adamax``.

    ::

        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - b1)
        u_t = max(b2 * u_{t-1}, |g_t|)
        p_t = p_{t-1} - lr_t * m_t / ((1 - b1^t) * (u_t + eps))

    (``optim.adamax`` puts eps inside the maximum.) Blocks:
    ``scale_by_keras_adamax -> scale_by_learning_rate``.
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [scale_by_keras_adamax(beta_1, beta_2, epsilon),
             scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


def lion(learning_rate: ScalarOrSchedule = 0.001, beta_1: Any = 0.9, beta_2: Any = 0.99,
         weight_decay: Any = None, clipnorm: Any = None, clipvalue: Any = None,
         global_clipnorm: Any = None) -> GradientTransformation:
    """``keras.optimizers.Lion`` (Chen et al. 2023).

    ::

        p_t = p_{t-1} - lr_t * sign(b1 * m_{t-1} + (1 - b1) * g_t)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Keras' weight decay is applied as for every Keras optimizer
    (``p <- p - lr_t * weight_decay * p``), which is Lion's decoupled decay. ``beta_1`` must
    lie in (0, 1) (Keras also accepts 1). Blocks: ``scale_by_lion -> scale_by_learning_rate``.
    """
    check_nonneg("learning_rate", learning_rate)
    check_scalar("beta_1", beta_1, low=0.0, high=1.0, low_open=True, high_open=True,
                 schedule_ok=False)
    check_decay("beta_2", beta_2, schedule_ok=False)
    steps = [scale_by_lion(beta_1, beta_2), scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


# --------------------------------------------------------------------------- #
# keras.optimizers.get
# --------------------------------------------------------------------------- #

_OPTIMIZERS: Dict[str, Callable[..., GradientTransformation]] = {
    "adadelta": adadelta,
    "adagrad": adagrad,
    "adam": adam,
    "adamax": adamax,
    "adamw": adamw,
    "lion": lion,
    "nadam": nadam,
    "rmsprop": rmsprop,
    "sgd": sgd,
}

# Keys of a Keras optimizer config that have no counterpart here, with the value that
# means "off" (``None``: must be None; ``...``: anything is accepted and ignored).
_BASE_ONLY = {"name": ..., "use_ema": False, "ema_momentum": ..., "ema_overwrite_frequency": None,
              "loss_scale_factor": None, "gradient_accumulation_steps": None}


def available() -> List[str]:
    """The Keras optimizer names ``get`` understands (lower case)."""
    return sorted(_OPTIMIZERS)


def get(identifier: Any) -> Optional[GradientTransformation]:
    """Like ``keras.optimizers.get``: an optimizer from a name or a Keras config dict.

    ``identifier`` is a name (``"adam"``, ``"Adam"``, ``"RMSprop"``: case-insensitive) for
    the optimizer with Keras' defaults; a Keras config such as
    ``keras.optimizers.serialize(opt)`` or ``{"class_name": "SGD", "config": {"momentum":
    0.9}}``; or a ``GradientTransformation``, returned unchanged. ``None`` gives ``None``.
    """
    if identifier is None:
        return None
    if hasattr(identifier, "init") and hasattr(identifier, "update"):
        return identifier
    if isinstance(identifier, str):
        name, config = identifier, {}
    elif isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ValueError(
                f"Could not interpret optimizer config {identifier!r}: expected a dict with a "
                "'class_name' (and optionally a 'config'), as keras.optimizers.serialize "
                "writes.")
        name, config = identifier["class_name"], dict(identifier.get("config") or {})
    else:
        raise TypeError(
            f"Could not interpret optimizer identifier {identifier!r}: expected a name such "
            "as 'adam', a Keras config dict, or a GradientTransformation.")
    factory = _OPTIMIZERS.get(str(name).lower())
    if factory is None:
        close = difflib.get_close_matches(str(name).lower(), list(_OPTIMIZERS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown Keras optimizer {name!r}.{hint} Known: "
                         f"{', '.join(available())}.")
    for key, off in _BASE_ONLY.items():
        if key in config:
            value = config.pop(key)
            if off is not ... and value != off and not (off is False and not value):
                raise ValueError(
                    f"{name}: {key}={value!r} is not supported by jaxopt_zoo.compat.keras; "
                    f"remove it or set it to {off!r}.")
    if isinstance(config.get("learning_rate"), dict):
        raise ValueError(
            f"{name}: a serialized Keras learning-rate schedule cannot be rebuilt here; pass "
            "the optimizer a schedule function of the step count instead.")
    params = inspect.signature(factory).parameters
    unknown = sorted(k for k in config if k not in params)
    if unknown:
        raise ValueError(f"{name}: argument(s) not recognized: {unknown}; it takes "
                         f"{', '.join(params)}.")
    return factory(**config)
