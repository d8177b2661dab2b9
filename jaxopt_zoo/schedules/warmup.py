"""A warm-up, then a decay: warmup-cosine, one-cycle, warmup-stable-decay, inverse square root."""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp

from jaxopt_zoo.core import check_int, check_nonneg, check_scalar
from jaxopt_zoo.schedules.decay import Schedule, _f32


def warmup_cosine(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then a
    cosine decay to ``end_value`` at step ``decay_steps`` (total length, warm-up included).

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warm-up.
      warmup_steps: length of the linear warm-up.
      decay_steps: total length, warm-up included.
      end_value: the value at ``decay_steps`` and after.
      exponent: the power of the cosine factor.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.warmup_cosine(0.0, 0.1, 10, 110)
      >>> [round(float(lr(t)), 6) for t in (0, 10, 110)]
      [0.0, 0.1, 0.0]
    """
    check_int("warmup_steps", warmup_steps, low=0)
    check_int("decay_steps", decay_steps, low=1)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"Invalid decay_steps: {decay_steps}. Expected decay_steps > "
            f"warmup_steps ({warmup_steps}); decay_steps counts the warm-up too."
        )

    def schedule(count):
        t = _f32(count)
        warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
        a = jnp.clip((t - warmup_steps) / (decay_steps - warmup_steps), 0.0, 1.0)
        cos = end_value + (peak_value - end_value) * (0.5 * (1 + jnp.cos(math.pi * a))) ** exponent
        return jnp.where(t < warmup_steps, warm, cos)

    return schedule


def one_cycle(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One-cycle (Smith & Topin 2018): cosine annealing from ``peak/div_factor`` up to
    ``peak`` over the first ``pct_start`` of the steps, then down to
    ``peak/(div_factor*final_div_factor)``.

    Args:
      transition_steps: the total number of steps.
      peak_value: the largest value.
      pct_start: the fraction of the steps spent increasing.
      div_factor: the first value is ``peak_value / div_factor``.
      final_div_factor: the last value is ``peak_value / (div_factor * final_div_factor)``.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.one_cycle(100, 0.1)
      >>> [round(float(lr(t)), 6) for t in (0, 30, 100)]
      [0.004, 0.1, 0.0]
    """
    check_int("transition_steps", transition_steps, low=1)
    check_scalar(
        "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True, schedule_ok=False
    )
    start = peak_value / div_factor
    end = start / final_div_factor
    up = float(pct_start * transition_steps)

    def cos_anneal(a, hi, lo):
        return lo + (hi - lo) * 0.5 * (1 + jnp.cos(math.pi * a))

    def schedule(count):
        t = _f32(count)
        rise = cos_anneal(jnp.clip(t / up, 0, 1), start, peak_value)
        fall = cos_anneal(jnp.clip((t - up) / (transition_steps - up), 0, 1), peak_value, end)
        return jnp.where(t < up, rise, fall)

    return schedule


_WSD_DECAYS = ("linear", "cosine", "1-sqrt", "1-square")


def wsd(
    peak_value: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    init_value: float = 0.0,
    decay_type: str = "1-sqrt",
    num_cycles: float = 0.5,
) -> Schedule:
    """Warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024).

    With ``W, S, D`` the three lengths and ``a = (t - W - S) / D``::

        t < W:           init + (peak - init) * t / W
        W <= t < W + S:  peak
        W+S <= t < W+S+D: end + (peak - end) * f(a)
        t >= W + S + D:  end

    ``f(a)`` is ``1 - a`` ("linear"), ``1 - sqrt(a)`` ("1-sqrt", the default, as
    pytorch_optimizer's ``get_wsd_schedule``), ``1 - a^2`` ("1-square") or
    ``max(0, (1 + cos(2 pi num_cycles a)) / 2)`` ("cosine").

    Equals pytorch_optimizer's ``get_wsd_schedule`` (a LambdaLR factor times ``peak``,
    ``min_lr_ratio = end / peak``) for every decay type when ``end_value = 0`` and for
    "cosine" always. For the other types with ``min_lr_ratio > 0`` that helper decays
    to 0 and then jumps up to ``min_lr_ratio`` at ``t = W + S + D`` (it ignores the floor
    during the decay): a discontinuity we take to be a bug; here the decay ends at
    ``end_value``. With "linear" it is optax's ``join_schedules`` of a linear warm-up, a
    constant and a linear decay, and torch's ``SequentialLR`` of ``LinearLR``,
    ``ConstantLR`` and ``LinearLR`` (tests/test_schedules_wsd.py).

    Args:
      peak_value: the learning rate of the stable phase, >= 0.
      warmup_steps: ``W``, the length of the linear warmup.
      stable_steps: ``S``, the length of the constant phase.
      decay_steps: ``D``, the length of the decay.
      end_value: the learning rate after the decay, >= 0.
      init_value: the learning rate at ``t = 0``, >= 0.
      decay_type: ``"linear"``, ``"cosine"``, ``"1-sqrt"`` or ``"1-square"``.
      num_cycles: the cosine's number of cycles over the decay (0.5: a half cosine).

    Returns:
      A schedule: a function of the step count.

    Example:
      >>> lr = jz.schedules.wsd(0.1, warmup_steps=10, stable_steps=80, decay_steps=16)
      >>> [round(float(lr(t)), 6) for t in (0, 5, 10, 90, 94, 106)]  # 1-sqrt: half at D/4
      [0.0, 0.05, 0.1, 0.1, 0.05, 0.0]
    """
    check_nonneg("peak_value", peak_value, schedule_ok=False)
    check_nonneg("end_value", end_value, schedule_ok=False)
    check_nonneg("init_value", init_value, schedule_ok=False)
    check_int("warmup_steps", warmup_steps, low=0)
    check_int("stable_steps", stable_steps, low=0)
    check_int("decay_steps", decay_steps, low=0)
    if decay_type not in _WSD_DECAYS:
        raise ValueError(
            f"Invalid decay_type: {decay_type!r}. Expected one of "
            f"{', '.join(map(repr, _WSD_DECAYS))}."
        )
    w, s, d = warmup_steps, stable_steps, decay_steps

    def schedule(count):
        t = _f32(count)
        warm = init_value + (peak_value - init_value) * t / max(w, 1)
        a = jnp.clip((t - w - s) / max(d, 1), 0.0, 1.0)
        if decay_type == "linear":
            f = 1 - a
        elif decay_type == "1-sqrt":
            f = 1 - jnp.sqrt(a)
        elif decay_type == "1-square":
            f = 1 - a * a
        else:
            f = jnp.maximum(0.0, 0.5 * (1 + jnp.cos(2 * math.pi * num_cycles * a)))
        dec = end_value + (peak_value - end_value) * f
        return jnp.where(
            t < w, warm, jnp.where(t < w + s, peak_value, jnp.where(t < w + s + d, dec, end_value))
        )

    return schedule


def inverse_sqrt(
    peak_value: float, warmup_steps: int, timescale: Optional[int] = None, init_value: float = 0.0
) -> Schedule:
    """Linear warm-up to ``peak_value``, then decay as one over the square root of the step
    (Vaswani et al. 2017; fairseq's ``inverse_sqrt``; Hugging Face's
    ``get_inverse_sqrt_schedule``)::

        t < W:   init + (peak - init) * t / W
        t >= W:  peak * sqrt(T / (t - W + T))        (T = timescale, default W)

    With the default ``T = W`` the decay is ``peak * sqrt(W / t)``, continuous at ``W``.
    ``W = 0`` needs a ``timescale`` (``peak * sqrt(T / (t + T))``).

    Args:
      peak_value: the learning rate at the end of the warmup, >= 0.
      warmup_steps: ``W``, the length of the linear warmup.
      timescale: ``T``, an int >= 1 (``None``: ``W``).
      init_value: the learning rate at ``t = 0``, >= 0.

    Returns:
      A schedule: a function of the step count.

    Example:
      >>> lr = jz.schedules.inverse_sqrt(0.1, warmup_steps=100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100, 400)]
      [0.0, 0.05, 0.1, 0.05]
    """
    check_nonneg("peak_value", peak_value, schedule_ok=False)
    check_nonneg("init_value", init_value, schedule_ok=False)
    check_int("warmup_steps", warmup_steps, low=0)
    ts = warmup_steps if timescale is None else check_int("timescale", timescale, low=1)
    if ts < 1:
        raise ValueError(
            "Invalid timescale: None with warmup_steps=0. Give a timescale >= 1 "
            "(the step count over which the decay halves the rate ~3 times)."
        )

    def schedule(count):
        t = _f32(count)
        warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
        dec = peak_value * jnp.sqrt(ts / jnp.maximum(t - warmup_steps + ts, 1.0))
        return jnp.where(t < warmup_steps, warm, dec)

    return schedule
