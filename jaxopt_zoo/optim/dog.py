"""DoG and DoWG: SGD whose step is a distance over accumulated gradient norms.

Ivgi et al. 2023, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule"
(https://arxiv.org/abs/2302.12022); Khaled et al. 2023, "DoWG Unleashed: An Efficient
Universal Parameter-Free Gradient Descent Method" (https://arxiv.org/abs/2305.16284).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    abs_sq,
    chain,
    check_nonneg,
    check_same_structure,
    fresh_copy,
    require_params,
    scalar_dtype,
)
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

INIT_STEPS = ("distance", "learning_rate", "heuristic")


class DoGState(NamedTuple):
    """Whether the next step is the first (``is_init_step``), the initial parameters, the
    largest distance from them so far (``max_dist``, ``r_bar``) and the running sum of
    squared gradient norms (``G``). Field names as in optax.contrib."""

    is_init_step: jax.Array
    init_params: Any
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


class DoWGState(NamedTuple):
    """The initial parameters, the distance-weighted sum of squared gradient norms
    (``v``) and the largest squared distance so far (``r_bar^2``). Names as in optax.contrib."""

    init_params: Any
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


def _widen(x: jax.Array, dt: Any) -> jax.Array:
    """``x`` in the scalars' real dtype ``dt`` (complex leaves keep their own dtype)."""
    return x if jnp.iscomplexobj(x) else x.astype(dt)


def _sq_norm(tree: Any, dt: Any) -> jax.Array:
    """``||tree||^2`` over all leaves, summed in ``dt``."""
    total = jnp.zeros([], dt)
    for x in jax.tree.leaves(tree):
        total = total + jnp.sum(abs_sq(_widen(x, dt))).astype(dt)
    return total


def _sq_dist(a: Any, b: Any, dt: Any) -> jax.Array:
    return _sq_norm(jax.tree.map(lambda x, y: _widen(x, dt) - _widen(y, dt), a, b), dt)


def _scaled(updates: Any, lr: jax.Array) -> Any:
    return jax.tree.map(lambda g: (lr.astype(g.real.dtype) * g).astype(g.dtype), updates)


def _copy_params(params: Any) -> Any:
    return jax.tree.map(fresh_copy, params)


