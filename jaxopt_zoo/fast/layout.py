"""The flat layout: a tree of arrays packed into one contiguous buffer per dtype.

:class:`Layout` says where each leaf lives in the buffers (static, hashable);
:class:`FlatParams` is parameters (or gradients, or optimizer state shaped like them) stored
as those buffers, a pytree whose leaves are the buffers, viewed as the tree with
:meth:`FlatParams.tree`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Tuple

import jax
import jax.numpy as jnp

__all__ = ["FlatParams", "Layout"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of a tree of arrays packed into flat buffers.

    ``buffers``: ``(key, dtype, size)`` per buffer, one per dtype (or ``chunks`` per dtype).
    ``pieces``: per leaf, ``(key, start, stop)`` ranges that hold it, in order.
    Hashable, so it can be the static part of a pytree and a cache key.
    """

    treedef: Any
    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[str, ...]
    buffers: Tuple[Tuple[str, str, int], ...]
    pieces: Tuple[Tuple[Tuple[str, int, int], ...], ...]

    @staticmethod
    def of(tree: Any, chunks: int = 1) -> "Layout":
        """The layout of ``tree`` (arrays or ``ShapeDtypeStruct``s), ``chunks`` buffers a dtype."""
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"Invalid chunks: {chunks!r}. Expected an integer >= 1.")
        leaves, treedef = jax.tree.flatten(tree)
        shapes, dtypes = [], []
        for x in leaves:
            if not hasattr(x, "shape") or not hasattr(x, "dtype"):
                x = jnp.asarray(x)
            shapes.append(tuple(int(d) for d in x.shape))
            dtypes.append(jnp.dtype(x.dtype).name)
        sizes = [math.prod(s) for s in shapes]
        buffers: List[Tuple[str, str, int]] = []
        pieces: List[List[Tuple[str, int, int]]] = [[] for _ in leaves]
        for dt in sorted(set(dtypes)):
            members = [i for i, d in enumerate(dtypes) if d == dt]
            total = sum(sizes[i] for i in members)
            if total == 0:
                continue
            n_chunks = min(chunks, total)
            bounds = [total * c // n_chunks for c in range(n_chunks + 1)]
            keys = [dt if n_chunks == 1 else f"{dt}.{c}" for c in range(n_chunks)]
            buffers += [(k, dt, bounds[c + 1] - bounds[c]) for c, k in enumerate(keys)]
            pos = 0  # global offset of the current leaf within this dtype
            for i in members:
                lo, hi = pos, pos + sizes[i]
                for c, k in enumerate(keys):
                    a, b = max(lo, bounds[c]), min(hi, bounds[c + 1])
                    if a < b:
                        pieces[i].append((k, a - bounds[c], b - bounds[c]))
                pos = hi
        return Layout(
            treedef, tuple(shapes), tuple(dtypes), tuple(buffers), tuple(tuple(p) for p in pieces)
        )

    @property
    def num_leaves(self) -> int:
        """The number of leaves of the tree."""
        return len(self.shapes)

    def buffer_structs(self) -> Dict[str, jax.ShapeDtypeStruct]:
        """``{key: ShapeDtypeStruct}`` of the flat buffers."""
        return {k: jax.ShapeDtypeStruct((n,), jnp.dtype(dt)) for k, dt, n in self.buffers}

    def flatten(self, tree: Any) -> Dict[str, jax.Array]:
        """Pack ``tree`` (this layout's structure; dtypes are cast) into the flat buffers."""
        leaves = self.treedef.flatten_up_to(tree)
        parts: Dict[str, List[jax.Array]] = {k: [] for k, _, _ in self.buffers}
        for i, leaf in enumerate(leaves):
            flat = jnp.ravel(jnp.asarray(leaf)).astype(self.dtypes[i])
            off = 0
            for k, a, b in self.pieces[i]:
                parts[k].append(flat if (off, b - a) == (0, flat.size) else flat[off : off + b - a])
                off += b - a
        out = {}
        for k, _dt, _n in self.buffers:
            ps = parts[k]
            out[k] = ps[0] if len(ps) == 1 else jnp.concatenate(ps)
        return out

    def unflatten(self, buffers: Dict[str, jax.Array]) -> Any:
        """The tree of this layout, viewing (slicing and reshaping) the flat buffers."""
        leaves = []
        for shape, dt, pcs in zip(self.shapes, self.dtypes, self.pieces):
            if not pcs:
                leaves.append(jnp.zeros(shape, dt))
                continue
            segs = []
            for k, a, b in pcs:
                buf = buffers[k]
                segs.append(buf if (a, b) == (0, buf.shape[0]) else buf[a:b])
            flat = segs[0] if len(segs) == 1 else jnp.concatenate(segs)
            leaves.append(flat.reshape(shape))
        return self.treedef.unflatten(leaves)

    def group_of_leaf(self) -> Tuple[Tuple[str, ...], ...]:
        """Per leaf, the keys of the buffers that hold it."""
        return tuple(tuple(k for k, _, _ in pcs) for pcs in self.pieces)


@jax.tree_util.register_pytree_node_class
class FlatParams:
    """Parameters stored as one flat buffer per dtype, with the tree's layout kept static.

    A pytree whose leaves are the flat buffers: ``jax.grad`` of a loss of a ``FlatParams``
    returns a ``FlatParams``, ``tx.init`` / ``tx.update`` / ``optax.apply_updates`` work on
    it buffer by buffer, and a jitted step donating it updates the buffers in place.

    >>> fp = FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    >>> fp.tree()["w"].shape
    (2, 3)
    """

    def __init__(self, buffers: Dict[str, Any], layout: Layout):
        self.buffers = dict(buffers)
        self.layout = layout

    @classmethod
    def from_tree(cls, tree: Any, chunks: int = 1) -> "FlatParams":
        """Pack ``tree`` into flat buffers (``chunks`` per dtype, e.g. one per core)."""
        layout = Layout.of(tree, chunks)
        return cls(layout.flatten(tree), layout)

    def tree(self) -> Any:
        """The parameters as the original tree (slices and reshapes of the buffers)."""
        return self.layout.unflatten(self.buffers)

    def tree_flatten(self):
        """The buffers (sorted by key) as children; keys and layout as static data."""
        keys = tuple(sorted(self.buffers))
        return tuple(self.buffers[k] for k in keys), (keys, self.layout)

    @classmethod
    def tree_unflatten(cls, aux, children):
        """Inverse of :meth:`tree_flatten`."""
        keys, layout = aux
        return cls(dict(zip(keys, children)), layout)

    def __repr__(self) -> str:
        bufs = ", ".join(
            f"{k}: {getattr(v, 'shape', '?')}" for k, v in sorted(self.buffers.items())
        )
        return f"FlatParams({self.layout.num_leaves} leaves in {{{bufs}}})"
