"""PyTorch's optimizers with ``torch.optim``'s exact formulas, argument names and defaults.

``jaxopt_zoo.compat.torch.adam(lr=1e-3, betas=(0.9, 0.999), ...)`` follows
``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), ...)`` (torch 2.13) step for step:
feed both the same gradients and the parameter trajectories agree to rounding
(``tests/test_parity_torch.py``). Each optimizer is an ``optax.GradientTransformation``
chained from this package's blocks wherever the math is the same; three small blocks here
cover what differs (AMSGrad's maximum, NAdam's momentum schedule, RAdam's eps placement).

Conventions, as in torch:

- ``lr`` is a number, an array or a schedule (a function of the step count, 0 at the first
  update) -- the schedule plays the part of an ``LRScheduler`` setting ``group["lr"]``.
- ``weight_decay`` is L2 added to the gradient (coupled), except in ``adamw`` and with
  ``decoupled_weight_decay=True``, where ``p <- p * (1 - lr * weight_decay)``.
- ``maximize=True`` negates the gradient first.
- Complex parameters are optimized as ``view_as_real`` pairs (real and imaginary parts as
  independent reals), as torch does.
- Hyperparameters are checked like torch's constructors, with its messages
  (``ValueError("Invalid learning rate: -0.1. Expected ...")``).

torch's ``foreach``/``fused``/``capturable``/``differentiable`` select kernels, not math, so
they have no counterpart here.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.compat._torch_lbfgs import TorchLBFGSState, lbfgs
from jaxopt_zoo.compat._torch_more import (
    TorchAdafactorState,
    TorchASGDState,
    TorchRpropState,
    TorchSparseAdamState,
    asgd_averaged_params,
    scale_by_torch_adafactor,
    scale_by_torch_asgd,
    scale_by_torch_rprop,
    scale_by_torch_sparse_adam,
)
from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    bias_correction,
    chain,
    check_betas,
    check_decay,
    check_nonneg,
    check_same_structure,
    compute_dtype,
    increment,
    is_concrete_scalar,
    is_zero,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe, is_elementwise
from jaxopt_zoo.optim._common import init_moments
from jaxopt_zoo.optim.adadelta import scale_by_adadelta
from jaxopt_zoo.optim.adagrad import scale_by_rss
from jaxopt_zoo.optim.adam import ScaleByAdamState, adam_moments, scale_by_adam
from jaxopt_zoo.optim.adamax import scale_by_adamax
from jaxopt_zoo.optim.muon import scale_by_muon_shape
from jaxopt_zoo.optim.newton_schulz import MuonDimensionNumbers, orthogonalize_by_newton_schulz
from jaxopt_zoo.optim.rmsprop import scale_by_rms
from jaxopt_zoo.transforms.learning_rate import scale, scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import trace
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

__all__ = [
    "TorchASGDState",
    "TorchAdafactorState",
    "TorchAmsgradState",
    "TorchLBFGSState",
    "TorchNAdamState",
    "TorchRpropState",
    "TorchSparseAdamState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "asgd_averaged_params",
    "lbfgs",
    "muon",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "scale_by_torch_adafactor",
    "scale_by_torch_amsgrad",
    "scale_by_torch_asgd",
    "scale_by_torch_nadam",
    "scale_by_torch_radam",
    "scale_by_torch_rprop",
    "scale_by_torch_sparse_adam",
    "sgd",
    "sparse_adam",
]


# --------------------------------------------------------------------------- #
# Validation with torch's names and messages
# --------------------------------------------------------------------------- #


def _check_lr(lr: ScalarOrSchedule) -> None:
    check_nonneg("learning rate", lr)


def _check_eps(eps: Any) -> None:
    check_nonneg("epsilon value", eps, schedule_ok=False)


def _check_weight_decay(weight_decay: Any) -> None:
    check_nonneg("weight_decay value", weight_decay)


def _check_betas(betas: Any) -> Tuple[Any, Any]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid betas: {betas!r}. Expected a pair (beta1, beta2), e.g. (0.9, 0.999)."
        ) from None
    check_betas(
        b1, b2, names=("beta parameter at index 0", "beta parameter at index 1", "eps", "eps_root")
    )
    return b1, b2


# --------------------------------------------------------------------------- #
# Assembly: maximize -> [coupled decay] -> scaler -> [decoupled decay] -> -lr
# --------------------------------------------------------------------------- #


def _real_view(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    """Run ``inner`` on complex leaves viewed as real ``(..., 2)`` arrays (torch's
    ``view_as_real``); real trees pass through unchanged."""

    def to_real(tree):
        return jax.tree.map(
            lambda x: jnp.stack([x.real, x.imag], axis=-1) if jnp.iscomplexobj(x) else x, tree
        )

    def from_real(tree, like):
        return jax.tree.map(
            lambda r, x: (
                jax.lax.complex(r[..., 0], r[..., 1]).astype(x.dtype) if jnp.iscomplexobj(x) else r
            ),
            tree,
            like,
        )

    def init_fn(params):
        return inner.init(to_real(params))

    def update_fn(updates, state, params=None, **extra):
        real_params = None if params is None else to_real(params)
        if isinstance(inner, GradientTransformationExtraArgs):
            out, state = inner.update(to_real(updates), state, real_params, **extra)
        else:
            out, state = inner.update(to_real(updates), state, real_params)
        return from_real(out, updates), state

    # Element-wise exactly when the inner transformation is (complex leaves as real pairs).
    return describe(
        GradientTransformationExtraArgs(init_fn, update_fn),
        BlockSpec("real_view", elementwise=is_elementwise(inner), wraps=(inner,)),
    )


def _assemble(scaler, lr, weight_decay, *, decoupled=False, maximize=False, after=()):
    parts = []
    if maximize:
        parts.append(scale(-1.0))
    has_wd = not is_zero(weight_decay)
    if has_wd and not decoupled:
        parts.append(add_decayed_weights(weight_decay))
    if scaler is not None:
        parts.append(scaler)
    parts.extend(after)
    # p * (1 - lr * wd) - lr * u == p - lr * (u + wd * p): decay before the learning rate.
    if has_wd and decoupled:
        parts.append(add_decayed_weights(weight_decay))
    parts.append(scale_by_learning_rate(lr))
    return _real_view(chain(*parts))


# --------------------------------------------------------------------------- #
# torch-specific blocks
# --------------------------------------------------------------------------- #


class TorchAmsgradState(NamedTuple):
    """State of :func:`scale_by_torch_amsgrad`: step ``count``, moments ``mu`` and ``nu`` and
    ``nu_max``, the running maximum of the *uncorrected* second moment (as ``torch.optim``)."""

    count: StepCount
    mu: Any
    nu: Any
    nu_max: Any  # running maximum of the *uncorrected* second moment


def scale_by_torch_amsgrad(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    """torch's AMSGrad direction ``m_hat / (sqrt(max_{s<=t} v_s) / sqrt(1 - b2^t) + eps)``.

    The maximum is over the uncorrected ``v_t``, and the current bias correction is applied
    to it afterwards; ``scale_by_adam(amsgrad=True)`` takes the maximum of ``v_hat``
    instead (Reddi et al.'s algorithm without bias correction, as in optax).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added after the bias correction of the root.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.torch.scale_by_torch_amsgrad(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        mu, nu = init_moments(params)
        return TorchAmsgradState(zero_count(), mu, nu, jax.tree.map(jnp.zeros_like, nu))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_torch_amsgrad")
        mu, nu = adam_moments(updates, state.mu, state.nu, b1, b2)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)

        def leaf(m, v, g):
            dt = compute_dtype(v.dtype)
            c2 = jnp.sqrt(1 - jnp.asarray(b2, dt) ** count.astype(dt)).astype(v.dtype)
            return (m / (jnp.sqrt(v) / c2 + eps)).astype(g.dtype)

        out = jax.tree.map(leaf, mu_hat, nu_max, updates)
        return out, TorchAmsgradState(count, mu, nu, nu_max)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_amsgrad", elementwise=True),
    )


