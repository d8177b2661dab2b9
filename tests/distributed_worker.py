"""The multi-device runs behind tests/test_distributed.py, each in its own process.

``python tests/distributed_worker.py library`` starts JAX with 8 CPU devices, trains the MLP
with ``train_and_evaluate`` on 1 device and on 8 (state replicated, then ZeRO-1) and prints
one JSON object of measurements; the assertions live in the tests.

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


def library() -> dict:
    import jax

    from jaxopt_zoo.sharding import use_cpu_devices

    use_cpu_devices(8)  # and XLA's CPU pool of 16 threads, which the collectives need
    import jax.numpy as jnp
    import numpy as np

    import jaxopt_zoo as jz
    from jaxopt_zoo.models import MLP
    from jaxopt_zoo.sharding import bytes_per_device
    from jaxopt_zoo.train import TrainConfig, train_and_evaluate

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *a, **k: (
            compiles.append(event)
            if event == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (200, 28, 28, 1))
    y = jax.random.randint(jax.random.fold_in(key, 1), (200,), 0, 10)
    model, tx = MLP(hidden=(32,)), jz.adam(1e-2)
    out: dict = {"devices": jax.device_count()}
    runs = {}
    for name, devices, zero1 in [("one", None, False), ("dp8", 8, False), ("zero8", 8, True)]:
        marks = []  # compiles seen after each step

        def mark(state, marks=marks):
            marks.append(len(compiles))

        config = TrainConfig(
            batch_size=32, epochs=2, progress=False, devices=devices, shard_optimizer_state=zero1
        )
        state, history = train_and_evaluate(
            model, tx, (x, y), (x[:64], y[:64]), config, callbacks=[mark]
        )
        runs[name] = state
        leaves = jax.tree.leaves(state.opt_state)
        big = [a for a in leaves if a.size >= 8]
        per_device = bytes_per_device(big)
        out[name] = {
            "steps": int(state.step),
            "history": [(r["train_loss"], r["val_loss"]) for r in history],
            # after the first step, every later step (and the epoch-2 evaluation) reuses it
            "compiles_after_first_step": len(compiles) - marks[0],
            "state_fraction_per_device": max(per_device.values()) / sum(a.nbytes for a in big),
            "state_specs": sorted({str(a.sharding.spec) for a in big}) if devices else [],
            "param_specs": sorted({str(a.sharding.spec) for a in jax.tree.leaves(state.params)})
            if devices
            else [],
        }
    base = [np.asarray(a) for a in jax.tree.leaves(runs["one"].params)]
    for name in ("dp8", "zero8"):
        other = [np.asarray(a) for a in jax.tree.leaves(runs[name].params)]
        out[name]["max_param_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(base, other))
        out[name]["max_param"] = max(float(np.max(np.abs(a))) for a in base)
    # A second 8-device run of the same seed is bit-identical to the first.
    again, _ = train_and_evaluate(
        model,
        tx,
        (x, y),
        (x[:64], y[:64]),
        TrainConfig(batch_size=32, epochs=2, progress=False, devices=8),
    )
    out["dp8"]["repeat_identical"] = all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(runs["dp8"].params), jax.tree.leaves(again.params))
    )
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["library"]:
        import json

        print(json.dumps(library()))
        sys.exit(0)
    if os.environ.get("JAXOPT_ZOO_TEST_KILL_AT"):
        _install_kill(int(os.environ["JAXOPT_ZOO_TEST_KILL_AT"]))
    from jaxopt_zoo.cli import main

    sys.exit(main(sys.argv[1:]))
