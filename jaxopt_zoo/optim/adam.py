"""Adam and its relatives: AdamW, AMSGrad, NAdam (Nesterov), NAdamW."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    bias_correction,
    check_betas,
    check_same_structure,
    ema_update,
    increment,
    inv_bias_correction,
    moment_scalars,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments, scaled_with_decay


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step ``count``, first moment ``mu`` and second moment
    ``nu`` (of ``|g|^2``), both uncorrected, one per leaf."""

    count: StepCount
    mu: Any
    nu: Any


class ScaleByAmsgradState(NamedTuple):
    """State of ``scale_by_adam(amsgrad=True)``: as :class:`ScaleByAdamState` plus ``nu_max``,
    the running maximum of the bias-corrected second moment."""

    count: StepCount
    mu: Any
    nu: Any
    nu_max: Any


def adam_moments(updates, mu, nu, b1, b2):
    """New first and second moments (second moment of |g|^2, real for complex g)."""
    return ema_update(updates, mu, b1), ema_update(updates, nu, b2, order=2)


def scale_by_adam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    """Rescale by Adam's bias-corrected moments: ``m_hat / (sqrt(v_hat + eps_root) + eps)``.

    ``nesterov`` uses NAdam's look-ahead first moment
    ``b1 * m_t / (1 - b1^(t+1)) + (1 - b1) * g_t / (1 - b1^t)`` (Dozat 2016); ``amsgrad``
    divides by the running maximum of ``v_hat`` (Reddi et al. 2018).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the gradient's).
      nesterov: use NAdam's look-ahead first moment.
      amsgrad: divide by the running maximum of ``v_hat``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adam(b2=0.98), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)

    def init_fn(params):
        mu, nu = init_moments(params, mu_dtype)
        if amsgrad:
            return ScaleByAmsgradState(
                count=zero_count(), mu=mu, nu=nu, nu_max=jax.tree.map(jnp.zeros_like, nu)
            )
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_adam")
        mu, nu = adam_moments(updates, state.mu, state.nu, b1, b2)
        count = increment(state.count)
        if nesterov:
            mu_next = bias_correction(mu, b1, increment(count))
            g_hat = bias_correction(updates, b1, count)
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g.astype(m.dtype), mu_next, g_hat
            )
        else:
            mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        if amsgrad:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu_hat)
            denom_src = nu_max
        else:
            denom_src = nu_hat
        out = jax.tree.map(
            lambda m, v, g: (m / (jnp.sqrt(v + eps_root) + eps)).astype(g.dtype),
            mu_hat,
            denom_src,
            updates,
        )
        if amsgrad:
            return out, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    tx = GradientTransformation(init_fn, update_fn)
    if (nesterov and amsgrad) or mu_dtype is not None:
        return describe(tx, BlockSpec("scale_by_adam", elementwise=True))

    scalars = moment_scalars(b1, b2, eps, eps_root)
    if nesterov:
        scalars["inv_next_bc1"] = inv_bias_correction(b1, 1)
    stage = "nadam" if nesterov else "amsgrad" if amsgrad else "adam"
    buffers = ("mu", "nu", "nu_max") if amsgrad else ("mu", "nu")
    return describe(
        tx,
        BlockSpec("scale_by_adam", elementwise=True, stage=stage, scalars=scalars, buffers=buffers),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""Adam (Kingma & Ba 2015, https://arxiv.org/abs/1412.6980).

    With ``g_t`` the gradient at step ``t = 1, 2, ...``::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|^2
        m_hat = m_t / (1 - b1^t),   v_hat = v_t / (1 - b2^t)
        p_t = p_{t-1} - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2: decay rates of the first and second moments, in [0, 1).
      eps, eps_root: added outside / inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).
      nesterov: NAdam's look-ahead first moment (see ``nadam``).
      amsgrad: divide by the running maximum of ``v_hat`` (see ``amsgrad``).

    Returns:
      An ``optax.GradientTransformation``: ``chain(scale_by_adam, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.adam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    """
    return scaled_with_decay(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, amsgrad=amsgrad),
        learning_rate,
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: Scalar = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, arXiv:1711.05101).

    ``p_t = p_{t-1} - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p_{t-1})``;
    the decay is not divided by ``sqrt(v_hat)``, unlike L2 regularization in Adam.
    ``mask`` selects the decayed parameters (a tree of booleans or a function of the params).

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).
      weight_decay: the decoupled decay rate (a number or a schedule).
      mask: which parameters decay: a tree of booleans or a function of the params returning
        one (None: all).
      nesterov: NAdam's look-ahead first moment (``nadamw``).
      amsgrad: divide by the running maximum of ``v_hat``.

    Returns:
      An ``optax.GradientTransformation``: ``chain(scale_by_adam, add_decayed_weights,
      scale_by_learning_rate)``.

    Example:
      >>> tx = jz.adamw(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return scaled_with_decay(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, amsgrad=amsgrad),
        learning_rate,
        weight_decay,
        mask,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
) -> GradientTransformation:
    """AMSGrad (Reddi et al. 2018, https://openreview.net/forum?id=ryQu7f-RZ).

    Adam with ``v_max_t = max(v_max_{t-1}, v_hat_t)`` in the denominator:
    ``p_t = p_{t-1} - lr * m_hat / (sqrt(v_max_t + eps_root) + eps)``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.amsgrad(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, amsgrad=True)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum (Dozat 2016, ICLR workshop).

    ``m_bar = b1 * m_t / (1 - b1^(t+1)) + (1 - b1) * g_t / (1 - b1^t)``;
    ``p_t = p_{t-1} - lr * m_bar / (sqrt(v_hat + eps_root) + eps)``. PyTorch's and Keras'
    NAdam add a momentum-decay schedule: see ``jaxopt_zoo.compat``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.nadam(2e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: Scalar = 1e-4,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """NAdamW: ``nadam`` with decoupled weight decay as in ``adamw``.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (default: the parameter's).
      weight_decay: the decoupled decay rate.
      mask: which parameters decay: a tree of booleans or a function of the params returning
        one (None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.nadamw(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=True)
