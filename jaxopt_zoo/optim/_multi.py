"""Map a per-leaf function that returns several arrays over aligned trees."""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax


def tree_map_multi(
    fn: Callable[..., Tuple[Any, ...]], n_out: int, tree: Any, *rest: Any
) -> Tuple[Any, ...]:
    """``fn`` applied leaf by leaf to ``tree`` and the trees in ``rest`` (same structure);
    returns ``n_out`` trees, one per output of ``fn``. Unlike ``jax.tree.map`` with an
    ``is_leaf`` for tuples, it cannot confuse ``fn``'s outputs with tuples in the trees."""
    leaves, treedef = jax.tree.flatten(tree)
    others = [jax.tree.leaves(t) for t in rest]
    outs = [fn(*args) for args in zip(leaves, *others)]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in outs]) for i in range(n_out))
