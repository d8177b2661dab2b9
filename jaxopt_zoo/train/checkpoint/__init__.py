"""Checkpoints of a training run: save every N steps, keep the last few, resume exactly
(``.checkpointer``; the directory on disk, the format and the sharded case beside it)."""

from jaxopt_zoo.train.checkpoint.checkpointer import (
    RUN_FILE,
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_number,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "RUN_FILE",
    "checkpoint_number",
]
