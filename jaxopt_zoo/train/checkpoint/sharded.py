"""Checkpoints of a run on a mesh (``TrainConfig(devices=N)``, one or several processes).

Orbax writes a tree of global ``jax.Array`` s with every process taking part: each process
writes the shards its devices hold (once per shard, not once per replica), process 0 the
metadata, and the checkpoint folder is renamed into place only when every process has
finished. Restoring reads the arrays straight into the shardings of a template on the
*current* mesh, so a checkpoint written on 4 devices (replicated or ZeRO-1) restores onto
2, 1 or 8, each process reading only what its devices hold.

The sha256 digest of a checkpoint covers the whole state, so computing it gathers every
array to every process (:func:`jaxopt_zoo.train.distributed.host_value`): cheap for the
models here, and the price of detecting damage in any process's shards.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxopt_zoo import sharding as sh
from jaxopt_zoo.train.distributed import host_value, is_primary

__all__: list = []  # internal: used by jaxopt_zoo.train.checkpoint


def mesh_of(tree: Any) -> Optional[Any]:
    """The mesh of the first leaf placed with a ``NamedSharding``, or None (one device)."""
    for x in jax.tree.leaves(tree):
        s = getattr(x, "sharding", None)
        if isinstance(s, NamedSharding):
            return s.mesh
    return None


def _sharding(x: Any, mesh: Mesh) -> NamedSharding:
    s = getattr(x, "sharding", None)
    return s if isinstance(s, NamedSharding) else sh.replicated(mesh)


def to_save(tree: Any, mesh: Mesh) -> Tuple[Any, Any]:
    """``(arrays for orbax, the same values whole on this host)``. The arrays are fresh
    copies on the mesh (the loop donates the state's buffers after the callback returns
    while orbax may still be reading them); leaves not on the mesh (the key, the counters)
    are replicated on it, so that every leaf is one global array."""

    def copy(x: Any) -> Any:
        if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding):
            return jnp.array(x, copy=True)
        host = np.asarray(x)
        return jax.make_array_from_callback(
            host.shape, sh.replicated(mesh), lambda index: host[index]
        )

    arrays = jax.tree.map(copy, tree)
    return arrays, host_value(arrays)


def restore_abstract(abstract: Any, template_tree: Any, mesh: Mesh) -> Any:
    """``abstract`` (ShapeDtypeStructs) with each leaf's target sharding on ``mesh``: the
    template's own, replicated for leaves not on the mesh."""
    return jax.tree.map(
        lambda a, t: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_sharding(t, mesh)),
        abstract,
        template_tree,
    )


def on_one_device(abstract: Any) -> Any:
    """``abstract`` with every leaf on this process's first device."""
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), abstract)


def restored_leaves(got: List[Any], expected: List[Any]) -> Tuple[List[Any], List[Any]]:
    """``(live leaves, host leaves)`` of what orbax returned: the global arrays as they
    are (for training) and their whole values on this host (for the digest)."""
    present = [g for g, x in zip(got, expected) if x is not None and x.size]
    host_iter = iter(host_value(present))
    live: List[Any] = []
    host: List[Any] = []
    for g, x in zip(got, expected):
        if x is None:
            live.append(None)
            host.append(None)
        elif x.size == 0:
            live.append(np.zeros(x.shape, x.dtype))
            host.append(np.zeros(x.shape, x.dtype))
        else:
            live.append(g)
            host.append(next(host_iter))
    return live, host


def primary() -> bool:
    """Whether this process writes the JSON side files (process 0)."""
    return is_primary()


def barrier(name: str) -> None:
    """Wait for every process (a no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
