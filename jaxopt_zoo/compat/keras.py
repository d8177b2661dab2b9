"""Keras 3 optimizers with Keras' exact update formulas, argument names and defaults.

``jaxopt_zoo.compat.keras.adam()`` follows the same trajectory as ``keras.optimizers.Adam()``
given the same gradients (tested against Keras 3 on the JAX backend: in float64 the two
agree to rounding). Keras keeps a constant learning rate in a float32 variable; pass
``float(np.float32(lr))`` to reproduce that rounding too.

Every constructor takes Keras' arguments with Keras' defaults, including the base-optimizer
options ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm`` and ``use_ema``,
``ema_momentum``, ``ema_overwrite_frequency`` (``keras_base_options``);
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
import functools
import inspect
import re
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq,
    abs_sq_in,
    chain,
    check_betas,
    check_decay,
    check_nonneg,
    check_same_structure,
    check_scalar,
    compute_dtype,
    fresh_copy,
    increment,
    is_concrete_scalar,
    is_zero,
    require_params,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments
from jaxopt_zoo.optim.adadelta import scale_by_adadelta
from jaxopt_zoo.optim.adagrad import scale_by_rss
from jaxopt_zoo.optim.adam import ScaleByAdamState, ScaleByAmsgradState
from jaxopt_zoo.optim.adamax import ScaleByAdamaxState
from jaxopt_zoo.optim.lion import scale_by_lion
from jaxopt_zoo.optim.muon import scale_by_muon_shape, skip_if_empty
from jaxopt_zoo.optim.newton_schulz import orthogonalize_by_newton_schulz
from jaxopt_zoo.optim.rmsprop import scale_by_rms
from jaxopt_zoo.transforms.averaging import ema_weights
from jaxopt_zoo.transforms.clipping import clip, clip_by_global_norm
from jaxopt_zoo.transforms.learning_rate import ScaleByScheduleState, scale_by_learning_rate
from jaxopt_zoo.transforms.masking import partition
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
    "keras_base_options",
    "leaf_path",
    "lion",
    "muon",
    "muon_labels",
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

    Args:
      clipnorm: the largest L2 norm of a leaf, > 0.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.keras.clip_by_norm(1.0), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
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


def add_lr_scaled_weight_decay(
    weight_decay: Any, learning_rate: ScalarOrSchedule
) -> GradientTransformation:
    """Keras' ``weight_decay``: add ``-lr_t * weight_decay * p`` to the final update.

    Keras runs ``p <- p - p * weight_decay * lr_t`` before the optimizer's step, with the
    step's learning rate ``lr_t``; since the step does not read ``p``, adding the term to
    the update at the end of the chain gives the same parameters. Put it last: the updates
    it receives must already be the parameter increments.

    Args:
      weight_decay: the decay rate.
      learning_rate: the optimizer's learning rate (a number or a schedule of the step count).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adam(), jz.scale_by_learning_rate(1e-3),
      ...               jz.compat.keras.add_lr_scaled_weight_decay(4e-3, 1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
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

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("add_lr_scaled_weight_decay", elementwise=True),
    )


def scale_by_keras_adam(
    beta_1: Scalar = 0.9, beta_2: Scalar = 0.999, epsilon: Scalar = 1e-7, amsgrad: bool = False
) -> GradientTransformation:
    """Keras' Adam direction: ``sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)``.

    With ``amsgrad`` the maximum of the raw ``v_t`` replaces ``v_t``. Multiply by ``-lr``
    afterwards (``scale_by_learning_rate``).

    Args:
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: "epsilon hat", added to ``sqrt(v_t)``.
      amsgrad: use the running maximum of ``v_t``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.keras.scale_by_keras_adam(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        mu, nu = init_moments(params)
        if amsgrad:
            return ScaleByAmsgradState(
                count=zero_count(), mu=mu, nu=nu, nu_max=jax.tree.map(jnp.zeros_like, nu)
            )
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_adam")
        count = increment(state.count)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, v: _keras_ema(abs_sq_in(g, v.dtype), v, beta_2), updates, state.nu
        )
        if amsgrad:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
            denom_src = nu_max
        else:
            denom_src = nu

        def leaf(g, m, v):
            dt = v.dtype
            corr = jnp.sqrt(1 - _step_power(beta_2, count, dt)) / (
                1 - _step_power(beta_1, count, dt)
            )
            return (m * corr / (jnp.sqrt(v) + epsilon)).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, denom_src)
        if amsgrad:
            return out, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_keras_adam", elementwise=True),
    )


class ScaleByKerasNadamState(NamedTuple):
    """State of :func:`scale_by_keras_nadam`: step ``count``, moments ``mu`` and ``nu`` and
    ``u_product``, the product of Keras' momentum schedule (one scalar for all leaves)."""

    count: StepCount
    mu: Any
    nu: Any
    u_product: jax.Array  # prod_{i<=t} u_i, a scalar shared by all leaves (Keras' too)


