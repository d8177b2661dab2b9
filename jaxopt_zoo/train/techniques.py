"""SAM and weight averaging around a run's optimizer: what ``--sam-rho``, ``--swa-start`` and
``--ema`` of the ``jaxopt-zoo`` command build.

The step needs nothing special for either: SAM's second gradient comes from the ``grad_fn``
that :func:`jaxopt_zoo.train.steps.train_step` passes to every extra-args optimizer, and the
averages live in the optimizer state (so checkpoints and ``--resume`` keep them); the epoch
loop evaluates :func:`jaxopt_zoo.averaged_params` beside the live weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from jaxopt_zoo.core import GradientTransformation, check_int, check_scalar

__all__ = ["Techniques"]


@dataclasses.dataclass(frozen=True)
class Techniques:
    """SAM and weight averaging for one run; the default turns everything off.

    Attributes:
      sam_rho: SAM's neighbourhood radius (``jaxopt_zoo.sam(tx, rho)``); None: no SAM.
      sam_adaptive: ASAM (Kwon et al. 2021) instead of SAM.
      swa_start: Stochastic Weight Averaging of the parameters at the end of every epoch
        from this epoch on (counted from 1, as the epochs the command prints; torch's
        ``swa_start`` recipe), or every ``swa_every`` steps from its first step when
        ``swa_every`` is set. None: no SWA.
      swa_every: average every this many optimizer steps instead of once per epoch.
      swa_lr: the learning rate SWALR anneals to from the start of ``swa_start``
        (``jaxopt_zoo.schedules.swa_lr``); None keeps the optimizer's learning rate.
      swa_anneal_epochs: epochs of that annealing (cosine; 0 jumps to ``swa_lr``).
      ema: decay of an exponential moving average of the parameters
        (``jaxopt_zoo.ema_weights``); None: none.
    """

    sam_rho: Optional[float] = None
    sam_adaptive: bool = False
    swa_start: Optional[int] = None
    swa_every: Optional[int] = None
    swa_lr: Optional[float] = None
    swa_anneal_epochs: int = 1
    ema: Optional[float] = None

    def __post_init__(self):
        if self.sam_rho is not None:
            check_scalar("sam_rho", self.sam_rho, low=0.0, low_open=True, schedule_ok=False)
        if self.sam_adaptive and self.sam_rho is None:
            raise ValueError("sam_adaptive=True needs sam_rho (ASAM's radius, e.g. 0.5).")
        if self.swa_start is not None:
            check_int("swa_start", self.swa_start, low=1)
        elif self.swa_every is not None or self.swa_lr is not None:
            raise ValueError("swa_every and swa_lr need swa_start (the first epoch of SWA).")
        if self.swa_every is not None:
            check_int("swa_every", self.swa_every, low=1)
        if self.swa_lr is not None:
            check_scalar("swa_lr", self.swa_lr, low=0.0, schedule_ok=False)
        check_int("swa_anneal_epochs", self.swa_anneal_epochs, low=0)
        if self.ema is not None:
            check_scalar("ema", self.ema, low=0.0, high=1.0, high_open=True, schedule_ok=False)
        if self.ema is not None and self.swa_start is not None:
            raise ValueError("Choose one kind of weight averaging: swa_start or ema, not both.")

    @property
    def averaging(self) -> bool:
        return self.swa_start is not None or self.ema is not None

    def learning_rate(self, lr: Any, steps_per_epoch: int) -> Any:
        """The learning rate (a number or schedule) with SWALR from ``swa_start`` on."""
        if self.swa_start is None or self.swa_lr is None:
            return lr
        from jaxopt_zoo import schedules

        return schedules.swa_lr(
            lr,
            self.swa_lr,
            anneal_steps=self.swa_anneal_epochs * steps_per_epoch,
            anneal_strategy="cos",
            start_step=(self.swa_start - 1) * steps_per_epoch,
        )

    def wrap(self, tx: GradientTransformation, steps_per_epoch: int) -> GradientTransformation:
        """``tx`` with SAM inside and the averaging outside (averaging SAM's updates)."""
        import jaxopt_zoo as jz

        if self.sam_rho is not None:
            tx = jz.sam(tx, rho=self.sam_rho, adaptive=self.sam_adaptive)
        if self.swa_start is not None:
            if self.swa_every is None:  # the end of every epoch from swa_start on
                tx = jz.swa(
                    tx, start_step=self.swa_start * steps_per_epoch, every_steps=steps_per_epoch
                )
            else:
                tx = jz.swa(
                    tx,
                    start_step=(self.swa_start - 1) * steps_per_epoch + 1,
                    every_steps=self.swa_every,
                )
        elif self.ema is not None:
            tx = jz.ema_weights(tx, self.ema)
        return tx

    def record(self) -> Dict[str, Any]:
        """The settings that are on, for metrics.json and checkpoint identities."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if v not in (None, False) and not (k == "swa_anneal_epochs" and self.swa_lr is None)
        }
