"""The ``jaxopt-zoo`` command for tests/test_distributed.py, run as its own process.

``python tests/distributed_worker.py ARGS...`` runs ``jaxopt-zoo ARGS...``; with
``JAXOPT_ZOO_TEST_KILL_AT=K`` the process SIGKILLs itself right after optimizer step ``K``
(once any checkpoint write in flight has finished), as a machine failing mid-run would: no
clean-up, no exit handler, the peer processes left waiting in the next collective.
"""

from __future__ import annotations

import os
import signal
import sys

# Cheap CPU code generation: tiny models, a few dozen steps.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    " --xla_llvm_disable_expensive_passes=true"
)


def _install_kill(step: int) -> None:
    from jaxopt_zoo.train import checkpoint

    original = checkpoint.Checkpointer.callback

    def callback(self, state):  # type: ignore[no-untyped-def]
        out = original(self, state)
        if int(state.step) >= step:
            self.wait()
            print(f"worker: SIGKILL at step {int(state.step)}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    checkpoint.Checkpointer.callback = callback  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("JAXOPT_ZOO_TEST_KILL_AT"):
        _install_kill(int(os.environ["JAXOPT_ZOO_TEST_KILL_AT"]))
    from jaxopt_zoo.cli import main

    sys.exit(main(sys.argv[1:]))
