"""The processes of a run: joining them with ``jax.distributed``, and stopping cleanly when
one of them dies.

:func:`initialize` sets up this process's devices and joins the others. Two guards stop a
process whose peer died, each with one clear line on standard error and exit status 1:

- :class:`PeerMonitor` (the first to fire): every process bumps a counter in
  ``jax.distributed``'s key-value store every second, and watches the others'. A counter
  that stops moving for ``timeout`` seconds names the dead process. It does not depend on
  training making progress, so a long compile or evaluation never trips it.
- :class:`Watchdog` (the backstop): no training step for ``timeout`` seconds.

Why not leave it to JAX: a collective waiting on a dead peer does not always return (gloo
raises "Connection closed by peer" for a lone all-gather, but a training step's all-reduce
over several devices per process was measured to wait until the end), and the coordination
service, after ``heartbeat_timeout`` seconds without a heartbeat, ends every process with
``SIGABRT`` and a C++ stack trace ("another task died"). The command therefore gives the
coordination service four times the monitor's timeout, so that the monitor speaks first.
Process 0 hosts that service in a child process (``.service``): JAX's clients end their
process the moment the service's socket closes, which would be the moment process 0 dies.
Checkpoints are written atomically (orbax renames a finished write), so ending a process
mid-write leaves the newest complete checkpoint intact.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import jax
import numpy as np

from jaxopt_zoo import sharding as sh
from jaxopt_zoo.train.distributed import service

__all__ = ["PeerMonitor", "Watchdog", "host_value", "initialize", "is_primary"]

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed.initialize itself
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"  # read here (jax reads them only on clusters)
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize(
    devices: Optional[int] = None,
    *,
    coordinator: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    heartbeat_timeout: int = 30,
    initialization_timeout: int = 120,
) -> None:
    """Set up the devices of this process, and join the other processes when there are any.

    Call it first, before JAX runs anything. ``devices`` makes the CPU backend offer that
    many virtual devices (:func:`jaxopt_zoo.sharding.use_cpu_devices`; GPUs and TPUs list
    their own). With a coordinator (argument or ``$JAX_COORDINATOR_ADDRESS``),
    ``num_processes`` (or ``$JAX_NUM_PROCESSES``) and ``process_id`` (or
    ``$JAX_PROCESS_ID``), it calls ``jax.distributed.initialize``; CPU collectives then go
    through gloo over TCP (``jax_cpu_collectives_implementation``). A process that stops
    sending heartbeats for ``heartbeat_timeout`` seconds is declared dead and the others
    stop with an error instead of waiting forever. Process 0 runs the coordination service
    in a child process of its own (``jaxopt_zoo.train.distributed.service``), so that the
    others outlive process 0's death long enough to say which process died.

    Args:
      devices: CPU devices for this process, or None to leave the backend as it is.
      coordinator: ``HOST:PORT`` of process 0's coordination service.
      num_processes: the number of processes.
      process_id: this process's number, ``0 .. num_processes - 1``.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead.
      initialization_timeout: seconds to wait for every process to join.

    Raises:
      ValueError: only some of the three multi-process settings are given, or they are
        out of range.
      RuntimeError: JAX has started already with fewer devices, or without the other
        processes.

    Example:
      >>> initialize()  # one process, devices as they are: nothing to do
      >>> jax.process_count()
      1
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = _env_int(num_processes, ENV_NUM_PROCESSES)
    process_id = _env_int(process_id, ENV_PROCESS_ID)
    given = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    multi = any(v is not None for v in given.values())
    if multi and any(v is None for v in given.values()):
        missing = ", ".join(k for k, v in given.items() if v is None)
        raise ValueError(
            f"A multi-process run needs a coordinator, num_processes and process_id; missing "
            f"{missing} (flags --coordinator/--num-processes/--process-id or ${ENV_COORDINATOR}"
            f"/${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID})."
        )
    if multi:
        assert num_processes is not None and process_id is not None and coordinator
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"Invalid process_id {process_id} for num_processes {num_processes}: expected "
                f"0 <= process_id < num_processes."
            )
        if ":" not in coordinator:
            raise ValueError(f"Invalid coordinator {coordinator!r}: expected HOST:PORT.")
    if devices is not None:
        sh.use_cpu_devices(devices)
    if not multi or num_processes == 1:
        return
    if jax.distributed.is_initialized():
        if jax.process_count() != num_processes or jax.process_index() != process_id:
            raise RuntimeError(
                f"jax.distributed is already initialized as process {jax.process_index()} of "
                f"{jax.process_count()}, not {process_id} of {num_processes}."
            )
        return
    assert num_processes is not None and coordinator is not None
    bind = None
    if process_id == 0:  # the coordination service in a process of its own (service.py)
        child = service.start(
            "[::]:" + coordinator.rsplit(":", 1)[1],
            num_processes,
            heartbeat_timeout,
            linger=heartbeat_timeout,  # the others name process 0 well before
        )
        if child is not None:
            _SERVICE.append(child)
            atexit.register(service.finish, child)
            bind = f"127.0.0.1:{_free_loopback_port()}"  # JAX's own, which no one joins
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(initialization_timeout),
            heartbeat_timeout_seconds=int(heartbeat_timeout),
            shutdown_timeout_seconds=int(heartbeat_timeout),
            coordinator_bind_address=bind,
        )
    except RuntimeError as e:
        if "before" in str(e) or "backend" in str(e).lower():
            raise RuntimeError(
                f"{e} -- call jaxopt_zoo.train.distributed.initialize before any JAX "
                "computation (the jaxopt-zoo command does it first thing)."
            ) from e
        raise


