"""Meshes and placement helpers: devices, a data-parallel mesh, replicated and batch shardings.

The pieces every multi-device program needs before any optimizer is involved: N devices on
any machine (``use_cpu_devices`` makes the CPU offer virtual ones), a one-axis data mesh,
copies on every device (``replicate``), the batch split over the data axis (``shard_batch``,
multi-process aware), and what each device holds of a tree (``bytes_per_device``).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_zoo.sharding.threads import (
    CollectiveThreadsWarning,
    ensure_collective_threads,
    warn_collective_hazard,
)

__all__ = [
    "batch_sharding",
    "bytes_per_device",
    "data_mesh",
    "replicate",
    "replicated",
    "shard_batch",
    "use_cpu_devices",
]


def use_cpu_devices(n: int) -> None:
    """Make JAX's CPU backend offer ``n`` (virtual) devices, so N-device code runs anywhere.

    Call it before JAX runs anything (it sets ``jax_num_cpu_devices``, and ``PJRT_NPROC`` to
    at least ``2 n`` so that collectives over the ``n`` devices cannot deadlock XLA's CPU
    thread pool: ``jaxopt_zoo.sharding.threads``). If JAX has started already, it is a
    no-op when at least ``n`` devices exist (with a
    :class:`~jaxopt_zoo.sharding.threads.CollectiveThreadsWarning` if their pool is too small)
    and a ``RuntimeError`` otherwise.
    GPUs and TPUs are unaffected: there ``jax.devices()`` lists the real accelerators.

    Args:
      n: the number of CPU devices, an int >= 1.

    Raises:
      ValueError: ``n`` is not an int >= 1.
      RuntimeError: JAX has started already with fewer than ``n`` devices.

    Example:
      >>> use_cpu_devices(1)  # JAX has started: a no-op, as one device exists
      >>> jax.device_count() >= 1
      True
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Invalid number of devices: {n!r}. Expected an int >= 1.")
    raised = ensure_collective_threads(int(n))  # before the backend starts (see threads.py)
    if raised is not None:
        warnings.warn(raised, CollectiveThreadsWarning, stacklevel=2)
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as e:
        if jax.device_count() >= n:
            # started already: the pool is what it is; say so if it can deadlock
            warn_collective_hazard(jax.local_devices()[:n])
            return
        raise RuntimeError(
            f"JAX has already started with {jax.device_count()} device(s), fewer than {n}. "
            f"Call use_cpu_devices({n}) before any JAX computation, or start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}."
        ) from e


