"""The probe behind ``fuse``'s check: pseudo-random inputs shaped like the parameters, two
steps run on the tree and on the flat buffers, and the comparison of their outputs to the
dtypes' rounding."""

from __future__ import annotations

from typing import Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.fast.layout import FlatParams, Layout

TOL = {
    "float64": 1e-9,
    "complex128": 1e-9,
    "float32": 1e-4,
    "complex64": 1e-4,
    "bfloat16": 3e-2,
    "float16": 1e-2,
}


class Mismatch(Exception):
    """The probe saw a difference: ``where`` (an output path) and ``leaf`` (an index)."""

    def __init__(self, where: str, leaf: Optional[int], why: str = ""):
        super().__init__(where)
        self.where, self.leaf, self.why = where, leaf, why


def values(layout: Layout, seed: int, zeros: float = 0.0, const: Optional[float] = None) -> Any:
    """A tree of this layout: per-leaf scales 1.5..4.5 (so per-parameter statistics
    differ), a fraction ``zeros`` of exact zeros, or every element ``const``."""
    rng = np.random.default_rng(seed)
    leaves = []
    for i, (shape, dt) in enumerate(zip(layout.shapes, layout.dtypes)):
        dtype = jnp.dtype(dt)
        if const is not None:
            x = np.full(shape, const)
        else:
            x = np.asarray(rng.normal(size=shape)) * (1.5 + i % 4)
            if jnp.issubdtype(dtype, jnp.complexfloating):
                x = x + 1j * np.asarray(rng.normal(size=shape))
            x = np.where(rng.random(shape) < zeros, 0, x)
        if not jnp.issubdtype(dtype, jnp.inexact):
            x = np.round(np.real(x))
        leaves.append(jnp.asarray(x, dtype))
    return layout.treedef.unflatten(leaves)


def tangent(tree: Any, seed: int) -> Any:
    """A random direction (zeros for integer leaves; see :func:`float0`)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (
            jnp.asarray(rng.normal(size=x.shape), x.dtype)
            if jnp.issubdtype(x.dtype, jnp.inexact)
            else jnp.zeros_like(x)
        ),
        tree,
    )


def float0(tangent: Any) -> Any:
    """Integer leaves of a tangent as the float0 zeros that ``jax.jvp`` wants."""
    return jax.tree.map(
        lambda x: (
            x if jnp.issubdtype(x.dtype, jnp.inexact) else np.zeros(x.shape, jax.dtypes.float0)
        ),
        tangent,
    )


def run_two_steps(
    tx: Any, params: Any, grads: List[Any], d_params: Optional[Any], as_tree: Any
) -> List[Any]:
    """Outputs (as trees) of the second of two steps: its values and, unless ``d_params``
    is None, their derivative along ``d_params``."""
    state = tx.init(params)
    _, state = tx.update(grads[0], state, params)
    if d_params is None:
        return [as_tree(tx.update(grads[1], state, params))]
    out, d_out = jax.jvp(lambda p: tx.update(grads[1], state, p), (params,), (float0(d_params),))
    return [as_tree(out), as_tree(d_out)]


def unflat(tree: Any) -> Any:
    """FlatParams nodes replaced by their trees."""
    is_flat = lambda x: isinstance(x, FlatParams)  # noqa: E731
    return jax.tree.map(lambda x: x.tree() if is_flat(x) else x, tree, is_leaf=is_flat)


def compare(got: Any, want: Any, layout: Layout) -> None:
    """Raise :class:`Mismatch` at the first output that differs beyond rounding."""
    structures: List[Any] = [jax.tree.structure(got), jax.tree.structure(want)]
    if structures[0] != structures[1]:
        raise Mismatch("state", None, "its state is organised differently on flat buffers")
    names = ("updates", "state")
    # A global reduction over a bfloat16 buffer is rounded per buffer instead of per leaf,
    # and carries that rounding into every parameter: the loosest dtype's tolerance.
    tol = max(TOL.get(dt, 1e-4) for dt in layout.dtypes)
    for part, g_tree, w_tree in zip(names, got, want):
        for (path, w), g in zip(
            jax.tree_util.tree_flatten_with_path(w_tree)[0], jax.tree.leaves(g_tree)
        ):
            where = part + jax.tree_util.keystr(path)
            if jnp.shape(g) != jnp.shape(w):
                raise Mismatch(where, None)
            if not close(np.asarray(g), np.asarray(w), jnp.result_type(w), tol):
                raise Mismatch(where, leaf_of(where, w, layout))


def close(got: np.ndarray, want: np.ndarray, dtype: Any, tol: float) -> bool:
    if got.dtype == jax.dtypes.float0 or not jnp.issubdtype(dtype, jnp.inexact):
        return got.dtype == jax.dtypes.float0 or bool(np.array_equal(got, want))
    # complex if either side is (a flat buffer may hold a real leaf in a complex dtype)
    complex_ = jnp.issubdtype(dtype, jnp.complexfloating) or np.iscomplexobj(got)
    wide = np.complex128 if complex_ or np.iscomplexobj(want) else np.float64
    got, want = got.astype(wide), want.astype(wide)
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return False
    scale = float(np.max(np.abs(want[finite]), initial=0.0))
    bad = np.abs(got - want) > tol * scale
    bad &= finite
    # A handful of elements may land on the other side of a discontinuity (a sign, a
    # maximum) when a global sum is rounded in another order; a formula differs everywhere.
    return int(np.sum(bad)) <= want.size // 10_000


def leaf_of(where: str, leaf: Any, layout: Layout) -> Optional[int]:
    """The parameter an output leaf belongs to, by path suffix (None: not per-parameter)."""
    paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(
            layout.treedef.unflatten(list(range(layout.num_leaves)))
        )[0]
    ]
    for i in sorted(range(len(paths)), key=lambda i: -len(paths[i])):
        if where.endswith(paths[i]) and tuple(jnp.shape(leaf)) == layout.shapes[i]:
            return i
    return None
