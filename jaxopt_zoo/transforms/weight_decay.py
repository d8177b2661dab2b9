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
    spec = BlockSpec(
        "add_decayed_weights",
        elementwise=True,
        stage="decay",
        scalars={"weight_decay": weight_decay},
    )
    tx = add_scaled_params(weight_decay, "add_decayed_weights", spec)
    return tx if mask is None else masked(tx, mask)


def add_scaled_params(coef: ScalarOrSchedule, name: str, spec: BlockSpec) -> GradientTransformation:
    """``u + coef * p`` for a coefficient of either sign (a number or a schedule of the
    step): the arithmetic of :func:`add_decayed_weights`, which checks ``coef >= 0`` first;
    Fromage adds a negative multiple.

    Args:
      coef: the coefficient, of either sign (a number or a schedule of the step count).
      name: the block's name in error messages.
      spec: the ``BlockSpec`` that describes the block to ``fuse``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> from jaxopt_zoo.fast.spec import BlockSpec
      >>> from jaxopt_zoo.transforms.weight_decay import add_scaled_params
      >>> tx = add_scaled_params(-0.5, "shrink", BlockSpec("shrink", elementwise=True))
      >>> p = {"w": jnp.ones(2)}
      >>> tx.update({"w": jnp.ones(2)}, tx.init(p), p)[0]["w"].tolist()
      [0.5, 0.5]
    """
    scheduled = callable(coef)

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params, name)
        check_same_structure(updates, params, name)
        c = resolve(coef, state.count) if scheduled else coef
        out = jax.tree.map(
            lambda u, p: (u + jnp.asarray(c).astype(u.dtype) * p.astype(u.dtype)).astype(u.dtype),
            updates,
            params,
        )
        new_state = ScaleByScheduleState(count=increment(state.count)) if scheduled else state
        return out, new_state

    # A schedule is called with the block's count, as resolve() does in update_fn.
    return describe(GradientTransformation(init_fn, update_fn), spec)


#: Coupled L2 regularization: ``add_decayed_weights`` placed before the scaler.
add_l2_regularization = add_decayed_weights
