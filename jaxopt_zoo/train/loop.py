"""The epoch loop: ``train_and_evaluate`` and its resumable ``LoopState``.

Everything random is a pure function of the seed and a counter, so any point of a run can be
reproduced from a :class:`LoopState`:

- initial parameters: ``fold_in(rng, 0)``;
- the example order of epoch ``e``: ``permutation(fold_in(fold_in(rng, 1), e), N)``;
- the dropout key of global step ``s``: ``fold_in(fold_in(rng, 2), s)``.

where ``rng = PRNGKey(config.seed)``. Restoring a state saved after batch ``k`` of epoch
``e`` and calling ``train_and_evaluate(..., state=restored)`` continues with batch ``k + 1``
of the same permutation and the same dropout keys, and ends with bit-identical parameters.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import optax
from tqdm import tqdm

from jaxopt_zoo.models.adapter import as_linen_like
from jaxopt_zoo.train import distributed
from jaxopt_zoo.train.checks import (
    as_callback_list,
    as_device_arrays,
    check_resume_state,
    check_state_fits,
    check_trainable,
    distinct_buffers,
    progress_enabled,
)
from jaxopt_zoo.train.history import epoch_record, format_record, should_stop
from jaxopt_zoo.train.nonfinite import (
    NonFiniteError,
    NonFiniteWarning,
    nonfinite_error,
    report_skipped,
)
from jaxopt_zoo.train.state import (
    _DROPOUT,
    NONFINITE_MODES,
    Callback,
    LoopState,
    TrainConfig,
    epoch_order,
    init_loop_state,
    step_dropout_key,
    steps_per_epoch,
    zero_metrics,
)
from jaxopt_zoo.train.steps import make_eval_fn, make_indexed_train_step, memoized
from jaxopt_zoo.transforms.averaging import average_started, averaged_params, find_average

__all__ = [
    "NONFINITE_MODES",
    "Callback",
    "LoopState",
    "NonFiniteError",
    "NonFiniteWarning",
    "TrainConfig",
    "epoch_order",
    "init_loop_state",
    "step_dropout_key",
    "steps_per_epoch",
    "train_and_evaluate",
]


def train_and_evaluate(
    model: nn.Module,
    tx: optax.GradientTransformation,
    train_ds: Any,
    val_ds: Any,
    config: Optional[TrainConfig] = None,
    *,
    callbacks: Union[None, Callback, Sequence[Callback]] = None,
    state: Optional[LoopState] = None,
) -> Tuple[LoopState, List[dict]]:
    """Train ``model`` with ``tx`` for ``config.epochs`` epochs, evaluating after each one.

    Args:
      model: a Flax linen classifier ``model.apply({"params": p}, x, train=..., rngs=...)``
        returning logits (see :mod:`jaxopt_zoo.models`), or an NNX one (an ``nnx.Module``,
        its class, or :class:`~jaxopt_zoo.models.NNXModel`), trained through ``NNXModel``.
      tx: any ``optax.GradientTransformation`` (schedules, ``inject_hyperparams`` included).
      train_ds, val_ds: objects with float ``images`` (N, ...) and integer ``labels`` (N,),
        such as ``jaxopt_zoo.data.load_mnist(split, normalize=True)``, or ``(images, labels)``
        pairs. Raw integer pixels are refused rather than silently rescaled. ``val_ds`` may be None
        (then the ``val_*`` entries of the history are None and ``patience`` must be None).
      config: a :class:`TrainConfig` (default ``TrainConfig()``).
      callbacks: functions called after every optimizer step with the current
        :class:`LoopState` (e.g. to checkpoint). One returning ``True`` stops training at
        once; the returned state is then mid-epoch and resumes exactly when passed back as
        ``state``. The arrays in the state are donated to the next step: copy what you keep
        (``jax.device_get``) before returning.
      state: a state to resume from (e.g. a restored checkpoint); a fresh one by default.

    Returns:
      ``(state, history)``: the final :class:`LoopState`, holding the parameters after the
      *last* epoch run (not the best one; ``history`` tells which epoch was best), and a list
      of one dict per epoch with keys ``epoch`` (from 1), ``train_loss``, ``train_accuracy``
      (running means over the epoch, as Keras reports them), ``val_loss``, ``val_accuracy``
      and ``seconds`` (wall time of the epoch including evaluation).

    The training set is copied to the device once; each step receives only its batch number,
    and the step is compiled at most once per call (the last partial batch is padded). The
    jitted steps are memoized on ``(model, tx, batch_size)``: calls that pass the *same* ``tx``
    object (a seed sweep, a resume) and data of the same shape do not compile again.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> images = jax.random.uniform(jax.random.PRNGKey(0), (16, 28, 28, 1))
      >>> labels = jnp.arange(16) % 10
      >>> config = TrainConfig(batch_size=8, epochs=2, progress=False)
      >>> state, history = train_and_evaluate(MLP(hidden=(8,)), jz.sgd(0.1), (images, labels),
      ...                                     None, config)  # no validation set
      >>> state.step, [(record["epoch"], record["val_loss"]) for record in history]
      (4, [(1, None), (2, None)])
    """
    model = as_linen_like(model)  # NNX modules get Linen's init/apply
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Invalid config: expected a TrainConfig, got {type(config).__name__}.")
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"Invalid tx: expected an optax GradientTransformation (init, update), got "
            f"{type(tx).__name__}."
        )
    images, labels = as_device_arrays(train_ds, "train_ds")
    val = None if val_ds is None else as_device_arrays(val_ds, "val_ds")
    if config.patience is not None and val is None:
        raise ValueError(
            "Early stopping (patience set) monitors the validation loss: "
            "pass val_ds, or set patience=None."
        )
    n, bs = images.shape[0], config.batch_size
    per_epoch = steps_per_epoch(n, config)

    if state is None:
        state = init_loop_state(model, tx, images[:1], config.seed)
    else:
        state = check_resume_state(state, per_epoch)
        check_state_fits(model, tx, images[:1], state)
    check_trainable(state.params)
    # Donation needs distinct buffers: tx.init may return params leaves themselves (a
    # lookahead's slow weights, an average started at the parameters).
    state = state._replace(
        **dict(
            zip(
                ("params", "opt_state", "totals"),
                distinct_buffers((state.params, state.opt_state, state.totals)),
            )
        )
    )
    # -- several devices (config.devices): everything on the mesh; see train/distributed.py
    layout, state, (images, labels, val) = distributed.prepare(
        config, tx, state, (images, labels, val)
    )
    on_mesh = distributed.placer(layout)
    # --
    callbacks = as_callback_list(callbacks)
    progress = progress_enabled(config.progress) and distributed.is_primary()
    guard = config.on_nonfinite != "ignore"
    train_fn = memoized(_indexed_step, model, tx, bs, guard, layout)
    eval_fn = None if val is None else memoized(make_eval_fn, model, config.eval_batch_size)
    averaging = find_average(state.opt_state) is not None
    dropout_key = on_mesh(jax.random.fold_in(state.rng, _DROPOUT))
    sync_every = max(1, min(20, per_epoch // 20))

    params, opt_state, totals = state.params, state.opt_state, state.totals
    step, epoch, batch, rng, history = (
        state.step,
        state.epoch,
        state.batch,
        state.rng,
        state.history,
    )

    while epoch < config.epochs and not should_stop(history, config.patience):
        t0 = time.perf_counter()
        order = on_mesh(epoch_order(rng, epoch, n))
        finite_flags = []  # on_nonfinite="skip": one device bool per step of this epoch
        bar = None
        if progress:
            bar = tqdm(
                total=per_epoch,
                initial=batch,
                file=sys.stderr,
                leave=True,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="step",
            )
        while batch < per_epoch:
            if not guard:
                params, opt_state, totals = train_fn(
                    params, opt_state, totals, images, labels, order, batch, step, dropout_key
                )
            else:
                params, opt_state, totals, check = train_fn(
                    params, opt_state, totals, images, labels, order, batch, step, dropout_key
                )
                if config.on_nonfinite == "skip":
                    finite_flags.append(check[0])
                elif not bool(check[0]):  # "stop"; the step changed nothing
                    if bar is not None:
                        bar.close()
                    raise nonfinite_error(
                        check,
                        params,
                        LoopState(params, opt_state, step, epoch, batch, rng, totals, history),
                    )
            batch += 1
            step += 1
            if callbacks:
                current = LoopState(params, opt_state, step, epoch, batch, rng, totals, history)
                if any([cb(current) is True for cb in callbacks]):
                    if bar is not None:
                        bar.close()
                    report_skipped(finite_flags, step, epoch, batch, complete=False)
                    return current, list(history)
            if bar is not None:
                bar.update(1)
                if batch % sync_every == 0 or batch == per_epoch:  # one host sync
                    loss, acc = totals.means()
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)

        report_skipped(finite_flags, step, epoch, batch, complete=True)
        train_loss, train_acc = totals.means()  # waits for the epoch's last step
        val_loss = val_acc = None
        if eval_fn is not None:
            val_loss, val_acc = eval_fn(params, *val).means()
        record = epoch_record(
            epoch + 1, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - t0
        )
        if averaging:
            record.update(_evaluate_average(eval_fn, params, opt_state, val))
        history = history + (record,)
        epoch, batch, totals = epoch + 1, 0, on_mesh(zero_metrics())
        if bar is not None:
            bar.set_postfix_str(format_record(record))
            bar.close()

    return LoopState(params, opt_state, step, epoch, batch, rng, totals, history), list(history)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _evaluate_average(
    eval_fn: Optional[Callable],
    params: Any,
    opt_state: Any,
    val: Optional[Tuple[jax.Array, jax.Array]],
) -> dict:
    """``val_loss_avg`` and ``val_accuracy_avg``: the validation metrics of the averaged
    weights (SWA, parameter EMA) held in ``opt_state``; None before the average has taken
    its first parameters (SWA before its start) or without validation data."""
    avg_state = find_average(opt_state)
    if eval_fn is None or not bool(average_started(avg_state)):
        return {"val_loss_avg": None, "val_accuracy_avg": None}
    loss, acc = eval_fn(averaged_params(opt_state, like=params), *val).means()  # type: ignore[misc]
    return {"val_loss_avg": loss, "val_accuracy_avg": acc}


def _indexed_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    guard: bool,
    layout: Optional[distributed.Layout] = None,
) -> Callable:
    return make_indexed_train_step(model, tx, batch_size, guard=guard, layout=layout)
