"""XLA:CPU's thread pool and the collectives of several virtual CPU devices.

A computation over ``n`` CPU devices of one process (``jax_num_cpu_devices``, a mesh, an
all-reduce of the gradients) is launched and run on one thread pool of XLA's CPU client,
``max(cores, devices)`` threads (``PJRT_NPROC`` or ``NPROC`` replace the core count). Two
things hold a pool thread: the all-reduce waits in a rendezvous until all ``n`` devices'
executions arrive, and a launch waits for one of the 32 execution slots of its device
(``max_inflight_computations_per_device``) once more than 32 steps are queued, which happens
whenever the host dispatches steps faster than they run. With fewer than ``2 n`` threads the
blocked launches take the threads the rendezvous needs: XLA aborts after 40 s ("Expected 4
threads to join the rendezvous, but only 2 of them arrived on time"). On a 2-core machine
the pool has exactly ``n`` threads, so every multi-device program that runs ahead of the
host can hang. The cause, the reproduction and the measurements: RELIABILITY.md.

What this module does about it: :func:`ensure_collective_threads` sets ``PJRT_NPROC`` to at
least ``2 n`` before the CPU backend starts (:func:`~jaxopt_zoo.sharding.use_cpu_devices`
and the trainer's ``--devices`` call it), and :func:`collective_hazard` says, once the
backend runs, whether a mesh of this process's CPU devices can deadlock, so that
:func:`~jaxopt_zoo.sharding.data_mesh` warns and the trainer bounds how far it runs ahead.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, MutableMapping, Optional, Sequence

__all__ = [
    "CollectiveThreadsWarning",
    "collective_hazard",
    "cpu_pool_size",
    "ensure_collective_threads",
]

POOL_VARIABLES = ("PJRT_NPROC", "NPROC")  # read by XLA in this order when the client starts
MAX_INFLIGHT = 32  # XLA's execution slots per CPU device (cpu_client_options.h)


class CollectiveThreadsWarning(RuntimeWarning):
    """XLA's CPU thread pool is too small for the collectives of a mesh of CPU devices."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_pool_size(devices: int, environ: Optional[MutableMapping[str, str]] = None) -> int:
    """The threads XLA's CPU client gives its pool: ``PJRT_NPROC``, else ``NPROC``, else the
    cores this process may run on, and at least ``devices``.

    Args:
      devices: the number of CPU devices the client makes.
      environ: the environment to read (default ``os.environ``).

    Returns:
      The pool's thread count, as XLA computes it when the backend starts.

    Example:
      >>> cpu_pool_size(4, {"PJRT_NPROC": "8"})
      8
      >>> cpu_pool_size(4, {"PJRT_NPROC": "2"})
      4
    """
    env = os.environ if environ is None else environ
    for name in POOL_VARIABLES:
        value = env.get(name)
        if value is not None:
            try:
                return max(int(value), devices, 0)
            except ValueError:
                continue  # XLA passes over a value it cannot parse, too
    return max(_cores(), devices)


def ensure_collective_threads(
    devices: int, environ: Optional[MutableMapping[str, str]] = None
) -> Optional[str]:
    """Give XLA's CPU pool at least ``2 * devices`` threads, by ``PJRT_NPROC``. It takes
    effect only if the CPU backend has not started yet.

    Args:
      devices: the number of CPU devices a collective will span in this process.
      environ: the environment to change (default ``os.environ``).

    Returns:
      None, or a message when it raised a smaller ``PJRT_NPROC``/``NPROC`` that was set.

    Example:
      >>> env = {}
      >>> ensure_collective_threads(4, env), int(env["PJRT_NPROC"]) >= 8
      (None, True)
    """
    env = os.environ if environ is None else environ
    if devices < 2 or cpu_pool_size(devices, env) >= 2 * devices:
        return None
    given = {n: env[n] for n in POOL_VARIABLES if n in env}
    env["PJRT_NPROC"] = str(max(2 * devices, _cores()))
    if given:
        was = ", ".join(f"{k}={v}" for k, v in given.items())
        return (
            f"{was} gives XLA's CPU thread pool fewer than 2 x {devices} threads, which can "
            f"deadlock the collectives of {devices} devices; set PJRT_NPROC={env['PJRT_NPROC']}"
        )
    return None


def local_cpu_devices(devices: Sequence[Any]) -> list:
    """The CPU devices of this process among ``devices``: the ones that share its pool."""
    import jax

    return [d for d in devices if d.platform == "cpu" and d.process_index == jax.process_index()]


def collective_hazard(devices: Sequence[Any]) -> Optional[str]:
    """Whether a collective over ``devices`` can deadlock in XLA's CPU pool (see the module).

    Args:
      devices: the devices of a mesh (any platform; only this process's CPU devices count).

    Returns:
      None where it is safe (accelerators, one local device, a pool of ``2 n`` threads or
      more), else a message that says what to set.

    Example:
      >>> import jax
      >>> collective_hazard(jax.devices()[:1]) is None
      True
    """
    import jax

    n = len(local_cpu_devices(devices))
    if n < 2:
        return None
    pool = cpu_pool_size(len(jax.local_devices(backend="cpu")))
    if pool >= 2 * n:
        return None
    return (
        f"XLA's CPU thread pool has {pool} threads for collectives over {n} CPU devices of "
        f"this process; with fewer than {2 * n} a program dispatched more than {MAX_INFLIGHT} "
        f"steps ahead deadlocks in the all-reduce (XLA aborts after 40 s). Set "
        f"PJRT_NPROC={2 * n} before JAX starts (jaxopt_zoo.sharding.use_cpu_devices({n}) "
        "does), or call jax.block_until_ready on the step's output every few steps."
    )


def warn_collective_hazard(devices: Sequence[Any], stacklevel: int = 3) -> Optional[str]:
    """:func:`collective_hazard`, and a :class:`CollectiveThreadsWarning` when it says so."""
    message = collective_hazard(devices)
    if message is not None:
        warnings.warn(message, CollectiveThreadsWarning, stacklevel=stacklevel)
    return message
