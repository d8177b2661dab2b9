"""Weight decay: ``u <- u + weight_decay * params``, optionally masked.

Where it sits in a chain decides what it is: before an adaptive scaler it is coupled L2
regularization (PyTorch's ``Adam(weight_decay=...)``); after it, decoupled weight decay
(AdamW, Loshchilov & Hutter 2019).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    MaskOrFn,
    ScalarOrSchedule,
    check_nonneg,
    check_same_structure,
    increment,
    require_params,
    resolve,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.learning_rate import ScaleByScheduleState
from jaxopt_zoo.transforms.masking import masked


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: MaskOrFn = None
) -> GradientTransformation:
    """Add ``weight_decay * params`` to the updates (a schedule of the step is allowed).

    ``mask``: a tree of booleans (or a function of the params returning one) choosing
    which parameters decay, e.g. ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``.

    Args:
      weight_decay: the rate (a number or a schedule of the step count).
      mask: which parameters decay: a tree of booleans or a function of the params returning
        one (None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.add_decayed_weights(1e-4), jz.scale_by_learning_rate(1e-2))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    check_nonneg("weight_decay", weight_decay)
    scheduled = callable(weight_decay)

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params, "add_decayed_weights")
        check_same_structure(updates, params, "add_decayed_weights")
        wd = resolve(weight_decay, state.count) if scheduled else weight_decay
        out = jax.tree.map(
            lambda u, p: (u + jnp.asarray(wd).astype(u.dtype) * p.astype(u.dtype)).astype(u.dtype),
            updates,
            params,
        )
        new_state = ScaleByScheduleState(count=increment(state.count)) if scheduled else state
        return out, new_state

    # A schedule is called with the block's count, as resolve() does in update_fn.
    tx = describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec(
            "add_decayed_weights",
            elementwise=True,
            stage="decay",
            scalars={"weight_decay": weight_decay},
        ),
    )
    return tx if mask is None else masked(tx, mask)


#: Coupled L2 regularization: ``add_decayed_weights`` placed before the scaler.
add_l2_regularization = add_decayed_weights