def data_mesh(
    devices: Union[None, int, Sequence[Any]] = None,
    axis: str = "data",
    *,
    check_threads: bool = True,
) -> Mesh:
    """A one-axis data-parallel mesh.

    Args:
      devices: ``None`` for every device (all processes' devices in a multi-process run), an
        int ``n`` for the first ``n`` devices, or an explicit sequence of devices.
      axis: the axis name.
      check_threads: warn (:class:`~jaxopt_zoo.sharding.threads.CollectiveThreadsWarning`)
        when the mesh has several CPU devices in this process and XLA's CPU thread pool is
        too small for their collectives, which then deadlock once a program runs more than
        32 steps ahead (``jaxopt_zoo.sharding.threads``). False for a caller that bounds
        its steps ahead, as the trainer does.

    Returns:
      ``jax.sharding.Mesh`` of shape ``(n,)`` with axis name ``axis``.

    Raises:
      ValueError: ``devices`` is an int outside ``1 .. jax.device_count()``, or an empty
        sequence.

    Example:
      >>> mesh = data_mesh(1)
      >>> dict(mesh.shape), mesh.axis_names
      ({'data': 1}, ('data',))
    """
    if devices is None:
        devs = list(jax.devices())
    elif isinstance(devices, (int, np.integer)):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"Invalid number of devices: {devices}. Expected 1 <= devices <= "
                f"{len(available)} (the devices JAX sees: {available[0].platform} x "
                f"{len(available)}; on CPU, see jaxopt_zoo.sharding.use_cpu_devices)."
            )
        devs = list(available[:devices])
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("Invalid devices: an empty sequence.")
    if check_threads:
        warn_collective_hazard(devs)  # a CPU pool too small for these devices' collectives
    return Mesh(np.array(devs), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy on every device of ``mesh``.

    Args:
      mesh: the mesh.

    Returns:
      ``NamedSharding(mesh, PartitionSpec())``.

    Example:
      >>> replicated(data_mesh(1)).spec
      P()
    """
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding that splits the leading (batch) dimension over ``axis``.

    Args:
      mesh: the mesh.
      axis: the mesh axis to split over.

    Returns:
      ``NamedSharding(mesh, PartitionSpec(axis))``.

    Example:
      >>> batch_sharding(data_mesh(1)).spec
      P('data',)
    """
    return NamedSharding(mesh, PartitionSpec(axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every leaf copied onto every device of ``mesh``.

    Always a copy: a train step that donates the result cannot delete the buffers of
    ``tree`` (``jax.device_put`` reuses an input's buffer for the copy on the device that
    holds it, even with ``may_alias=False``, in jax 0.10).

    Args:
      tree: a pytree of arrays (``jax.Array`` or NumPy) and other leaves.
      mesh: the mesh.

    Returns:
      ``tree`` with every leaf a ``jax.Array`` with the :func:`replicated` sharding.

    Example:
      >>> import jax.numpy as jnp
      >>> params = replicate({"w": jnp.ones((4, 2))}, data_mesh(1))
      >>> params["w"].sharding.spec
      P()
    """
    fresh = jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)
    return jax.device_put(fresh, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Split every leaf of ``batch`` along its leading dimension over ``axis``.

    In a single process, ``batch`` is the global batch. In a multi-process run
    (``jax.process_count() > 1``) it is this process's share (the rows its devices hold) and
    the result is the global array assembled with ``jax.make_array_from_process_local_data``.

    Args:
      batch: a pytree of arrays whose leading dimensions are the examples.
      mesh: the mesh.
      axis: the mesh axis to split over.

    Returns:
      ``batch`` with every leaf a ``jax.Array`` with the :func:`batch_sharding`.

    Raises:
      ValueError: a leaf is a scalar, or its leading dimension is not a multiple of the
        number of devices along ``axis`` (this process's devices in a multi-process run).

    Example:
      >>> import jax.numpy as jnp
      >>> images = shard_batch(jnp.ones((8, 28, 28, 1)), data_mesh(1))
      >>> images.shape, images.sharding.spec
      ((8, 28, 28, 1), P('data',))
    """
    sharding = batch_sharding(mesh, axis)
    n = mesh.shape[axis]
    multi = jax.process_count() > 1
    local_n = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())

    def put(x: Any) -> jax.Array:
        rows = np.shape(x)[0] if np.ndim(x) else None
        need = local_n if multi else n
        if rows is None or rows % need:
            raise ValueError(
                f"Cannot split a batch leaf of shape {np.shape(x)} over {need} device(s) of "
                f"axis {axis!r}: its leading dimension must be a multiple of {need}."
            )
        if multi:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)


def bytes_per_device(tree: Any) -> Dict[int, int]:
    """Bytes each device holds of ``tree``'s ``jax.Array`` leaves: ``{device id: bytes}``.

    Counts the shards this process can address (every shard in a single process);
    replicated leaves count once per device.

    Args:
      tree: a pytree whose leaves are ``jax.Array`` s.

    Returns:
      A dict from ``device.id`` to the bytes of the shards on that device.

    Example:
      >>> import jax.numpy as jnp
      >>> tree = replicate({"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}, data_mesh(1))
      >>> list(bytes_per_device(tree).values())
      [40]
    """
    out: Dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return out