def scale_by_keras_nadam(
    beta_1: Scalar = 0.9, beta_2: Scalar = 0.999, epsilon: Scalar = 1e-7
) -> GradientTransformation:
    """Keras' Nadam direction, with the momentum schedule ``u_t = b1 * (1 - 0.5 * 0.96^t)``.

    ``m_hat = u_{t+1} m_t / (1 - prod_{i<=t+1} u_i) + (1 - u_t) g_t / (1 - prod_{i<=t} u_i)``,
    ``v_hat = v_t / (1 - b2^t)``; the output is ``m_hat / (sqrt(v_hat) + eps)``.

    Args:
      beta_1: decay rate of the first moment and base of the momentum schedule, in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: added outside the square root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.keras.scale_by_keras_nadam(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        return ScaleByKerasNadamState(
            count=zero_count(),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=init_moments(params)[1],
            u_product=jnp.ones([], scalar_dtype(params)),
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_nadam")
        count = increment(state.count)
        sdt = state.u_product.dtype
        t = count.astype(sdt)
        u_product = state.u_product * beta_1 * (1.0 - 0.5 * jnp.asarray(0.96, sdt) ** t)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, v: _keras_ema(abs_sq_in(g, v.dtype), v, beta_2), updates, state.nu
        )

        def leaf(g, m, v):
            dt = compute_dtype(v.dtype)
            decay = jnp.asarray(0.96, dt)
            u_t = beta_1 * (1.0 - 0.5 * decay ** t.astype(dt))
            u_next = beta_1 * (1.0 - 0.5 * decay ** (t + 1).astype(dt))
            prod_t = u_product.astype(dt)
            prod_next = prod_t * u_next
            m_hat = u_next * m / (1 - prod_next) + (1 - u_t) * g.astype(m.dtype) / (1 - prod_t)
            v_hat = v / (1 - _step_power(beta_2, count, dt))
            return (m_hat / (jnp.sqrt(v_hat) + epsilon)).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, nu)
        return out, ScaleByKerasNadamState(count=count, mu=mu, nu=nu, u_product=u_product)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_keras_nadam", elementwise=True),
    )


def scale_by_keras_adamax(
    beta_1: Scalar = 0.9, beta_2: Scalar = 0.999, epsilon: Scalar = 1e-7
) -> GradientTransformation:
    """Keras' Adamax direction: ``m_t / ((1 - b1^t) * (u_t + eps))`` with
    ``u_t = max(b2 * u_{t-1}, |g_t|)`` (eps outside the maximum).

    Args:
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the infinity norm, in [0, 1).
      epsilon: added to the infinity norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.keras.scale_by_keras_adamax(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_betas(beta_1, beta_2, epsilon)

    def init_fn(params):
        return ScaleByAdamaxState(
            count=zero_count(), mu=jax.tree.map(jnp.zeros_like, params), nu=init_moments(params)[1]
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_keras_adamax")
        count = increment(state.count)
        mu = jax.tree.map(lambda g, m: _keras_ema(g, m, beta_1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, u: jnp.maximum(beta_2 * u, jnp.abs(g).astype(u.dtype)).astype(u.dtype),
            updates,
            state.nu,
        )

        def leaf(g, m, u):
            corr = 1 - _step_power(beta_1, count, u.dtype)
            return (m / (corr * (u + epsilon))).astype(g.dtype)

        out = jax.tree.map(leaf, updates, mu, nu)
        return out, ScaleByAdamaxState(count=count, mu=mu, nu=nu)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_keras_adamax", elementwise=True),
    )


# --------------------------------------------------------------------------- #
# Shared argument handling
# --------------------------------------------------------------------------- #


def _check_betas(beta_1: Any, beta_2: Any, epsilon: Any) -> None:
    check_betas(beta_1, beta_2, epsilon, names=("beta_1", "beta_2", "epsilon", "eps_root"))


def _clipping(clipnorm: Any, clipvalue: Any, global_clipnorm: Any) -> List[GradientTransformation]:
    given = {
        k: v
        for k, v in (
            ("clipnorm", clipnorm),
            ("clipvalue", clipvalue),
            ("global_clipnorm", global_clipnorm),
        )
        if v is not None
    }
    if len(given) > 1:
        raise ValueError(
            "Only one of clipnorm, clipvalue and global_clipnorm can be set (as in Keras); got "
            + ", ".join(f"{k}={v!r}" for k, v in given.items())
            + ". Keep one, set the others "
            "to None."
        )
    for k, v in given.items():
        check_scalar(k, v, low=0.0, low_open=True, schedule_ok=False)
    if clipnorm is not None:
        return [clip_by_norm(clipnorm)]
    if global_clipnorm is not None:
        return [clip_by_global_norm(global_clipnorm)]
    if clipvalue is not None:
        return [clip(clipvalue)]
    return []


def _assemble(
    steps: List[GradientTransformation],
    learning_rate: ScalarOrSchedule,
    weight_decay: Any,
    clipnorm: Any,
    clipvalue: Any,
    global_clipnorm: Any,
) -> GradientTransformation:
    """clipping -> the optimizer's steps -> Keras' lr-scaled weight decay (if any)."""
    parts = _clipping(clipnorm, clipvalue, global_clipnorm) + list(steps)
    if weight_decay is not None:
        check_nonneg("weight_decay", weight_decay, schedule_ok=False)
        if not is_zero(weight_decay):
            parts.append(add_lr_scaled_weight_decay(weight_decay, learning_rate))
    return chain(*parts)


def keras_base_options(
    factory: Callable[..., GradientTransformation],
) -> Callable[..., GradientTransformation]:
    """Give a Keras optimizer constructor Keras' EMA options (``use_ema=False``,
    ``ema_momentum=0.99``, ``ema_overwrite_frequency=None``), keyword-only.

    As ``keras.optimizers.Optimizer`` does (``_update_model_variables_moving_average``), with
    ``use_ema`` the optimizer keeps, after each step ``n = 1, 2, ...``, the average
    ``a_n = m * a_{n-1} + (1 - m) * p_n`` of the updated variables ``p_n``, with ``m = 0`` on
    the first step (``a_1 = p_1``) and ``m = ema_momentum`` afterwards; with
    ``ema_overwrite_frequency = f`` the variables are replaced by ``a_n`` after every step with
    ``n % f == 0``. This is ``jaxopt_zoo.ema_weights(tx, ema_momentum,
    overwrite_every=f)`` around the whole optimizer: read the average with
    ``jaxopt_zoo.averaged_params(state)`` (Keras' ``finalize_variable_values``, which
    ``model.fit`` calls at the end, copies it into the variables). ``ema_momentum`` is
    checked (in [0, 1]) only when ``use_ema`` is set, as in Keras; an
    ``ema_overwrite_frequency`` must be an integer >= 1 or ``None`` (Keras lets 0 through).
    Decorate every Keras constructor with it; ``get`` applies it to any that lacks it.

    Args:
      factory: a function returning a ``GradientTransformation``.

    Returns:
      ``factory`` with the three keyword-only options added to its signature (``factory``
      itself if it has them already).

    Example:
      >>> @jz.compat.keras.keras_base_options
      ... def plain_sgd(learning_rate=0.01):
      ...     return jz.sgd(learning_rate)
      >>> tx = plain_sgd(0.1, use_ema=True, ema_momentum=0.9)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> type(state).__name__, round(float(jz.averaged_params(state)["w"][0]), 4)
      ('EmaWeightsState', 0.9)
    """
    if factory in _WITH_BASE_OPTIONS:
        return factory

    @functools.wraps(factory)
    def build(
        *args: Any,
        use_ema: bool = False,
        ema_momentum: Scalar = 0.99,
        ema_overwrite_frequency: Optional[int] = None,
        **kwargs: Any,
    ) -> GradientTransformation:
        tx = factory(*args, **kwargs)
        if not use_ema:
            return tx
        check_scalar("ema_momentum", ema_momentum, low=0.0, high=1.0, schedule_ok=False)
        return ema_weights(
            tx, ema_momentum, copy_first=True, overwrite_every=ema_overwrite_frequency
        )

    sig = inspect.signature(factory)
    extra = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in (("use_ema", False), ("ema_momentum", 0.99), ("ema_overwrite_frequency", None))
    ]
    build.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=list(sig.parameters.values()) + extra
    )
    _WITH_BASE_OPTIONS.add(build)
    return build


