"""The checkpoint writer that tests/test_checkpoint.py kills with SIGKILL.

``python tests/checkpoint_writer.py`` imports JAX, orbax and jaxopt_zoo once, prints
``ready``, then serves one writer per JSON line read from stdin: it forks a child, prints
``pid PID``, waits for it and prints ``exit CODE`` (``-9``: killed by SIGKILL). Forking from
this one process saves the 3-6 s that a fresh Python + JAX process costs to start, so that
a test can kill 20+ writers in well under a minute. The fork is safe: nothing has started
JAX's backend or any thread here before it (``OPENBLAS_NUM_THREADS=1``; checked below), and
each child starts its own.

A child does what a training run with ``--checkpoint-dir DIR --resume`` does: it opens
``DIR`` with a :class:`Checkpointer` (``keep=2``), restores the newest good checkpoint
(printing ``resumed N``, 0 for none), and goes on from there: for each next number ``n`` it
computes the state of checkpoint ``n`` from the state it holds (:func:`advance`) and saves it
(``begin n``, then, once written, ``end n SECONDS``). Every checkpoint's content is therefore
a function of its number alone (:func:`expected`), provided that each resume restored exactly
what was saved; the test recomputes it.

``{"phase": NAME}`` in the command stops the child with SIGSTOP at one point of a write, after
printing ``phase NAME N``, for the test to SIGKILL it there (:data:`PHASES`); the hooks that
do it wrap library and orbax functions here, in the child only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_zoo as jz
from jaxopt_zoo.train import Checkpointer, LoopState, Metrics
from jaxopt_zoo.train.checkpoint import RUN_FILE, checkpoint_number
from jaxopt_zoo.train.checkpoint.directory import TMP_MARK

KEEP = 2
META = {"model": "mlp-784-512-10", "optimizer": "adam", "by": "checkpoint_writer"}
# An MLP's parameters and Adam state: 4.8 MB a checkpoint, so that a write takes a while.
SHAPES = {"Dense_0": {"kernel": (784, 512), "bias": (512,)}, "Dense_1": {"kernel": (512, 10)}}
EPOCH = 5  # checkpoint numbers per "epoch": every fifth one ends an epoch (one more history entry)

PHASES = {
    "run-file": "the run file written to its temporary name, not yet renamed into place",
    "tmp-dir": "orbax's temporary folder <n>.orbax-checkpoint-tmp just created, nothing in it",
    "data-written": "every array and the metadata written in the temporary folder",
    "resume-cleanup": "resuming, half-way through removing an earlier writer's unfinished write",
    "before-rename": "the commit marker written, the folder not yet renamed to <n>",
    "after-rename": "<n> renamed into place, the old checkpoints not yet deleted",
    "deleting": "an old checkpoint half deleted (keep=2)",
}


def initial_state() -> LoopState:
    """The state before checkpoint 1 (all zeros), also the template of every restore."""
    params = jax.tree.map(lambda s: np.zeros(s, np.float32), SHAPES, is_leaf=_is_shape)
    opt_state = jax.tree.map(np.asarray, jz.adam(1e-3).init(params))
    totals = Metrics(*(np.zeros((), np.float32),) * 3)
    return LoopState(params, opt_state, 0, 0, 0, np.zeros(2, np.uint32), totals, ())


def on_device(state: LoopState) -> LoopState:
    """``state`` with its arrays as JAX arrays, as a training run holds it."""
    arrays = (state.params, state.opt_state, tuple(state.totals), state.rng)
    params, opt_state, totals, rng = jax.tree.map(jnp.asarray, arrays)
    return state._replace(params=params, opt_state=opt_state, totals=Metrics(*totals), rng=rng)


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def advance(state: LoopState, n: int) -> LoopState:
    """The state of checkpoint ``n`` from that of ``n - 1``: float arrays get Gaussian noise
    of seed ``n``, integer ones (Adam's count, the key) +1; every ``EPOCH`` numbers an epoch
    ends with a history entry taken from the parameters."""
    rng = np.random.default_rng([21, n])

    def step(x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind == "f":
            return x + rng.standard_normal(x.shape, np.float32)
        return x + np.ones((), x.dtype)

    params, opt_state, totals, key = jax.tree.map(
        step, (state.params, state.opt_state, tuple(state.totals), state.rng)
    )
    epoch = n // EPOCH
    history = tuple(state.history)
    if epoch > state.epoch:
        b = params["Dense_0"]["bias"]
        history += ({"epoch": epoch, "train_loss": float(b[0]), "val_loss": None},)
    steps = n - epoch  # checkpoint_number = step + completed epochs
    batch = 0 if n % EPOCH == 0 else steps % 3 + 1
    return LoopState(params, opt_state, steps, epoch, batch, key, Metrics(*totals), history)


_CHAIN: Dict[int, LoopState] = {}


def expected(n: int) -> LoopState:
    """What checkpoint ``n`` holds (computed once, from checkpoint ``n - 1``'s)."""
    if n == 0:
        return initial_state()
    if n not in _CHAIN:
        start = max((k for k in _CHAIN if k < n), default=0)
        state = _CHAIN.get(start) or initial_state()
        for k in range(start + 1, n + 1):
            state = _CHAIN[k] = advance(state, k)
    return _CHAIN[n]


# --------------------------------------------------------------------------- #
# Stopping at a phase of a write
# --------------------------------------------------------------------------- #


def _stop(phase: str, n: Any) -> None:
    """Say where, then stop the whole process (SIGSTOP) for the test to SIGKILL it."""
    _say(f"phase {phase} {n}")
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(60)  # not reached: SIGKILL comes first
    raise AssertionError(f"not killed at {phase}")


def _install(phase: str, directory: Path) -> None:
    """Wrap the functions a checkpoint write goes through so that the child stops at
    ``phase``: os.replace (the run file), os.rename (orbax renames the temporary folder),
    os.unlink (deleting old checkpoints, removing unfinished writes) and two orbax steps."""
    from orbax.checkpoint._src.path import atomicity, deleter

    import jaxopt_zoo.train.checkpoint.checkpointer as ckpt_mod

    assert phase in PHASES, phase
    in_dir = lambda p: Path(p).parent == directory  # noqa: E731
    deleting = threading.Event()

    if phase == "run-file":
        replace = os.replace

        def os_replace(src, dst, **kw):
            if Path(dst).name == RUN_FILE:
                _stop(phase, "-")
            return replace(src, dst, **kw)

        os.replace = os_replace
    elif phase in ("before-rename", "after-rename"):
        rename = os.rename

        def os_rename(src, dst, **kw):
            mine = TMP_MARK in Path(src).name and in_dir(src)
            if mine and phase == "before-rename":
                _stop(phase, Path(dst).name)
            out = rename(src, dst, **kw)
            if mine:
                _stop(phase, Path(dst).name)
            return out

        os.rename = os_rename
    elif phase == "tmp-dir":
        create = atomicity._create_tmp_directory

        async def create_tmp_directory(makedir, tmp_dir, **kw):
            out = await create(makedir, tmp_dir, **kw)
            if in_dir(tmp_dir):
                _stop(phase, Path(tmp_dir).name.split(".")[0])
            return out

        atomicity._create_tmp_directory = create_tmp_directory
    elif phase == "data-written":
        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize_after_stop(self, *a, **kw):
            if in_dir(self.get()):
                _stop(phase, self.get().name.split(".")[0])
            return await finalize(self, *a, **kw)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize_after_stop
    else:  # deleting, resume-cleanup: stop after the second file removed
        if phase == "deleting":
            owner, name = deleter.PathDeleter, "delete"
        else:
            owner, name = ckpt_mod.Checkpointer, "_after_restore"
        original = getattr(owner, name)

        def flagged(*a, **kw):
            deleting.set()
            try:
                return original(*a, **kw)
            finally:
                deleting.clear()

        setattr(owner, name, flagged)
        unlink = os.unlink
        count = [0]

        def os_unlink(path, **kw):
            out = unlink(path, **kw)
            if deleting.is_set():
                count[0] += 1
                if count[0] == 2:
                    _stop(phase, "-")
            return out

        os.unlink = os_unlink


# --------------------------------------------------------------------------- #
# The writer and the fork server
# --------------------------------------------------------------------------- #


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def write(directory: Path, saves: int, phase: Optional[str] = None) -> None:
    """Resume from ``directory``'s newest checkpoint and save the next ``saves``."""
    if phase:
        _install(phase, directory)
    ck = Checkpointer(directory, keep=KEEP, metadata=META)
    state, _ = ck.restore_latest(on_device(initial_state()))
    number = 0 if state is None else checkpoint_number(state)
    _say(f"resumed {number}")
    state = initial_state() if state is None else state
    for n in range(number + 1, number + 1 + saves):
        state = advance(state, n)
        _say(f"begin {n}")
        t = time.monotonic()
        assert ck.save(on_device(state), force=True)
        ck.wait()
        _say(f"end {n} {time.monotonic() - t:.4f}")
    ck.close()


def serve() -> None:
    threads = os.listdir(f"/proc/{os.getpid()}/task") if sys.platform == "linux" else ["1"]
    assert len(threads) == 1, f"{len(threads)} threads before fork: set OPENBLAS_NUM_THREADS=1"
    _say("ready")
    for line in iter(sys.stdin.readline, ""):
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                write(Path(cmd["dir"]), cmd["saves"], cmd.get("phase"))
                code = 0
            except BaseException:  # noqa: BLE001 -- report anything, then exit
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    serve()