class TorchNAdamState(NamedTuple):
    """State of :func:`scale_by_torch_nadam`: step ``count``, ``mu_product`` (the product of
    the momentum schedule, ``prod_{s<=t} mu_s``) and the moments ``mu`` and ``nu``."""

    count: StepCount
    mu_product: jax.Array  # prod_{s<=t} mu_s
    mu: Any
    nu: Any


def scale_by_torch_nadam(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8, momentum_decay: Scalar = 4e-3
) -> GradientTransformation:
    """torch's NAdam direction with the momentum-decay schedule (Dozat 2016, sec. 3).

    ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))``, ``P_t = mu_1 ... mu_t``; the
    direction is ``((1 - mu_t) / (1 - P_t) * g_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t)
    / (sqrt(v_t / (1 - b2^t)) + eps)``.

    Args:
      b1: decay rate of the first moment and base of the momentum schedule, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      momentum_decay: ``psi`` of the schedule ``mu_t = b1 * (1 - 0.5 * 0.96^(t psi))``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.torch.scale_by_torch_nadam(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("momentum_decay", momentum_decay, schedule_ok=False)

    def init_fn(params):
        mu, nu = init_moments(params)
        return TorchNAdamState(
            count=zero_count(), mu_product=jnp.ones([], scalar_dtype(params)), mu=mu, nu=nu
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_torch_nadam")
        m, v = adam_moments(updates, state.mu, state.nu, b1, b2)
        count = increment(state.count)
        dt = state.mu_product.dtype
        t = count.astype(dt)
        beta1 = jnp.asarray(b1, dt)
        mu_t = beta1 * (1 - 0.5 * jnp.asarray(0.96, dt) ** (t * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * jnp.asarray(0.96, dt) ** ((t + 1) * momentum_decay))
        prod = state.mu_product * mu_t
        c_g = (1 - mu_t) / (1 - prod)
        c_m = mu_next / (1 - prod * mu_next)
        c2 = 1 - jnp.asarray(b2, dt) ** t

        def leaf(g, mm, vv):
            ct = mm.dtype
            denom = jnp.sqrt(vv / c2.astype(ct)) + eps
            d = c_g.astype(ct) * g.astype(ct) / denom + c_m.astype(ct) * mm / denom
            return d.astype(g.dtype)

        out = jax.tree.map(leaf, updates, m, v)
        return out, TorchNAdamState(count, prod, m, v)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_nadam", elementwise=True),
    )


def scale_by_torch_radam(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    """torch's RAdam direction: ``r_t * m_hat * sqrt(1 - b2^t) / (sqrt(v_t) + eps)`` when
    ``rho_t > 5``, else ``m_hat``.

    Unlike ``scale_by_radam`` the eps is added to the uncorrected ``sqrt(v_t)``, and the
    switch is strict (``rho_t > 5``).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added to the uncorrected ``sqrt(v_t)``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.torch.scale_by_torch_radam(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        return ScaleByAdamState(zero_count(), *init_moments(params))

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_torch_radam")
        mu, nu = adam_moments(updates, state.mu, state.nu, b1, b2)
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        dt = scalar_dtype(nu)
        t = count.astype(dt)
        beta2 = jnp.asarray(b2, dt)
        b2t = beta2**t
        c2 = 1 - b2t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * b2t / c2
        adaptive = rho_t > 5.0
        safe = jnp.where(adaptive, rho_t, 6.0)  # keeps the unused branch finite
        rect = jnp.sqrt((safe - 4) * (safe - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe))
        scale_t = rect * jnp.sqrt(c2)

        def leaf(m, v, g):
            ct = m.dtype
            rectified = m * scale_t.astype(ct) / (jnp.sqrt(v) + eps)
            return jnp.where(adaptive, rectified, m).astype(g.dtype)

        return jax.tree.map(leaf, mu_hat, nu, updates), ScaleByAdamState(count, mu, nu)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_radam", elementwise=True),
    )


