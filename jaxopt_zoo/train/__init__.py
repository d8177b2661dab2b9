"""Training: jitted train steps and evaluation, the resumable epoch loop and its history.

The trainer's core is the modules at this level (``loop``, ``state``, ``steps``, ``metrics``,
``checks``, ``history``, ``nonfinite``; ``techniques`` and ``lm`` for the recipes, ``runner``
and ``report`` for named runs and their results); three concepts have subpackages:
``checkpoint``, ``sweep`` and ``distributed``.
"""

import jaxopt_zoo._train_extra  # noqa: F401  (a clear error without [train])
from jaxopt_zoo.train import _moved
from jaxopt_zoo.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
)
from jaxopt_zoo.train.history import HISTORY_KEYS, best_epoch, should_stop
from jaxopt_zoo.train.lm import TokenWindows
from jaxopt_zoo.train.loop import (
    NONFINITE_MODES,
    Callback,
    LoopState,
    NonFiniteError,
    NonFiniteWarning,
    TrainConfig,
    epoch_order,
    init_loop_state,
    run_lengths,
    step_dropout_key,
    steps_per_epoch,
    train_and_evaluate,
)
from jaxopt_zoo.train.metrics import (
    Metrics,
    batch_metrics,
    evaluate,
    make_eval_fn,
    weighted_cross_entropy,
)
from jaxopt_zoo.train.steps import (
    StepCheck,
    StepResult,
    make_indexed_train_step,
    make_train_step,
    train_step,
)

_moved.install()  # the modules' old import paths (jaxopt_zoo.train.sweep_report, ...)

__all__ = [
    "HISTORY_KEYS",
    "NONFINITE_MODES",
    "Callback",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "LoopState",
    "Metrics",
    "StepCheck",
    "StepResult",
    "TokenWindows",
    "NonFiniteError",
    "NonFiniteWarning",
    "TrainConfig",
    "batch_metrics",
    "best_epoch",
    "epoch_order",
    "evaluate",
    "init_loop_state",
    "make_eval_fn",
    "make_indexed_train_step",
    "make_train_step",
    "run_lengths",
    "should_stop",
    "step_dropout_key",
    "steps_per_epoch",
    "train_and_evaluate",
    "train_step",
    "weighted_cross_entropy",
]
