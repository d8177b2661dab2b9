"""Sophia: clipped, diagonally preconditioned momentum with a Hessian diagonal estimated
every few steps (Liu, Li, Hall, Liang & Ma 2023), and Hutchinson's estimator."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_betas,
    check_int,
    check_nonneg,
    check_same_structure,
    check_scalar,
    ema_update,
    increment,
    is_zero,
    require_params,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.core import (
    bias_correction as _bias_correct,
)
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

__all__ = [
    "HutchinsonState",
    "SophiaState",
    "hutchinson_estimator_diag_hessian",
    "hutchinson_probes",
    "scale_by_sophia",
    "sophia",
]


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`: the PRNG ``key`` of the next
    probe."""

    key: jax.Array


def _lowest_dtype(params: Any) -> Any:
    dts = [
        jnp.dtype(jnp.result_type(x))
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return min(dts, key=lambda d: d.itemsize) if dts else jnp.dtype(jnp.float32)


def hutchinson_probes(key: jax.Array, params: Any, distribution: str = "rademacher") -> Any:
    """The probe ``z`` that :func:`hutchinson_estimator_diag_hessian` draws from ``key``
    (the subkey of its state's key): one key per leaf, ``jax.random.split(key, n_leaves)``
    in leaf order, each leaf drawn in float32 and cast to the narrowest dtype of the
    parameters. The same keys and draws as ``optax.contrib``'s estimator (Rademacher), so
    the two estimate the same diagonal from the same seed.

    Args:
      key: a PRNG key.
      params: the tree whose shapes the probe takes.
      distribution: ``"rademacher"`` (+-1) or ``"gaussian"`` (standard normal).

    Returns:
      A tree like ``params``.

    Example:
      >>> z = jz.hutchinson_probes(jax.random.PRNGKey(0), {"w": jnp.zeros((2, 3))})
      >>> sorted(set(jnp.abs(z["w"]).ravel().tolist()))
      [1.0]
    """
    leaves, tdef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    dt = _lowest_dtype(params)
    draw = jax.random.rademacher if distribution == "rademacher" else jax.random.normal

    def cast(z, x):  # optax's: the narrowest dtype (the same where all leaves share one)
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):  # no tangent for integers
            return np.zeros(jnp.shape(x), jax.dtypes.float0)
        return z.astype(dt).astype(jnp.result_type(x))

    z = [cast(draw(k, jnp.shape(x), jnp.float32), x) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(tdef, z)


def hutchinson_estimator_diag_hessian(
    random_seed: Optional[jax.Array] = None, *, distribution: str = "rademacher"
) -> GradientTransformationExtraArgs:
    """Hutchinson's estimate of the Hessian's diagonal, ``z * (H z)`` for a random probe
    ``z`` with ``E[z z^T] = I`` (unbiased; exact for a diagonal Hessian and Rademacher
    probes). ``update(grads, state, params, obj_fn=f)`` returns it for the loss
    ``f(params)`` (the gradients are ignored), via one forward-over-reverse product.

    Each call splits the state's key into the next key and a subkey, and draws the probe
    from the subkey (:func:`hutchinson_probes`): the key schedule of ``optax.contrib``'s
    estimator, so the same seed gives the same probes.

    Args:
      random_seed: the PRNG key to start from (default ``jax.random.PRNGKey(0)``).
      distribution: ``"rademacher"`` (optax's) or ``"gaussian"`` (the Sophia paper's and
        pytorch_optimizer's ``SophiaH`` default).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`HutchinsonState`.

    Example:
      >>> est = jz.hutchinson_estimator_diag_hessian()
      >>> p = jnp.ones(3)
      >>> h, _ = est.update(p, est.init(p), p, obj_fn=lambda x: jnp.sum(x**3))
      >>> h
      Array([6., 6., 6.], dtype=float32)
    """
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(
            f"Invalid distribution: {distribution!r}. Expected 'rademacher' or 'gaussian'."
        )

    def init_fn(params):
        del params
        key = random_seed if random_seed is not None else jax.random.PRNGKey(0)
        return HutchinsonState(key=jnp.array(key, copy=True))

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        require_params(params, "hutchinson_estimator_diag_hessian")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian needs the loss as a function of the "
                "parameters: call `update(grads, state, params, obj_fn=lambda p: loss(p))`."
            )
        key, sub = jax.random.split(state.key)
        z = hutchinson_probes(sub, params, distribution)
        hz = jax.jvp(jax.grad(obj_fn, allow_int=True), (params,), (z,))[1]
        out = jax.tree.map(
            lambda h, v, p: (
                (h * v).astype(p.dtype) if v.dtype != jax.dtypes.float0 else jnp.zeros_like(p)
            ),
            hz,
            z,
            params,
        )
        return out, HutchinsonState(key=key)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _wide(dtype: Any) -> Any:
    d = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if d in (jnp.float16, jnp.bfloat16) else d


