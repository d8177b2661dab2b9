"""MARS-AdamW: AdamW on a variance-reduced gradient (Yuan et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    increment,
    is_zero,
    require_params,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.optim._common import init_moments
from jaxopt_zoo.transforms.cautious import cautious_mask
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.masking import partition
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


class ScaleByMarsState(NamedTuple):
    """Step count, moments, and ``last``: the previous gradient (approximate MARS) or the
    previous parameters (exact MARS, ``exact=True``)."""

    count: StepCount
    mu: Any
    nu: Any
    last: Any


def _is_mars_leaf(p: Any, optimize_1d: bool) -> bool:
    return optimize_1d or jnp.ndim(p) >= 2


def scale_by_mars(
    b1: Scalar = 0.95,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    gamma: Scalar = 0.025,
    mu_dtype: Any | None = None,
    *,
    b1_1d: Scalar = 0.9,
    b2_1d: Scalar = 0.95,
    optimize_1d: bool = False,
    exact: bool = False,
    cautious: bool = False,
    eps_root: Scalar = 1e-15,
) -> GradientTransformationExtraArgs:
    """MARS-AdamW's direction (equations in :func:`mars`); arrays of fewer than 2 dimensions
    get Adam with ``(b1_1d, b2_1d)`` unless ``optimize_1d``. With ``exact``, ``update`` needs
    ``grad_fn=``: a function returning the gradient of the current batch at given params.

    Args:
      b1: decay of the first moment of the matrices, in [0, 1).
      b2: decay of their second moment, in [0, 1).
      eps: added outside the square root.
      gamma: strength of the gradient correction.
      mu_dtype: dtype of ``m`` (default: the parameter's).
      b1_1d: first-moment decay of the other arrays.
      b2_1d: second-moment decay of the other arrays.
      optimize_1d: MARS for every array.
      exact: exact gradient correction (``update`` needs ``grad_fn``).
      cautious: the cautious mask on ``m_t`` against ``g_t``.
      eps_root: added inside the square root.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``ScaleByMarsState``.

    Example:
      >>> tx = jz.scale_by_mars()
      >>> g = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> updates, state = tx.update(g, tx.init(g))
      >>> jax.tree.map(lambda u: round(float(u.max()), 4), updates)  # ~ sign(g), first step
      {'b': 1.0, 'w': 1.0}
    """
    for name, b in (("b1", b1), ("b2", b2), ("b1_1d", b1_1d), ("b2_1d", b2_1d)):
        check_decay(name, b, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    check_nonneg("gamma", gamma, schedule_ok=False)
    check_nonneg("eps_root", eps_root, schedule_ok=False)

    def init_fn(params):
        mu, nu = init_moments(params, mu_dtype)
        last = jax.tree.map(jnp.array, params) if exact else jax.tree.map(jnp.zeros_like, params)
        return ScaleByMarsState(count=zero_count(), mu=mu, nu=nu, last=last)

    def update_fn(
        updates, state, params=None, *, grad_fn: Callable[[Any], Any] | None = None, **extra
    ):
        del extra
        check_same_structure(updates, state.mu, "scale_by_mars")
        if exact:
            require_params(params, "mars(exact=True)")
            if grad_fn is None:
                raise ValueError(
                    "mars(exact=True) needs the gradient of the current batch at the previous "
                    "parameters: call update(grads, state, params, grad_fn=lambda p: "
                    "jax.grad(loss)(p, batch)), or use exact=False (the previous step's "
                    "gradient instead)."
                )
            prev_grads = grad_fn(state.last)
            check_same_structure(prev_grads, updates, "mars(exact=True): grad_fn's result")
        else:
            prev_grads = state.last
        t = increment(state.count).astype(scalar_dtype(updates))

        def leaf(g, m, v, gp):
            is_mars = _is_mars_leaf(g, optimize_1d)
            a, b = (b1, b2) if is_mars else (b1_1d, b2_1d)
            c = g.astype(m.dtype)
            if is_mars:
                c = c + gamma * b1 / (1 - b1) * (c - gp.astype(m.dtype))
                norm = jnp.sqrt(jnp.sum(abs_sq_in(c, v.dtype)))
                c = (c / jnp.maximum(norm, 1).astype(c.real.dtype)).astype(m.dtype)
            m = (a * m + (1 - a) * c).astype(m.dtype)
            v = (b * v + (1 - b) * abs_sq_in(c, v.dtype)).astype(v.dtype)
            d = cautious_mask(m, g) if cautious else m
            bc1 = (1 - jnp.asarray(a, t.dtype) ** t).astype(v.dtype)
            bc2 = jnp.sqrt(1 - jnp.asarray(b, t.dtype) ** t).astype(v.dtype)
            out = d / bc1 / ((jnp.sqrt(v + eps_root) + eps) / bc2)
            return out.astype(g.dtype), m, v

        res = jax.tree.map(leaf, updates, state.mu, state.nu, prev_grads)
        if jax.tree.leaves(updates):
            outs, mus, nus = jax.tree.transpose(
                jax.tree.structure(updates), jax.tree.structure((0, 0, 0)), res
            )
        else:  # an empty tree: nothing to transpose
            outs, mus, nus = updates, state.mu, state.nu
        last = jax.tree.map(jnp.array, params) if exact else updates
        last = jax.tree.map(lambda x, y: x.astype(y.dtype), last, state.last)
        return outs, ScaleByMarsState(count=increment(state.count), mu=mus, nu=nus, last=last)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def mars(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: Scalar = 0.95,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    gamma: Scalar = 0.025,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    mu_dtype: Any | None = None,
    *,
    exact: bool = False,
    cautious: bool = False,
    optimize_1d: bool = False,
    learning_rate_1d: ScalarOrSchedule | None = None,
    b1_1d: Scalar = 0.9,
    b2_1d: Scalar = 0.95,
    weight_decay_1d: Scalar = 0.1,
    eps_root: Scalar = 1e-15,
) -> GradientTransformationExtraArgs:
    r"""MARS-AdamW (Yuan et al. 2024, "MARS: Unleashing the Power of Variance Reduction for
    Training Large Models", https://arxiv.org/abs/2411.10438).

    For parameter arrays of 2 or more dimensions, at step ``t = 1, 2, ...``::

        c_t = g_t + gamma * b1 / (1 - b1) * (g_t - g_prev)
        c_t = c_t / max(||c_t||_2, 1)                      (per array)
        m_t = b1 m_{t-1} + (1 - b1) c_t;   v_t = b2 v_{t-1} + (1 - b2) c_t^2
        p_t = p_{t-1} - lr * (m_t / (1 - b1^t) / ((sqrt(v_t + eps_root) + eps) / sqrt(1 - b2^t))
                              + weight_decay * p_{t-1})

    ``g_prev`` is the previous step's gradient (``g_0 = 0``: MARS-approx, the default), or
    with ``exact=True`` the gradient of the *current* batch at the previous parameters
    (exact MARS; one more gradient evaluation per step): pass ``grad_fn`` to ``update``::

        updates, state = tx.update(grads, state, params,
                                   grad_fn=lambda p: jax.grad(loss)(p, batch))

    (the first step's previous parameters are the initial ones, so its correction is 0).
    Arrays of fewer than 2 dimensions get AdamW (``c_t = g_t``) with ``b1_1d, b2_1d,
    learning_rate_1d, weight_decay_1d``, unless ``optimize_1d``.

    Args:
      learning_rate, b1, b2, eps, weight_decay: AdamW's, for the matrices.
      gamma: strength of the gradient correction.
      mask: which leaves decay (a function of the params, applied per group).
      mu_dtype: dtype of ``m``.
      exact: exact gradient correction (needs ``grad_fn``).
      cautious: the cautious mask on ``m_t`` against ``g_t`` (see :func:`cautious`).
      optimize_1d: MARS for every array.
      learning_rate_1d: for the other arrays (``None``: ``learning_rate``).
      b1_1d, b2_1d, weight_decay_1d: the others' AdamW hyperparameters.
      eps_root: inside the root, as ``pytorch_optimizer`` (1e-15).

    Returns:
      ``chain(scale_by_mars, partition(add_decayed_weights -> scale_by_learning_rate))``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.mars(3e-3, weight_decay=0.01)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
      >>> updates, state = tx.update(params, tx.init(params), params)

    Defaults and formulas are ``pytorch_optimizer.MARS`` 4.1.0 (``mars_type="adamw"``),
    which follows the authors' code, except that its ``lr_1d`` is 3e-3 whatever ``lr`` is,
    and moves with ``lr``'s scheduler (``lr_1d / lr`` is fixed at construction).
    """
    scaler = scale_by_mars(
        b1,
        b2,
        eps,
        gamma,
        mu_dtype,
        b1_1d=b1_1d,
        b2_1d=b2_1d,
        optimize_1d=optimize_1d,
        exact=exact,
        cautious=cautious,
        eps_root=eps_root,
    )

    def tail(lr: ScalarOrSchedule, wd: Any) -> GradientTransformation:
        parts = [] if is_zero(wd) else [add_decayed_weights(wd, mask)]
        return chain(*parts, scale_by_learning_rate(lr))

    if optimize_1d:
        return chain(scaler, tail(learning_rate, weight_decay))
    lr_1d = learning_rate if learning_rate_1d is None else learning_rate_1d

    def labels(p):
        return jax.tree.map(lambda x: "mars" if jnp.ndim(x) >= 2 else "adamw", p)

    return chain(
        scaler,
        partition(
            {"mars": tail(learning_rate, weight_decay), "adamw": tail(lr_1d, weight_decay_1d)},
            labels,
        ),
    )
