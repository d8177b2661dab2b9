"""``--devices``, ``--shard-optimizer-state`` and the multi-process flags of ``train`` and
``compare``: set up JAX's devices first thing, then give the run its mesh size."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Dict, Iterator, Optional

from jaxopt_zoo.cli.args import UsageError, nonneg_int, positive_int


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """--devices, --shard-optimizer-state and the multi-process flags (train, compare)."""
    g = p.add_argument_group("devices and processes (data parallel; see docs/scale-out.md)")
    g.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        metavar="N",
        help="train data-parallel on N devices of this process (on a CPU-only machine, N "
        "virtual CPU devices); the batch size must split over all processes' devices",
    )
    g.add_argument(
        "--shard-optimizer-state",
        action="store_true",
        help="split the optimizer state over the devices (ZeRO-1) instead of replicating it",
    )
    g.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address for jax.distributed (default $JAX_COORDINATOR_ADDRESS)",
    )
    g.add_argument(
        "--num-processes",
        type=positive_int,
        default=None,
        metavar="P",
        help="number of processes (default $JAX_NUM_PROCESSES)",
    )
    g.add_argument(
        "--process-id",
        type=nonneg_int,
        default=None,
        metavar="I",
        help="this process's number, 0 .. P-1 (default $JAX_PROCESS_ID)",
    )
    g.add_argument(
        "--distributed-timeout",
        type=positive_int,
        default=60,
        metavar="SECONDS",
        help="with several processes: stop with an error naming the dead process when a "
        "peer shows no sign of life for this long, or training makes no progress for 3x "
        "this long (default 60)",
    )


def setup_devices(args: argparse.Namespace) -> None:
    """Before anything runs JAX: virtual CPU devices, ``jax.distributed``; then
    ``args.total_devices`` (the mesh size, or None for the plain one-device path). In
    processes other than 0, standard output is silenced: process 0 prints and writes."""
    if not hasattr(args, "devices"):
        return
    from jaxopt_zoo.train import distributed

    try:
        distributed.initialize(
            args.devices,
            coordinator=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            # 4x ours: JAX's own verdict ends the process with SIGABRT and a C++ trace; the
            # PeerMonitor (``guard``) speaks first, with a clear line, even on a loaded
            # machine where its thread runs late (it waits up to 2x for the dead peer's name)
            heartbeat_timeout=4 * args.distributed_timeout,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    import jax

    if args.shard_optimizer_state and args.devices is None and jax.process_count() == 1:
        raise UsageError("--shard-optimizer-state needs --devices N (or several processes)")
    total = None
    if args.devices is not None or jax.process_count() > 1:
        per = args.devices or jax.local_device_count()
        total = per * jax.process_count()
        if args.batch_size % total:
            raise UsageError(
                f"--batch-size {args.batch_size} does not split over {total} device(s) "
                f"({jax.process_count()} process(es) x {per}): use a multiple of {total}"
            )
        if len(jax.local_devices()) < per:
            raise UsageError(
                f"--devices {per}: this process sees only {len(jax.local_devices())} "
                f"{jax.local_devices()[0].platform} device(s)"
            )
    args.total_devices = total
    if not distributed.is_primary():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the life of the process


def device_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The TrainConfig fields of the device flags."""
    total: Optional[int] = getattr(args, "total_devices", None)
    return {
        "devices": total,
        "shard_optimizer_state": bool(getattr(args, "shard_optimizer_state", False) and total),
    }


@contextlib.contextmanager
def watchdog(args: argparse.Namespace, ckpt: Any = None) -> Iterator[Any]:
    """In a multi-process run, guard the training in the block: a
    :class:`~jaxopt_zoo.train.distributed.processes.PeerMonitor` (a peer died: name it) and a
    :class:`~jaxopt_zoo.train.distributed.processes.Watchdog` (no progress for 3x the timeout), both
    ending this process with one line that says what to do; a collective that raises
    because a peer died ends the same way. Yields the train callback that records the
    step (a callback that does nothing in one process)."""
    import jax

    if jax.process_count() == 1:
        yield lambda state: None
        return
    from jaxopt_zoo.train.distributed.processes import PeerMonitor, Watchdog

    timeout = getattr(args, "distributed_timeout", 60)
    here = f"process {jax.process_index()} of {jax.process_count()}"

    def at() -> str:
        step = dog.step  # the last step this process reached
        return f" at step {step}" if step is not None else ""

    def describe(who: str) -> str:
        return f"{who} stopped responding{at()}; {_newest_checkpoint(ckpt)}"

    def stalled() -> str:
        return (
            f"{here}: training stalled{at()}, a peer process has probably died; "
            f"{_newest_checkpoint(ckpt)}"
        )

    dog = Watchdog(3 * timeout, stalled)
    with PeerMonitor(timeout, describe) as monitor, dog:
        try:
            yield dog.beat
        except Exception as e:
            monitor.failure(e)  # a peer died under a collective: does not return
            raise


def _newest_checkpoint(ckpt: Any) -> str:
    """What survives, and how to go on (for the messages above)."""
    if ckpt is None:
        return "nothing was saved (no --checkpoint-dir): rerun every process"
    number = ckpt.latest_number()
    if number is None:
        return f"no checkpoint was complete yet in {ckpt.directory}: rerun every process"
    try:
        meta = json.loads((ckpt.directory / str(number) / "meta" / "metadata").read_text())
        where = f"step {int(meta['step'])} (checkpoint {number})"
    except (OSError, ValueError, KeyError, TypeError):
        where = f"checkpoint {number}"
    return (
        f"the newest complete checkpoint is {where} in {ckpt.directory}: restart every "
        "process with --resume"
    )