# --------------------------------------------------------------------------- #
# The optimizers
# --------------------------------------------------------------------------- #


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: Scalar = 0.0,
    dampening: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.SGD``.

    ::

        g_t = grad_t + weight_decay * p_{t-1}                  (-grad_t if maximize)
        b_t = momentum * b_{t-1} + (1 - dampening) * g_t       (b_1 = g_1)
        d_t = g_t + momentum * b_t  if nesterov  else  b_t     (d_t = g_t if momentum == 0)
        p_t = p_{t-1} - lr * d_t

    Blocks: ``add_decayed_weights -> trace(momentum, nesterov, dampening) ->
    scale_by_learning_rate``.

    Raises:
      ValueError: negative ``lr``, ``momentum`` or ``weight_decay``; ``nesterov`` without
        ``momentum > 0`` and ``dampening == 0``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      momentum: momentum coefficient (0: none).
      dampening: scales the gradient entering the buffer by ``1 - dampening``.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      nesterov: Nesterov momentum.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.sgd(lr=0.1, momentum=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    check_nonneg("momentum value", momentum, schedule_ok=False)
    _check_weight_decay(weight_decay)
    if (
        nesterov
        and is_concrete_scalar(momentum)
        and is_concrete_scalar(dampening)
        and (momentum <= 0 or dampening != 0)
    ):
        raise ValueError(
            "Nesterov momentum requires a momentum and zero dampening: got "
            f"momentum={momentum!r}, dampening={dampening!r}. Pass momentum > 0 and "
            "dampening=0, or nesterov=False."
        )
    after = [] if is_zero(momentum) else [trace(momentum, nesterov, dampening)]
    return _assemble(None, lr, weight_decay, maximize=maximize, after=after)


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adam``.

    ::

        g_t = grad_t + weight_decay * p_{t-1}       (coupled; not with decoupled_weight_decay)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * g_t^2
        v'_t = max(v'_{t-1}, v_t) if amsgrad else v_t          (uncorrected maximum)
        p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)
        decoupled: p_{t-1} is first multiplied by (1 - lr * weight_decay) (AdamW)

    Blocks: ``add_decayed_weights -> scale_by_adam -> scale_by_learning_rate`` (decoupled:
    the decay after the scaler); ``amsgrad`` uses ``scale_by_torch_amsgrad``.

    Raises:
      ValueError: negative ``lr``, ``eps`` or ``weight_decay``; a beta outside [0, 1).

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
      eps: added to ``sqrt(v_t) / sqrt(1 - b2^t)``.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      amsgrad: use the running maximum of the uncorrected ``v_t``.
      maximize: ascend the objective (the gradient is negated).
      decoupled_weight_decay: AdamW's decoupled decay instead of the L2 penalty.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.adam(lr=1e-3, betas=(0.9, 0.99))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    _check_eps(eps)
    b1, b2 = _check_betas(betas)
    _check_weight_decay(weight_decay)
    scaler = scale_by_torch_amsgrad(b1, b2, eps) if amsgrad else scale_by_adam(b1, b2, eps)
    return _assemble(scaler, lr, weight_decay, decoupled=decoupled_weight_decay, maximize=maximize)


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.AdamW``: ``adam(..., decoupled_weight_decay=True)``, default decay 0.01.

    ::

        p_t = p_{t-1} * (1 - lr * weight_decay)
              - lr * m_hat_t / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)

    (Loshchilov & Hutter 2019). Blocks: ``scale_by_adam -> add_decayed_weights ->
    scale_by_learning_rate``; adding ``weight_decay * p`` before the learning rate is the
    same multiplication by ``1 - lr * weight_decay``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
      eps: added to ``sqrt(v_t) / sqrt(1 - b2^t)``.
      weight_decay: the decoupled decay rate (multiplied by ``lr``).
      amsgrad: use the running maximum of the uncorrected ``v_t``.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.adamw(lr=1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return adam(
        lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True
    )


def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum: Scalar = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.RMSprop``.

    ::

        g_t = grad_t + weight_decay * p_{t-1}
        v_t = alpha * v_{t-1} + (1 - alpha) * g_t^2                      (v_0 = 0)
        a_t = sqrt(v_t - m_t^2) + eps,  m_t = alpha * m_{t-1} + (1 - alpha) * g_t  (centered)
        a_t = sqrt(v_t) + eps                                            (otherwise)
        b_t = momentum * b_{t-1} + g_t / a_t;   p_t = p_{t-1} - lr * b_t  (momentum > 0)
        p_t = p_{t-1} - lr * g_t / a_t                                    (momentum == 0)

    The learning rate stays outside the momentum buffer (``jaxopt_zoo.rmsprop`` puts it
    inside). Blocks: ``add_decayed_weights -> scale_by_rms(eps_in_sqrt=False, centered)
    -> trace(momentum) -> scale_by_learning_rate``.

    Raises:
      ValueError: negative ``lr``, ``eps``, ``weight_decay`` or ``momentum``; ``alpha``
        outside [0, 1) (torch also accepts ``alpha >= 1``, where ``v`` never forgets).

    Args:
      lr: learning rate, a number or a schedule of the step count.
      alpha: decay rate of the moving average of ``g^2``, in [0, 1).
      eps: added outside the square root.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      momentum: momentum coefficient (0: none); the learning rate is outside the buffer.
      centered: subtract the squared moving average of ``g``.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.rmsprop(lr=1e-3, momentum=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    _check_eps(eps)
    check_nonneg("momentum value", momentum, schedule_ok=False)
    _check_weight_decay(weight_decay)
    check_decay("alpha value", alpha, schedule_ok=False)
    after = [] if is_zero(momentum) else [trace(momentum)]
    return _assemble(
        scale_by_rms(decay=alpha, eps=eps, eps_in_sqrt=False, centered=centered),
        lr,
        weight_decay,
        maximize=maximize,
        after=after,
    )


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adagrad``.

    ::

        g_t = grad_t + weight_decay * p_{t-1}
        s_t = s_{t-1} + g_t^2                         (s_0 = initial_accumulator_value)
        clr_t = lr / (1 + (t - 1) * lr_decay)          (t = 1, 2, ...)
        p_t = p_{t-1} - clr_t * g_t / (sqrt(s_t) + eps)

    Unlike ``jaxopt_zoo.adagrad`` (optax, Keras) eps is outside the root and the sum starts
    at 0. With a schedule, ``lr`` is the schedule's value at step ``t - 1``. Blocks:
    ``add_decayed_weights -> scale_by_rss(eps_in_sqrt=False) -> scale_by_learning_rate``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      lr_decay: ``clr_t = lr / (1 + (t - 1) * lr_decay)``.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      initial_accumulator_value: ``s_0``.
      eps: added outside the square root.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.adagrad(lr=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    check_nonneg("lr_decay value", lr_decay, schedule_ok=False)
    _check_weight_decay(weight_decay)
    check_nonneg("initial_accumulator_value value", initial_accumulator_value, schedule_ok=False)
    _check_eps(eps)
    if is_zero(lr_decay):
        clr = lr
    else:

        def clr(count):
            return resolve(lr, count) / (1 + count * lr_decay)

    return _assemble(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
        clr,
        weight_decay,
        maximize=maximize,
    )


def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adadelta`` (Zeiler 2012).

    ::

        g_t = grad_t + weight_decay * p_{t-1}
        E[g^2]_t  = rho * E[g^2]_{t-1} + (1 - rho) * g_t^2
        d_t       = sqrt(E[d^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[d^2]_t  = rho * E[d^2]_{t-1} + (1 - rho) * d_t^2
        p_t = p_{t-1} - lr * d_t                   (lr after the delta, not inside E[d^2])

    Blocks: ``add_decayed_weights -> scale_by_adadelta -> scale_by_learning_rate``.

    Raises:
      ValueError: negative ``lr``, ``eps`` or ``weight_decay``; ``rho`` outside [0, 1)
        (torch also accepts ``rho == 1``, which never updates the averages).

    Args:
      lr: learning rate, a number or a schedule of the step count.
      rho: decay rate of the running averages, in [0, 1).
      eps: added inside both square roots.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.adadelta()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    check_decay("rho value", rho, schedule_ok=False)
    _check_eps(eps)
    _check_weight_decay(weight_decay)
    return _assemble(scale_by_adadelta(rho, eps), lr, weight_decay, maximize=maximize)


def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adamax`` (Kingma & Ba 2015, sec. 7.1).

    ::

        g_t = grad_t + weight_decay * p_{t-1}
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(b2 * u_{t-1}, |g_t| + eps)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / u_t

    Blocks: ``add_decayed_weights -> scale_by_adamax -> scale_by_learning_rate``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first moment and the infinity norm, in [0, 1).
      eps: added to ``|g_t|`` inside the maximum.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.adamax()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    _check_eps(eps)
    b1, b2 = _check_betas(betas)
    _check_weight_decay(weight_decay)
    return _assemble(scale_by_adamax(b1, b2, eps), lr, weight_decay, maximize=maximize)


def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum_decay: Scalar = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.NAdam`` (Dozat 2016), with its momentum-decay schedule.

    ::

        g_t = grad_t + weight_decay * p_{t-1}       (coupled; decoupled: p *= 1 - lr * wd)
        mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay)),   P_t = mu_1 * ... * mu_t
        m_t = b1 * m_{t-1} + (1 - b1) * g_t;   v_t = b2 * v_{t-1} + (1 - b2) * g_t^2
        a_t = sqrt(v_t / (1 - b2^t)) + eps
        p_t = p_{t-1} - lr * ((1 - mu_t) / (1 - P_t) * g_t
                               + mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t) / a_t

    ``jaxopt_zoo.nadam`` is the schedule-free form (``mu_t = b1``). Blocks:
    ``add_decayed_weights -> scale_by_torch_nadam -> scale_by_learning_rate``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
      eps: added outside the square root.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      momentum_decay: ``psi`` of the momentum schedule.
      decoupled_weight_decay: decoupled decay (``p *= 1 - lr * weight_decay``) instead of L2.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.nadam()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    _check_eps(eps)
    b1, b2 = _check_betas(betas)
    _check_weight_decay(weight_decay)
    check_nonneg("momentum_decay value", momentum_decay, schedule_ok=False)
    return _assemble(
        scale_by_torch_nadam(b1, b2, eps, momentum_decay),
        lr,
        weight_decay,
        decoupled=decoupled_weight_decay,
        maximize=maximize,
    )


def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.RAdam`` (Liu et al. 2020).

    ::

        g_t, m_t, v_t as in Adam (decoupled: p *= 1 - lr * wd instead of coupled L2)
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p_t = p_{t-1} - lr * m_hat_t * r_t * sqrt(1 - b2^t) / (sqrt(v_t) + eps)  if rho_t > 5
        p_t = p_{t-1} - lr * m_hat_t                                             otherwise

    eps is added to the uncorrected ``sqrt(v_t)`` (``jaxopt_zoo.radam`` adds it to
    ``sqrt(v_hat)``). Blocks: ``add_decayed_weights -> scale_by_torch_radam ->
    scale_by_learning_rate``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
      eps: added to the uncorrected ``sqrt(v_t)``.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      decoupled_weight_decay: decoupled decay (``p *= 1 - lr * weight_decay``) instead of L2.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.radam()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    _check_lr(lr)
    _check_eps(eps)
    b1, b2 = _check_betas(betas)
    _check_weight_decay(weight_decay)
    return _assemble(
        scale_by_torch_radam(b1, b2, eps),
        lr,
        weight_decay,
        decoupled=decoupled_weight_decay,
        maximize=maximize,
    )


# --------------------------------------------------------------------------- #
# Muon (torch.optim.Muon, torch >= 2.9)
# --------------------------------------------------------------------------- #


def _refuse_non_matrices(tree: Any) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.ndim(x) != 2:
            raise ValueError(
                f"Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{tuple(jnp.shape(x))} at {jax.tree_util.keystr(path)} (as torch.optim.Muon). "
                "Give Muon the matrices only and the rest to adamw (optax.partition or "
                "jaxopt_zoo.partition), or use jaxopt_zoo.muon, which does that split itself."
            )
        if jnp.iscomplexobj(x):
            raise ValueError(
                f"Muon does not support complex parameters (as torch.optim.Muon); "
                f"got {jnp.result_type(x)} at {jax.tree_util.keystr(path)}."
            )


def _adjust_lr_dims(adjust_lr_fn: Any):
    """torch's ``_adjust_lr`` as ``scale_by_muon_shape``: torch reads ``A, B = shape[:2]`` of
    an ``(out, in)`` weight, i.e. output axis 0 and reduction axis 1."""
    dims = MuonDimensionNumbers(reduction_axis=1, output_axis=0)
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return scale_by_muon_shape(dims)  # sqrt(max(1, A / B))
    if adjust_lr_fn == "match_rms_adamw":
        return scale_by_muon_shape(dims, consistent_rms=0.2)  # 0.2 sqrt(max(A, B))
    raise ValueError(
        f"Adjust learning rate function {adjust_lr_fn} is not supported "
        "(expected None, 'original' or 'match_rms_adamw', as torch.optim.Muon)."
    )


def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: Scalar = 0.1,
    momentum: Scalar = 0.95,
    nesterov: bool = True,
    ns_coefficients: Tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    eps: Scalar = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: Any = None,
    *,
    ns_dtype: Any = jnp.bfloat16,
) -> GradientTransformation:
    """``torch.optim.Muon`` (torch 2.13): 2-D parameters only, as torch.

    ::

        B_t = momentum B_{t-1} + (1 - momentum) g_t            (B_0 = 0; torch's lerp)
        U_t = (1 - momentum) g_t + momentum B_t  (nesterov),  B_t  (otherwise)
        X_0 = bf16(U_t) / max(||U_t||_F, eps),  wide (transposed if A > B)
        X <- a X + (b A + c A A) X,  A = X X^T                  (ns_steps times, bfloat16)
        p_t = p_{t-1} (1 - lr wd) - lr s O_t,   s = sqrt(max(1, A / B))        ("original")
                                                 s = 0.2 sqrt(max(A, B))  ("match_rms_adamw")

    with ``(A, B) = p.shape``: torch's weights are ``(out, in)``, so for a JAX ``(in, out)``
    kernel pass its transpose or read ``A / B`` as ``in / out``. No bias correction, unlike
    ``jaxopt_zoo.muon``; ``eps`` is a lower bound on the norm, not added to it. torch runs the
    iteration in bfloat16; so does this by default (``ns_dtype``: bfloat16 matmuls with float32
    accumulation, each product rounded to bfloat16). ``ns_dtype=None`` runs it in float32
    (float64 for float64 parameters). Non-matrix or complex parameters raise ``ValueError``.
    Blocks: ``scale(1 - momentum) -> trace(momentum, nesterov) ->
    orthogonalize_by_newton_schulz -> scale_by_muon_shape -> add_decayed_weights ->
    scale_by_learning_rate``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      weight_decay: decoupled decay ``p (1 - lr wd)``, >= 0.
      momentum: the momentum, >= 0.
      nesterov: orthogonalize the Nesterov ``U_t`` instead of ``B_t``.
      ns_coefficients: ``(a, b, c)``.
      eps: the lower bound of the norm.
      ns_steps: Newton-Schulz iterations, an int < 100.
      adjust_lr_fn: ``None`` / ``"original"`` or ``"match_rms_adamw"`` (the factor ``s``).
      ns_dtype: dtype of the iteration (``None``: float32, float64 for float64).

    Returns:
      An ``optax.GradientTransformation`` for a tree of matrices.

    Example:
      >>> tx = jz.compat.torch.muon(lr=0.02, weight_decay=0.0)
      >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> updates["w"].shape, updates["w"].dtype
      ((4, 3), dtype('float32'))
    """
    _check_lr(lr)
    check_nonneg("momentum value", momentum, schedule_ok=False)
    _check_weight_decay(weight_decay)
    if not isinstance(ns_steps, int) or ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(tuple(ns_coefficients)) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    check_nonneg("epsilon value", eps, schedule_ok=False)
    parts = [
        scale(1 - momentum),
        trace(momentum, nesterov=nesterov),
        orthogonalize_by_newton_schulz(
            tuple(ns_coefficients),  # type: ignore[arg-type]
            ns_steps,
            eps,
            ns_dtype=ns_dtype,
            clamp_eps=True,
            ns_method="standard",
        ),
        _adjust_lr_dims(adjust_lr_fn),
    ]
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay))
    parts.append(scale_by_learning_rate(lr))
    inner = chain(*parts)

    def init_fn(params):
        _refuse_non_matrices(params)
        return inner.init(params)

    def update_fn(updates, state, params=None):
        _refuse_non_matrices(updates)
        return inner.update(updates, state, params)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- #