_SERVICE: List[subprocess.Popen] = []  # process 0's coordination service, alive while it is


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env_int(value: Optional[int], name: str) -> Optional[int]:
    if value is not None:
        return int(value)
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Invalid ${name}={text!r}: expected an integer.") from None


def is_primary() -> bool:
    """Whether this is process 0, the one that prints and writes results.

    Returns:
      ``jax.process_index() == 0`` (always True in a single process).

    Example:
      >>> is_primary()
      True
    """
    return jax.process_index() == 0


def host_value(tree: Any) -> Any:
    """``tree`` as NumPy arrays on this host, whole; arrays split over other processes are
    gathered (a collective: every process must call it with the same tree).

    Args:
      tree: a pytree of arrays.

    Returns:
      The same tree of ``numpy.ndarray`` s.

    Example:
      >>> import jax.numpy as jnp
      >>> host_value({"w": jnp.ones(2)})
      {'w': array([1., 1.], dtype=float32)}
    """
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(tree)):
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


Message = Union[str, Callable[[], str]]
_STOPPING = threading.Lock()


def _stop(message: Message) -> None:
    """Print ``jaxopt-zoo: error: MESSAGE`` as the last line on standard error and end the
    process with status 1 at once (``os._exit``: a thread stuck in a collective cannot be
    unwound, and JAX's exit handler would wait for the dead peer)."""
    if not _STOPPING.acquire(blocking=False):  # another thread is saying it already
        while True:
            time.sleep(60)
    text = message() if callable(message) else message
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.write(2, f"\njaxopt-zoo: error: {text}\n".encode())
    os._exit(1)


def _step(state: Any) -> Optional[int]:
    step = getattr(state, "step", None)
    return None if step is None else int(step)


class Watchdog:
    """Stop this process with a clear message when training makes no progress for
    ``timeout`` seconds: the backstop behind :class:`PeerMonitor`.

    ``beat()`` after every step (it is a training callback); without a beat for
    ``timeout`` seconds it prints ``message`` as ``jaxopt-zoo: error: ...`` and ends the
    process with status 1.

    Args:
      timeout: seconds without progress.
      message: what to print, or a function returning it (called when the watchdog fires).

    Example:
      >>> with Watchdog(60.0, "stuck") as dog:
      ...     dog.beat()
    """

    def __init__(self, timeout: float, message: Message):
        self.timeout = float(timeout)
        self.message = message
        self.step: Optional[int] = None  # the step of the last beat, when it gave one
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="jaxopt-watchdog")

    def beat(self, state: Any = None) -> None:
        self._last = time.monotonic()
        self.step = _step(state) if state is not None else self.step

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                text = self.message() if callable(self.message) else self.message
                _stop(f"{text} (no training progress for {idle:.0f} s)")

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


