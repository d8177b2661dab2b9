"""The trainer on several devices and processes: the mesh (``.mesh``) and the processes
(``.processes``: ``jax.distributed``, and a clean stop when a peer dies)."""

from jaxopt_zoo.train.distributed.mesh import (  # noqa: F401  (read as distributed.X by the trainer)
    Layout,
    check_batch_divides,
    mesh_devices,
    placer,
    prepare,
    steps_ahead,
)
from jaxopt_zoo.train.distributed.processes import (  # noqa: F401  (names of the old module)
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    PeerMonitor,
    Watchdog,
    host_value,
    initialize,
    is_primary,
)

__all__ = [
    "Layout",
    "PeerMonitor",
    "Watchdog",
    "host_value",
    "initialize",
    "is_primary",
    "mesh_devices",
]
