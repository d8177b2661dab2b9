"""Sharpness-Aware Minimization (SAM) and its adaptive variant (ASAM) around any optimizer."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    abs_sq_in,
    check_nonneg,
    check_same_structure,
    compute_dtype,
    require_params,
    scalar_dtype,
)

GradFn = Callable[[Any], Any]


class SamState(NamedTuple):
    """State of :func:`sam`: ``inner_state`` is the wrapped optimizer's state; SAM itself
    keeps nothing between steps."""

    inner_state: Any  # the base optimizer's state; SAM itself keeps nothing


def _check_hparams(rho: Any, eps: Any) -> None:
    check_nonneg("rho", rho, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)


def sam_perturbation(
    params: Any, grads: Any, rho: Scalar = 0.05, adaptive: bool = False, eps: Scalar = 1e-12
) -> Any:
    """SAM's ascent step ``e(w)``, a tree like ``params`` (see ``sam`` for the formula).

    The norm is accumulated in float32 (float64 for float64 leaves), so half-precision
    gradients neither underflow nor overflow when squared; each leaf of ``e`` has its
    parameter's dtype.

    Args:
      params: the parameters ``w``.
      grads: the gradient at ``params``, a tree like it.
      rho: the neighbourhood radius, >= 0.
      adaptive: ASAM's parameter-scaled perturbation.
      eps: added to the norm.

    Returns:
      The perturbation ``e``, a tree like ``params``.

    Example:
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> e = jz.sam_perturbation(params, {"w": jnp.array([3.0, 4.0])}, rho=0.5)
      >>> [round(float(x), 4) for x in e["w"]]  # 0.5 * g / ||g||, ||g|| = 5
      [0.3, 0.4]
    """
    check_same_structure(grads, params, "sam")
    dt = scalar_dtype(params)

    def weighted(g, p):  # T_w g with T_w = |w| (ASAM) or the identity (SAM)
        cdt = compute_dtype(jnp.result_type(p, g))
        g = g.astype(jnp.result_type(g.dtype, cdt))
        return g * jnp.abs(p).astype(cdt) if adaptive else g

    sq = [
        jnp.sum(abs_sq_in(weighted(g, p), dt))
        for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params))
    ]
    norm = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), dt)
    scale = jnp.asarray(rho, dt) / (norm + jnp.asarray(eps, dt))

    def leaf(g, p):
        cdt = compute_dtype(jnp.result_type(p, g))
        w = weighted(g, p)
        if adaptive:
            w = w * jnp.abs(p).astype(cdt)  # T_w^2 g = |w|^2 g
        return (w * scale.astype(cdt)).astype(p.dtype)

    return jax.tree.map(leaf, grads, params)


def _perturbed(params: Any, grads: Any, rho: Any, adaptive: bool, eps: Any) -> Any:
    e = sam_perturbation(params, grads, rho, adaptive, eps)
    return jax.tree.map(lambda p, d: (p + d).astype(p.dtype), params, e)


def _sam_grads(
    grad_fn: GradFn, params: Any, grads: Any, rho: Any, adaptive: bool, eps: Any, where: str
) -> Any:
    out = grad_fn(_perturbed(params, grads, rho, adaptive, eps))
    s_out: Any = jax.tree.structure(out)
    s_params: Any = jax.tree.structure(params)
    if s_out != s_params:
        raise ValueError(
            f"{where}: grad_fn returned a tree of structure {s_out}, but "
            f"the parameters have structure {s_params}. grad_fn must map "
            "parameters to the gradient of the loss alone (e.g. `jax.grad(loss)`, not "
            "`jax.value_and_grad(loss)`)."
        )
    check_same_structure(out, params, where)
    return jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), out, params)


def sam(
    base: GradientTransformation, rho: Scalar = 0.05, adaptive: bool = False, eps: Scalar = 1e-12
) -> GradientTransformationExtraArgs:
    """Sharpness-Aware Minimization (SAM) and, with ``adaptive=True``, ASAM, around ``base``.

    With ``g = grad L(w)`` the gradient given to ``update`` (not recomputed)::

        SAM:   e = rho * g / (||g|| + eps)
        ASAM:  e = rho * |w|^2 g / (||(|w| g)|| + eps)      (T_w = |w|, element-wise)
        g_sam = grad_fn(w + e)                              (= grad L(w + e))
        updates, state = base.update(g_sam, state, w)

    ``||.||`` is the global L2 norm over all leaves. The ascent step is SAM's first-order
    solution of ``max_{||e|| <= rho} L(w + e)`` (Foret et al. 2021); ASAM's is the same in
    the parameter-scaled metric ``||T_w^{-1} e|| <= rho`` (Kwon et al. 2021, eta = 0), as
    ``pytorch_optimizer.SAM(adaptive=True)`` and the authors' code compute it (typical
    ``rho``: 0.05 for SAM, 0.5 to 2 for ASAM). Each step costs two gradients.

    Placement: put ``sam`` outermost, around the whole optimizer (``sam(chain(clip, adam))``
    clips the SAM gradient). Blocks placed before ``sam`` in a chain change only the
    ascent direction. Inside ``skip_not_finite`` only the first gradient is checked; use
    ``sam(skip_not_finite(base))`` to skip a step whose SAM gradient is not finite too (a
    non-finite first gradient makes the perturbed point, hence ``g_sam``, non-finite).

    Args:
      base: any ``GradientTransformation`` (ours or optax's). Extra keyword arguments of
        ``update`` other than ``grad_fn`` are passed on to it when it accepts them.
      rho: the neighbourhood radius, >= 0 (0 gives ``base`` on the plain gradient).
      adaptive: ASAM's parameter-scaled perturbation.
      eps: added to the norm, so that a zero gradient gives a zero perturbation.

    Returns:
      A ``GradientTransformationExtraArgs``; call ``update(grads, state, params,
      grad_fn=grad_fn)`` with ``grad_fn(params) -> grads`` for the same loss and batch.

    Example::

        tx = jaxopt_zoo.sam(jaxopt_zoo.sgd(0.1, momentum=0.9), rho=0.05)
        grad_fn = jax.grad(lambda p: loss(p, batch))
        updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    """
    _check_hparams(rho, eps)
    extra_ok = isinstance(base, GradientTransformationExtraArgs)

    def init_fn(params):
        return SamState(inner_state=base.init(params))

    def update_fn(updates, state, params=None, *, grad_fn: Optional[GradFn] = None, **extra):
        require_params(params, "sam")
        if grad_fn is None:
            raise ValueError(
                "sam needs the gradient function: call `update(grads, state, params, "
                "grad_fn=grad_fn)` with `grad_fn(params) -> grads` for the same loss and "
                "batch (e.g. `jax.grad(lambda p: loss(p, batch))`). Inside a chain, pass it "
                "to the chain's update; it is forwarded."
            )
        g_sam = _sam_grads(grad_fn, params, updates, rho, adaptive, eps, "sam")
        if extra_ok:
            out, inner = base.update(g_sam, state.inner_state, params, **extra)
        else:
            out, inner = base.update(g_sam, state.inner_state, params)
        return out, SamState(inner_state=inner)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def sam_gradient(
    grad_fn: GradFn, rho: Scalar = 0.05, adaptive: bool = False, eps: Scalar = 1e-12
) -> Callable[..., Any]:
    """SAM as a function of the gradient function: ``sam_grad(params, grads=None)``.

    Returns ``grad_fn(w + e)`` with ``e`` as in ``sam``, computed from ``grads`` when given
    (the gradient at ``params``, already computed by the caller) or else from
    ``grad_fn(params)``. Feed it to any optimizer unchanged::

        sam_grad = jaxopt_zoo.sam_gradient(jax.grad(loss), rho=0.05)
        updates, state = tx.update(sam_grad(params), state, params)

    ``tx`` on ``sam_grad`` follows the same trajectory as ``sam(tx)``.

    Args:
      grad_fn: ``grad_fn(params) -> grads``, the gradient of the loss alone.
      rho: the neighbourhood radius, >= 0.
      adaptive: ASAM's parameter-scaled perturbation.
      eps: added to the norm, so that a zero gradient gives a zero perturbation.

    Returns:
      ``sam_grad(params, grads=None)``, the gradient at the perturbed point ``w + e``.

    Example:
      >>> sam_grad = jz.sam_gradient(jax.grad(lambda p: jnp.sum(p["w"] ** 2)), rho=0.5)
      >>> g = sam_grad({"w": jnp.array([3.0, 4.0])})  # 2 * (w + e), e = (0.3, 0.4)
      >>> [round(float(x), 4) for x in g["w"]]
      [6.6, 8.8]
    """
    _check_hparams(rho, eps)
    if not callable(grad_fn):
        raise TypeError(f"sam_gradient: grad_fn must be callable, got {grad_fn!r}.")

    def sam_grad(params: Any, grads: Any = None) -> Any:
        if grads is None:
            grads = grad_fn(params)
        return _sam_grads(grad_fn, params, grads, rho, adaptive, eps, "sam_gradient")

    return sam_grad
