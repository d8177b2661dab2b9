"""The on-disk format of a checkpoint: a :class:`~jaxopt_zoo.train.loop.LoopState` as a tree
of arrays plus JSON metadata, its sha256 digest, and the description of its structure used to
refuse a checkpoint of another model or optimizer.

:class:`~jaxopt_zoo.train.checkpoint.Checkpointer` (when to save, what to keep, how to resume
and what to do with damaged checkpoints) is built on these functions; they hold no policy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.train.loop import LoopState
from jaxopt_zoo.train.steps import Metrics

FORMAT = "jaxopt_zoo.checkpoint/1"

# --------------------------------------------------------------------------- #
# LoopState <-> saved tree
# --------------------------------------------------------------------------- #


def state_tree(state: LoopState) -> Tuple[Dict[str, Any], Optional[str]]:
    """The arrays of a LoopState as one tree; typed PRNG keys as their raw data."""
    rng, impl = state.rng, None
    if jax.dtypes.issubdtype(jnp.result_type(rng), jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(rng))
        rng = jax.random.key_data(rng)
    counters = np.array([int(state.step), int(state.epoch), int(state.batch)], np.int64)
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "totals": Metrics(*state.totals),
        "rng": rng,
        "counters": counters,
    }, impl


def shape_dtype(x: Any) -> jax.ShapeDtypeStruct:
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return jax.ShapeDtypeStruct(np.shape(x), dtype)


def abstract_tree(template: LoopState) -> Dict[str, Any]:
    """The shapes and dtypes of :func:`state_tree` of a state like ``template`` (which may
    itself hold ``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape``)."""
    rng = template.rng
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.eval_shape(jax.random.key_data, rng)
    sds = lambda t: jax.tree.map(shape_dtype, t)  # noqa: E731
    return {
        "params": sds(template.params),
        "opt_state": sds(template.opt_state),
        "totals": Metrics(*sds(tuple(template.totals))),
        "rng": shape_dtype(rng),
        "counters": jax.ShapeDtypeStruct((3,), np.int64),
    }


def loop_state(tree: Dict[str, Any], meta: Mapping[str, Any]) -> LoopState:
    step, epoch, batch = (int(v) for v in tree["counters"])
    if (step, epoch, batch) != (meta.get("step"), meta.get("epoch"), meta.get("batch")):
        raise ValueError("its step/epoch/batch disagree with its metadata")
    history = tuple(meta.get("history", ()))
    if len(history) != epoch:
        raise ValueError(f"epoch {epoch} but {len(history)} history entries")
    # global arrays restored onto a mesh stay as they are; host arrays go to the device
    to_device = lambda t: jax.tree.map(  # noqa: E731
        lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), t
    )
    rng = jnp.asarray(tree["rng"])
    if meta.get("rng_impl"):
        rng = jax.random.wrap_key_data(rng, impl=meta["rng_impl"])
    return LoopState(
        to_device(tree["params"]),
        to_device(tree["opt_state"]),
        step,
        epoch,
        batch,
        rng,
        Metrics(*to_device(tuple(tree["totals"]))),
        history,
    )


def flatten(tree: Any) -> Tuple[List[Any], Any]:
    return jax.tree.flatten(tree, is_leaf=lambda x: x is None)


def drop_empty(tree: Any) -> Any:
    """Zero-size arrays as None: orbax refuses to save them (and they hold nothing)."""
    leaves, treedef = flatten(tree)
    return jax.tree.unflatten(
        treedef, [None if x is None or np.size(x) == 0 else x for x in leaves]
    )


DIGESTED = ("format", "step", "epoch", "batch", "rng_impl", "history")


def digest(tree: Any, meta: Mapping) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes, and over the position and the
    metrics history recorded beside them (a changed digit in the history is damage too)."""
    h = hashlib.sha256()
    h.update(json.dumps({k: meta.get(k) for k in DIGESTED}, sort_keys=True).encode())
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def structure(state: LoopState) -> dict:
    """Tree structure, shapes and dtypes of the parameters and the optimizer state."""

    def describe(tree):
        return [
            [jax.tree_util.keystr(p), list(np.shape(x)), str(jnp.result_type(x))]
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        ]

    return {
        "params": describe(state.params),
        "opt_state": describe(state.opt_state),
        "opt_state_tree": str(jax.tree.structure(state.opt_state)),
    }


def structure_diff(saved: dict, mine: dict) -> str:
    types = [
        ", ".join(re.findall(r"namedtuple\[(\w+)\]", x["opt_state_tree"])) or "-"
        for x in (saved, mine)
    ]
    optimizer = (
        f" (optimizer state: {types[0]} in the checkpoints, {types[1]} here)"
        if types[0] != types[1]
        else ""
    )
    for part in ("params", "opt_state"):
        a = {p: (s, d) for p, s, d in saved[part]}
        b = {p: (s, d) for p, s, d in mine[part]}
        if a == b:
            continue
        for p in sorted(set(a) | set(b)):
            if a.get(p) != b.get(p):
                there = "absent" if p not in a else f"{tuple(a[p][0])} {a[p][1]}"
                here = "absent" if p not in b else f"{tuple(b[p][0])} {b[p][1]}"
                return f"{part}{p} is {there} in the checkpoints but {here} here{optimizer}"
    return (
        f"the optimizer state is {saved['opt_state_tree']} in the checkpoints but "
        f"{mine['opt_state_tree']} here"
    )


def jsonable(x: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(x))
    except (TypeError, ValueError) as e:
        raise TypeError(f"Invalid {what}: it must be JSON-serializable ({e}).") from None


def write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
