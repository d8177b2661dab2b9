"""Why a transformation is not exact on flat buffers: further probes on the tree, run only
after the probe saw a difference, to name the cause in ``NotFusableError``'s message."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.fast.layout import Layout
from jaxopt_zoo.fast.probe import Mismatch, float0, values


def diagnose(tx: Any, layout: Layout, m: Mismatch) -> str:
    structs = layout.treedef.unflatten(
        [jax.ShapeDtypeStruct(s, jnp.dtype(d)) for s, d in zip(layout.shapes, layout.dtypes)]
    )
    odd = list(_odd_state(tx, structs, layout))
    for _, shape in odd:
        if any(len(shape) < len(ps) and _drops_axes(shape, ps) for ps in layout.shapes):
            return (
                "it reduces over some axes of a parameter (factored statistics, as in "
                "Adafactor), which a flat buffer does not have"
            )
    with jax.ensure_compile_time_eval():
        if _quietly(_varies_under_constant_inputs, tx, layout):
            return (
                "it adds a value not derived from the parameters (e.g. noise shaped like "
                "a parameter)"
            )
        if _quietly(_reduces_per_parameter, tx, layout):
            return (
                "it reduces over single parameters (a per-parameter norm, RMS or "
                "statistic, as in trust-ratio scaling (LAMB, LARS), clip_by_block_rms or "
                "Adafactor), which differs on one flat buffer"
            )
    if odd:
        return (
            f"state entry `{odd[0][0]}` is not shaped like the parameters (masked, "
            "partitioned or factored state)"
        )
    if m.why:
        return m.why
    if m.leaf is None:
        return f"`{m.where}` evolves differently on flat buffers"
    name = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(structs)[0][m.leaf][0])
    return (
        f"parameter `{name or '<root>'}` gets a different formula for `{m.where}` than "
        f"the other {layout.dtypes[m.leaf]} parameters (a mask, a partition or a "
        "shape-dependent choice tells the parameters apart)"
    )


def _quietly(probe: Any, tx: Any, layout: Layout) -> bool:
    """A diagnostic probe; one that cannot run says nothing (the refusal stands)."""
    try:
        return bool(probe(tx, layout))
    except Exception:  # noqa: BLE001 -- only the reason's wording depends on it
        return False


def _drops_axes(shape: Tuple[int, ...], full: Tuple[int, ...]) -> bool:
    """Whether ``shape`` is ``full`` with some axes removed (a factored statistic)."""
    it = iter(full)
    return all(any(d == e for e in it) for d in shape)


def _odd_state(tx: Any, structs: Any, layout: Layout) -> Iterator[Tuple[str, Tuple[int, ...]]]:
    """Floating state entries that are neither scalars nor shaped like the parameters."""
    treedef, shapes = layout.treedef, layout.shapes

    def paramlike(x: Any) -> bool:
        leaves, td = jax.tree.flatten(x)
        if td != treedef:
            return False
        if treedef.num_nodes == 1 and not jnp.issubdtype(leaves[0].dtype, jnp.inexact):
            return False  # a bare-array parameter: do not mistake a step count for it
        return all(tuple(leaf.shape) == s for leaf, s in zip(leaves, shapes))

    state = jax.eval_shape(tx.init, structs)
    for path, sub in jax.tree_util.tree_flatten_with_path(state, is_leaf=paramlike)[0]:
        if paramlike(sub) or sub.shape == () or not jnp.issubdtype(sub.dtype, jnp.inexact):
            continue
        yield "state" + jax.tree_util.keystr(path), tuple(sub.shape)


def _varies_under_constant_inputs(tx: Any, layout: Layout) -> bool:
    """Equal inputs everywhere, yet some parameter's outputs vary from element to element."""
    p, g = values(layout, 0, const=-1.25), values(layout, 0, const=0.75)
    u, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(g, p)
    return any(
        np.size(x) > 1 and not np.all(np.asarray(x) == np.asarray(x).ravel()[0])
        for x in jax.tree.leaves(u)
    )


def _reduces_per_parameter(tx: Any, layout: Layout) -> bool:
    """Moving one element of one parameter moves other elements of that parameter only."""
    p, g = values(layout, 1), values(layout, 2)  # no zeros: sqrt(v) is smooth
    leaves_p, treedef = jax.tree.flatten(p)

    @jax.jit
    def jvp(g, s, p, d):  # the updates' derivative along d in both gradient and parameter
        return jax.jvp(lambda g, p: tx.update(g, s, p), (g, p), (float0(d), float0(d)))[1][0]

    state = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[1])(g, p)
    for i, x in enumerate(leaves_p):
        if x.size < 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
            continue
        one = [jnp.zeros_like(y) for y in leaves_p]
        one[i] = jnp.zeros(x.size, x.dtype).at[0].set(1).reshape(x.shape)
        du = jvp(g, state, p, jax.tree.unflatten(treedef, one))  # compiled once
        moved = [np.nan_to_num(np.asarray(t)).ravel() != 0 for t in jax.tree.leaves(du)]
        if np.any(moved[i][1:]) and not any(np.any(t) for j, t in enumerate(moved) if j != i):
            return True
    return False
