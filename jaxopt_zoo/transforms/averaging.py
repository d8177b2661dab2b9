"""Weight averaging around any optimizer: SWA (equal average) and an EMA of the parameters.

Both wrappers keep the average of the parameters *after* each update, ``params + updates``
(what ``optax.apply_updates`` returns), in their state, so checkpoints of the optimizer state
keep it; ``averaged_params(state)`` reads it back. Wrap the whole optimizer: a block placed
after the wrapper in a chain would change the update after the average has been taken.

Averages are kept in the parameters' dtype, except that float16 and bfloat16 parameters are
averaged in float32: a half-precision average stops moving once ``(1 - decay) * p`` or
``p / n`` drops below its rounding (``decay = 0.999`` in bfloat16 never moves at all).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    StepCount,
    check_int,
    check_same_structure,
    check_scalar,
    fresh_copy,
    increment,
    require_params,
    zero_count,
)


class SwaState(NamedTuple):
    """State of :func:`swa`.

    ``count`` is the number of updates applied so far; ``n_averaged`` the number of parameter
    sets in the average (0: ``average`` still holds the parameters given to ``init``);
    ``average`` the equal average of those sets, a tree like the parameters (float32 for
    half-precision leaves); ``inner_state`` the wrapped optimizer's state.
    """

    count: StepCount  # updates applied so far
    n_averaged: jax.Array  # parameter sets in the average (0: ``average`` holds the init)
    average: Any
    inner_state: Any


class EmaWeightsState(NamedTuple):
    """State of :func:`ema_weights`.

    ``count`` is the number of updates applied so far; ``average`` the exponential moving
    average of the parameters, a tree like them (float32 for half-precision leaves);
    ``inner_state`` the wrapped optimizer's state.
    """

    count: StepCount  # updates applied so far
    average: Any
    inner_state: Any


def _avg_dtype(dtype: Any) -> Any:
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact) and dtype.itemsize >= 4:
        return dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype
    return jnp.dtype(jnp.float32)  # float16, bfloat16 (and integer leaves)


def _init_average(params: Any) -> Any:
    return jax.tree.map(lambda p: fresh_copy(p, _avg_dtype(jnp.result_type(p))), params)


def _inner_update(base, updates, state, params, extra):
    if isinstance(base, GradientTransformationExtraArgs):
        return base.update(updates, state, params, **extra)
    return base.update(updates, state, params)


def _new_params(params: Any, updates: Any) -> Any:
    """``optax.apply_updates``: ``p + u`` in ``p``'s dtype."""
    return jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(jnp.result_type(p)), params, updates)


