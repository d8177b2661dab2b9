"""Lookahead (Zhang et al. 2019) around any optimizer, on plain parameters."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    StepCount,
    check_int,
    check_same_structure,
    check_scalar,
    fresh_copy,
    increment,
    require_params,
    zero_count,
)


class LookaheadState(NamedTuple):
    """``inner``: the wrapped (fast) optimizer's state; ``slow``: the slow weights;
    ``count``: fast steps since the last synchronization."""

    inner: Any
    slow: Any
    count: StepCount


def lookahead(
    tx: GradientTransformation,
    sync_period: int = 5,
    slow_step_size: Scalar = 0.5,
    reset_state: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Lookahead (Zhang et al. 2019, https://arxiv.org/abs/1907.08610) around ``tx``.

    The parameters are the fast weights; the slow weights ``s`` live in the state
    (initialised to the parameters). Each step applies ``tx``; every ``sync_period``-th
    step then pulls back::

        p' = p + u                    (u from tx)
        s  = s + slow_step_size * (p' - s)
        p  = s                        (the update returned is s - p)

    exactly as PyTorch's ``Lookahead`` wrappers (pytorch_optimizer's, with
    ``alpha = slow_step_size``, ``k = sync_period``) and ``optax.lookahead`` do, but on the
    plain parameters: no ``LookaheadParams``. The slow weights between synchronizations
    are ``state.slow``.

    Args:
      tx: the fast optimizer.
      sync_period: fast steps per synchronization (``k``), an integer >= 1.
      slow_step_size: ``alpha`` in [0, 1].
      reset_state: re-initialise ``tx``'s state at each synchronization (optax's option;
        pytorch_optimizer's ``pullback_momentum="reset"`` does this to SGD's momentum
        buffer only; its ``"pullback"`` mode, which interpolates the momentum buffer, is
        specific to SGD and not offered).

    Returns:
      A ``GradientTransformationExtraArgs`` (extra ``update`` arguments go to ``tx``).

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.lookahead(jz.adam(1e-3), sync_period=5, slow_step_size=0.5)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    k = check_int("sync_period", sync_period, low=1)
    check_scalar("slow_step_size", slow_step_size, low=0.0, high=1.0, schedule_ok=False)

    def init_fn(params):
        return LookaheadState(
            inner=tx.init(params), slow=jax.tree.map(fresh_copy, params), count=zero_count()
        )

    def update_fn(updates, state, params=None, **extra):
        require_params(params, "lookahead")
        check_same_structure(updates, state.slow, "lookahead")
        if isinstance(tx, GradientTransformationExtraArgs):
            fast, inner = tx.update(updates, state.inner, params, **extra)
        else:
            fast, inner = tx.update(updates, state.inner, params)
        count = increment(state.count)
        sync = count >= k

        def pull(u, p, s):
            new_s = s + slow_step_size * ((p + u).astype(s.dtype) - s)
            return (
                jnp.where(sync, (new_s - p).astype(u.dtype), u),
                jnp.where(sync, new_s, s).astype(s.dtype),
            )

        pulled = jax.tree.map(pull, fast, params, state.slow)
        out = jax.tree.map(lambda _, x: x[0], updates, pulled)
        slow = jax.tree.map(lambda _, x: x[1], updates, pulled)
        if reset_state:
            fresh = tx.init(jax.tree.map(jnp.add, params, out))
            inner = jax.tree.map(lambda a, b: jnp.where(sync, b, a), inner, fresh)
        return out, LookaheadState(
            inner=inner, slow=slow, count=jnp.where(sync, 0, count).astype(count.dtype)
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
