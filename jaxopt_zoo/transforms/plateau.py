"""Reduce the step size when a monitored value stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformationExtraArgs,
    StepCount,
    check_int,
    check_nonneg,
    check_scalar,
    increment,
    scalar_dtype,
    zero_count,
)


class ReduceOnPlateauState(NamedTuple):
    """``scale``: the factor applied to the updates; ``best``: best (averaged) value so far
    (negated in ``mode="max"``);
    ``plateau_count``: evaluations without improvement; ``cooldown_count``: evaluations
    left to ignore; ``count`` and ``avg``: values accumulated towards the next evaluation."""

    scale: jax.Array
    best: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: StepCount
    avg: jax.Array


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
    mode: str = "min",
) -> GradientTransformationExtraArgs:
    r"""Multiply the updates by a scale that drops by ``factor`` on a plateau of the value
    passed as ``update(..., value=loss)``.

    Every ``accumulation_size`` calls the mean ``v`` of the values passed is evaluated: it
    improves on ``best`` when ``v < (1 - rtol) * best - atol`` (``mode="min"``; with
    ``"max"``, ``v > (1 + rtol) * best + atol``). After ``patience`` evaluations in a row
    without improvement, ``scale = max(scale * factor, min_scale)`` and the next
    ``cooldown`` evaluations are not counted. The scale applies to the update of the call
    that completes the evaluation. Place it after the optimizer:
    ``chain(adam(lr), reduce_on_plateau())``.

    The two references differ, and each is one setting here:

    - ``optax.contrib.reduce_on_plateau``: the same arguments and defaults (it has no
      ``mode``): identical.
    - ``torch.optim.lr_scheduler.ReduceLROnPlateau(patience=p, threshold=th,
      threshold_mode=..., cooldown=c, min_lr=m, mode=...)``: reduces after ``p + 1`` bad
      evaluations, not ``p``, so use ``patience=p + 1``; ``threshold_mode="rel"`` is
      ``rtol=th, atol=0`` and ``"abs"`` is ``rtol=0, atol=th``; ``min_scale = m / lr``;
      it evaluates every call (``accumulation_size=1``, one value per epoch as its users
      call it). Its ``scheduler.step(loss)`` changes the learning rate of the following
      ``optimizer.step()``: feed ``value`` the loss that the torch loop would have passed
      before this step. torch also skips any reduction smaller than its ``eps=1e-8``
      (in learning-rate units), which freezes a long plateau's rate near
      ``eps / (1 - factor)``; ours has no floor but ``min_scale`` (torch ``eps=0`` matches).

    Args:
      factor: the scale's multiplier on a reduction, in (0, 1).
      patience: evaluations without improvement before a reduction.
      rtol: relative improvement threshold, in [0, 1].
      atol: absolute improvement threshold, >= 0 (not both 0 with ``rtol``).
      cooldown: evaluations ignored after a reduction.
      accumulation_size: values averaged per evaluation (e.g. minibatch losses).
      min_scale: the scale's floor.
      mode: ``"min"`` or ``"max"``.

    Returns:
      A ``GradientTransformationExtraArgs`` whose ``update`` needs ``value=``.

    Example:
      >>> tx = jz.reduce_on_plateau(factor=0.5, patience=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for loss in [1.0, 1.0, 1.0]:  # an improvement, then two evaluations without
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params, value=loss)
      >>> float(state.scale), updates["w"].tolist()
      (0.5, [0.5, 0.5])
    """
    check_scalar(
        "factor", factor, low=0.0, high=1.0, low_open=True, high_open=True, schedule_ok=False
    )
    p = check_int("patience", patience, low=0)
    check_scalar("rtol", rtol, low=0.0, high=1.0, schedule_ok=False)
    check_nonneg("atol", atol, schedule_ok=False)
    if rtol == 0 and atol == 0:
        raise ValueError("Invalid rtol, atol: both 0. Expected at least one > 0.")
    cd = check_int("cooldown", cooldown, low=0)
    acc = check_int("accumulation_size", accumulation_size, low=1)
    check_nonneg("min_scale", min_scale, schedule_ok=False)
    if mode not in ("min", "max"):
        raise ValueError(f"Invalid mode: {mode!r}. Expected 'min' or 'max'.")
    sign = 1.0 if mode == "min" else -1.0

    def init_fn(params):
        dt = scalar_dtype(params)
        return ReduceOnPlateauState(
            scale=jnp.ones([], dt),
            best=jnp.asarray(jnp.inf, dt),
            plateau_count=zero_count(),
            cooldown_count=zero_count(),
            count=zero_count(),
            avg=jnp.zeros([], dt),
        )

    def evaluate(s: ReduceOnPlateauState) -> ReduceOnPlateauState:
        v = sign * s.avg  # "max" is "min" of -v, with best stored negated
        better = v < (1 - sign * rtol) * s.best - atol
        best = jnp.where(better, v, s.best)
        bad = jnp.where(better, 0, increment(s.plateau_count))
        cooling = s.cooldown_count > 0
        reduce = jnp.logical_and(~cooling, bad == p)
        scale = jnp.where(reduce, jnp.maximum(s.scale * factor, min_scale), s.scale)
        plateau = jnp.where(cooling | reduce, 0, bad)
        cool = jnp.where(cooling, s.cooldown_count - 1, jnp.where(reduce, cd, 0))
        return ReduceOnPlateauState(
            scale=scale.astype(s.scale.dtype),
            best=best,
            plateau_count=plateau.astype(jnp.int32),
            cooldown_count=cool.astype(jnp.int32),
            count=zero_count(),
            avg=jnp.zeros_like(s.avg),
        )

    def update_fn(updates, state, params=None, *, value: Any = None, **extra):
        del params, extra
        if value is None:
            raise ValueError(
                "reduce_on_plateau needs the monitored value: call "
                "`update(grads, state, params, value=loss)`."
            )
        count = increment(state.count)
        avg = (state.count * state.avg + jnp.asarray(value, state.avg.dtype)) / count
        s = state._replace(count=count, avg=avg.astype(state.avg.dtype))
        s = jax.lax.cond(count >= acc, evaluate, lambda x: x, s)
        out = jax.tree.map(lambda u: u * s.scale.astype(u.dtype), updates)
        return out, s

    return GradientTransformationExtraArgs(init_fn, update_fn)