def swa(
    base: GradientTransformation, start_step: int = 0, every_steps: int = 1
) -> GradientTransformationExtraArgs:
    """Stochastic Weight Averaging (Izmailov et al. 2018) of the parameters ``base`` visits.

    With ``w_n = w_{n-1} + u_n`` the parameters after the ``n``-th update (``n = 1, 2, ...``;
    ``u_n`` the update ``base`` returns, which this wrapper returns unchanged)::

        w_n enters the average  iff  n >= start_step and (n - start_step) % every_steps == 0
        a <- a + (w_n - a) / (k + 1),   k <- k + 1        (k = n_averaged; the first copies)

    so ``a`` is the equal average of the ``k`` parameter sets taken so far, as
    ``torch.optim.swa_utils.AveragedModel`` with its default average computes when
    ``update_parameters`` is called after the same optimizer steps. Before the first one
    the average holds the parameters given to ``init`` (as AveragedModel's copy of the
    model does) and ``n_averaged`` is 0.

    Args:
      base: the optimizer (any ``GradientTransformation``; extra ``update`` arguments such
        as SAM's ``grad_fn`` are passed on).
      start_step: the number of the first update whose result is averaged (0 and 1 both
        mean from the first update on). To average at the end of every epoch from epoch
        ``E`` (0-based) on with ``S`` steps an epoch: ``start_step=(E + 1) * S,
        every_steps=S``.
      every_steps: average every ``every_steps``-th update from ``start_step`` on.

    Returns:
      A ``GradientTransformationExtraArgs`` with state ``SwaState``; read the average with
      ``averaged_params(state)``. Usually paired with ``schedules.swa_lr``.

    Example:
      >>> tx = jz.swa(jz.sgd(0.1), start_step=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for _ in range(3):  # w: 0.9, 0.8, 0.7; the last two are averaged
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> int(state.n_averaged), round(float(jz.averaged_params(state)["w"][0]), 4)
      (2, 0.75)
    """
    check_int("start_step", start_step, low=0)
    check_int("every_steps", every_steps, low=1)

    def init_fn(params):
        return SwaState(
            count=zero_count(),
            n_averaged=zero_count(),
            average=_init_average(params),
            inner_state=base.init(params),
        )

    def update_fn(updates, state, params=None, **extra):
        require_params(params, "swa")
        out, inner = _inner_update(base, updates, state.inner_state, params, extra)
        check_same_structure(out, state.average, "swa")
        count = increment(state.count)
        take = (count >= start_step) & ((count - start_step) % every_steps == 0)
        k = state.n_averaged

        def leaf(a, w):
            w = w.astype(a.dtype)
            new = a + (w - a) / (k + 1).astype(a.real.dtype)
            return jnp.where(take, jnp.where(k == 0, w, new), a).astype(a.dtype)

        average = jax.tree.map(leaf, state.average, _new_params(params, out))
        n = jnp.where(take, increment(k), k).astype(k.dtype)
        return out, SwaState(count=count, n_averaged=n, average=average, inner_state=inner)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def ema_weights(
    base: GradientTransformation,
    decay: Any,
    *,
    copy_first: bool = True,
    overwrite_every: Optional[int] = None,
) -> GradientTransformationExtraArgs:
    """An exponential moving average of the parameters (Polyak averaging with exponential
    weights), around ``base``.

    With ``w_n`` the parameters after the ``n``-th update (``n = 1, 2, ...``)::

        a_1 = w_1                                  (copy_first=True)
        a_n = decay * a_{n-1} + (1 - decay) * w_n  (n >= 2; every n when copy_first=False,
                                                    from a_0 = the parameters given to init)

    ``copy_first=True`` is ``torch.optim.swa_utils.AveragedModel`` with
    ``get_ema_multi_avg_fn(decay)`` (updated after every step) and Keras' ``use_ema`` (its
    first step uses momentum 0). ``copy_first=False`` is the textbook EMA started from the
    initial parameters.

    ``overwrite_every=m`` is Keras' ``ema_overwrite_frequency``: after every ``m``-th update
    (``n % m == 0``) the parameters are replaced by the new average (the returned update is
    ``a_n - w_{n-1}`` instead of ``base``'s). ``None``: never.

    Args:
      base: the optimizer (any ``GradientTransformation``).
      decay: the weight of the old average, in [0, 1] (1 freezes it); a number or an array.
      copy_first: start from the first updated parameters instead of the initial ones.
      overwrite_every: an integer >= 1, or ``None``.

    Returns:
      A ``GradientTransformationExtraArgs`` with state ``EmaWeightsState``; read the average
      with ``averaged_params(state)``.

    Example:
      >>> tx = jz.ema_weights(jz.sgd(0.1), decay=0.5)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for _ in range(2):  # w: 0.9, 0.8; a: 0.9, then 0.5 * 0.9 + 0.5 * 0.8
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(float(jz.averaged_params(state)["w"][0]), 4)
      0.85
    """
    check_scalar("decay", decay, low=0.0, high=1.0, schedule_ok=False)
    if overwrite_every is not None:
        check_int("overwrite_every", overwrite_every, low=1)

    def init_fn(params):
        return EmaWeightsState(
            count=zero_count(), average=_init_average(params), inner_state=base.init(params)
        )

    def update_fn(updates, state, params=None, **extra):
        require_params(params, "ema_weights")
        out, inner = _inner_update(base, updates, state.inner_state, params, extra)
        check_same_structure(out, state.average, "ema_weights")
        first = state.count == 0
        count = increment(state.count)

        def leaf(a, w):
            w = w.astype(a.dtype)
            d = jnp.asarray(decay).astype(a.real.dtype)
            if copy_first:
                d = jnp.where(first, jnp.zeros_like(d), d)
            return (d * a + (1 - d) * w).astype(a.dtype)

        average = jax.tree.map(leaf, state.average, _new_params(params, out))
        if overwrite_every is not None:
            now = count % overwrite_every == 0
            out = jax.tree.map(
                lambda u, a, p: jnp.where(now, (a.astype(p.dtype) - p).astype(u.dtype), u),
                out,
                average,
                params,
            )
        return out, EmaWeightsState(count=count, average=average, inner_state=inner)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _find(state: Any) -> list:
    found: list = []

    def visit(s):
        if isinstance(s, (SwaState, EmaWeightsState)):
            found.append(s)
            return
        if isinstance(s, dict):
            for v in s.values():
                visit(v)
        elif isinstance(s, (tuple, list)):
            for v in s:
                visit(v)

    visit(state)
    return found


def find_average(state: Any) -> Optional[Any]:
    """The outermost ``SwaState`` or ``EmaWeightsState`` in ``state`` (see
    :func:`averaged_params` for where it may sit), or None when there is none."""
    found = _find(state)
    return found[0] if found else None


def average_started(avg_state: Any) -> jax.Array:
    """Whether the average in ``avg_state`` (from :func:`find_average`) holds any updated
    parameters yet: SWA after its first averaged step, the EMA after its first update."""
    if isinstance(avg_state, SwaState):
        return avg_state.n_averaged > 0
    if isinstance(avg_state, EmaWeightsState):
        return avg_state.count > 0
    raise TypeError(
        f"average_started: expected a SwaState or EmaWeightsState, got {type(avg_state).__name__}."
    )


def averaged_params(state: Any, like: Any = None) -> Any:
    """The averaged parameters kept by ``swa`` or ``ema_weights``, wherever the wrapper sits
    in ``state`` (a chain's tuple, ``skip_not_finite``, ``sam``, ``masked`` or any nesting of
    NamedTuples, tuples, lists and dicts); the outermost one if there are several.

    The leaves have the averaging dtype (float32 for half-precision parameters); pass
    ``like=params`` to cast them to the parameters' dtypes.

    Args:
      state: an optimizer state that contains a ``SwaState`` or ``EmaWeightsState``.
      like: optional tree like the parameters, whose leaf dtypes the result takes.

    Returns:
      The averaged parameters, a tree like the parameters.

    Raises:
      ValueError: when the state holds no average.

    Example:
      >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
      >>> state = jz.ema_weights(jz.sgd(0.1), decay=0.9).init(params)
      >>> jz.averaged_params(state)["w"].dtype
      dtype('float32')
      >>> jz.averaged_params(state, like=params)["w"].dtype
      dtype(bfloat16)
    """
    found = _find(state)
    if not found:
        raise ValueError(
            "averaged_params: this optimizer state holds no averaged parameters. Wrap the "
            "optimizer with jaxopt_zoo.swa(...) or jaxopt_zoo.ema_weights(...) and pass the "
            f"state it returns. Got a state of type {type(state).__name__}."
        )
    average = found[0].average
    if like is not None:
        average = jax.tree.map(lambda a, p: a.astype(jnp.result_type(p)), average, like)
    return average