def scale_by_dog(
    init_step: Tuple[str, Scalar] = ("heuristic", 1e-6), eps: Scalar = 1e-8
) -> GradientTransformation:
    """Multiply the gradient by DoG's step ``r_bar_t / sqrt(G_t + eps)`` (see :func:`dog`).

    Args:
      init_step: ``(tag, value)``: ``("distance", r)`` starts ``r_bar`` at ``r``;
        ``("learning_rate", eta)`` takes ``eta`` as the first step; ``("heuristic", a)``
        starts ``r_bar`` at ``a (1 + ||x_0||)``, with ``x_0`` the parameters given to ``init``.
      eps: added to the sum of squared gradient norms, >= 0.

    Returns:
      An ``optax.GradientTransformation`` with state ``DoGState``; ``update`` needs the
      parameters.

    Example:
      >>> tx = jz.scale_by_dog(("learning_rate", 0.1))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> updates["w"]  # the first step is the given learning rate
      Array([0.1, 0.1, 0.1], dtype=float32)
    """
    if not (isinstance(init_step, tuple) and len(init_step) == 2 and init_step[0] in INIT_STEPS):
        raise ValueError(
            f"Invalid init_step: {init_step!r}. Expected a pair (tag, value) with tag one of "
            f"{INIT_STEPS}, e.g. ('heuristic', 1e-6)."
        )
    kind, value = init_step
    check_nonneg(f"init_step value ({kind})", value, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)

    def init_fn(params):
        dt = scalar_dtype(params)
        if kind == "distance":
            r_eps = jnp.asarray(value, dt)
        elif kind == "heuristic":
            r_eps = value * (1 + jnp.sqrt(_sq_norm(params, dt)))
        else:
            r_eps = jnp.zeros([], dt)
        return DoGState(
            is_init_step=jnp.asarray(True),
            init_params=_copy_params(params),
            max_dist=jnp.asarray(r_eps, dt),
            sum_sq_norm_grads=jnp.zeros([], dt),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_dog")
        check_same_structure(updates, state.init_params, "scale_by_dog")
        dt = state.max_dist.dtype
        dist = jnp.sqrt(_sq_dist(state.init_params, params, dt))
        max_dist = jnp.maximum(state.max_dist, dist)
        sum_sq = state.sum_sq_norm_grads + _sq_norm(updates, dt)
        lr = max_dist / jnp.sqrt(sum_sq + eps)
        if kind == "learning_rate":
            lr = jnp.where(state.is_init_step, jnp.asarray(value, dt), lr)
        new = DoGState(jnp.zeros_like(state.is_init_step), state.init_params, max_dist, sum_sq)
        return _scaled(updates, lr), new

    return GradientTransformation(init_fn, update_fn)


def scale_by_dowg(
    init_estim_sq_dist: Optional[Scalar] = None, eps: Scalar = 1e-4
) -> GradientTransformation:
    """Multiply the gradient by DoWG's step ``r_bar_t^2 / (sqrt(v_t) + eps)`` (see :func:`dowg`).

    Args:
      init_estim_sq_dist: the initial ``r_bar^2`` (default: ``eps``), >= 0.
      eps: added to ``sqrt(v)``, >= 0.

    Returns:
      An ``optax.GradientTransformation`` with state ``DoWGState``; ``update`` needs the
      parameters.

    Example:
      >>> tx = jz.scale_by_dowg()
      >>> params = {"w": jnp.ones(4)}
      >>> updates, state = tx.update({"w": jnp.ones(4)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 6)  # 1e-4 / (sqrt(1e-4 * 4) + 1e-4)
      0.004975
    """
    check_nonneg("eps", eps, schedule_ok=False)
    if init_estim_sq_dist is not None:
        check_nonneg("init_estim_sq_dist", init_estim_sq_dist, schedule_ok=False)

    def init_fn(params):
        dt = scalar_dtype(params)
        r0 = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return DoWGState(
            init_params=_copy_params(params),
            weighted_sq_norm_grads=jnp.zeros([], dt),
            estim_sq_dist=jnp.asarray(r0, dt),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_dowg")
        check_same_structure(updates, state.init_params, "scale_by_dowg")
        dt = state.estim_sq_dist.dtype
        sq_dist = jnp.maximum(state.estim_sq_dist, _sq_dist(state.init_params, params, dt))
        v = state.weighted_sq_norm_grads + sq_dist * _sq_norm(updates, dt)
        lr = sq_dist / (jnp.sqrt(v) + eps)
        new = DoWGState(state.init_params, v, sq_dist)
        return _scaled(updates, lr), new

    return GradientTransformation(init_fn, update_fn)


def _with_decay(
    block: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    weight_decay: Optional[Scalar],
    mask: MaskOrFn,
) -> GradientTransformation:
    parts = [] if weight_decay is None else [add_decayed_weights(weight_decay, mask)]
    return chain(*parts, block, scale_by_learning_rate(learning_rate))


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: Tuple[str, Scalar] = ("heuristic", 1e-6),
    eps: Scalar = 1e-8,
    weight_decay: Optional[Scalar] = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""DoG, Distance over Gradients (Ivgi et al. 2023): SGD with the step size
    ``max distance travelled / sqrt(sum of squared gradient norms)``, no learning rate to
    tune. With global norms over all parameters, at step ``t = 1, 2, ...``::

        r_bar_t = max(r_bar_{t-1}, ||x_{t-1} - x_0||)       (r_bar_0 from init_step)
        G_t = G_{t-1} + ||g_t||^2
        x_t = x_{t-1} - lr_t r_bar_t / sqrt(G_t + eps) g_t

    ``init_step``: ``("heuristic", a)`` sets ``r_bar_0 = a (1 + ||x_0||)`` (the authors
    suggest ``a = 1e-6``, ``1e-4`` with batch normalization; ``init`` must get the real
    parameters); ``("distance", r)`` sets ``r_bar_0 = r``; ``("learning_rate", eta)`` makes
    the first step ``eta g_1`` (and ``r_bar_0 = 0``).

    Args:
      learning_rate: a multiplier of the step (keep 1; a schedule is allowed).
      init_step: the pair above.
      eps: added to ``G``.
      weight_decay, mask: L2 added to the gradient before DoG (``None``: none).

    Returns:
      ``chain(add_decayed_weights, scale_by_dog, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.dog()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.dog`` (0.2.8), whose scalars are kept in the parameters' lowest
    dtype; here they are float32 (float64 with float64 parameters), so half-precision
    parameters do not overflow ``G``. The authors recommend averaging the iterates
    (``jz.ema_weights``).
    """
    return _with_decay(scale_by_dog(init_step, eps), learning_rate, weight_decay, mask)


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Optional[Scalar] = None,
    eps: Scalar = 1e-4,
    weight_decay: Optional[Scalar] = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""DoWG, Distance over Weighted Gradients (Khaled et al. 2023): DoG with the squared
    gradient norms weighted by the squared distance estimate, parameter-free. With global
    norms over all parameters, at step ``t = 1, 2, ...``::

        r_bar_t^2 = max(r_bar_{t-1}^2, ||x_{t-1} - x_0||^2)    (r_bar_0^2: init_estim_sq_dist)
        v_t = v_{t-1} + r_bar_t^2 ||g_t||^2
        x_t = x_{t-1} - lr_t r_bar_t^2 / (sqrt(v_t) + eps) g_t

    Args:
      learning_rate: a multiplier of the step (keep 1; a schedule is allowed).
      init_estim_sq_dist: the initial squared distance estimate (default ``eps``).
      eps: added to ``sqrt(v)``.
      weight_decay, mask: L2 added to the gradient before DoWG (``None``: none).

    Returns:
      ``chain(add_decayed_weights, scale_by_dowg, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.dowg()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.dowg`` (0.2.8) (scalars in float32 or float64, as in :func:`dog`).
    """
    return _with_decay(scale_by_dowg(init_estim_sq_dist, eps), learning_rate, weight_decay, mask)