# Rprop, ASGD, Adafactor, SparseAdam (blocks in _torch_more), L-BFGS (_torch_lbfgs)
# --------------------------------------------------------------------------- #


def _torch_check(ok: Any, message: str, expected: str) -> None:
    if not ok:
        raise ValueError(f"{message}. Expected {expected}.")


def _whole_step(block: GradientTransformation, maximize: bool) -> GradientTransformationExtraArgs:
    """``maximize`` and the complex view around a block that returns the whole parameter
    change (no trailing learning rate)."""
    parts = [scale(-1.0)] if maximize else []
    return _real_view(chain(*parts, block))


def rprop(
    lr: Scalar = 1e-2,
    etas: Tuple[Any, Any] = (0.5, 1.2),
    step_sizes: Tuple[Any, Any] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Rprop`` (Riedmiller & Braun 1993; "Rprop-", no weight-backtracking).

    ::

        f_t = etaplus if g_t g'_{t-1} > 0,  etaminus if < 0,  1 if == 0   (etas: the two)
        s_t = clip(s_{t-1} f_t, *step_sizes)                               (s_0 = lr)
        g'_t = 0 where f_t == etaminus, else g_t
        p_t = p_{t-1} - sign(g'_t) s_t

    ``lr`` only sets the initial step sizes (torch's schedulers do not reach them either),
    so it is a number, not a schedule. ``optax.rprop`` differs: it keeps the sign of the
    raw gradient and updates with the previous step after a sign change (see
    docs/verification.md). Blocks: ``scale_by_torch_rprop``.

    Raises:
      ValueError: negative ``lr``; ``etas`` not ``0 < etaminus < 1 < etaplus``;
        ``step_sizes`` not ``0 <= min <= max``.

    Args:
      lr: the initial step size.
      etas: ``(etaminus, etaplus)``, the step-size factors after a sign change and while
        the sign holds.
      step_sizes: ``(min, max)`` bounds of the step sizes.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.rprop(lr=0.01)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("learning rate", lr, schedule_ok=False)
    etaminus, etaplus = etas
    if is_concrete_scalar(etaminus) and is_concrete_scalar(etaplus):
        _torch_check(
            0.0 < etaminus < 1.0 < etaplus,
            f"Invalid eta values: {etaminus}, {etaplus}",
            "0 < etaminus < 1 < etaplus",
        )
    lo, hi = step_sizes
    if is_concrete_scalar(lo) and is_concrete_scalar(hi):
        _torch_check(
            0.0 <= lo <= hi,
            f"Invalid step_sizes: {lo}, {hi}",
            "0 <= step_size_min <= step_size_max",
        )
    return _whole_step(scale_by_torch_rprop(lr, etaminus, etaplus, lo, hi), maximize)


def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: Scalar = 1e-4,
    alpha: Scalar = 0.75,
    t0: Scalar = 1e6,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.ASGD`` (Polyak & Juditsky 1992), averaged parameters in the state.

    ::

        eta_t = lr / (1 + lambd lr (t - 1))^alpha,   mu_t = 1 / max(1, t - 1 - t0)
        g_t = grad_t + weight_decay p_{t-1}                        (-grad_t if maximize)
        p_t = p_{t-1} (1 - lambd eta_t) - eta_t g_t
        ax_t = p_t if mu_t == 1 else ax_{t-1} + mu_t (p_t - ax_{t-1})

    The average ``ax`` is what to evaluate: :func:`asgd_averaged_params`. With a schedule,
    ``eta_t`` uses the learning rate of step ``t - 2`` (0-based), as torch with an
    ``LRScheduler``. Blocks: ``scale_by_torch_asgd``.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      lambd: decay term.
      alpha: power of the step-size decay.
      t0: the step after which averaging starts.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation`` (it needs ``params``).

    Example:
      >>> tx = jz.compat.torch.asgd(lr=0.1, t0=10)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> ax = jz.compat.torch.asgd_averaged_params(state, params)
    """
    _check_lr(lr)
    _check_weight_decay(weight_decay)
    check_nonneg("lambd value", lambd, schedule_ok=False)
    check_nonneg("alpha value", alpha, schedule_ok=False)
    return _whole_step(scale_by_torch_asgd(lr, lambd, alpha, t0, weight_decay), maximize)


def _refuse_complex(tree: Any, name: str) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.iscomplexobj(x):
            raise ValueError(
                f"{name} does not support complex parameters (as torch.optim.{name}); got "
                f"{jnp.result_type(x)} at {jax.tree_util.keystr(path)}."
            )


def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: Scalar = -0.8,
    eps: Tuple[Any, Any] = (None, 1e-3),
    d: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """``torch.optim.Adafactor`` (Shazeer & Stern 2018, with torch's choices).

    ::

        rho_t = min(lr, 1 / sqrt(t)),   a_t = max(eps2, RMS(p_{t-1})) rho_t,   w_t = t^beta2_decay
        ndim >= 2 (the last two axes factored):
            R_t = lerp(R_{t-1}, mean_{-1}(g^2), w_t),   C_t = lerp(C_{t-1}, mean_{-2}(g^2), w_t)
            V_t = R_t C_t / max(mean_{-2}(R_t), eps1)
        otherwise:   V_t = lerp(V_{t-1}, g^2, w_t)
        U_t = g_t / sqrt(max(V_t, eps1^2))
        p_t = p_{t-1} (1 - lr wd) - a_t U_t / max(1, RMS(U_t) / d)

    Compared with optax's (``jaxopt_zoo.adafactor(lr)``): torch caps the relative step at
    ``1 / sqrt(t)`` (optax's is ``lr`` throughout), factors every leaf of two or more
    dimensions over its last two axes (optax: the two largest, when both are >= 128),
    floors ``V`` at ``eps1^2`` and the row mean at ``eps1`` (optax adds 1e-30 to ``g^2``)
    and decays by ``lr * weight_decay`` (optax: ``weight_decay_rate``, not scaled). With
    ``min_dim_size_to_factor=1``, no decay and ``t <= 1 / lr^2`` the two agree to the eps
    terms. ``eps=(None, ...)``: eps1 is the machine epsilon of each leaf's dtype (float32's
    for half precision, where torch's would swamp small gradients). Complex parameters
    raise ``ValueError``, as in torch.
    Blocks: ``scale_by_torch_adafactor``.

    Raises:
      ValueError: negative ``lr``, eps or ``weight_decay``; ``beta2_decay > 0``; ``d < 1``.

    Args:
      lr: learning rate (the cap of the relative step and the decay's factor), a number or
        a schedule of the step count.
      beta2_decay: exponent of the moving-average weight ``t^beta2_decay``, <= 0.
      eps: ``(eps1, eps2)``: the floor of the variance estimate (None: machine epsilon) and
        of the parameter RMS.
      d: clipping threshold of the update RMS, >= 1.
      weight_decay: decoupled decay ``p (1 - lr weight_decay)``.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation`` (it needs ``params``).

    Example:
      >>> tx = jz.compat.torch.adafactor(lr=1e-2)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    try:
        eps1, eps2 = eps
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid eps: {eps!r}. Expected a pair (eps1, eps2), e.g. (None, 1e-3)."
        ) from None
    if is_concrete_scalar(lr):
        _torch_check(0.0 <= lr, f"Learning rate should be >= 0 but is: {lr}", "lr >= 0")
    if is_concrete_scalar(beta2_decay):
        _torch_check(
            0.0 >= beta2_decay, f"beta2_decay should be <= 0 but is: {beta2_decay}", "<= 0"
        )
    if eps1 is not None and is_concrete_scalar(eps1):
        _torch_check(0.0 <= eps1, f"epsilon1 should be >= 0 but is: {eps1}", "eps1 >= 0")
    if is_concrete_scalar(eps2):
        _torch_check(0.0 <= eps2, f"epsilon2 should be >= 0 but is: {eps2}", "eps2 >= 0")
    if is_concrete_scalar(d):
        _torch_check(1.0 <= d, f"Clipping threshold d should be >= 1 but is: {d}", "d >= 1")
    if is_concrete_scalar(weight_decay):
        _torch_check(
            0.0 <= weight_decay,
            f"weight_decay should be >= 0 but is: {weight_decay}",
            "weight_decay >= 0",
        )
    inner = chain(
        *([scale(-1.0)] if maximize else []),
        scale_by_torch_adafactor(lr, beta2_decay, eps1, eps2, d, weight_decay),
    )

    def init_fn(params):
        _refuse_complex(params, "Adafactor")
        return inner.init(params)

    return GradientTransformation(init_fn, inner.update)


def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[Any, Any] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    *,
    maximize: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.SparseAdam`` as lazy Adam on dense gradients.

    torch's SparseAdam takes the sparse gradient of ``nn.Embedding(sparse=True)``: only
    the rows it holds (the rows looked up in the batch) update their moments and
    parameters. A dense JAX gradient carries zeros in the other rows, so a row here is
    active when any of its elements is non-zero::

        active rows:  m_t = m_{t-1} + (1 - b1)(g_t - m_{t-1})
                      v_t = v_{t-1} + (1 - b2)(g_t^2 - v_{t-1})
                      p_t = p_{t-1} - lr sqrt(1 - b2^t) / (1 - b1^t) m_t / (sqrt(v_t) + eps)
        other rows:   m, v and p unchanged        (t counts every step)

    Rows are slices along axis 0 (a scalar is one row). Where a gradient row is zero
    although the row was looked up (a zero gradient from the loss), torch moves it and
    this does not: the sparse gradient's structure is not in a dense array. Blocks:
    ``scale_by_torch_sparse_adam -> scale_by_learning_rate``.

    Raises:
      ValueError: ``lr`` or ``eps`` not > 0; a beta outside [0, 1).

    Args:
      lr: learning rate, a number or a schedule of the step count.
      betas: ``(b1, b2)``, decay rates of the first and second moments, in [0, 1).
      eps: added to the uncorrected ``sqrt(v_t)``.
      maximize: ascend the objective (the gradient is negated).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.compat.torch.sparse_adam(lr=1e-3)
      >>> params = {"emb": jnp.ones((4, 3))}
      >>> g = {"emb": jnp.zeros((4, 3)).at[2].set(0.5)}
      >>> updates, state = tx.update(g, tx.init(params), params)
    """
    if is_concrete_scalar(lr):
        _torch_check(0.0 < lr, f"Invalid learning rate: {lr}", "a number > 0")
    else:
        _check_lr(lr)
    if is_concrete_scalar(eps):
        _torch_check(0.0 < eps, f"Invalid epsilon value: {eps}", "a number > 0")
    b1, b2 = _check_betas(betas)
    return _assemble(scale_by_torch_sparse_adam(b1, b2, eps), lr, 0.0, maximize=maximize)


#: Every optimizer of this module and the ``torch.optim`` class it reproduces. The registry
#: registers ``"torch.<name>"`` from this table (one list, kept beside the functions).
CLASS_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "muon": "Muon",
    "lbfgs": "LBFGS",
    "rprop": "Rprop",
    "asgd": "ASGD",
    "adafactor": "Adafactor",
    "sparse_adam": "SparseAdam",
}

#: The ``update`` keyword arguments (``Entry.extra_args``) of the optimizers that need some.
EXTRA_ARGS = {"lbfgs": ("value", "value_fn")}
