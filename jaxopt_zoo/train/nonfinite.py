"""What the epoch loop does with a step whose loss, gradients or updated parameters are not
finite (``TrainConfig.on_nonfinite``): the errors and warnings, and the messages that name the
step and the first non-finite leaf. The check itself is part of the train step
(:func:`jaxopt_zoo.train.steps.train_step` with ``guard=True``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # the loop imports this module
    from jaxopt_zoo.train.loop import LoopState

__all__ = ["NonFiniteError", "NonFiniteWarning", "nonfinite_error", "report_skipped"]


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient or updated parameter and was told to stop
    (``on_nonfinite="stop"``), or every step of an epoch was skipped (``"skip"``).

    Attributes:
      step: the failing step, counted from 1 (the state after it would have had
        ``step == self.step``).
      epoch: the failing step's epoch.
      batch: the failing step's batch within the epoch.
      leaf: the path of the first non-finite leaf (e.g. ``"['Dense_0']['kernel']"``), or None
        when only the loss is non-finite.
      state: the :class:`LoopState` just before the failing step (the step changed nothing):
        save it, or pass it back as ``state=`` with other settings.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        batch: int,
        leaf: Optional[str] = None,
        state: Optional["LoopState"] = None,
    ):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.leaf, self.state = step, epoch, batch, leaf, state


class NonFiniteWarning(RuntimeWarning):
    """Steps were skipped for a non-finite loss or gradients (``on_nonfinite="skip"``)."""


# --------------------------------------------------------------------------- #
# Non-finite steps (TrainConfig.on_nonfinite)
# --------------------------------------------------------------------------- #


def nonfinite_error(check: Any, params: Any, state: Any) -> NonFiniteError:
    _, loss, grads_finite, params_finite = jax.device_get(check)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    where = f"step {state.step + 1} (epoch {state.epoch + 1}, batch {state.batch + 1})"
    leaf = None
    if not grads_finite.all():
        leaf = paths[int(np.argmin(grads_finite))]
        what = f"the gradient of {leaf} is not finite (loss {float(loss)})"
    elif not params_finite.all():
        leaf = paths[int(np.argmin(params_finite))]
        what = (
            f"the gradients are finite (loss {float(loss)}) but the optimizer's update "
            f"makes {leaf} non-finite"
        )
    else:
        what = f"the loss is {float(loss)}"
    message = (
        f"Non-finite values at {where}: {what}. The step was not applied; "
        "NonFiniteError.state holds the state before it. Lower the learning rate, "
        "clip the gradients, or set on_nonfinite='skip' to skip such steps."
    )
    state = state._replace(
        **dict(
            zip(
                ("params", "opt_state", "totals"),
                jax.device_get((state.params, state.opt_state, state.totals)),
            )
        )
    )
    return NonFiniteError(
        message,
        step=state.step + 1,
        epoch=state.epoch + 1,
        batch=state.batch + 1,
        leaf=leaf,
        state=state,
    )


def report_skipped(
    finite_flags: List[jax.Array], step: int, epoch: int, batch: int, complete: bool
) -> None:
    """Warn about the steps skipped in this epoch (``on_nonfinite="skip"``); raise when all
    of a completed epoch's steps were skipped. ``step``/``batch``: counts after the last one."""
    if not finite_flags:
        return
    finite = np.asarray(jax.device_get(jnp.stack(finite_flags)))
    if finite.all():
        return
    first = step - len(finite_flags)  # steps taken before the first flag
    skipped = [first + 1 + int(i) for i in np.flatnonzero(~finite)]
    shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
    if complete and not finite.any():
        raise NonFiniteError(
            f"Every step of epoch {epoch + 1} ({len(skipped)} steps: {shown}) had a non-finite "
            "loss, gradient or update and was skipped: the run has diverged. Lower the "
            "learning rate or clip the gradients.",
            step=skipped[0],
            epoch=epoch + 1,
            batch=batch - len(finite_flags) + 1,
        )
    warnings.warn(
        f"epoch {epoch + 1}: skipped {len(skipped)} of {len(finite)} steps with a "
        f"non-finite loss, gradient or update (steps {shown}).",
        NonFiniteWarning,
        stacklevel=3,
    )
