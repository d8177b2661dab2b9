"""The mesh of a run on several devices and processes, and where its arrays live.

Joining the processes (``jax.distributed``) and stopping when one dies live in
:mod:`jaxopt_zoo.train.distributed.processes`.

``TrainConfig(devices=N)`` trains data-parallel on a one-axis mesh of N devices
(:func:`jaxopt_zoo.sharding.data_mesh`): the parameters are replicated, the optimizer state
is placed like them or, with ``shard_optimizer_state=True``, split 1/N over the devices
(ZeRO-1, :func:`jaxopt_zoo.sharding.zero1_sharding`), and the step's batch is split over the
mesh by a sharding constraint inside the jitted step. XLA writes every collective: the
all-reduce of the gradients and of the metric sums, and with ZeRO-1 the slicing of the
gradient and the all-gather of the new parameters.

**Where the data lives.** Every process loads the whole (small) data set and it is copied,
replicated, onto every device of the mesh once per run. The jitted step gathers the batch's
rows by index from that copy (the same indices as on one device: one permutation per epoch,
a pure function of the seed) and constrains the gathered batch to be split over the mesh, so
each device computes the forward and backward pass of its own rows only, and each process
feeds its share of every batch with no host-to-device copy per step and no communication for
the data. The alternative, each process building its rows on the host and assembling the
global batch with ``jax.make_array_from_process_local_data`` every step
(:func:`jaxopt_zoo.sharding.shard_batch`), suits data sets larger than one device's memory;
MNIST (188 MB as float32) is not one.

**What differs from one device.** The same seed gives the same initial parameters, the same
example order and the same dropout keys on any number of devices and processes. What
changes is the order of floating-point sums: the batch-mean loss and the gradients are
summed per device, then across devices (XLA's all-reduce), where one device sums all rows at
once. Measured on the MLP (784-32-10, batch 32, 8 CPU devices, 24 Adam steps): parameters
within 2e-7 of the 1-device run's (a few float32 ulps), with or without ZeRO-1. Two runs of
the same layout are bit-identical, and so is a run stopped and resumed on the same layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_zoo import sharding as sh
from jaxopt_zoo.sharding.threads import local_cpu_devices

__all__ = ["Layout", "mesh_devices"]


def mesh_devices(total: int) -> list:
    """``total`` devices for a data mesh: the first ``total / P`` devices of each of the
    ``P`` processes, process by process (every process must take part in every step).

    Args:
      total: the number of devices of the mesh, a multiple of ``jax.process_count()``.

    Returns:
      A list of ``total`` devices.

    Raises:
      ValueError: ``total`` is not a positive multiple of the process count, or a process
        has fewer devices than its share.

    Example:
      >>> [d.id for d in mesh_devices(1)]
      [0]
    """
    p = jax.process_count()
    if total < 1 or total % p:
        raise ValueError(
            f"Invalid devices={total}: expected a positive multiple of the {p} process(es)."
        )
    per = total // p
    out = []
    for i in range(p):
        local = [d for d in jax.devices() if d.process_index == i]
        if len(local) < per:
            raise ValueError(
                f"devices={total} needs {per} device(s) in each of the {p} process(es), but "
                f"process {i} has {len(local)} ({local[0].platform if local else 'none'}). On "
                f"CPU, start each process with --devices {per} (jaxopt_zoo.sharding."
                "use_cpu_devices) before JAX runs anything."
            )
        out += local[:per]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """Where a data-parallel run's arrays live: the mesh and every leaf's sharding.

    Hashable (by the mesh and the shardings), so the jitted step built for a layout is
    reused by later runs with an equal one.

    Build one with :meth:`build`; :func:`~jaxopt_zoo.train.loop.train_and_evaluate` does
    for ``TrainConfig(devices=N)``.

    Args:
      mesh: the one-axis mesh, axis ``"data"``.
      param_sharding: the parameters' tree of ``NamedSharding`` s (replicated).
      state_sharding: the optimizer state's (like the parameters, or ZeRO-1).
      shard_optimizer_state: whether the state is split over the devices (ZeRO-1).

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> layout = Layout.build(1, jz.sgd(0.1), {"w": jnp.ones((4, 2))})
      >>> layout.size, layout.batch.spec, layout.put(jnp.ones(3)).sharding.spec
      (1, P('data',), P())
    """

    mesh: Mesh
    param_sharding: Any
    state_sharding: Any
    shard_optimizer_state: bool

    @staticmethod
    def build(
        devices: int, tx: Any, params: Any, *, shard_optimizer_state: bool = False
    ) -> "Layout":
        """The layout of ``devices`` devices for ``tx`` and parameters like ``params``.

        Args:
          devices: the mesh size (over all processes; see :func:`mesh_devices`).
          tx: the optimizer.
          params: the parameters (arrays or ``jax.ShapeDtypeStruct`` s; only their
            shapes and dtypes are read).
          shard_optimizer_state: ZeRO-1: split every state leaf 1/N over the devices.

        Returns:
          A :class:`Layout`.

        Example:
          >>> import jax.numpy as jnp, jaxopt_zoo as jz
          >>> layout = Layout.build(1, jz.adam(1e-3), {"w": jnp.ones((4, 2))},
          ...                       shard_optimizer_state=True)
          >>> layout.state_sharding[0].mu["w"].spec
          P('data', None)
        """
        # the loop bounds its steps ahead (steps_ahead), so a short CPU pool cannot deadlock
        mesh = sh.data_mesh(mesh_devices(int(devices)), check_threads=False)
        abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(np.shape(p), p.dtype), params)
        p_sh = jax.tree.map(lambda _: sh.replicated(mesh), abstract)
        s_sh = sh.state_sharding(
            tx, abstract, mesh, shard_over="data" if shard_optimizer_state else None
        )
        return Layout(mesh, p_sh, s_sh, bool(shard_optimizer_state))

    # -- identity (for memoizing the jitted step)
    def _key(self) -> Tuple[Any, ...]:
        p_leaves, p_def = jax.tree.flatten(self.param_sharding)
        s_leaves, s_def = jax.tree.flatten(self.state_sharding)
        return (self.mesh, tuple(p_leaves), p_def, tuple(s_leaves), s_def)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self._key() == other._key()

    # -- shardings
    @property
    def size(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def replicated(self) -> NamedSharding:
        return sh.replicated(self.mesh)

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    def step_out_shardings(self, guard: bool) -> Tuple[Any, ...]:
        """``out_shardings`` of the indexed train step: params, state, totals[, check]."""
        rep = self.replicated
        return (self.param_sharding, self.state_sharding, rep) + ((rep,) if guard else ())

    # -- placement
    def put(self, tree: Any, sharding: Any = None) -> Any:
        """``tree`` placed with ``sharding`` (a sharding, or a tree of them; replicated by
        default), in fresh buffers: the step donates them. Works across processes: every
        process passes the same values and keeps only its devices' pieces."""
        sharding = self.replicated if sharding is None else sharding
        if isinstance(sharding, jax.sharding.Sharding):
            return jax.tree.map(lambda x: _put(x, sharding), tree)
        return jax.tree.map(_put, tree, sharding)

    def place_state(self, state: Any) -> Any:
        """A :class:`~jaxopt_zoo.train.state.LoopState` with its parameters, optimizer state
        and running metrics on the mesh (``rng`` stays where it is: only keys derived from
        it reach the step, through :meth:`put`)."""
        return state._replace(
            params=self.put(state.params, self.param_sharding),
            opt_state=self.put(state.opt_state, self.state_sharding),
            totals=type(state.totals)(*self.put(tuple(state.totals))),
        )


