"""Scale out: optimizer state placed like the parameters, ZeRO-1, one home device per matrix.

``state_sharding`` / ``init_sharded`` / ``sharded_update`` place any optimizer's state like
the parameters it belongs to (optionally split over the data axis: ZeRO-1), read from the
structure ``tx.init`` produces. ``home_device_assignment`` / ``run_on_home_devices`` run
whole-matrix work (Muon's Newton-Schulz: ``jz.muon(..., home_devices=mesh)``) once per
matrix, spread over the devices; with a ZeRO-1 state (``home_zero1=True``) each matrix's
pieces move only to its home device. All of it is ``jax.sharding`` and ``jax.jit``: XLA writes
the collectives, and the same code runs on 1 CPU, N virtual CPU devices, GPUs, TPUs and
several hosts. On a CPU, N virtual devices need a thread pool of 2 N threads for their
collectives (``threads``: ``use_cpu_devices`` sets it; ``data_mesh`` warns where it is short).
"""

from jaxopt_zoo.sharding.home import (
    assignment_loads,
    home_device_assignment,
    matrix_view,
    newton_schulz_flops,
    run_on_home_devices,
    zero1_dim,
)
from jaxopt_zoo.sharding.mesh import (
    batch_sharding,
    bytes_per_device,
    data_mesh,
    replicate,
    replicated,
    shard_batch,
    use_cpu_devices,
)
from jaxopt_zoo.sharding.placement import (
    init_sharded,
    param_sharding,
    sharded_update,
    state_sharding,
    zero1_sharding,
)
from jaxopt_zoo.sharding.stats import collective_bytes, compiled_stats
from jaxopt_zoo.sharding.threads import (
    CollectiveThreadsWarning,
    collective_hazard,
    cpu_pool_size,
    ensure_collective_threads,
)

__all__ = [
    "CollectiveThreadsWarning",
    "assignment_loads",
    "batch_sharding",
    "bytes_per_device",
    "collective_bytes",
    "collective_hazard",
    "compiled_stats",
    "cpu_pool_size",
    "data_mesh",
    "ensure_collective_threads",
    "home_device_assignment",
    "init_sharded",
    "matrix_view",
    "newton_schulz_flops",
    "param_sharding",
    "replicate",
    "replicated",
    "run_on_home_devices",
    "shard_batch",
    "sharded_update",
    "state_sharding",
    "use_cpu_devices",
    "zero1_dim",
    "zero1_sharding",
]
