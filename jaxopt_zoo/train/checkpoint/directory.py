"""The checkpoint directory on disk: which run it belongs to, and what in it is a checkpoint.

Layout of a checkpoint directory::

    DIR/jaxopt_zoo_run.json     the run it belongs to: model, optimizer, ... (the ``metadata``
                                given to Checkpointer) and the structure, shapes and dtypes
                                of the parameters and optimizer state
    DIR/<n>/state/              orbax PyTree: params, opt_state, totals, rng, counters
    DIR/<n>/meta/metadata       JSON: step, epoch, batch, history, sha256 of the state
    DIR/damaged/<n>-<time>/     checkpoints found damaged on resume, moved aside
    DIR/<n>.orbax-checkpoint-tmp/
                                a write orbax has not finished (a run killed while saving):
                                never taken for a checkpoint, removed on resume
    DIR/.jaxopt_zoo_run.json.*.tmp
                                a run-file write that never finished, removed when the run
                                file is next written

``<n>``, the checkpoint number, counts optimizer steps plus completed epochs, so that the
state after an epoch's evaluation (same step, one more history entry) comes after the one
before it; messages give the step, epoch and batch.

The functions here read and check the directory (the run file, the finished checkpoints,
the unfinished writes of a killed run) and move damaged checkpoints aside; the policy (when
to save, what to keep, how to resume) is
:class:`~jaxopt_zoo.train.checkpoint.Checkpointer`'s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from jaxopt_zoo.train.checkpoint import format as _fmt
from jaxopt_zoo.train.checkpoint import sharded as _sharded
from jaxopt_zoo.train.checkpoint.format import FORMAT
from jaxopt_zoo.train.state import LoopState

__all__: list = []  # internal: used by jaxopt_zoo.train.checkpoint

RUN_FILE = "jaxopt_zoo_run.json"
DAMAGED_DIR = "damaged"
TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """No usable checkpoint, or a checkpoint directory that cannot be used."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint directory belongs to another run (model, optimizer, settings)."""


def finished_numbers(directory: Path) -> List[int]:
    """Numbers of the finished checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def unfinished_writes(directory: Path) -> List[Path]:
    """Temporary folders of writes that never finished (a run killed mid-save)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if TMP_MARK in p.name)


def check_directory(directory: Path, metadata: Optional[dict]) -> Optional[dict]:
    """The run file of ``directory`` (None when there is none yet); refuses a directory of
    another run (``metadata`` differs; None: not checked), or a non-empty one that is not
    a checkpoint directory."""
    d = directory
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"Checkpoint directory {d} exists and is not a directory.")
    run_file = d / RUN_FILE
    if not run_file.exists():
        if d.is_dir() and any(
            p.name != DAMAGED_DIR and not p.name.startswith(f".{RUN_FILE}.") for p in d.iterdir()
        ):
            raise CheckpointMismatchError(
                f"{d} is not empty and is not a jaxopt_zoo checkpoint directory (no "
                f"{RUN_FILE}). Choose an empty or new directory for checkpoints."
            )
        return None
    try:
        run = json.loads(run_file.read_text())
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            raise ValueError(
                f"unknown format {run.get('format')!r}"
                if isinstance(run, dict)
                else "not a JSON object"
            )
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"Cannot read {run_file}: {one_line(e)}. Is {d} a jaxopt_zoo checkpoint directory?"
        ) from None
    if metadata is None:
        return run
    saved = run.get("metadata", {})
    diffs = [
        f"{k}: {saved.get(k, '(unset)')!r} there, {metadata.get(k, '(unset)')!r} here"
        for k in sorted(set(saved) | set(metadata))
        if saved.get(k) != metadata.get(k)
    ]
    if diffs:
        raise CheckpointMismatchError(
            f"{d} holds checkpoints of another run ({'; '.join(diffs)}). Use another "
            "checkpoint directory, or delete this one if you no longer need it."
        )
    return run


def check_structure(directory: Path, run: Optional[dict], state: LoopState) -> None:
    """Refuse to restore ``state``'s run from checkpoints of another parameter or
    optimizer-state structure (as recorded in the run file ``run``)."""
    saved = (run or {}).get("structure")
    if saved is None:
        return
    mine = _fmt.structure(state)
    if saved != mine:
        raise CheckpointMismatchError(
            f"{directory} holds checkpoints of a different model or optimizer: "
            f"{_fmt.structure_diff(saved, mine)}. Use another checkpoint directory."
        )


def write_run_file(
    directory: Path, run: Optional[dict], metadata: Optional[dict], structure: dict
) -> dict:
    """The run file for a checkpoint of ``structure``: ``run`` when it already records that
    structure, else a new one written to ``directory`` (by process 0 of several)."""
    if run is not None:
        saved = run.get("structure")
        if saved is not None and saved != structure:
            raise CheckpointMismatchError(
                f"Cannot save into {directory}: it holds checkpoints of a different "
                f"model or optimizer: {_fmt.structure_diff(saved, structure)}."
            )
        if saved is not None:
            return run
    run = {"format": FORMAT, "metadata": metadata or {}, "structure": structure}
    directory.mkdir(parents=True, exist_ok=True)
    if _sharded.primary():  # several processes: process 0 writes the side files
        for tmp in run_file_writes(directory):  # of a process killed while writing it
            tmp.unlink(missing_ok=True)
        _fmt.write_json_atomic(directory / RUN_FILE, run)
    return run


def run_file_writes(directory: Path) -> List[Path]:
    """Temporary files of run-file writes that never finished (``.jaxopt_zoo_run.json.*``,
    see :func:`~jaxopt_zoo.train.checkpoint.format.write_json_atomic`)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(f".{RUN_FILE}."))


def move_damaged(directory: Path, failures: Sequence[Tuple[int, str]]) -> List[str]:
    """Move the checkpoints ``(number, why)`` of ``failures`` to ``DIR/damaged/`` and say
    where each went."""
    moved = []
    damaged = directory / DAMAGED_DIR
    damaged.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n, why in failures:
        target = damaged / f"{n}-{stamp}"
        os.replace(directory / str(n), target)
        moved.append(f"checkpoint {n} ({why}) moved to {target}")
    return moved


def ignore_closed_loop_callbacks() -> None:
    """Silence one known artefact of a failed orbax read.

    When one array of a damaged checkpoint fails to load, orbax's event loop ends while
    tensorstore still completes the other reads; their callbacks then raise
    ``RuntimeError("Event loop is closed")`` in tensorstore's threads, which Python reports
    as "Exception ignored in: None" tracebacks. The failure itself is already handled (the
    checkpoint is reported as damaged), so those reports are dropped; every other
    unraisable exception still reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_jaxopt_zoo_filter", False):
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(unraisable)

    hook._jaxopt_zoo_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def one_line(e: BaseException) -> str:
    """``e``'s message on one line, at most 200 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
