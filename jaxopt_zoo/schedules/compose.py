"""Schedules made of others: restarted (SGDR), joined, or handed over to SWA's rate."""

from __future__ import annotations

import math
from typing import Sequence, Union

import jax.numpy as jnp

from jaxopt_zoo.core import check_int, check_nonneg
from jaxopt_zoo.schedules.decay import Schedule, _f32


def sgdr(init_value: float, first_period: int, t_mult: int = 1, eta_min: float = 0.0) -> Schedule:
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017): periods of
    ``first_period * t_mult^i`` steps, each a cosine from ``init_value`` to ``eta_min``.
    The same as ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.

    Args:
      init_value: the value at the start of each period.
      first_period: length of the first period, >= 1.
      t_mult: each period is ``t_mult`` times longer than the one before (>= 1).
      eta_min: the value at the end of each period.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.sgdr(0.1, 50)
      >>> [round(float(lr(t)), 6) for t in (0, 25, 50)]
      [0.1, 0.05, 0.1]
    """
    check_int("first_period", first_period, low=1)
    check_int("t_mult", t_mult, low=1)

    def schedule(count):
        t = _f32(count)
        if t_mult == 1:
            t_cur = jnp.mod(t, first_period)
            period = jnp.asarray(first_period, t.dtype)
        else:
            i = jnp.floor(jnp.log(t / first_period * (t_mult - 1) + 1) / math.log(t_mult))
            start = first_period * (t_mult**i - 1) / (t_mult - 1)
            t_cur, period = t - start, first_period * t_mult**i
        return eta_min + (init_value - eta_min) * 0.5 * (1 + jnp.cos(math.pi * t_cur / period))

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` from ``boundaries[i-1]`` on, each seeing a count that restarts at 0.

    Args:
      schedules: ``n`` schedules.
      boundaries: ``n - 1`` increasing steps where the next schedule takes over.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.join(
      ...     [jz.schedules.linear(0.0, 0.1, 10), jz.schedules.cosine(0.1, 90)], [10])
      >>> [round(float(lr(t)), 6) for t in (0, 10, 100)]
      [0.0, 0.1, 0.0]
    """
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join: {len(schedules)} schedules need {len(schedules) - 1} "
            f"boundaries, got {len(boundaries)}."
        )

    def schedule(count):
        out = schedules[0](count)
        for b, s in zip(boundaries, schedules[1:]):
            out = jnp.where(count >= b, s(count - b), out)
        return out

    return schedule


def swa_lr(
    init_value: Union[float, Schedule],
    swa_lr: float,
    anneal_steps: int = 10,
    anneal_strategy: str = "cos",
    start_step: int = 0,
) -> Schedule:
    """PyTorch's ``torch.optim.swa_utils.SWALR``: anneal to the SWA learning rate, then hold.

    With ``k = t - start_step`` the number of SWALR steps taken, ``A = anneal_steps`` and
    ``L`` the learning rate when SWALR takes over (``init_value``, or ``init_value(start_step)``
    when it is a schedule)::

        lr(t) = init_value(t)                                   t < start_step
        lr(t) = swa_lr * alpha_k + L * (1 - alpha_k)            t >= start_step
        alpha_k = f(min(1, k / max(1, A)))   (A = 0: alpha_k = 1, the first value is swa_lr)
        f(x) = (1 - cos(pi x)) / 2 ("cos")   or   f(x) = x ("linear")

    Torch computes this recursively: each step it recovers ``L`` from the optimizer's
    current lr as ``(lr - alpha_{k-1} swa_lr) / (1 - alpha_{k-1})`` and recombines; when
    nothing else changes the lr after SWALR takes over, that is the closed form above (it
    agrees to rounding, tested). ``lr(start_step + k)`` is the lr after SWALR's constructor
    (``k = 0``) and ``k`` calls of its ``step()``; in torch's recipe, where a schedule runs
    until SWALR's first ``step()``, that is ``start_step`` = the count at that ``step()`` minus
    one, and ``init_value`` the earlier schedule (the two differ only for ``A = 0`` at
    ``k = 0``, where torch's constructor value is overwritten by the earlier schedule).

    Args:
      init_value: the learning rate before SWA: a number or a schedule.
      swa_lr: the learning rate to anneal to and hold, >= 0.
      anneal_steps: the number of steps of the annealing, >= 0 (torch's ``anneal_epochs``:
        its unit is whatever one ``step()`` is; here one unit of ``t``).
      anneal_strategy: ``"cos"`` or ``"linear"``.
      start_step: the step count at which SWALR takes over.

    Returns:
      A schedule: a function of the step count.

    Example:
      >>> lr = jz.schedules.swa_lr(0.1, 0.01, anneal_steps=4, start_step=10)
      >>> [round(float(lr(t)), 6) for t in (0, 10, 12, 14, 100)]
      [0.1, 0.1, 0.055, 0.01, 0.01]
    """
    check_nonneg("swa_lr", swa_lr, schedule_ok=False)
    check_int("anneal_steps", anneal_steps, low=0)
    check_int("start_step", start_step, low=0)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"Invalid anneal_strategy: {anneal_strategy!r}. Expected 'cos' or "
            "'linear' (as torch's SWALR)."
        )
    if not callable(init_value):
        check_nonneg("init_value", init_value, schedule_ok=False)

    def before(count):
        if callable(init_value):
            return jnp.asarray(init_value(count), jnp.result_type(float))
        return jnp.asarray(init_value, jnp.result_type(float))

    def schedule(count):
        k = _f32(count) - start_step
        if anneal_steps == 0:
            alpha = jnp.where(k >= 0, 1.0, 0.0)
        else:
            x = jnp.clip(k / anneal_steps, 0.0, 1.0)
            alpha = (1 - jnp.cos(math.pi * x)) / 2 if anneal_strategy == "cos" else x
        start = before(jnp.asarray(start_step))
        annealed = swa_lr * alpha + start * (1 - alpha)
        return jnp.where(k >= 0, annealed, before(count))

    return schedule