def _put(x: Any, sharding: Any) -> Any:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding), impl=impl)
    if isinstance(x, jax.Array):
        if x.sharding == sharding:
            return x
        if not x.is_fully_addressable:  # another global layout: let XLA move it
            return jax.device_put(x, sharding)
    elif not isinstance(x, np.ndarray) and not np.isscalar(x):
        return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def check_batch_divides(batch_size: int, devices: int) -> None:
    """Refuse a batch that does not split evenly over the mesh."""
    if batch_size % devices:
        raise ValueError(
            f"batch_size={batch_size} does not split over devices={devices}: each device takes "
            f"batch_size / devices rows. Use a batch size that is a multiple of {devices}."
        )


def prepare(config: Any, tx: Any, state: Any, data: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """For :func:`~jaxopt_zoo.train.loop.train_and_evaluate`: ``(layout, state, data)``
    placed on the mesh of ``config.devices``, or unchanged (layout None) without one."""
    if config.devices is None:
        return None, state, data
    check_batch_divides(config.batch_size, config.devices)
    from jaxopt_zoo.fast import is_fused

    if is_fused(tx):
        raise ValueError(
            "A fused optimizer (FlatParams, one native kernel) runs on one device; use the "
            "plain optimizer with devices=N."
        )
    layout = Layout.build(
        config.devices, tx, state.params, shard_optimizer_state=config.shard_optimizer_state
    )
    return layout, layout.place_state(state), tuple(layout.put(d) for d in data)


def placer(layout: Optional[Layout]) -> Callable[[Any], Any]:
    """``x -> x`` replicated on ``layout``'s mesh (the identity without a layout)."""
    if layout is None:
        return lambda x: x
    return layout.put


STEPS_AHEAD_ON_CPU = 8  # well under XLA's 32 execution slots per CPU device


def steps_ahead(layout: Optional[Layout]) -> Optional[int]:
    """How many steps the loop may dispatch before it waits for the oldest: None (no limit)
    on one device and on accelerators; :data:`STEPS_AHEAD_ON_CPU` on a mesh with several CPU
    devices in this process, where more than 32 queued executions per device can deadlock
    the all-reduce when XLA's CPU pool is short of threads
    (``jaxopt_zoo.sharding.threads``). The wait costs one dispatch's overlap per 8 steps."""
    if layout is None:
        return None
    local = local_cpu_devices(list(layout.mesh.devices.flat))
    return STEPS_AHEAD_ON_CPU if len(local) >= 2 else None
