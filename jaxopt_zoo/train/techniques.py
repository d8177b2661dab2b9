"""SAM, weight averaging and the language-model training recipe around a run's optimizer:
what ``--sam-rho``, ``--swa-start``, ``--ema``, ``--clip-norm``, ``--schedule`` and
``--decay-mask`` of the ``jaxopt-zoo`` command build.

The step needs nothing special for either: SAM's second gradient comes from the ``grad_fn``
that :func:`jaxopt_zoo.train.steps.train_step` passes to every extra-args optimizer, and the
averages live in the optimizer state (so checkpoints and ``--resume`` keep them); the epoch
loop evaluates :func:`jaxopt_zoo.averaged_params` beside the live weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from jaxopt_zoo.core import GradientTransformation, check_int, check_scalar, is_zero

__all__ = ["SCHEDULES", "Techniques"]

#: The learning-rate schedules of ``Techniques.schedule`` (``--schedule``).
SCHEDULES = ("constant", "warmup-cosine", "wsd")
#: The quantized-state formats of ``Techniques.state_bits`` (``--state-bits``).
STATE_BITS = ("8", "4", "fp8")


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
      clip_norm: clip the gradients to this global norm before the optimizer
        (``jaxopt_zoo.clip_by_global_norm``); None: no clipping.
      schedule: the learning rate over the run's ``total_steps``: ``"constant"``,
        ``"warmup-cosine"`` (linear warm-up from 0 over ``warmup_steps``, then a cosine to
        0 at the last step: ``schedules.warmup_cosine``) or ``"wsd"`` (warm-up, constant,
        then a ``1 - sqrt`` decay to 0 over the last ``decay_fraction`` of the steps:
        ``schedules.wsd``).
      warmup_steps: the warm-up length of those schedules.
      decay_fraction: the share of the steps that ``"wsd"`` decays over.
      decay_mask: no weight decay on biases, normalization parameters and embeddings (only
        ``kernel`` leaves decay: ``jaxopt_zoo.models.transformer.decay_mask``). Passed as
        the optimizer's own ``mask`` / ``weight_decay_mask`` when it has one; an optimizer
        with a ``weight_decay`` but no mask gets decoupled decay instead of its own
        (``-lr * weight_decay * p`` on the kept leaves, after its update).
      bf16_params: train bfloat16 parameters without a float32 master copy
        (``jaxopt_zoo.bf16_params`` around everything else; the trainer casts the model's
        parameters through ``jaxopt_zoo.params_for``).
      bf16_rounding: its rounding: ``"stochastic"``, ``"kahan"`` or ``"nearest"``.
      state_bits: keep the optimizer's moments block-wise quantized: ``"8"``, ``"4"`` or
        ``"fp8"`` (``jaxopt_zoo.quantize_state`` around the optimizer itself, inside clipping,
        SAM and the weight averages, whose own state stays float32); None: float32 state.
      state_block_size: elements per quantization scale (a power of two; None: 256, 128
        for 4 bits).
    """

    sam_rho: Optional[float] = None
    sam_adaptive: bool = False
    swa_start: Optional[int] = None
    swa_every: Optional[int] = None
    swa_lr: Optional[float] = None
    swa_anneal_epochs: int = 1
    ema: Optional[float] = None
    clip_norm: Optional[float] = None
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    decay_mask: bool = False
    # Parameter precision (issue 19).
    bf16_params: bool = False
    bf16_rounding: str = "stochastic"
    state_bits: Optional[str] = None
    state_block_size: Optional[int] = None

    def __post_init__(self):
        from jaxopt_zoo.transforms.bf16_params import ROUNDINGS

        if self.state_bits is not None and self.state_bits not in STATE_BITS:
            raise ValueError(
                f"Invalid state_bits: {self.state_bits!r}. Expected one of "
                f"{', '.join(map(repr, STATE_BITS))} (or None for float32 state)."
            )
        if self.state_block_size is not None:
            if self.state_bits is None:
                raise ValueError("state_block_size needs state_bits (e.g. '8').")
            b = self.state_block_size
            if isinstance(b, bool) or not isinstance(b, int) or b < 2 or b & (b - 1):
                raise ValueError(
                    f"Invalid state_block_size: {b!r}. Expected a power of two >= 2 "
                    "(256 for 8 bits and FP8, 128 for 4 bits, as bitsandbytes and torchao)."
                )

        if self.bf16_rounding not in ROUNDINGS:
            raise ValueError(
                f"Invalid bf16_rounding: {self.bf16_rounding!r}. Expected one of "
                f"{', '.join(map(repr, ROUNDINGS))}."
            )
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
        if self.clip_norm is not None:
            check_scalar("clip_norm", self.clip_norm, low=0.0, low_open=True, schedule_ok=False)
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"Invalid schedule: {self.schedule!r}. Expected one of "
                f"{', '.join(map(repr, SCHEDULES))}."
            )
        check_int("warmup_steps", self.warmup_steps, low=0)
        check_scalar(
            "decay_fraction",
            self.decay_fraction,
            low=0.0,
            high=1.0,
            low_open=True,
            schedule_ok=False,
        )
        if self.schedule != "constant" and self.swa_lr is not None:
            raise ValueError(
                f"Choose one learning-rate schedule: schedule={self.schedule!r} or swa_lr "
                "(SWALR), not both."
            )

    @property
    def averaging(self) -> bool:
        return self.swa_start is not None or self.ema is not None

    def learning_rate(
        self, lr: Any, steps_per_epoch: int, total_steps: Optional[int] = None
    ) -> Any:
        """The learning rate (a number or schedule): ``schedule`` over ``total_steps`` (the
        run's optimizer steps; needed unless the schedule is ``"constant"``), or SWALR
        from ``swa_start`` on."""
        from jaxopt_zoo import schedules

        if self.schedule != "constant":
            if total_steps is None:
                raise ValueError(
                    f"schedule={self.schedule!r} needs the run's total_steps (its length)."
                )
            w, n = self.warmup_steps, int(total_steps)
            if self.schedule == "warmup-cosine":
                if n <= w:
                    raise ValueError(
                        f"warmup-cosine: the run's {n} steps leave nothing after "
                        f"{w} warm-up steps; lower the warm-up or raise the steps."
                    )
                return schedules.warmup_cosine(0.0, lr, w, n)
            decay = round(n * self.decay_fraction)
            if w + decay > n:
                raise ValueError(
                    f"wsd: {w} warm-up steps and {decay} decay steps ({self.decay_fraction} "
                    f"of {n}) exceed the run's {n} steps."
                )
            return schedules.wsd(lr, w, n - w - decay, decay)
        if self.swa_start is None or self.swa_lr is None:
            return lr
        return schedules.swa_lr(
            lr,
            self.swa_lr,
            anneal_steps=self.swa_anneal_epochs * steps_per_epoch,
            anneal_strategy="cos",
            start_step=(self.swa_start - 1) * steps_per_epoch,
        )

    def decay_kwargs(
        self, defaults: Mapping[str, Any], kwargs: Mapping[str, Any], lr: Any
    ) -> Tuple[Dict[str, Any], Optional[GradientTransformation]]:
        """The optimizer's keyword arguments with ``decay_mask`` applied, and the decoupled
        decay to chain after it (None when the optimizer masks its own decay).

        ``defaults``: the optimizer's defaults (``registry.entry(name).defaults()``);
        ``lr``: its learning rate (a number or schedule), for the decoupled decay.
        """
        kw = dict(kwargs)
        if not self.decay_mask:
            return kw, None
        from jaxopt_zoo.models.transformer import decay_mask

        for key in ("mask", "weight_decay_mask"):
            if key in defaults:
                kw[key] = decay_mask
                return kw, None
        wd = kw.get("weight_decay", defaults.get("weight_decay"))
        if "weight_decay" not in defaults or wd is None or is_zero(wd):  # (a swept wd: traced)
            raise ValueError(
                "decay_mask needs weight decay: this optimizer has "
                + ("weight_decay=0" if "weight_decay" in defaults else "no weight_decay")
                + "; set one (e.g. --opt-arg weight_decay=0.1) or use adamw."
            )
        import jaxopt_zoo as jz

        kw["weight_decay"] = 0.0
        # u + rate * p with rate = -lr * wd: decoupled decay, on the leaves of the mask
        rate = (lambda count: -wd * lr(count)) if callable(lr) else (lambda count: -wd * lr)
        return kw, jz.add_decayed_weights(rate, mask=decay_mask)

    def wrap(self, tx: GradientTransformation, steps_per_epoch: int) -> GradientTransformation:
        """``tx`` with SAM inside and the averaging outside (averaging SAM's updates)."""
        import jaxopt_zoo as jz

        if self.state_bits is not None:  # the optimizer's moments only (docs/low-bit.md)
            bits = "fp8" if self.state_bits == "fp8" else int(self.state_bits)
            tx = jz.quantize_state(tx, bits=bits, block_size=self.state_block_size)
        if self.clip_norm is not None:
            tx = jz.chain(jz.clip_by_global_norm(self.clip_norm), tx)
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
        if self.bf16_params:  # outermost: everything inside runs in float32
            tx = jz.bf16_params(tx, rounding=self.bf16_rounding)
        return tx

    def record(self) -> Dict[str, Any]:
        """The settings that are on, for metrics.json and checkpoint identities."""
        off: Dict[str, Any] = {"schedule": "constant"}
        if self.schedule == "constant":
            off.update(warmup_steps=self.warmup_steps, decay_fraction=self.decay_fraction)
        elif self.schedule != "wsd":
            off["decay_fraction"] = self.decay_fraction
        if self.swa_lr is None:
            off["swa_anneal_epochs"] = self.swa_anneal_epochs
        if not self.bf16_params:
            off["bf16_rounding"] = self.bf16_rounding
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if v not in (None, False) and not (k in off and off[k] == v)
        }