class SophiaState(NamedTuple):
    """State of :func:`scale_by_sophia` (names as in optax.contrib): the step ``count``,
    the momentum ``mu``, the EMA of the Hessian diagonal ``nu`` and the estimator's state
    ``hessian_fn_state``."""

    count: StepCount
    mu: Any
    nu: Any
    hessian_fn_state: Any


def _with_extra_args(tx: Any) -> Any:
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update_fn)


HessianFn = Union[GradientTransformation, GradientTransformationExtraArgs]


def scale_by_sophia(
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    gamma: Scalar = 0.01,
    clip_threshold: Optional[Scalar] = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Optional[HessianFn] = None,
    mu_dtype: Optional[Any] = None,
    *,
    bias_correction: bool = True,
    hessian_first: bool = False,
) -> GradientTransformationExtraArgs:
    """Sophia's direction ``clip(m_hat / max(gamma * h, eps), clip_threshold)``; see
    :func:`sophia`.

    Args:
      b1: decay of the momentum, in [0, 1).
      b2: decay of the Hessian-diagonal EMA, in [0, 1) (per estimate: with
        ``update_interval = 10``, 0.99 is about 0.999 per step).
      eps: floor of the denominator.
      gamma: multiplier of the Hessian diagonal.
      clip_threshold: bound on each element of the direction (None: no clipping).
      update_interval: estimate the Hessian diagonal every this many steps (the first
        step included).
      hessian_diagonal_fn: the estimator, a transformation returning the diagonal (default
        :func:`hutchinson_estimator_diag_hessian`); extra ``update`` keyword arguments
        (``obj_fn``) are passed on to it.
      mu_dtype: dtype of the momentum (default: the parameters', float32 for float16 and
        bfloat16, as ``m / (gamma h)`` magnifies its rounding).
      bias_correction: divide the momentum by ``1 - b1^t`` (optax's); False: pytorch_optimizer's
        ``SophiaH`` and the paper's algorithm.
      hessian_first: fold a new Hessian estimate into ``h`` before this step's direction
        (``SophiaH``, the paper); False: the step uses the previous ``h`` (optax, Levanter).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SophiaState`.

    Example:
      >>> tx = jz.chain(jz.scale_by_sophia(), jz.scale_by_learning_rate(1e-3))
      >>> p = {"w": jnp.ones(3)}
      >>> u, s = tx.update(p, tx.init(p), p, obj_fn=lambda q: jnp.sum(q["w"] ** 2))
    """
    check_betas(b1, b2, eps)
    check_nonneg("gamma", gamma, schedule_ok=False)
    if clip_threshold is not None:
        check_scalar("clip_threshold", clip_threshold, low=0.0, low_open=True, schedule_ok=False)
    interval = check_int("update_interval", update_interval, low=1)
    hess = _with_extra_args(
        hutchinson_estimator_diag_hessian() if hessian_diagonal_fn is None else hessian_diagonal_fn
    )

    def init_fn(params):
        mu = jax.tree.map(
            lambda p: jnp.zeros(p.shape, mu_dtype if mu_dtype is not None else _wide(p.dtype)),
            params,
        )
        return SophiaState(
            count=zero_count(),
            mu=mu,
            nu=jax.tree.map(lambda p: jnp.zeros(p.shape, _wide(stat_dtype(p.dtype))), params),
            hessian_fn_state=hess.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "scale_by_sophia")
        check_same_structure(updates, state.nu, "scale_by_sophia")
        count = increment(state.count)
        mu = ema_update(updates, state.mu, b1)
        m = _bias_correct(mu, b1, count) if bias_correction else mu

        def estimate(hs, nu):
            diag, hs = hess.update(updates, hs, params, **extra_args)
            return hs, ema_update(jax.tree.map(jnp.real, diag), nu, b2)

        hs, nu = jax.lax.cond(
            state.count % interval == 0,
            estimate,
            lambda hs, nu: (hs, nu),
            state.hessian_fn_state,
            state.nu,
        )
        h = nu if hessian_first else state.nu

        def direction(m_, h_, g):
            d = m_.astype(jnp.result_type(m_.dtype, h_.dtype)) / jnp.maximum(gamma * h_, eps)
            if clip_threshold is not None and jnp.iscomplexobj(d):  # clip the modulus
                d = d * jnp.minimum(1, clip_threshold / jnp.maximum(jnp.abs(d), 1e-30))
            elif clip_threshold is not None:
                d = jnp.clip(d, -clip_threshold, clip_threshold)
            return d.astype(g.dtype)

        out = jax.tree.map(direction, m, h, updates)
        return out, SophiaState(count=count, mu=mu, nu=nu, hessian_fn_state=hs)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    weight_decay_mask: MaskOrFn = None,
    gamma: Scalar = 0.01,
    clip_threshold: Optional[Scalar] = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Optional[HessianFn] = None,
    mu_dtype: Optional[Any] = None,
    *,
    bias_correction: bool = True,
    hessian_first: bool = False,
) -> GradientTransformationExtraArgs:
    """Sophia (Liu et al. 2023, https://arxiv.org/abs/2305.14342), Sophia-H by default.
    ``update`` needs ``obj_fn=``, the loss as a function of the parameters alone (for
    Hutchinson's estimator: ``obj_fn = lambda p: loss_fn(p, batch)``).

    At step ``t = 1, 2, ...``, with ``h`` the EMA of Hessian-diagonal estimates ``h_hat``
    taken at steps ``1, 1 + k, 1 + 2k, ...`` (``k = update_interval``)::

        m_t = b1 m_{t-1} + (1 - b1) g_t;      m_hat = m_t / (1 - b1^t)
        u_t = clip(m_hat / max(gamma * h, eps), -clip_threshold, clip_threshold)
        h  <- b2 h + (1 - b2) h_hat            (on estimation steps, after u_t)
        x_t = x_{t-1} - lr_t * (u_t + weight_decay * x_{t-1})

    Blocks: ``scale_by_sophia -> add_decayed_weights -> scale_by_learning_rate``. The
    default estimator draws Rademacher probes from a key kept in its state, with
    ``optax.contrib``'s key schedule: same seed, same probes, same trajectory.

    pytorch_optimizer's ``SophiaH`` (lr, betas, p, eps) is this with
    ``bias_correction=False, hessian_first=True`` and ``gamma = p``,
    ``learning_rate = lr * p``, ``eps = eps_SophiaH * p``, ``weight_decay = wd / p`` (its
    direction is ``clip(m / max(h, eps), p)``); its probes are Gaussian by default
    (``distribution="gaussian"``). optax follows Levanter: the step uses the previous
    ``h``, so the first step (``h = 0``) is ``clip(m_hat / eps)``, a sign step, and
    bias-corrects ``m``.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2, eps, gamma, clip_threshold: as in :func:`scale_by_sophia`.
      update_interval, hessian_diagonal_fn, mu_dtype: as in :func:`scale_by_sophia`.
      bias_correction, hessian_first: as in :func:`scale_by_sophia`.
      weight_decay: decoupled decay strength (times the learning rate).
      weight_decay_mask: which parameters decay (a tree of bools or a function of params).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> tx = jz.sophia(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> obj = lambda p: jnp.sum(p["w"] ** 2)
      >>> u, s = tx.update({"w": 2 * jnp.ones(3)}, tx.init(params), params, obj_fn=obj)
    """
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    parts: list[Any] = [
        scale_by_sophia(
            b1,
            b2,
            eps,
            gamma,
            clip_threshold,
            update_interval,
            hessian_diagonal_fn,
            mu_dtype,
            bias_correction=bias_correction,
            hessian_first=hessian_first,
        )
    ]
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, weight_decay_mask))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)
