"""The coordination service of a multi-process run, in a process of its own.

``jax.distributed`` runs its coordination service (the key-value store, the heartbeats, the
barriers) inside process 0. When process 0 dies, every other process's JAX client loses the
service's socket and ends its process at once with ``SIGABRT`` and a C++ trace ("the JAX
distributed service detected fatal errors"), before anything of ours can say which process
died and what to do; a Python callback for that moment is not usable (jaxlib's
``missed_heartbeat_callback`` aborts with ``std::bad_cast``). So process 0 starts the
service here, in a small child process that outlives it: the other processes then see
process 0 stop like any other peer, and :class:`~jaxopt_zoo.train.distributed.processes.PeerMonitor`
names it with the run's one line. Process 0's own ``jax.distributed.initialize`` still
starts JAX's in-process service, bound to an unused loopback port, which no one joins.

The child reads its standard input until process 0 is gone (end of file). It then lingers so
that the others can notice, name process 0 and stop (``linger`` seconds; 2 s after a normal
end, which process 0 announces by writing ``done``), and exits.

    python jaxopt_zoo/train/distributed/service.py BIND_ADDRESS NUM_PROCESSES HEARTBEAT LINGER
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

__all__: List[str] = []  # internal: started by jaxopt_zoo.train.distributed.initialize

READY = b"jaxopt-zoo coordination service ready\n"


def start(
    bind_address: str, num_processes: int, heartbeat_timeout: int, linger: float
) -> Optional[subprocess.Popen]:
    """The service in a child process, once it listens; None where it cannot be started
    (the caller then leaves the service in process 0, as JAX does)."""
    try:
        child = subprocess.Popen(
            # the file as a script: the child imports jaxlib and nothing of the package
            [sys.executable, os.path.abspath(__file__), bind_address, str(num_processes)]
            + [str(int(heartbeat_timeout)), str(float(linger))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # its log ("tasks unhealthy ...") would follow the run's one line on the shared
            # terminal; the others' PeerMonitor says which process died
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the terminal is process 0's, not the service's
        )
    except OSError:
        return None
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until it listens, or until it failed
    if line != READY:
        child.kill()
        child.wait()
        return None
    return child


def finish(child: Optional[subprocess.Popen]) -> None:
    """Tell the service that process 0 ends normally (at exit), so it does not linger."""
    if child is None or child.stdin is None:
        return
    try:
        child.stdin.write(b"done\n")
        child.stdin.flush()
    except (OSError, ValueError):
        pass


def main(argv: List[str]) -> int:
    bind_address, num_processes, heartbeat, linger = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from jax._src.lib import _jax

        service = _jax.get_distributed_runtime_service(
            bind_address,
            int(num_processes),
            heartbeat_timeout=int(heartbeat),
            shutdown_timeout=int(heartbeat),
        )
    except Exception as e:  # noqa: BLE001 -- any failure: the parent falls back
        sys.stderr.write(f"jaxopt-zoo: the coordination service did not start: {e}\n")
        return 1
    os.write(1, READY)
    data = sys.stdin.buffer.read()  # until process 0 is gone
    time.sleep(2.0 if b"done" in data else float(linger))
    del service
    os._exit(0)  # without the service's shutdown, which waits for clients long gone


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
