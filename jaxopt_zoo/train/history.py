"""Per-epoch history records (with the averaged weights' metrics) and early stopping
computed from them.

The history is the only memory early stopping needs: the best epoch and the number of epochs
since it are recomputed from the recorded validation losses, so a restored history resumes
early stopping exactly.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from jaxopt_zoo.transforms.averaging import average_started, averaged_params, find_average

__all__ = [
    "AVERAGE_KEYS",
    "BITS_KEYS",
    "HISTORY_KEYS",
    "average_record",
    "best_epoch",
    "epoch_record",
    "format_record",
    "should_stop",
]

HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
)
#: Added to every record of the char-LM: the losses per character in bits (nats / ln 2).
BITS_KEYS = ("train_bits_per_char", "val_bits_per_char")
#: Added to every record when the optimizer averages the weights (``swa``, ``ema_weights``):
#: the validation metrics of the averaged weights (None before the average starts).
AVERAGE_KEYS = ("val_loss_avg", "val_accuracy_avg")


def epoch_record(
    epoch: int,
    train_loss: float,
    train_accuracy: float,
    val_loss: Optional[float],
    val_accuracy: Optional[float],
    seconds: float,
    step: int = 0,
) -> Dict[str, Any]:
    """One history entry. ``epoch`` counts evaluations from 1 (epochs, by default);
    ``step`` the optimizer steps done; ``val_*`` are None without validation data."""
    return {
        "epoch": int(epoch),
        "step": int(step),
        "train_loss": float(train_loss),
        "train_accuracy": float(train_accuracy),
        "val_loss": None if val_loss is None else float(val_loss),
        "val_accuracy": None if val_accuracy is None else float(val_accuracy),
        "seconds": float(seconds),
    }


def _val_loss(record: Mapping[str, Any]) -> float:
    v = record.get("val_loss")
    return math.inf if v is None or math.isnan(v) else float(v)


def best_epoch(history: Sequence[Mapping[str, Any]]) -> Optional[int]:
    """Index in ``history`` of the lowest validation loss (the first one on ties; a nan loss
    never counts as best), or None for an empty history.

    Args:
      history: the per-epoch records (dicts with a ``"val_loss"``, possibly None), as
        :func:`~jaxopt_zoo.train.train_and_evaluate` returns them.

    Returns:
      The 0-based index of the best record (its ``"epoch"`` is that plus 1), or None.

    Example:
      >>> best_epoch([{"val_loss": 0.5}, {"val_loss": 0.4}, {"val_loss": 0.45}])
      1
    """
    if not history:
        return None
    losses = [_val_loss(r) for r in history]
    return losses.index(min(losses))


def should_stop(history: Sequence[Mapping[str, Any]], patience: Optional[int]) -> bool:
    """Keras ``EarlyStopping(monitor="val_loss", patience=patience)`` on a history.

    Stop once ``patience`` epochs in a row have not lowered the best validation loss (an
    improvement must be strictly lower). As in Keras, ``patience=0`` acts like 1: an epoch
    that improves never stops training. ``patience=None`` never stops.

    Args:
      history: the per-epoch records so far (dicts with a ``"val_loss"``).
      patience: epochs without improvement to tolerate, or None.

    Returns:
      Whether to stop before the next epoch.

    Example:
      >>> history = [{"val_loss": v} for v in (0.5, 0.4, 0.45, 0.41)]
      >>> should_stop(history, 2), should_stop(history, 3), should_stop(history, None)
      (True, False, False)
    """
    if patience is None or not history:
        return False
    best = best_epoch(history)
    assert best is not None  # the history is not empty
    since_best = len(history) - 1 - best
    return since_best >= max(int(patience), 1)


def format_record(record: Mapping[str, Any]) -> str:
    """A one-line summary of a history entry, for progress bars and logs."""
    s = f"loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}"
    if record.get("val_loss") is not None:
        s += f" val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f}"
    if record.get("val_bits_per_char") is not None:
        s += f" val_bpc {record['val_bits_per_char']:.4f}"
    if record.get("val_loss_avg") is not None:
        s += (
            f" averaged: val_loss {record['val_loss_avg']:.4f} "
            f"val_acc {record['val_accuracy_avg']:.4f}"
        )
    return s + f" ({record['seconds']:.1f}s)"


def average_record(evaluate: Optional[Callable], params: Any, opt_state: Any) -> dict:
    """``val_loss_avg`` and ``val_accuracy_avg``: the validation metrics of the averaged
    weights (SWA, parameter EMA) held in ``opt_state``; None before the average has taken
    its first parameters (SWA before its start) or without validation data.

    Args:
      evaluate: ``params -> Metrics`` on the validation set, or None without one.
      params: the current parameters (the structure the average is returned in).
      opt_state: the optimizer state holding the average (``swa``, ``ema_weights``).
    """
    avg_state = find_average(opt_state)
    if evaluate is None or not bool(average_started(avg_state)):
        return {"val_loss_avg": None, "val_accuracy_avg": None}
    loss, acc = evaluate(averaged_params(opt_state, like=params)).means()
    return {"val_loss_avg": loss, "val_accuracy_avg": acc}
