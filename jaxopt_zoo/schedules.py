"""Learning-rate schedules: plain functions of the (integer) step count, usable under jit.

Each constructor validates its arguments and returns ``schedule(count) -> scalar``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Union

import jax.numpy as jnp

from jaxopt_zoo.core import check_int, check_nonneg, check_scalar

Schedule = Callable[..., jnp.ndarray]


def _f32(count):
    """The step count as a float of JAX's default precision (float64 under x64)."""
    return jnp.asarray(count, jnp.result_type(float))


def constant(value: float) -> Schedule:
    """``lr(t) = value``.

    Args:
      value: the learning rate, >= 0.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.constant(0.1)
      >>> [round(float(lr(t)), 6) for t in (0, 100)]
      [0.1, 0.1]
    """
    check_nonneg("value", value, schedule_ok=False)
    return lambda count: jnp.asarray(value, jnp.result_type(float))


def linear(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """The textbook's linear decay: ``(1 - a) * init + a * end`` with ``a = t / tau``
    clipped to [0, 1], so constant at ``end_value`` after ``tau = transition_steps``
    (Goodfellow et al. 2016, eq. 8.14). ``transition_begin`` delays the start.

    Args:
      init_value: the value at ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      transition_steps: ``tau``, >= 1.
      transition_begin: steps at ``init_value`` before the decay starts.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.linear(0.1, 0.01, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.055, 0.01]
    """
    check_nonneg("init_value", init_value, schedule_ok=False)
    check_nonneg("end_value", end_value, schedule_ok=False)
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)

    def schedule(count):
        a = jnp.clip((_f32(count) - transition_begin) / transition_steps, 0.0, 1.0)
        return (1 - a) * init_value + a * end_value

    return schedule


def polynomial(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``end + (init - end) * (1 - a)^power``, ``a = clip((t - begin) / steps, 0, 1)``.

    Args:
      init_value: the value at ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      power: the exponent, > 0.
      transition_steps: length of the decay, >= 1.
      transition_begin: steps at ``init_value`` before the decay starts.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.polynomial(0.1, 0.0, 2.0, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.025, 0.0]
    """
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)
    check_scalar("power", power, low=0.0, low_open=True, schedule_ok=False)

    def schedule(count):
        a = jnp.clip((_f32(count) - transition_begin) / transition_steps, 0.0, 1.0)
        return end_value + (init_value - end_value) * (1 - a) ** power

    return schedule


def exponential(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[float] = None,
) -> Schedule:
    """``init * decay_rate^((t - begin) / steps)`` (floored exponent with ``staircase``),
    bounded by ``end_value`` when given.

    Args:
      init_value: the value at ``transition_begin``.
      transition_steps: the number of steps per factor of ``decay_rate``, >= 1.
      decay_rate: the factor per ``transition_steps`` (< 1 decays, > 1 grows).
      transition_begin: steps at ``init_value`` before the decay starts.
      staircase: decay in whole steps of ``transition_steps``.
      end_value: a lower bound when decaying (an upper bound when growing).

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.exponential(0.1, 50, 0.5)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.05, 0.025]
    """
    check_int("transition_steps", transition_steps, low=1)
    check_int("transition_begin", transition_begin, low=0)
    check_scalar("decay_rate", decay_rate, low=0.0, low_open=True, schedule_ok=False)

    def schedule(count):
        p = jnp.maximum(_f32(count) - transition_begin, 0.0) / transition_steps
        if staircase:
            p = jnp.floor(p)
        v = init_value * jnp.asarray(decay_rate, jnp.result_type(float)) ** p
        if end_value is not None:
            v = jnp.maximum(v, end_value) if decay_rate < 1 else jnp.minimum(v, end_value)
        return v

    return schedule


def piecewise_constant(init_value: float, boundaries_and_scales: Dict[int, float]) -> Schedule:
    """Start at ``init_value``; at each boundary step ``b`` multiply by its scale.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``; from ``step`` on the value is multiplied
        by ``scale``.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.piecewise_constant(0.1, {50: 0.1, 100: 0.1})
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.01, 0.001]
    """
    check_nonneg("init_value", init_value, schedule_ok=False)
    items = sorted((int(b), float(s)) for b, s in (boundaries_and_scales or {}).items())
    for b, s in items:
        check_int("boundary", b, low=0)
        check_nonneg("scale", s, schedule_ok=False)

    def schedule(count):
        v = jnp.asarray(init_value, jnp.result_type(float))
        for b, s in items:
            v = jnp.where(count >= b, v * s, v)
        return v

    return schedule


def cosine(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay (Loshchilov & Hutter 2017) from ``init_value`` to ``alpha * init_value``
    over ``decay_steps``, then constant.

    ``lr(t) = init_value * ((1 - alpha) * c^exponent + alpha)`` with
    ``c = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2``.

    Args:
      init_value: the value at step 0.
      decay_steps: length of the decay, >= 1.
      alpha: the final value as a fraction of ``init_value``.
      exponent: the power of the cosine factor.

    Returns:
      ``schedule(count) -> scalar``, jit-able.

    Example:
      >>> lr = jz.schedules.cosine(0.1, 100)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100)]
      [0.1, 0.05, 0.0]
    """
    check_int("decay_steps", decay_steps, low=1)
    check_scalar("alpha", alpha, low=0.0, high=1.0, schedule_ok=False)

    def schedule(count):
        a = jnp.minimum(_f32(count), decay_steps) / decay_steps
        c = (0.5 * (1 + jnp.cos(math.pi * a))) ** exponent
        return init_value * ((1 - alpha) * c + alpha)

    return schedule


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


# --------------------------------------------------------------------------- #
# Warmup-stable-decay and inverse square root
# --------------------------------------------------------------------------- #

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