# The factories keras_base_options has already wrapped (it is idempotent).
_WITH_BASE_OPTIONS: "weakref.WeakSet[Callable[..., Any]]" = weakref.WeakSet()


# --------------------------------------------------------------------------- #
# The optimizers
# --------------------------------------------------------------------------- #


@keras_base_options
def sgd(
    learning_rate: ScalarOrSchedule = 0.01,
    momentum: Scalar = 0.0,
    nesterov: bool = False,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.SGD``: the learning rate sits inside the velocity.

    ::

        v_t = momentum * v_{t-1} - lr_t * g_t             (v_0 = 0)
        p_t = p_{t-1} + v_t                                 (momentum > 0)
        p_t = p_{t-1} + momentum * v_t - lr_t * g_t         (nesterov)
        p_t = p_{t-1} - lr_t * g_t                          (momentum == 0)

    Blocks: ``scale_by_learning_rate -> trace(momentum, nesterov)``, plus the base options
    (``clip*`` first, ``add_lr_scaled_weight_decay`` last). ``momentum`` must lie in [0, 1];
    ``nesterov`` has no effect without momentum, as in Keras.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      momentum: velocity coefficient, in [0, 1].
      nesterov: Nesterov momentum.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.sgd(0.01, momentum=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_scalar("momentum", momentum, low=0.0, high=1.0, schedule_ok=False)
    steps = [scale_by_learning_rate(learning_rate)]
    if not is_zero(momentum):
        steps.append(trace(momentum, nesterov=bool(nesterov)))
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def rmsprop(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: Scalar = 0.9,
    momentum: Scalar = 0.0,
    epsilon: Scalar = 1e-7,
    centered: bool = False,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.RMSprop``.

    ::

        v_t = rho * v_{t-1} + (1 - rho) * g_t^2
        a_t = rho * a_{t-1} + (1 - rho) * g_t               (centered)
        d_t = lr_t * g_t / sqrt(v_t - a_t^2 + eps)          (a_t = 0 unless centered)
        b_t = momentum * b_{t-1} + d_t;  p_t = p_{t-1} - b_t (momentum > 0)
        p_t = p_{t-1} - d_t                                  (momentum == 0)

    Blocks: ``scale_by_rms(eps_in_sqrt=True) -> scale_by_learning_rate -> trace(momentum)``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      rho: decay rate of the moving average of ``g^2``, in [0, 1).
      momentum: momentum coefficient (0: none).
      epsilon: added inside the square root.
      centered: subtract the squared moving average of ``g``.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.rmsprop()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_decay("rho", rho, schedule_ok=False)
    check_nonneg("momentum", momentum, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [
        scale_by_rms(rho, epsilon, 0.0, eps_in_sqrt=True, centered=bool(centered)),
        scale_by_learning_rate(learning_rate),
    ]
    if not is_zero(momentum):
        steps.append(trace(momentum))
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def adagrad(
    learning_rate: ScalarOrSchedule = 0.001,
    initial_accumulator_value: Scalar = 0.1,
    epsilon: Scalar = 1e-7,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Adagrad``.

    ::

        s_t = s_{t-1} + g_t^2                  (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr_t * g_t / sqrt(s_t + eps)

    Blocks: ``scale_by_rss(eps_in_sqrt=True) -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      initial_accumulator_value: ``s_0``.
      epsilon: added inside the square root.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.adagrad()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("initial_accumulator_value", initial_accumulator_value, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [
        scale_by_rss(initial_accumulator_value, epsilon, eps_in_sqrt=True),
        scale_by_learning_rate(learning_rate),
    ]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def adadelta(
    learning_rate: ScalarOrSchedule = 0.001,
    rho: Scalar = 0.95,
    epsilon: Scalar = 1e-7,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Adadelta`` (note Keras' ``learning_rate=0.001``, not the paper's 1).

    ::

        E[g^2]_t  = rho * E[g^2]_{t-1} + (1 - rho) * g_t^2
        dx_t      = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho * E[dx^2]_{t-1} + (1 - rho) * dx_t^2
        p_t       = p_{t-1} - lr_t * dx_t

    Blocks: ``scale_by_adadelta -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      rho: decay rate of the running averages, in [0, 1).
      epsilon: added inside both square roots.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.adadelta()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_decay("rho", rho, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    steps = [scale_by_adadelta(rho, epsilon), scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def adam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-7,
    amsgrad: bool = False,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
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

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: Keras' "epsilon hat", added to ``sqrt(v_t)`` before the bias correction.
      amsgrad: use the running maximum of ``v_t``.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.adam()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [
        scale_by_keras_adam(beta_1, beta_2, epsilon, bool(amsgrad)),
        scale_by_learning_rate(learning_rate),
    ]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def adamw(
    learning_rate: ScalarOrSchedule = 0.001,
    weight_decay: Scalar = 0.004,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-7,
    amsgrad: bool = False,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.AdamW``: ``adam`` with its ``weight_decay`` required.

    ``p <- p - lr_t * weight_decay * p`` before Adam's step (``adam`` above); the decay is
    scaled by the learning rate, as in optax's and PyTorch's AdamW.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      weight_decay: the decay rate (required by Keras' AdamW; default 0.004).
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: Keras' "epsilon hat".
      amsgrad: use the running maximum of ``v_t``.
      clipnorm: first clip each gradient leaf to this L2 norm.
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.adamw(weight_decay=0.01)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    if weight_decay is None:
        raise ValueError(
            "Invalid weight_decay: None. Expected a number >= 0; AdamW needs a "
            "weight decay (use compat.keras.adam for none)."
        )
    return adam(
        learning_rate,
        beta_1,
        beta_2,
        epsilon,
        amsgrad,
        weight_decay,
        clipnorm,
        clipvalue,
        global_clipnorm,
    )


@keras_base_options
def nadam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-7,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Nadam`` (Dozat 2016 with Keras' momentum schedule).

    ::

        u_t = b1 * (1 - 0.5 * 0.96^t),    P_t = u_1 * ... * u_t
        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - b1)
        v_t = v_{t-1} + (g_t^2 - v_{t-1}) * (1 - b2)
        m_hat = u_{t+1} * m_t / (1 - P_{t+1}) + (1 - u_t) * g_t / (1 - P_t)
        p_t = p_{t-1} - lr_t * m_hat / (sqrt(v_t / (1 - b2^t)) + eps)

    (PyTorch's NAdam uses ``0.96^(0.004 t)``; Keras uses ``0.96^t``.) Blocks:
    ``scale_by_keras_nadam -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      beta_1: decay rate of the first moment (and the momentum schedule's base), in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: added outside the square root.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.nadam()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [scale_by_keras_nadam(beta_1, beta_2, epsilon), scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def adamax(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-7,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Adamax``.

    ::

        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - b1)
        u_t = max(b2 * u_{t-1}, |g_t|)
        p_t = p_{t-1} - lr_t * m_t / ((1 - b1^t) * (u_t + eps))

    (``optim.adamax`` puts eps inside the maximum.) Blocks:
    ``scale_by_keras_adamax -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the infinity norm, in [0, 1).
      epsilon: added to the infinity norm.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.adamax()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    steps = [scale_by_keras_adamax(beta_1, beta_2, epsilon), scale_by_learning_rate(learning_rate)]
    return _assemble(steps, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)


@keras_base_options
def lion(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.99,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Lion`` (Chen et al. 2023).

    ::

        p_t = p_{t-1} - lr_t * sign(b1 * m_{t-1} + (1 - b1) * g_t)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t

    Keras' weight decay is applied as for every Keras optimizer
    (``p <- p - lr_t * weight_decay * p``), which is Lion's decoupled decay. ``beta_1`` must
    lie in (0, 1) (Keras also accepts 1). Blocks: ``scale_by_lion -> scale_by_learning_rate``.

    Args:
      learning_rate: a number or a schedule of the step count (Keras' ``learning_rate``).
      beta_1: interpolation between momentum and gradient inside the sign, in (0, 1).
      beta_2: decay rate of the momentum, in [0, 1).
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off; :func:`add_lr_scaled_weight_decay`).
      clipnorm: first clip each gradient leaf to this L2 norm (:func:`clip_by_norm`).
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.lion(1e-4)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_scalar(
        "beta_1", beta_1, low=0.0, high=1.0, low_open=True, high_open=True, schedule_ok=False
    )
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
_BASE_ONLY = {"name": ..., "loss_scale_factor": None, "gradient_accumulation_steps": None}


def available() -> List[str]:
    """The Keras optimizer names ``get`` understands (lower case).

    Example:
      >>> "rmsprop" in jz.compat.keras.available()
      True
    """
    return sorted(_OPTIMIZERS)


def get(identifier: Any) -> Optional[GradientTransformation]:
    """Like ``keras.optimizers.get``: an optimizer from a name or a Keras config dict.

    ``identifier`` is a name (``"adam"``, ``"Adam"``, ``"RMSprop"``: case-insensitive) for
    the optimizer with Keras' defaults; a Keras config such as
    ``keras.optimizers.serialize(opt)`` or ``{"class_name": "SGD", "config": {"momentum":
    0.9}}``; or a ``GradientTransformation``, returned unchanged. ``None`` gives ``None``.

    Args:
      identifier: a name, a Keras config dict, a ``GradientTransformation`` or None.

    Returns:
      The optimizer (or None for None).

    Raises:
      ValueError: an unknown name or class, or a config this module cannot reproduce.

    Example:
      >>> tx = jz.compat.keras.get("RMSprop")
      >>> tx = jz.compat.keras.get({"class_name": "SGD", "config": {"momentum": 0.9}})
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
                "writes."
            )
        name, config = identifier["class_name"], dict(identifier.get("config") or {})
    else:
        raise TypeError(
            f"Could not interpret optimizer identifier {identifier!r}: expected a name such "
            "as 'adam', a Keras config dict, or a GradientTransformation."
        )
    key = str(name).lower()
    factory = _OPTIMIZERS.get(_BY_CLASS.get(key, key))
    if factory is not None:
        factory = keras_base_options(factory)  # a no-op for the decorated ones
    if factory is None:
        close = difflib.get_close_matches(str(name).lower(), list(_OPTIMIZERS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown Keras optimizer {name!r}.{hint} Known: {', '.join(available())}."
        )
    for key, off in _BASE_ONLY.items():
        if key in config:
            value = config.pop(key)
            if off is not ... and value != off and not (off is False and not value):
                raise ValueError(
                    f"{name}: {key}={value!r} is not supported by jaxopt_zoo.compat.keras; "
                    f"remove it or set it to {off!r}."
                )
    if isinstance(config.get("learning_rate"), dict):
        raise ValueError(
            f"{name}: a serialized Keras learning-rate schedule cannot be rebuilt here; pass "
            "the optimizer a schedule function of the step count instead."
        )
    params = inspect.signature(factory).parameters
    unknown = sorted(k for k in config if k not in params)
    if unknown:
        raise ValueError(
            f"{name}: argument(s) not recognized: {unknown}; it takes {', '.join(params)}."
        )
    return factory(**config)


# =========================================================================== #
# Lamb, Adafactor, Ftrl, ScheduleFreeAdamW (Keras 3.15)
#
# These four read the variable in their update step (a trust ratio, a parameter RMS, FTRL's
# closed form, schedule-free's interpolation), and Keras applies its weight decay to the
# variable before the step. So each is one block that decays, steps and returns the
# difference: ``keras_variable_step``.
# =========================================================================== #

from jaxopt_zoo.core import check_int  # noqa: E402


class KerasVariableStepState(NamedTuple):
    """``count``: Keras' ``iterations``; ``slots``: per leaf, a tuple of that optimizer's
    variables (kept in ``compute_dtype`` of the leaf: float32 for half precision)."""

    count: StepCount
    slots: Any


def keras_variable_step(
    name: str,
    init_slots: Callable[[jax.Array, Any], tuple],
    step: Callable[..., tuple],
    learning_rate: ScalarOrSchedule,
    weight_decay: Any,
) -> GradientTransformation:
    """A Keras ``update_step`` that reads the variable, with Keras' weight decay first.

    ``init_slots(p, dtype)`` gives a leaf's slots; ``step(g, y, slots, lr, t)`` returns the
    new variable and slots, with ``y = p - p * weight_decay * lr`` (Keras'
    ``_apply_weight_decay``), ``lr`` the learning rate at ``iterations`` and ``t =
    iterations + 1``, all in the leaf's compute dtype. The update is ``new - p``.

    Args:
      name: the optimizer's name, for error messages.
      init_slots: ``init_slots(p, dtype) -> tuple`` of a leaf's slot arrays.
      step: ``step(g, y, slots, lr, t) -> (new_p, new_slots)`` for one leaf.
      learning_rate: a number or a schedule of the step count.
      weight_decay: Keras' decay rate (``None`` or 0: none).

    Returns:
      An ``optax.GradientTransformation`` with state ``KerasVariableStepState``.

    Example:
      >>> tx = jz.compat.keras.keras_variable_step(  # plain SGD, with Keras' decay
      ...     "sgd", lambda p, dt: (), lambda g, y, slots, lr, t: (y - lr * g, slots),
      ...     learning_rate=0.1, weight_decay=0.5)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 4)  # -lr * wd * p - lr * g
      -0.15
    """
    check_nonneg("learning_rate", learning_rate)
    if weight_decay is not None:
        check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    decay = weight_decay is not None and not is_zero(weight_decay)

    def init_fn(params):
        return KerasVariableStepState(
            count=zero_count(),
            slots=jax.tree.map(lambda p: init_slots(p, compute_dtype(p.dtype)), params),
        )

    def update_fn(updates, state, params=None):
        require_params(params, name)
        check_same_structure(updates, params, name)
        lr_t = resolve(learning_rate, state.count)

        def leaf(g, p, slots):
            dt = compute_dtype(p.dtype)
            lr = jnp.asarray(lr_t).astype(dt)
            t = increment(state.count).astype(dt)
            y = p.astype(dt)
            if decay:
                y = y - y * jnp.asarray(weight_decay, dt) * lr
            new, slots = step(g.astype(dt), y, slots, lr, t)
            return (new - p.astype(dt)).astype(g.dtype), tuple(s.astype(dt) for s in slots)

        treedef: Any = jax.tree.structure(updates)  # its stub lacks flatten_up_to
        out = [
            leaf(g, p, s)
            for g, p, s in zip(
                treedef.flatten_up_to(updates),
                treedef.flatten_up_to(params),
                treedef.flatten_up_to(state.slots),
            )
        ]
        return (
            treedef.unflatten([o[0] for o in out]),
            KerasVariableStepState(
                count=increment(state.count),
                slots=treedef.unflatten([o[1] for o in out]),
            ),
        )

    return GradientTransformation(init_fn, update_fn)


def _zeros_slots(n: int) -> Callable[[jax.Array, Any], tuple]:
    return lambda p, dt: tuple(jnp.zeros(p.shape, dt) for _ in range(n))


@keras_base_options
def lamb(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-7,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Lamb`` (You et al. 2020)::

        m_t = m + (g - m)(1 - b1),  v_t = v + (g^2 - v)(1 - b2)
        r = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
        p = p - lr * (||p|| / ||r||) * r      (ratio 1 if either norm is 0)

    Unlike the paper (and ``jaxopt_zoo.lamb``), Keras decays ``p <- p - lr * wd * p``
    before the step instead of adding ``wd * p`` to ``r`` inside the trust ratio.

    Args:
      learning_rate: a number or a schedule of the step count.
      beta_1: decay rate of the first moment, in [0, 1).
      beta_2: decay rate of the second moment, in [0, 1).
      epsilon: added to the bias-corrected ``sqrt(v)``.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off).
      clipnorm: first clip each gradient leaf to this L2 norm.
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.lamb(0.01)
      >>> params = {"w": jnp.ones((2, 3))}
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params), params)
      >>> round(float(updates["w"][0, 0]), 4)  # trust ratio ||p|| / ||r|| = 1
      -0.01
    """
    _check_betas(beta_1, beta_2, epsilon)

    def step(g, p, slots, lr, t):
        m, v = slots
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        r = (m / (1 - jnp.asarray(beta_1, g.dtype) ** t)) / (
            jnp.sqrt(v / (1 - jnp.asarray(beta_2, g.dtype) ** t)) + epsilon
        )
        w_norm = jnp.sqrt(jnp.sum(p * p))
        r_norm = jnp.sqrt(jnp.sum(r * r))
        ratio = jnp.where(w_norm > 0, jnp.where(r_norm > 0, w_norm / r_norm, 1.0), 1.0)
        return p - ratio * lr * r, (m, v)

    return _assemble(
        [keras_variable_step("keras.lamb", _zeros_slots(2), step, learning_rate, weight_decay)],
        learning_rate,
        None,
        clipnorm,
        clipvalue,
        global_clipnorm,
    )


@keras_base_options
def adafactor(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_2_decay: Scalar = -0.8,
    epsilon_1: Scalar = 1e-30,
    epsilon_2: Scalar = 1e-3,
    clip_threshold: Scalar = 1.0,
    relative_step: bool = True,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Adafactor`` (Shazeer & Stern 2018), Keras' variant::

        rho_t = min(lr, 1 / sqrt(t)),  alpha_t = max(epsilon_2, rms(p)) * rho_t
        b_t = 1 - t^beta_2_decay,      G = g^2 + epsilon_1
        R = b_t R + (1 - b_t) mean(G, -1),  C = b_t C + (1 - b_t) mean(G, -2)   (ndim >= 2)
        V = (R / mean(R, -1))[..., None] * C[..., None, :]                       (ndim >= 2)
        V = b_t V + (1 - b_t) G                                                  (ndim < 2)
        U = g / sqrt(V);  p = p - alpha_t * U / max(1, rms(U) / clip_threshold)

    Every mean (``rms``, ``R``, ``C``) is summed in float32 as Keras' ``ops.mean`` does,
    also for float64 parameters. Keras always takes ``min(lr, 1 / sqrt(t))`` for ``rho_t``,
    so ``relative_step``
    (which only clips ``lr`` the same way first) changes nothing; it is accepted for
    Keras' signature. There is no first moment (``jaxopt_zoo.adafactor`` follows optax).

    Args:
      learning_rate: a number or a schedule of the step count.
      beta_2_decay: the exponent of ``b_t = 1 - t^beta_2_decay``.
      epsilon_1: added to ``g^2``.
      epsilon_2: the floor of ``rms(p)`` in the step size.
      clip_threshold: the update's RMS bound, > 0.
      relative_step: accepted for Keras' signature (no effect, see above).
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off).
      clipnorm: first clip each gradient leaf to this L2 norm.
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``; matrices keep the factored ``R`` and ``C``.

    Example:
      >>> tx = jz.compat.keras.adafactor()
      >>> params = {"w": jnp.ones((2, 3))}
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params), params)
      >>> round(float(updates["w"][0, 0]), 4)  # -max(epsilon_2, rms(p)) * min(lr, 1)
      -0.001
    """
    check_nonneg("epsilon_1", epsilon_1, schedule_ok=False)
    check_nonneg("epsilon_2", epsilon_2, schedule_ok=False)
    check_scalar("clip_threshold", clip_threshold, low=0.0, low_open=True, schedule_ok=False)

    def init_slots(p, dt):
        if p.ndim < 2:
            return (jnp.zeros(p.shape, dt),)
        return (
            jnp.zeros(p.shape[:-1], dt),
            jnp.zeros(p.shape[:-2] + p.shape[-1:], dt),
            jnp.zeros(p.shape, dt),
        )

    def mean(x, axis=None, keepdims=False):
        # Keras' ops.mean on the JAX backend sums in result_type(x, float32), which Keras'
        # promotion makes float32 even for float64 x: its float64 means are float32-exact
        return jnp.mean(x, axis=axis, keepdims=keepdims, dtype=jnp.float32).astype(x.dtype)

    def rms(x):
        return jnp.sqrt(mean(x * x)) if x.size else jnp.zeros([], x.dtype)

    def step(g, p, slots, lr, t):
        if p.size == 0:  # nothing to update; Keras' means of an empty axis would be nan
            return p, slots
        rho = jnp.minimum(lr, 1 / jnp.sqrt(t))
        alpha = jnp.maximum(jnp.asarray(epsilon_2, g.dtype), rms(p)) * rho
        sq = g * g + epsilon_1
        b = 1 - t**beta_2_decay
        if p.ndim >= 2:
            r, c, _ = slots
            r = b * r + (1 - b) * mean(sq, axis=-1)
            c = b * c + (1 - b) * mean(sq, axis=-2)
            v = jnp.expand_dims(r / mean(r, axis=-1, keepdims=True), -1) * jnp.expand_dims(c, -2)
            new_slots: tuple = (r, c, v)
        else:
            v = b * slots[0] + (1 - b) * sq
            new_slots = (v,)
        u = g / jnp.sqrt(v)
        u_hat = u / jnp.maximum(1.0, rms(u) / clip_threshold)
        return p - alpha * u_hat, new_slots

    return _assemble(
        [keras_variable_step("keras.adafactor", init_slots, step, learning_rate, weight_decay)],
        learning_rate,
        None,
        clipnorm,
        clipvalue,
        global_clipnorm,
    )


@keras_base_options
def ftrl(
    learning_rate: ScalarOrSchedule = 0.001,
    learning_rate_power: Scalar = -0.5,
    initial_accumulator_value: Scalar = 0.1,
    l1_regularization_strength: Scalar = 0.0,
    l2_regularization_strength: Scalar = 0.0,
    l2_shrinkage_regularization_strength: Scalar = 0.0,
    beta: Scalar = 0.0,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.Ftrl`` (McMahan et al. 2013, FTRL-Proximal)::

        l2 = l2_regularization_strength + beta / (2 lr),  n' = n + g^2
        z = z + (g + 2 l2_shrinkage p) - (n'^-c - n^-c) / lr * p        (c = lr_power)
        p = (clip(z, -l1, l1) - z) / (n'^-c / lr + 2 l2),  n = n'

    The parameters are set in closed form from ``z`` and ``n``: the previous ``p`` enters
    only through ``z``.

    Args:
      learning_rate: a number or a schedule of the step count.
      learning_rate_power: ``c``, <= 0.
      initial_accumulator_value: the initial ``n``, >= 0.
      l1_regularization_strength: ``l1``, >= 0.
      l2_regularization_strength: the L2 strength, >= 0.
      l2_shrinkage_regularization_strength: ``l2_shrinkage``, >= 0.
      beta: added to ``l2`` as ``beta / (2 lr)``, >= 0.
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off).
      clipnorm: first clip each gradient leaf to this L2 norm.
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.ftrl(0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 4)
      -0.3969
    """
    check_scalar("learning_rate_power", learning_rate_power, high=0.0, schedule_ok=False)
    for k, v in (
        ("initial_accumulator_value", initial_accumulator_value),
        ("l1_regularization_strength", l1_regularization_strength),
        ("l2_regularization_strength", l2_regularization_strength),
        ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength),
        ("beta", beta),
    ):
        check_nonneg(k, v, schedule_ok=False)
    c = learning_rate_power
    l1 = l1_regularization_strength

    def init_slots(p, dt):
        return (jnp.full(p.shape, initial_accumulator_value, dt), jnp.zeros(p.shape, dt))

    def step(g, p, slots, lr, t):
        n, z = slots
        l2 = l2_regularization_strength + beta / (2.0 * lr)
        n_new = n + g * g
        z = (
            z
            + (g + 2 * l2_shrinkage_regularization_strength * p)
            - ((n_new ** (-c) - n ** (-c)) / lr) * p
        )
        quad = n_new ** (-c) / lr + 2 * l2
        return (jnp.clip(z, -l1, l1) - z) / quad, (n_new, z)

    return _assemble(
        [keras_variable_step("keras.ftrl", init_slots, step, learning_rate, weight_decay)],
        learning_rate,
        None,
        clipnorm,
        clipvalue,
        global_clipnorm,
    )


@keras_base_options
def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    beta_1: Scalar = 0.9,
    beta_2: Scalar = 0.999,
    epsilon: Scalar = 1e-8,
    warmup_steps: int = 0,
    weight_decay: Optional[Scalar] = None,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
) -> GradientTransformation:
    """``keras.optimizers.ScheduleFreeAdamW`` (Defazio et al. 2024), Keras' variant.

    The parameters are ``y``; the state holds ``z`` (starts at the parameters) and ``v``::

        lr_t = lr * min(t / warmup_steps, 1)                    (if warmup_steps > 0)
        v = v + (g^2 - v)(1 - b2);  z_new = z - lr_t g / (sqrt(v / (1 - b2^t)) + eps)
        x = (y - (1 - b1) z) / b1                              (x recovered from y and z)
        x = (1 - 1/t) x + (1/t) z_new;  y = (1 - b1) z_new + b1 x

    Differences from the authors' ``schedulefree`` (and the native schedule-free):
    uniform averaging weight ``1/t`` (no ``lr^weight_lr_power`` weighting), the warm-up
    scales ``lr`` linearly from ``1/warmup_steps``, the gradient is taken at ``y`` with
    Keras' weight decay applied to ``y`` before the step, and ``x`` is recovered from ``y``
    by division by ``b1`` (``b1 > 0`` needed). There is no separate evaluation point:
    ``x = (y - (1 - b1) z) / b1``.

    Args:
      learning_rate: a number or a schedule of the step count.
      beta_1: ``b1``, the interpolation between ``x`` and ``z``, in (0, 1).
      beta_2: ``b2``, the second-moment decay, in [0, 1).
      epsilon: added to the bias-corrected ``sqrt(v)``.
      warmup_steps: linear warmup steps (0: none).
      weight_decay: Keras' decay ``p <- p - lr_t * weight_decay * p`` before the step (None:
        off).
      clipnorm: first clip each gradient leaf to this L2 norm.
      clipvalue: first clip each gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: first clip all gradients together to this global L2 norm.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.schedule_free_adamw(0.01)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 4)  # the first step: y = x = z = p - lr
      -0.01
    """
    check_scalar(
        "beta_1", beta_1, low=0.0, high=1.0, low_open=True, high_open=True, schedule_ok=False
    )
    check_decay("beta_2", beta_2, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    w = check_int("warmup_steps", warmup_steps, low=0)

    def step(g, y, slots, lr, t):
        z, v = slots
        if w > 0:
            lr = lr * jnp.minimum(t / w, 1.0)
        v = v + (g * g - v) * (1 - beta_2)
        denom = jnp.sqrt(v / (1 - jnp.asarray(beta_2, g.dtype) ** t)) + epsilon
        z_new = z - lr * g / denom
        weight = 1.0 / t
        x = (y - (1 - beta_1) * z) / beta_1
        x = (1 - weight) * x + weight * z_new
        return (1 - beta_1) * z_new + beta_1 * x, (z_new, v)

    return _assemble(
        [
            keras_variable_step(
                "keras.schedule_free_adamw",
                lambda p, dt: (fresh_copy(p, dt), jnp.zeros(p.shape, dt)),  # z: a copy of p
                step,
                learning_rate,
                weight_decay,
            )
        ],
        learning_rate,
        None,
        clipnorm,
        clipvalue,
        global_clipnorm,
    )


_OPTIMIZERS.update(
    {"adafactor": adafactor, "ftrl": ftrl, "lamb": lamb, "schedule_free_adamw": schedule_free_adamw}
)
__all__ += [
    "KerasVariableStepState",
    "adafactor",
    "ftrl",
    "keras_variable_step",
    "lamb",
    "schedule_free_adamw",
]


# --------------------------------------------------------------------------- #
# Muon (keras.optimizers.Muon)
# --------------------------------------------------------------------------- #


def leaf_path(path: Any) -> str:
    """A pytree key path as a Keras variable path: keys joined by ``/`` (``"dense/kernel"``).

    Args:
      path: a key path, as ``jax.tree_util.tree_flatten_with_path`` gives (dict keys,
        attribute names and sequence indices).

    Returns:
      The path as a string.

    Example:
      >>> (path, _), = jax.tree_util.tree_flatten_with_path({"dense": {"kernel": 0}})[0]
      >>> jz.compat.keras.leaf_path(path)
      'dense/kernel'
    """
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def muon_labels(params: Any, exclude_layers: Any = None, exclude_embeddings: bool = True) -> Any:
    """Keras Muon's split: ``"adam"`` for a leaf that is not 2-D, whose path contains
    ``"embedding"`` (any case; with ``exclude_embeddings``) or matches a regular expression of
    ``exclude_layers`` (``re.search``); ``"muon"`` for the others.

    Args:
      params: the parameters (a pytree).
      exclude_layers: regular expressions of paths (see :func:`leaf_path`) that take Adam.
      exclude_embeddings: send leaves whose path contains ``"embedding"`` to Adam.

    Returns:
      A tree like ``params`` of ``"muon"`` / ``"adam"`` labels.

    Example:
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
      ...           "token_embedding": jnp.ones((5, 3)), "head": jnp.ones((3, 5))}
      >>> jz.compat.keras.muon_labels(params, exclude_layers=["^head"])
      {'dense': {'bias': 'adam', 'kernel': 'muon'}, 'head': 'adam', 'token_embedding': 'adam'}
    """

    def label(path, x):
        name = leaf_path(path)
        if jnp.ndim(x) != 2 or (exclude_embeddings and "embedding" in name.lower()):
            return "adam"
        return "adam" if any(re.search(k, name) for k in exclude_layers or ()) else "muon"

    return jax.tree_util.tree_map_with_path(label, params)


@keras_base_options
def muon(
    learning_rate: ScalarOrSchedule = 0.001,
    adam_beta_1: Scalar = 0.9,
    adam_beta_2: Scalar = 0.999,
    adam_weight_decay: Scalar = 0.004,
    epsilon: Scalar = 1e-7,
    weight_decay: Scalar = 0.004,
    clipnorm: Optional[Scalar] = None,
    clipvalue: Optional[Scalar] = None,
    global_clipnorm: Optional[Scalar] = None,
    exclude_layers: Optional[List[str]] = None,
    exclude_embeddings: bool = True,
    muon_a: float = 3.4445,
    muon_b: float = -4.7750,
    muon_c: float = 2.0315,
    adam_lr_ratio: Scalar = 1,
    momentum: Scalar = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    rms_rate: Scalar = 0.2,
) -> GradientTransformation:
    """``keras.optimizers.Muon``: Muon for 2-D leaves, Keras' Adam for the others.

    Matrices (2-D leaves not excluded, see ``muon_labels``; a leaf's Keras "path" is its
    pytree key path joined by ``/``)::

        m_t = momentum m_{t-1} + g_t;   U_t = g_t + momentum m_t  (nesterov),  m_t  (otherwise)
        X_0 = U_t / (||U_t||_F + 1e-7),  wide;  X <- a X + (b A + c A A) X,  A = X X^T
        p_t = p_{t-1} - lr_t * rms_rate * sqrt(max(A, B)) * X   (no factor if rms_rate=None)

    Other leaves: ``adam`` here (epsilon hat) with ``adam_beta_1/2``, ``epsilon`` and
    ``lr_t * adam_lr_ratio``. Decay, as Keras: ``p <- p - lr_t * wd * p`` with
    ``wd = weight_decay`` for matrices and ``adam_weight_decay`` for the rest (``None``: none).
    No bias correction and an undamped momentum (torch's buffer times ``1 / (1 - momentum)``,
    the same direction); the iteration runs in float32 (Keras: the variable's dtype).
    Conv kernels (4-D) take Adam, as in Keras. Blocks: clipping -> ``partition`` of
    ``trace -> orthogonalize_by_newton_schulz -> scale_by_muon_shape ->
    scale_by_learning_rate -> add_lr_scaled_weight_decay`` and ``scale_by_keras_adam -> ...``.

    Args:
      learning_rate: a number or a schedule of the step count.
      adam_beta_1, adam_beta_2: Adam's moment decays, in [0, 1).
      adam_weight_decay: the other leaves' decay (``None``: none).
      epsilon: Adam's "epsilon hat".
      weight_decay: the matrices' decay (``None``: none).
      clipnorm, clipvalue, global_clipnorm: gradient clipping, as the other Keras optimizers.
      exclude_layers, exclude_embeddings: which 2-D leaves take Adam (:func:`muon_labels`).
      muon_a, muon_b, muon_c: the Newton-Schulz coefficients.
      adam_lr_ratio: Adam's learning rate over ``learning_rate``.
      momentum: the momentum of ``m_t``.
      ns_steps: Newton-Schulz iterations.
      nesterov: orthogonalize ``g_t + momentum m_t`` instead of ``m_t``.
      rms_rate: the update RMS target (``None``: no shape factor).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.keras.muon(0.01)
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> jax.tree.map(jnp.shape, updates)
      {'dense': {'bias': (2,), 'kernel': (3, 2)}}
    """
    check_nonneg("learning_rate", learning_rate)
    _check_betas(adam_beta_1, adam_beta_2, epsilon)
    check_nonneg("momentum", momentum, schedule_ok=False)
    check_nonneg("adam_lr_ratio", adam_lr_ratio, schedule_ok=False)
    if isinstance(exclude_layers, str):
        raise TypeError(
            f"Invalid exclude_layers: {exclude_layers!r}. Expected a list of "
            "strings (regular expressions), as Keras."
        )
    adam_lr: ScalarOrSchedule = learning_rate
    if callable(learning_rate):
        adam_lr = lambda count: adam_lr_ratio * learning_rate(count)  # noqa: E731
    elif not (is_concrete_scalar(adam_lr_ratio) and adam_lr_ratio == 1):
        adam_lr = adam_lr_ratio * learning_rate
    muon_part = [
        trace(momentum, nesterov=nesterov),
        orthogonalize_by_newton_schulz(
            (muon_a, muon_b, muon_c), ns_steps, 1e-7, ns_method="standard"
        ),
        scale_by_muon_shape(consistent_rms=rms_rate, width_scaling=False),
        scale_by_learning_rate(learning_rate),
    ]
    adam_part = [
        scale_by_keras_adam(adam_beta_1, adam_beta_2, epsilon),
        scale_by_learning_rate(adam_lr),
    ]
    for part, wd in ((muon_part, weight_decay), (adam_part, adam_weight_decay)):
        if wd is not None:
            check_nonneg("weight_decay", wd, schedule_ok=False)
            if not is_zero(wd):
                part.append(skip_if_empty(add_lr_scaled_weight_decay(wd, learning_rate)))
    split = partition(
        {"muon": chain(*muon_part), "adam": chain(*adam_part)},
        lambda params: muon_labels(params, exclude_layers, exclude_embeddings),
    )
    return chain(*_clipping(clipnorm, clipvalue, global_clipnorm), split)


_OPTIMIZERS["muon"] = muon

#: Every optimizer ``get`` knows and the ``keras.optimizers`` class it reproduces. The
#: registry registers ``"keras.<name>"`` from this table, and ``get`` also accepts the class
#: names (``"ScheduleFreeAdamW"``).
CLASS_NAMES = {
    "adadelta": "Adadelta",
    "adafactor": "Adafactor",
    "adagrad": "Adagrad",
    "adam": "Adam",
    "adamax": "Adamax",
    "adamw": "AdamW",
    "ftrl": "Ftrl",
    "lamb": "Lamb",
    "lion": "Lion",
    "muon": "Muon",
    "nadam": "Nadam",
    "rmsprop": "RMSprop",
    "schedule_free_adamw": "ScheduleFreeAdamW",
    "sgd": "SGD",
}
_BY_CLASS = {c.lower(): n for n, c in CLASS_NAMES.items()}
