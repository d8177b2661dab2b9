"""Jitted train steps for classifiers.

Every step takes a per-example weight vector so that a short last batch can be padded to the
full batch size: padded rows get weight 0 and the loss is the weighted mean, which is exactly
the mean over the real rows (same value, same gradients). One batch shape means one compiled
step per run.

The epoch loop (:mod:`jaxopt_zoo.train.loop`) uses :func:`make_indexed_train_step`, which
keeps the whole data set on the device and receives only the batch number, so no images
cross from host to device during training. The metrics the steps return and the evaluation
of a data set are in :mod:`jaxopt_zoo.train.metrics` (re-exported here).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxopt_zoo.fast import is_fused, update_and_apply
from jaxopt_zoo.train.metrics import (
    Metrics,
    batch_metrics,
    evaluate,
    make_eval_fn,
    weighted_cross_entropy,
)
from jaxopt_zoo.train.metrics import memoized as memoized  # for older importers

__all__ = [
    "Metrics",
    "StepCheck",
    "StepResult",
    "batch_metrics",
    "evaluate",
    "leaves_finite",
    "make_eval_fn",
    "make_indexed_train_step",
    "make_train_step",
    "train_step",
    "weighted_cross_entropy",
]


def loss_and_grads(
    model: nn.Module,
    params: Any,
    images: jax.Array,
    labels: jax.Array,
    weights: Optional[jax.Array],
    dropout_key: jax.Array,
):
    """``((mean loss, Metrics), grads)`` of the weighted cross-entropy on one batch."""
    return jax.value_and_grad(_loss_fn(model, images, labels, weights, dropout_key), has_aux=True)(
        params
    )


def _loss_fn(
    model: nn.Module,
    images: jax.Array,
    labels: jax.Array,
    weights: Optional[jax.Array],
    dropout_key: jax.Array,
) -> Callable:
    """``params -> (mean loss, Metrics)`` on one batch with one dropout key."""

    def loss_fn(p):
        logits = model.apply({"params": p}, images, train=True, rngs={"dropout": dropout_key})
        m = batch_metrics(logits, labels, weights)  # type: ignore[arg-type]
        return m.loss / jnp.maximum(m.count, 1.0), m

    return loss_fn


def gather_batch(
    images: jax.Array, labels: jax.Array, order: jax.Array, batch: Any, batch_size: int
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Rows ``order[batch*B : batch*B + B]`` of the device-resident data set and their
    weights; positions past the end repeat the last example with weight 0."""
    n = order.shape[0]
    pos = batch * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    idx = order[jnp.minimum(pos, n - 1)]
    return images[idx], labels[idx], (pos < n).astype(jnp.float32)


class StepCheck(NamedTuple):
    """What a guarded step found (``guard=True``): ``ok`` is False when the loss, a gradient
    or an updated parameter is not finite; the per-leaf flags say which."""

    ok: jax.Array  # bool scalar
    loss: jax.Array
    grads_finite: jax.Array  # one bool per parameter leaf
    params_finite: jax.Array  # one bool per parameter leaf


class StepResult(NamedTuple):
    """The outcome of :func:`train_step`.

    ``loss`` and ``accuracy`` are the batch's weighted means under the parameters *before*
    the update, ``metrics`` their sums; ``check`` is a :class:`StepCheck` for a guarded step
    (whose ``params``/``opt_state`` are then the old ones when ``check.ok`` is False), else
    None.
    """

    params: Any
    opt_state: Any
    loss: jax.Array
    accuracy: jax.Array
    metrics: Metrics
    check: Optional[StepCheck]


