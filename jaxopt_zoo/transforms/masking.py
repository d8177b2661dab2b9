"""Apply a transformation to a subset of the parameters (``masked``, ``partition``)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Union

import jax

from jaxopt_zoo.core import GradientTransformation, GradientTransformationExtraArgs


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner transformation's state over the masked leaves."""

    inner_state: Any


def _full_mask(mask: Any, tree: Any, where: str) -> Any:
    """Resolve a callable mask and broadcast a prefix mask to every leaf of ``tree``."""
    if callable(mask):
        mask = mask(tree)
    try:
        return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask, tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{where}: the mask does not match the parameters.\n"
            f"  mask:       {jax.tree.structure(mask)}\n"
            f"  parameters: {jax.tree.structure(tree)}\n"
            "Give a tree of booleans with the parameters' structure (or a prefix of it), or a "
            "function that builds one from the parameters."
        ) from e


def _select(mask: Any, tree: Any) -> Any:
    """Keep the leaves where mask is True; put ``None`` (an empty subtree) elsewhere."""
    return jax.tree.map(lambda m, x: x if m else None, mask, tree)


def masked(
    inner: GradientTransformation, mask: Union[Any, Callable[[Any], Any]]
) -> GradientTransformationExtraArgs:
    """Apply ``inner`` only where ``mask`` is True; other updates pass through unchanged.

    ``mask`` is a tree of booleans shaped like the parameters (or a prefix of it), or a
    function from parameters to such a tree. ``inner`` sees and keeps state only for the
    selected leaves.

    Args:
      inner: the transformation applied to the selected leaves.
      mask: a tree of booleans (or a prefix of one), or a function of the params returning
        one.

    Returns:
      A transformation whose state is a :class:`MaskedState`.

    Example:
      >>> tx = jz.masked(jz.adam(1e-3), {"w": True, "b": False})
      >>> params = {"w": jnp.ones(3), "b": jnp.ones(2)}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> updates["b"]  # passed through
      Array([1., 1.], dtype=float32)
    """

    def init_fn(params):
        m = _full_mask(mask, params, "masked")
        return MaskedState(inner_state=inner.init(_select(m, params)))

    def update_fn(updates, state, params=None, **extra):
        m = _full_mask(mask, params if params is not None else updates, "masked")
        if not any(jax.tree.leaves(m)):  # nothing selected (a bare array masked out, say)
            return updates, state
        sel_u = _select(m, updates)
        sel_p = None if params is None else _select(m, params)
        if isinstance(inner, GradientTransformationExtraArgs):
            new_u, inner_state = inner.update(sel_u, state.inner_state, sel_p, **extra)
        else:
            new_u, inner_state = inner.update(sel_u, state.inner_state, sel_p)
        out = jax.tree.map(
            lambda mm, new, old: new if mm else old, m, new_u, updates, is_leaf=lambda x: x is None
        )
        return out, MaskedState(inner_state=inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class PartitionState(NamedTuple):
    """State of :func:`partition`: one inner state per label, ``inner_states[label]``."""

    inner_states: Mapping[Hashable, Any]


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Union[Any, Callable[[Any], Any]],
) -> GradientTransformationExtraArgs:
    """Route each parameter to the transformation named by its label.

    ``param_labels`` is a tree of labels shaped like the parameters (or a function building
    one). Every label must be a key of ``transforms``.

    Args:
      transforms: a mapping from label to transformation.
      param_labels: a tree of labels with the params' structure (or a prefix of one), or a
        function of the params returning one.

    Returns:
      A transformation whose state is a :class:`PartitionState`.

    Example:
      >>> tx = jz.partition({"train": jz.adam(1e-3), "frozen": jz.scale(0.0)},
      ...                   {"w": "train", "b": "frozen"})
      >>> params = {"w": jnp.ones(3), "b": jnp.ones(2)}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    transforms = dict(transforms)

    def labels_of(params):
        labels = param_labels(params) if callable(param_labels) else param_labels
        missing = set(jax.tree.leaves(labels)) - set(transforms)
        if missing:
            raise ValueError(
                f"partition: labels {sorted(map(str, missing))} have no transformation; "
                f"transforms are given for {sorted(map(str, transforms))}."
            )
        return labels

    def masks(params):
        labels = labels_of(params)
        return {k: jax.tree.map(lambda lab, k=k: lab == k, labels) for k in transforms}

    def init_fn(params):
        ms = masks(params)
        return PartitionState(
            inner_states={k: masked(tx, ms[k]).init(params) for k, tx in transforms.items()}
        )

    def update_fn(updates, state, params=None, **extra):
        ms = masks(params if params is not None else updates)
        new_states = {}
        for k, tx in transforms.items():
            updates, new_states[k] = masked(tx, ms[k]).update(
                updates, state.inner_states[k], params, **extra
            )
        return updates, PartitionState(inner_states=new_states)

    return GradientTransformationExtraArgs(init_fn, update_fn)