class PeerMonitor:
    """Notice within ``timeout`` seconds that another process of the run has died, name it,
    and stop this one with a clear message.

    A thread bumps this process's counter in ``jax.distributed``'s key-value store every
    ``interval`` seconds and reads the other processes' counters. A peer whose counter has
    not moved for ``timeout`` seconds (or that never started one within ``3 * timeout``),
    or a key-value store that has not answered for ``timeout`` seconds (process 0, which
    hosts it, died), is dead: ``describe(who)`` (``who`` like ``"process 1 of 2"``) is
    printed as ``jaxopt-zoo: error: ...`` and the process ends with status 1. A process
    that leaves the ``with`` block normally marks itself done, and done peers are not
    watched. In a single process it does nothing.

    Args:
      timeout: seconds without a sign of life from a peer.
      describe: ``who -> message``.
      interval: seconds between bumps and checks.
      client: the key-value client (``jax.distributed``'s by default).

    Example:
      >>> with PeerMonitor(30.0, lambda who: f"{who} died") as monitor:
      ...     monitor.failure(RuntimeError("boom")) is None  # one process: nothing to watch
      True
    """

    PREFIX = "jaxopt_zoo/alive/"

    def __init__(
        self,
        timeout: float,
        describe: Callable[[str], str],
        *,
        interval: float = 1.0,
        client: Any = None,
    ):
        self.timeout = float(timeout)
        self.describe = describe
        self.interval = float(interval)
        self.count = jax.process_count()
        self.index = jax.process_index()
        if client is None and self.count > 1:
            from jax._src import distributed as _jd

            client = _jd.global_state.client
        self.client = client
        self._stop = threading.Event()
        self._dead = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="jaxopt-peers")

    def _key(self, index: int, what: str = "beat") -> str:
        return f"{self.PREFIX}{what}/{index}"

    def _read(self, index: int, what: str = "beat") -> Optional[str]:
        try:
            return str(self.client.key_value_try_get(self._key(index, what)))
        except Exception as e:  # NOT_FOUND: not set (yet)
            if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
                return None
            raise

    def _who(self, index: int) -> str:
        role = " (the coordinator)" if index == 0 else ""
        return f"process {index} of {self.count}{role}"

    def _watch(self) -> None:
        start = last_ok = time.monotonic()
        seen: Dict[int, Any] = {}  # peer -> (counter, when it last moved)
        peers: Sequence[int] = [i for i in range(self.count) if i != self.index]
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            try:
                self.client.key_value_increment(self._key(self.index), 1)
                for i in peers:
                    value = self._read(i)
                    if value is None:
                        if now - start > 3 * self.timeout:
                            self._fire(self._who(i))
                        continue
                    if seen.get(i, (None,))[0] != value:
                        seen[i] = (value, now)
                    elif now - seen[i][1] > self.timeout and self._read(i, "done") is None:
                        self._fire(self._who(i))
                last_ok = now
            except Exception:  # the key-value store (process 0) does not answer
                if self.index != 0 and time.monotonic() - last_ok > self.timeout:
                    self._fire(self._who(0))

    def _fire(self, who: str) -> None:
        if self._stop.is_set():
            return
        self._dead.set()
        _stop(self.describe(who))

    def failure(self, error: BaseException) -> None:
        """For an exception that ended training in a multi-process run: a collective that
        failed because a peer died (gloo's "Connection closed by peer") names the peer whose
        counter has stopped since the failure (the living ones bump theirs every
        ``interval``), or the one the monitor names first, within ``2 * (timeout +
        interval)`` seconds; failing both, it stops with ``describe`` of "a peer process".
        Anything else returns None.

        Args:
          error: the exception.
        """
        if self.count == 1 or not _collective_error(error):
            return None
        # The peer died about when the collective failed. Watching the counters from now on
        # finds it in a few intervals, where the monitor needs a whole timeout after its
        # last beat: on a loaded machine that came too close to JAX's own verdict (4x).
        before = self._counters()
        deadline = time.monotonic() + 2 * (self.timeout + self.interval)
        while not self._dead.wait(max(2.5 * self.interval, 0.5)):
            now = self._counters()
            stale = [
                i
                for i, value in before.items()
                if value is not None and now.get(i) == value and self._read(i, "done") is None
            ]
            if stale:
                self._fire(self._who(stale[0]))
            if time.monotonic() > deadline:
                break
        _stop(self.describe("a peer process") + f" ({_first_line(error)})")

    def _counters(self) -> Dict[int, Optional[str]]:
        """The peers' counters now (None: not started, or the store did not answer)."""
        out: Dict[int, Optional[str]] = {}
        for i in range(self.count):
            if i != self.index:
                try:
                    out[i] = self._read(i)
                except Exception:  # the store (process 0's service) does not answer
                    out[i] = None
        return out

    def __enter__(self) -> "PeerMonitor":
        if self.count > 1:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.count > 1 and exc[0] is None:
            try:
                self.client.key_value_set(self._key(self.index, "done"), "1", allow_overwrite=True)
            except Exception:
                pass


def _collective_error(error: BaseException) -> bool:
    text = str(error)
    name = type(error).__name__
    return ("RuntimeError" in name and name != "RuntimeError") or any(
        s in text for s in ("Gloo", "Connection closed by peer", "Connection reset by peer")
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
