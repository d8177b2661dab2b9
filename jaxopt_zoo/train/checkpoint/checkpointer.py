"""Checkpoints of a training run: save every N steps, keep the last few, resume exactly.

A checkpoint holds a whole :class:`~jaxopt_zoo.train.loop.LoopState`: parameters, optimizer
state, step, epoch, position in the epoch's data order, running metrics, the root PRNG key
and the metrics history. Restoring the newest one and passing it to ``train_and_evaluate``
as ``state=`` continues the run bit for bit (see :mod:`jaxopt_zoo.train.loop`).

The layout of a checkpoint directory (``DIR/jaxopt_zoo_run.json``, ``DIR/<n>/``,
``DIR/damaged/``) is described in :mod:`jaxopt_zoo.train.checkpoint.directory`.

How it fails safely:

- Writes are atomic: orbax writes ``<n>.orbax-checkpoint-tmp/`` (``-<time>`` appended in
  older orbax versions) and renames it to ``<n>/`` only when complete, so a run killed
  mid-write leaves a temporary folder that is never taken for a checkpoint (and is removed
  after the next successful resume). The run file is written to a temporary name and
  renamed too. A run killed while orbax deletes the oldest checkpoint leaves it half
  deleted; it is never the newest, and the next save deletes it.
- A checkpoint that does not load, or whose content does not match the sha256 recorded when
  it was written (a truncated, edited or bit-flipped file), is skipped: resuming takes the
  newest good one, moves the damaged newer ones to ``DIR/damaged/`` and says so. With no
  good checkpoint, :class:`CheckpointError` lists what is wrong with each and nothing is
  moved or deleted.
- A directory written by another run (different model, optimizer, seed, ... or parameter
  structure) is refused with :class:`CheckpointMismatchError`, as is a non-empty directory
  that is not a checkpoint directory, before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Tuple, Union

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxopt_zoo.core import check_int
from jaxopt_zoo.train.checkpoint import directory as _dir
from jaxopt_zoo.train.checkpoint import format as _fmt
from jaxopt_zoo.train.checkpoint import sharded as _sharded
from jaxopt_zoo.train.checkpoint.directory import (
    RUN_FILE,
    CheckpointError,
    CheckpointMismatchError,
)
from jaxopt_zoo.train.checkpoint.format import FORMAT
from jaxopt_zoo.train.loop import LoopState

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "RUN_FILE",
    "checkpoint_number",
]

_ITEMS = ("state", "meta")


def checkpoint_number(state: LoopState) -> int:
    """The number a checkpoint of ``state`` is saved under: steps + completed epochs."""
    return int(state.step) + int(state.epoch)


class Checkpointer:
    """Saves and restores :class:`LoopState` checkpoints in ``directory`` with orbax.

    Args:
      directory: the checkpoint folder (created on the first save).
      keep: how many of the newest checkpoints to keep.
      every_steps: :meth:`callback` saves when ``state.step`` is a multiple of it; None saves
        only when asked (``save(state, force=True)``, an interrupt).
      metadata: what identifies the run (JSON-able values, e.g. ``{"model": "cnn",
        "optimizer": "adam", "seed": 0}``). Written to ``DIR/jaxopt_zoo_run.json``; a
        directory holding another run's metadata is refused. None: not checked (the
        parameter and optimizer-state structure always is).
      async_save: write in a background thread (the state is copied to the host first, so
        training goes on at once); :meth:`close` or :meth:`wait` waits for the last write.

    Use as a ``train_and_evaluate`` callback, with :meth:`stop_on_interrupt` so that Ctrl-C
    saves the current step before stopping::

        ckpt = Checkpointer("ckpt", every_steps=500, metadata={"model": "cnn"})
        template = init_loop_state(model, tx, train.images[:1], seed)
        state, message = ckpt.restore_latest(template)  # (None, "No checkpoint ...")
        with ckpt, ckpt.stop_on_interrupt():
            state, history = train_and_evaluate(model, tx, train, val, config,
                                                callbacks=ckpt.callback, state=state)
            ckpt.save(state, force=True)
    """

    def __init__(
        self,
        directory: Union[str, os.PathLike],
        *,
        keep: int = 3,
        every_steps: Optional[int] = None,
        metadata: Optional[Mapping] = None,
        async_save: bool = True,
    ):
        self.directory = Path(directory).absolute()
        self.keep = check_int("keep", keep, low=1)
        self.every_steps = (
            None if every_steps is None else check_int("every_steps", every_steps, low=1)
        )
        self.metadata = None if metadata is None else _fmt.jsonable(dict(metadata), "metadata")
        self.async_save = bool(async_save)
        self.interrupted: Optional[int] = None  # the signal number, once one arrived
        self._run = _dir.check_directory(self.directory, self.metadata)
        self._manager: Optional[ocp.CheckpointManager] = None
        self._last_saved: Optional[int] = None  # may still be in flight (async_save)

    # ------------------------------------------------------------------ queries

    def all_numbers(self) -> List[int]:
        """Numbers of the finished checkpoints in the directory, oldest first."""
        return _dir.finished_numbers(self.directory)

    def latest_number(self) -> Optional[int]:
        numbers = self.all_numbers()
        return numbers[-1] if numbers else None

    def unfinished(self) -> List[Path]:
        """Temporary folders of writes that never finished (a run killed mid-save)."""
        return _dir.unfinished_writes(self.directory)

    # ------------------------------------------------------------------ saving

    def save(self, state: LoopState, force: bool = False) -> bool:
        """Save ``state`` if ``force`` or if ``state.step`` is a multiple of ``every_steps``.

        Returns whether a checkpoint was written. Saving the state of an existing
        checkpoint again is a no-op; saving one older than the newest in the directory
        raises :class:`CheckpointError` (it would be out of order).
        """
        if not force and (self.every_steps is None or int(state.step) % self.every_steps):
            return False
        number = checkpoint_number(state)
        latest = max(
            (n for n in (self.latest_number(), self._last_saved) if n is not None), default=None
        )
        if latest is not None and number <= latest:
            if number == latest:
                return False
            raise CheckpointError(
                f"Cannot save step {int(state.step)} (checkpoint {number}) into "
                f"{self.directory}: it already holds the newer checkpoint {latest}. Resume "
                "from it (restore_latest / --resume), or use another directory."
            )
        tree, rng_impl = _fmt.state_tree(state)
        mesh = _sharded.mesh_of(state.params)
        if mesh is None:
            tree = host = jax.tree.map(lambda x: np.array(x, copy=True), tree)  # donated next
        else:  # on a mesh: every process writes its shards (see checkpoint_sharded)
            tree, host = _sharded.to_save(tree, mesh)
        structure = _fmt.structure(state)
        self._run = _dir.write_run_file(self.directory, self._run, self.metadata, structure)
        meta = {
            "format": FORMAT,
            "step": int(state.step),
            "epoch": int(state.epoch),
            "batch": int(state.batch),
            "rng_impl": rng_impl,
            "history": _fmt.jsonable(list(state.history), "history"),
        }
        meta.update(sha256=_fmt.digest(host, meta), saved_at=time.time())
        manager = self._get_manager()
        manager.save(
            number,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_fmt.drop_empty(tree)), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._last_saved = number
        if not self.async_save:
            manager.wait_until_finished()
        return True

    def callback(self, state: LoopState) -> bool:
        """A ``train_and_evaluate`` callback: saves every ``every_steps`` steps; after an
        interrupt (see :meth:`stop_on_interrupt`) saves at once and stops training."""
        if self.interrupted is not None:
            self.save(state, force=True)
            return True
        self.save(state)
        return False

    @contextlib.contextmanager
    def stop_on_interrupt(self) -> Iterator["Checkpointer"]:
        """Within the block, Ctrl-C (SIGINT) or SIGTERM makes :meth:`callback` save a
        checkpoint after the current step and stop training; ``interrupted`` is then the
        signal number. A second Ctrl-C interrupts at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.interrupted is not None and signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.interrupted = signum
            print(
                f"\n{signal.Signals(signum).name}: saving a checkpoint after the current "
                "step, then stopping (Ctrl-C again to quit without it).",
                file=sys.stderr,
                flush=True,
            )

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def wait(self) -> None:
        """Wait for the last write to finish."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the last write and release orbax's resources."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ restoring

    def restore_latest(self, template: LoopState) -> Tuple[Optional[LoopState], str]:
        """The newest good checkpoint, restored into the structure of ``template``.

        ``template`` is a state of the run being resumed, e.g. ``init_loop_state(model, tx,
        sample, seed)`` (only its tree structure, shapes and dtypes are used: the optimizer
        state comes back as the same NamedTuple types).

        Returns ``(state, message)``; ``(None, message)`` when the directory holds no
        checkpoint. Damaged checkpoints newer than the good one are moved to
        ``DIR/damaged/`` and named in the message.

        Raises:
          CheckpointMismatchError: the checkpoints belong to another model or optimizer.
          CheckpointError: there are checkpoints but none is usable (nothing is moved).
        """
        self.wait()
        numbers = self.all_numbers()
        if not numbers:
            extra = ""
            if self.unfinished():
                extra = (
                    f" (only {len(self.unfinished())} unfinished write(s) of a run killed "
                    "while saving, which are not checkpoints)"
                )
            return None, f"No checkpoint in {self.directory}{extra}: starting from scratch."
        _dir.check_structure(self.directory, self._run, template)
        failures: List[Tuple[int, str]] = []
        for number in reversed(numbers):
            try:
                state = self._restore(number, template)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure to load means damaged
                _dir.ignore_closed_loop_callbacks()
                failures.append((number, _dir.one_line(e)))
                continue
            return state, self._after_restore(number, state, failures)
        lines = "\n".join(f"  - {self.directory / str(n)}: {why}" for n, why in failures)
        raise CheckpointError(
            f"No usable checkpoint in {self.directory}; every one is damaged:\n{lines}\n"
            "Nothing was moved or deleted. Restore the directory from a backup, or start "
            "over in another directory."
        )

    def _restore(self, number: int, template: LoopState) -> LoopState:
        manager = self._get_manager()
        meta = manager.restore(number, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta["meta"]
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(
                f"unknown checkpoint format {meta.get('format')!r}"
                if isinstance(meta, dict)
                else "malformed metadata"
            )
        abstract = _fmt.abstract_tree(template)
        mesh = _sharded.mesh_of(template.params)
        if mesh is not None:  # read each leaf straight into its sharding on this mesh
            abstract = _sharded.restore_abstract(abstract, _fmt.state_tree(template)[0], mesh)
        leaves, treedef = _fmt.flatten(abstract)

        def read(target: Any) -> Any:
            return manager.restore(
                number,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_fmt.drop_empty(target))),
            )

        try:
            restored = read(jax.tree.unflatten(treedef, leaves))
        except ValueError as e:  # written on a mesh, read on one device: orbax needs a place
            if mesh is not None or "sharding" not in str(e):
                raise
            restored = read(_sharded.on_one_device(jax.tree.unflatten(treedef, leaves)))
        got, _ = _fmt.flatten(restored["state"])
        if len(got) != len(leaves):
            raise ValueError(f"it holds {len(got)} arrays where {len(leaves)} were expected")
        if mesh is None:
            live = [
                None if x is None else np.zeros(x.shape, x.dtype) if x.size == 0 else np.asarray(g)
                for x, g in zip(leaves, got)
            ]
            tree = live_tree = jax.tree.unflatten(treedef, live)
        else:
            live, host = _sharded.restored_leaves(got, leaves)
            tree = jax.tree.unflatten(treedef, host)
            live_tree = jax.tree.unflatten(treedef, live)
            live_tree.update(rng=tree["rng"], counters=tree["counters"])  # small: on the host
        if _fmt.digest(tree, meta) != meta.get("sha256"):
            raise ValueError(
                "its content does not match the sha256 recorded when it was "
                "written (a file was modified or damaged)"
            )
        return _fmt.loop_state(live_tree, meta)

    def _after_restore(self, number: int, state: LoopState, failures: List[Tuple[int, str]]) -> str:
        where = (
            f"end of epoch {state.epoch}"
            if state.batch == 0
            else f"epoch {state.epoch + 1}, after batch {state.batch}"
        )
        msg = f"Resumed from checkpoint {number} in {self.directory}: step {state.step} ({where})."
        if failures and _sharded.primary():
            moved = _dir.move_damaged(self.directory, failures)
            msg += " Skipped damaged newer checkpoint(s): " + "; ".join(moved) + "."
        if failures:
            _sharded.barrier("jaxopt_zoo_checkpoint_moved")  # the others wait for the move
            if self._manager is not None:
                self._manager.reload()
        for tmp in self.unfinished() if _sharded.primary() else ():  # a killed run's writes
            shutil.rmtree(tmp, ignore_errors=True)
        return msg

    # ------------------------------------------------------------------ orbax

    def _get_manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._manager = ocp.CheckpointManager(
                self.directory,
                item_names=_ITEMS,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.keep, create=True, enable_async_checkpointing=self.async_save
                ),
            )
        return self._manager
