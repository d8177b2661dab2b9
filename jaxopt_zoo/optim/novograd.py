"""NovoGrad: layer-wise second moments and normalized-gradient momentum."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_betas,
    check_nonneg,
    check_same_structure,
    increment,
    is_zero,
    require_params,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import moment_dtype
from jaxopt_zoo.optim._multi import tree_map_multi
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`: step ``count``, the momentum ``mu`` (shaped like
    the params) and ``nu``, one scalar per leaf (the average of the squared leaf norm)."""

    count: StepCount
    mu: Any
    nu: Any


def scale_by_novograd(
    b1: Scalar = 0.9,
    b2: Scalar = 0.25,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    grad_averaging: bool = False,
) -> GradientTransformation:
    """NovoGrad's momentum of layer-normalized gradients (see :func:`novograd`).

    Args:
      b1: momentum factor, in [0, 1).
      b2: decay rate of the per-leaf squared gradient norm, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      weight_decay: rate of the decay added to the normalized gradient, >= 0.
      mu_dtype: dtype of the momentum (default: the parameter's).
      grad_averaging: after the first step, multiply the new term by ``1 - b1``
        (``pytorch_optimizer.NovoGrad(grad_averaging=True)``).

    Returns:
      An ``optax.GradientTransformation`` (needs ``params`` when ``weight_decay`` is not 0).

    Example:
      >>> tx = jz.chain(jz.scale_by_novograd(), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_betas(b1, b2, eps, eps_root)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    decays = not is_zero(weight_decay)

    def init_fn(params):
        mu = jax.tree.map(lambda p: jnp.zeros(p.shape, moment_dtype(p, mu_dtype)), params)
        nu = jax.tree.map(lambda p: jnp.zeros((), stat_dtype(p.dtype)), params)
        return ScaleByNovogradState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        check_same_structure(updates, state.mu, "scale_by_novograd")
        if decays:
            require_params(params, "scale_by_novograd")
        else:
            params = updates  # unused: weight_decay is 0
        first = state.count == 0

        def leaf(g, p, m, n):
            sq = jnp.sum(abs_sq_in(g, n.dtype))
            n = jnp.where(first, sq, b2 * n + (1 - b2) * sq).astype(n.dtype)
            x = g.astype(m.dtype) / (jnp.sqrt(n + eps_root) + eps).astype(m.dtype)
            if decays:
                x = x + weight_decay * p.astype(m.dtype)
            if grad_averaging:
                x = jnp.where(first, x, (1 - b1) * x)
            m = jnp.where(first, x, b1 * m + x).astype(m.dtype)
            return m, n

        mu, nu = tree_map_multi(leaf, 2, updates, params, state.mu, state.nu)
        out = jax.tree.map(lambda m, g: m.astype(g.dtype), mu, updates)
        return out, ScaleByNovogradState(count=increment(state.count), mu=mu, nu=nu)

    return describe(GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_novograd"))


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.25,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    *,
    grad_averaging: bool = False,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al. 2019, "Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks", https://arxiv.org/abs/1905.11286).

    Per leaf (layer) ``l``, with ``||.||`` its Euclidean norm::

        v_t = ||g_t||^2                                   (t = 1)
        v_t = b2 * v_{t-1} + (1 - b2) * ||g_t||^2         (t > 1)
        x_t = g_t / (sqrt(v_t + eps_root) + eps) + weight_decay * p_{t-1}
        m_t = x_t (t = 1),   m_t = b1 * m_{t-1} + x_t (t > 1)
        p_t = p_{t-1} - lr * m_t

    Identical to ``optax.novograd`` and to ``pytorch_optimizer.NovoGrad`` (whose decay is
    the same coupled term after the normalization, and which has no ``eps_root``).
    ``pytorch_optimizer``'s ``grad_averaging=True`` (NVIDIA's reference option) scales
    ``x_t`` by ``1 - b1`` after the first step: ``grad_averaging=True`` here.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: momentum factor, in [0, 1).
      b2: decay rate of the per-leaf squared gradient norm, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      weight_decay: rate of the decay added to the normalized gradient, >= 0.
      grad_averaging: scale the new momentum term by ``1 - b1`` after the first step.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.novograd(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay, grad_averaging=grad_averaging),
        scale_by_learning_rate(learning_rate),
    )
