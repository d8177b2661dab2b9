"""The cautious mask (Liang et al. 2024): drop update components that disagree in sign with
the gradient, and rescale the rest."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    check_same_structure,
)

_DIRECTIONS = ("step", "gradient")


def cautious_mask(direction: jax.Array, grad: jax.Array) -> jax.Array:
    """``direction * mask * size / (sum(mask) + 1)`` with ``mask = direction * grad > 0``.

    ``direction`` points along the gradient (a descent step subtracts it). The rescaling is
    per array, as in ``pytorch_optimizer``'s ``apply_cautious`` and the authors' code; a
    complex array counts its real and imaginary parts as separate components.

    Args:
      direction: one update array, pointing along the gradient.
      grad: the gradient array of the same shape.

    Returns:
      The masked and rescaled ``direction``, in its dtype.

    Example:
      >>> u = jz.cautious_mask(jnp.array([2.0, 1.0, 3.0]), jnp.array([1.0, -1.0, -1.0]))
      >>> u.tolist()  # one of 3 components kept, scaled by 3 / (1 + 1)
      [3.0, 0.0, 0.0]
    """
    if jnp.iscomplexobj(direction):
        g = grad.astype(direction.dtype)
        keep_re = direction.real * g.real > 0
        keep_im = direction.imag * g.imag > 0
        scale = (2 * direction.size) / (jnp.sum(keep_re) + jnp.sum(keep_im) + 1)
        scale = jnp.asarray(scale, direction.real.dtype)
        return jax.lax.complex(
            direction.real * keep_re * scale, direction.imag * keep_im * scale
        ).astype(direction.dtype)
    keep = direction * grad.astype(direction.dtype) > 0
    scale = jnp.asarray(direction.size / (jnp.sum(keep) + 1), direction.dtype)
    return (direction * keep.astype(direction.dtype) * scale).astype(direction.dtype)


def cautious(
    tx: GradientTransformation, *, direction: str = "step"
) -> GradientTransformationExtraArgs:
    r"""Cautious optimizer (Liang et al. 2024, "Cautious Optimizers: Improving Training with
    One Line of Code", https://arxiv.org/abs/2411.16085) around any transformation.

    With ``u`` the update of ``tx`` for the gradient ``g`` (the ``updates`` that enter the
    wrapper), per parameter array of ``n`` components::

        mask = [u * g > 0]      (direction="gradient": u points along g, e.g. scale_by_adam)
        mask = [u * g < 0]      (direction="step": u is a step added to the parameters)
        u'   = u * mask * n / (sum(mask) + 1)

    Args:
      tx: the transformation to wrap; its state is this wrapper's state.
      direction: ``"step"`` for a whole optimizer (``cautious(jz.adamw(1e-3))``: the decay
        term is masked too) or ``"gradient"`` for a scaler block inside a chain, which is
        the paper's C-AdamW: ``chain(cautious(scale_by_adam(), direction="gradient"),
        add_decayed_weights(wd), scale_by_learning_rate(lr))``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (extra arguments go to ``tx``).

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.cautious(jz.adam(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    The rescaling ``n / (sum(mask) + 1)`` is ``pytorch_optimizer``'s (and the C-Optim
    code's); the paper writes ``1 / (mean(mask) + eps)``.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"Invalid direction: {direction!r}. Expected one of {_DIRECTIONS}.")
    sign = 1 if direction == "gradient" else -1
    extra_ok = isinstance(tx, GradientTransformationExtraArgs)

    def init_fn(params):
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra):
        if extra_ok:
            out, state = tx.update(updates, state, params, **extra)
        else:
            out, state = tx.update(updates, state, params)
        check_same_structure(out, updates, "cautious")

        def leaf(u: Any, g: Any) -> Any:
            return (sign * cautious_mask(sign * u, g)).astype(u.dtype)

        return jax.tree.map(leaf, out, updates), state

    return GradientTransformationExtraArgs(init_fn, update_fn)
