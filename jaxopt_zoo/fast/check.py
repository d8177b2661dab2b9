"""Is a transformation exact on the flat layout? The check behind ``fuse``.

``fuse(tx)`` runs ``tx`` once over one buffer per dtype; that equals running it on the
tree only when every parameter gets the same element-wise formula and every reduction
spans all parameters (a global norm is fine; a per-parameter norm is not). This module
decides it with public JAX APIs only (no primitive names):

- blocks whose :class:`~jaxopt_zoo.fast.spec.BlockSpec` says ``elementwise`` (and chains
  of them) are accepted as they are;
- anything else is *probed*: ``tx.init`` and two ``tx.update`` steps run, eagerly, on the
  tree and on the flat buffers from the same pseudo-random parameters and gradients (with
  exact zeros), with forward derivatives (``jax.jvp``) along random gradient and parameter
  directions, so that small terms (weight decay, eps) are compared at full weight. The
  results must agree to the dtype's rounding. A refusal names its cause, found by further
  probes: noise (constant inputs give varying outputs), a per-parameter reduction (moving
  one element moves the others of its parameter only), factored or masked state, or a
  formula that differs between parameters;
- whether the update of one buffer reads another (a global reduction), which decides if
  ``fused_apply`` may run the buffers one after another, is read from the data flow of
  ``jax.make_jaxpr``'s equations (inputs to outputs, nothing else).

A probe is evidence, not a proof: a difference smaller than the dtype's rounding on the
probe, or in fewer than one element in 10,000 of a parameter, is not seen.

The pieces: ``jaxopt_zoo.fast.probe`` (the inputs, the two steps, the comparison),
``jaxopt_zoo.fast.diagnose`` (the cause of a refusal) and ``jaxopt_zoo.fast.dataflow``
(``separable``); this module puts them together.
"""

from __future__ import annotations

from typing import Any, Optional

import jax

from jaxopt_zoo.fast.dataflow import separable
from jaxopt_zoo.fast.diagnose import diagnose
from jaxopt_zoo.fast.layout import FlatParams, Layout
from jaxopt_zoo.fast.probe import Mismatch, compare, run_two_steps, tangent, unflat, values
from jaxopt_zoo.fast.spec import NeedsExtraArgsError, is_elementwise

__all__ = ["NotFusableError", "analyze", "check_fusable"]


class NotFusableError(ValueError):
    """``fuse`` was given a transformation that is not exact on flat buffers."""


def check_fusable(tx: Any, params_or_layout: Any) -> None:
    """Raise :class:`NotFusableError` unless ``tx`` is exact on the flat layout of the
    parameters, i.e. unless ``fuse(tx)`` gives the same results as ``tx``.

    Always probes ``tx`` (see the module docstring), even when its ``BlockSpec`` says it
    is element-wise: a test that the spec tells the truth (``fuse`` trusts such a spec).
    The probe runs ``tx.init`` and two ``tx.update`` steps on the tree and on flat buffers
    of pseudo-random values: a few small compilations per call.

    Args:
      tx: the transformation to check (any ``optax.GradientTransformation``).
      params_or_layout: the parameters as a tree of arrays or ``jax.ShapeDtypeStruct`` s,
        a :class:`~jaxopt_zoo.fast.FlatParams` or a :class:`~jaxopt_zoo.fast.Layout`.

    Raises:
      NotFusableError: ``tx`` is not exact on flat buffers; the message names the cause
        (a per-parameter reduction, noise, factored or masked state, ...).

    Example:
      >>> import jax.numpy as jnp, optax, jaxopt_zoo as jz
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> check_fusable(jz.adam(1e-3), params)  # fine: returns None
      >>> try:
      ...     check_fusable(optax.scale_by_trust_ratio(), params)  # a per-parameter norm
      ... except jz.NotFusableError as e:
      ...     print(e)
      fuse: this transformation is not exact on flat buffers: it reduces over ...
    """
    analyze(tx, params_or_layout, trust_spec=False)


def analyze(tx: Any, params_or_layout: Any, *, trust_spec: bool = True) -> bool:
    """Check ``tx`` like :func:`check_fusable`; return whether each buffer's update reads
    no other buffer (then ``fused_apply`` may update the buffers one at a time)."""
    layout = as_layout(params_or_layout)
    if not layout.buffers:
        return True  # no elements (an empty tree or only zero-size arrays): nothing differs
    if trust_spec and is_elementwise(tx):
        return True
    _probe(tx, layout)
    return separable(tx, layout)


def as_layout(params_or_layout: Any) -> Layout:
    """The :class:`Layout` of a tree, a ``FlatParams`` or a layout."""
    if isinstance(params_or_layout, Layout):
        return params_or_layout
    if isinstance(params_or_layout, FlatParams):
        return params_or_layout.layout
    return Layout.of(params_or_layout)


def _probe(tx: Any, layout: Layout) -> None:
    with jax.ensure_compile_time_eval():  # concrete values, even inside a jit trace
        _probe_now(tx, layout)


def _probe_now(tx: Any, layout: Layout) -> None:
    tree_p = values(layout, 1)
    grads = [values(layout, 2 + k, zeros=0.25) for k in range(2)]
    d_params: Optional[Any] = tangent(tree_p, 11)

    def flat(tree):
        return FlatParams(layout.flatten(tree), layout)

    # One compiled program per layout (compiling beats running op by op, which compiles
    # every operation for every shape).
    def on_tree(p, gs, dp):
        return run_two_steps(tx, p, gs, dp, lambda x: x)

    def on_flat(p, gs, dp):
        return run_two_steps(tx, p, gs, dp, unflat)

    try:
        want = jax.jit(on_tree)(tree_p, grads, d_params)
    except NeedsExtraArgsError as e:  # a line search: no loss to probe it with
        raise NotFusableError(
            f"{_message('its update needs keyword arguments the probe cannot give')} ({e})"
        ) from None
    except (TypeError, ValueError, NotImplementedError):  # no forward derivative (a
        # callback, a custom_vjp): compare the values only; a real error is raised again
        d_params = None
        want = jax.jit(on_tree)(tree_p, grads, d_params)
    try:
        got = jax.jit(on_flat)(
            flat(tree_p), [flat(g) for g in grads], None if d_params is None else flat(d_params)
        )
    except Exception as e:  # noqa: BLE001 -- a failure on flat buffers is a refusal
        raise NotFusableError(
            _message(
                diagnose(
                    tx,
                    layout,
                    Mismatch("", None, f"it fails on flat buffers ({type(e).__name__}: {e})"),
                )
            )
        ) from None
    try:
        for a, b in zip(got, want):
            compare(a, b, layout)
    except Mismatch as m:
        raise NotFusableError(_message(diagnose(tx, layout, m))) from None


def _message(reason: str) -> str:
    return (
        f"fuse: this transformation is not exact on flat buffers: {reason}. fuse runs "
        "the optimizer once over one buffer per dtype, which equals the per-parameter "
        "result only for elementwise optimizers that treat every parameter alike (Adam, "
        "SGD, Lion, RMSprop, ...; global-norm clipping is fine). Use this optimizer "
        "without fuse."
    )
