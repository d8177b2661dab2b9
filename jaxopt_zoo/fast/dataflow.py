"""Which buffers each buffer's update reads, from the data flow of the jaxpr: whether
``fused_apply`` may update the flat buffers one after another."""

from __future__ import annotations

from typing import Any, List, Optional

import jax
from jax.extend.core import Literal

from jaxopt_zoo.fast.layout import FlatParams, Layout


def _buffer_tags(tree: Any) -> List[Optional[str]]:
    """Per leaf of ``tree``: the key of the flat buffer it is, or None (a shared value)."""
    tags: List[Optional[str]] = []
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, FlatParams)):
        if isinstance(node, FlatParams):
            tags += sorted(node.buffers)
        else:
            tags.append(None)
    return tags


def separable(tx: Any, layout: Layout) -> bool:
    """Whether, on the flat buffers, every output of a buffer is computed from that buffer
    and shared values only, and every shared output (a step count) from no buffer.

    Read from ``jax.make_jaxpr``: each equation's outputs are taken to depend on all its
    inputs (nested jaxprs included), so the answer errs on the side of "no".
    """
    if len(layout.buffers) < 2:
        return True
    flat = FlatParams(layout.buffer_structs(), layout)
    state = jax.eval_shape(tx.init, flat)

    def update(g, s, p):
        return tx.update(g, s, p)

    closed = jax.make_jaxpr(update)(flat, state, flat)
    out = jax.eval_shape(update, flat, state, flat)
    jaxpr = closed.jaxpr
    in_tags, out_tags = _buffer_tags((flat, state, flat)), _buffer_tags(out)
    if len(jaxpr.invars) != len(in_tags) or len(jaxpr.outvars) != len(out_tags):
        raise RuntimeError(
            "jaxopt_zoo.fast.dataflow.separable: jax.make_jaxpr no longer has one "
            "input and output variable per leaf; this analysis needs updating."
        )
    deps: dict = {v: frozenset() for v in jaxpr.constvars}
    for v, tag in zip(jaxpr.invars, in_tags):
        deps[v] = frozenset() if tag is None else frozenset([tag])

    def read(v: Any) -> frozenset:
        return frozenset() if isinstance(v, Literal) else deps[v]

    for eqn in jaxpr.eqns:
        d = frozenset().union(*(read(v) for v in eqn.invars))
        for v in eqn.outvars:
            deps[v] = d
    return all(read(v) <= ({tag} if tag else set()) for v, tag in zip(jaxpr.outvars, out_tags))