def leaves_finite(tree: Any) -> jax.Array:
    """One bool per leaf of ``tree``: all its elements finite."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.ones((0,), bool)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    images: jax.Array,
    labels: jax.Array,
    weights: Optional[jax.Array],
    dropout_key: jax.Array,
    *,
    guard: bool = False,
) -> StepResult:
    """One optimizer step on a (possibly padded) batch; pure, not jitted. Every train step
    of the library (:func:`make_train_step`, :func:`make_indexed_train_step`, the epoch loop)
    is this function.

    - The update goes through :func:`jaxopt_zoo.fast.update_and_apply`: a ``fuse``d
      optimizer on ``FlatParams`` takes the one-pass native kernel, anything else
      ``tx.update`` + ``optax.apply_updates``.
    - An optimizer that takes extra arguments (a ``GradientTransformationExtraArgs``, such
      as our ``chain``) also receives ``value=`` (the batch loss at ``params``) and
      ``grad_fn=`` (``params -> gradient`` of the same loss on the same batch with the same
      dropout key), which SAM's second gradient and loss-driven schedules
      (reduce-on-plateau) read; transformations that do not use them ignore them, and XLA
      drops the unused computation.
    - ``guard=True``: the step also checks that the loss, the gradients and the updated
      parameters are finite, and when they are not returns the old ``params`` and
      ``opt_state`` (``result.check.ok`` False; see :class:`StepCheck`).

    Args:
      model: a Linen classifier, ``model.apply({"params": p}, x, train=True, rngs=...)``
        returning logits.
      tx: the optimizer.
      params, opt_state: the model's parameters and ``tx``'s state.
      images, labels: the batch's inputs and its ``(batch,)`` integer labels.
      weights: ``(batch,)`` per-example weights (0 for padded rows), or None for all 1.
      dropout_key: the PRNG key of the model's ``"dropout"`` stream.
      guard: check the step for non-finite values (see above).

    Returns:
      A :class:`StepResult`.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> model, tx = MLP(hidden=(8,)), jz.adam(1e-2)
      >>> x, y = jnp.ones((4, 28, 28, 1)), jnp.array([0, 1, 2, 3])
      >>> params = model.init(jax.random.PRNGKey(0), x)["params"]
      >>> step = jax.jit(functools.partial(train_step, model, tx, guard=True))
      >>> r = step(params, tx.init(params), x, y, None, jax.random.PRNGKey(1))
      >>> r.loss.shape, bool(r.check.ok)
      ((), True)
    """
    loss_fn = _loss_fn(model, images, labels, weights, dropout_key)
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    extra = {}
    if isinstance(tx, optax.GradientTransformationExtraArgs) and not is_fused(tx):
        extra = {"value": loss, "grad_fn": lambda p: jax.grad(loss_fn, has_aux=True)(p)[0]}
    new_params, new_opt_state = update_and_apply(tx, grads, opt_state, params, **extra)
    accuracy = m.correct / jnp.maximum(m.count, 1.0)
    if not guard:
        return StepResult(new_params, new_opt_state, loss, accuracy, m, None)
    grads_finite, params_finite = leaves_finite(grads), leaves_finite(new_params)
    ok = jnp.isfinite(loss) & jnp.all(grads_finite) & jnp.all(params_finite)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    return StepResult(
        keep(new_params, params),
        keep(new_opt_state, opt_state),
        loss,
        accuracy,
        m,
        StepCheck(ok, loss, grads_finite, params_finite),
    )


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, *, guard: bool = False
) -> Callable:
    """Jitted ``step(params, opt_state, images, labels, weights, dropout_key)``.

    Returns ``(params, opt_state, loss, accuracy)``, and a :class:`StepCheck` fifth when
    ``guard=True`` (see :func:`train_step`). ``params`` and ``opt_state`` are donated: do
    not use the arrays you passed in after the call. Pass ``weights=jnp.ones(batch)`` for a
    full batch, or pad a short batch and give the padded rows weight 0 to keep a single
    compiled shape.

    Args:
      model: a Linen classifier (see :func:`train_step`).
      tx: the optimizer.
      guard: check every step for non-finite values (see :func:`train_step`).

    Returns:
      The jitted ``step`` function.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> model, tx = MLP(hidden=(8,)), jz.adam(1e-2)
      >>> x, y = jnp.ones((4, 28, 28, 1)), jnp.array([0, 1, 2, 3])
      >>> params = model.init(jax.random.PRNGKey(0), x)["params"]
      >>> step = make_train_step(model, tx)
      >>> params, opt_state, loss, accuracy = step(params, tx.init(params), x, y,
      ...                                          jnp.ones(4), jax.random.PRNGKey(1))
      >>> loss.shape, accuracy.shape
      ((), ())
    """

    def step(params, opt_state, images, labels, weights, dropout_key):
        r = train_step(
            model, tx, params, opt_state, images, labels, weights, dropout_key, guard=guard
        )
        out = (r.params, r.opt_state, r.loss, r.accuracy)
        return out + (r.check,) if guard else out

    return jax.jit(step, donate_argnums=(0, 1))


def make_indexed_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    *,
    guard: bool = False,
    layout: Any = None,
) -> Callable:
    """Jitted step that reads its batch from a device-resident data set.

    ``step(params, opt_state, totals, images, labels, order, batch, step, dropout_key)
    -> (params, opt_state, totals)``, with a :class:`StepCheck` fourth when ``guard=True``
    (a step that fails the check leaves ``totals`` unchanged too).

    - ``images, labels``: the whole training set, already on the device (not donated).
    - ``order``: int32 permutation of ``range(N)`` for this epoch (on the device).
    - ``batch``: the batch number within the epoch; rows ``order[batch*B : batch*B + B]``,
      the positions past ``N`` are padded (repeating the last example) with weight 0.
    - ``step``: the global step; the dropout key is ``fold_in(dropout_key, step)``, so the
      randomness of a step depends only on (key, step), which makes mid-epoch resume exact.
    - ``totals``: running :class:`Metrics` of the epoch; this batch's sums are added.

    ``params``, ``opt_state`` and ``totals`` are donated (give ``totals`` three distinct
    buffers). Python ints for ``batch`` and ``step`` do not cause recompilation.

    Args:
      model: a Linen classifier (see :func:`train_step`).
      tx: the optimizer.
      batch_size: the rows per step ``B``.
      guard: check every step for non-finite values (see :func:`train_step`).
      layout: a :class:`~jaxopt_zoo.train.distributed.Layout` for data parallelism: the
        gathered batch is split over its mesh and the outputs keep its shardings (pass
        arguments placed on it); None for one device.

    Returns:
      The jitted ``step`` function.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> model, tx = MLP(hidden=(8,)), jz.adam(1e-2)
      >>> images, labels = jnp.ones((6, 28, 28, 1)), jnp.arange(6)
      >>> params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
      >>> step = make_indexed_train_step(model, tx, batch_size=4)
      >>> opt_state, totals = tx.init(params), Metrics(*(jnp.zeros(()) for _ in range(3)))
      >>> order, key = jnp.arange(6, dtype=jnp.int32), jax.random.PRNGKey(1)
      >>> for b in range(2):  # 4 rows, then 2 rows and 2 padded ones
      ...     params, opt_state, totals = step(params, opt_state, totals, images, labels,
      ...                                      order, b, b, key)
      >>> float(totals.count)
      6.0
    """

    def step(params, opt_state, totals, images, labels, order, batch, step, dropout_key):
        x, y, weights = gather_batch(images, labels, order, batch, batch_size)
        if layout is not None:  # data parallel: each device computes its rows of the batch
            x, y, weights = jax.lax.with_sharding_constraint((x, y, weights), layout.batch)
        key = jax.random.fold_in(dropout_key, step)
        r = train_step(model, tx, params, opt_state, x, y, weights, key, guard=guard)
        return accumulate(totals, r, guard)

    return jit_loop_step(step, guard, layout)


def jit_loop_step(step: Callable, guard: bool, layout: Any = None) -> Callable:
    """``jax.jit`` of a loop step ``(params, opt_state, totals, ...) -> (params, opt_state,
    totals[, check])``: the first three donated; with a ``layout`` the outputs keep its
    shardings (a ZeRO-1 state stays split)."""
    if layout is not None:
        return jax.jit(
            step, donate_argnums=(0, 1, 2), out_shardings=layout.step_out_shardings(guard)
        )
    return jax.jit(step, donate_argnums=(0, 1, 2))


def accumulate(totals: Metrics, r: StepResult, guard: bool) -> Tuple[Any, ...]:
    """``(params, opt_state, totals + r.metrics)`` of a step, and ``r.check`` fourth when
    ``guard`` (a step that failed the check leaves ``totals`` unchanged)."""
    new_totals = Metrics(*(t + v for t, v in zip(totals, r.metrics)))
    if not guard:
        return r.params, r.opt_state, new_totals
    ok = r.check.ok if r.check is not None else True
    new_totals = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_totals, totals)
    return r.params, r.opt_state, new_totals, r.check
