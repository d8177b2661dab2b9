"""The training loop: ``train_and_evaluate`` and its resumable ``LoopState``.

One loop for every model and budget: steps up to the next evaluation point, evaluate,
repeat. By default the evaluation points are the ends of the epochs; ``TrainConfig.steps``
(a step budget) and ``TrainConfig.eval_every`` (an evaluation every so many steps) move
them, and the char-LM (:mod:`jaxopt_zoo.train.lm`) draws its windows instead of gathering
a permuted batch.

Everything random is a pure function of the seed and a counter (the keys are listed in
``jaxopt_zoo.train.state``), so restoring a state saved after batch ``k`` of epoch ``e``
and calling ``train_and_evaluate(..., state=restored)`` continues with batch ``k + 1`` of the
same permutation and the same dropout keys, and ends with bit-identical parameters.
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
from jaxopt_zoo.train.history import average_record, epoch_record, format_record, should_stop
from jaxopt_zoo.train.lm import BITS_PER_NAT, TokenWindows, as_token_data, make_lm_train_step
from jaxopt_zoo.train.metrics import make_eval_fn, memoized
from jaxopt_zoo.train.nonfinite import (
    NonFiniteError,
    NonFiniteWarning,
    nonfinite_error,
    report_skipped,
)
from jaxopt_zoo.train.state import (
    _DROPOUT,
    _SHUFFLE,
    NONFINITE_MODES,
    Callback,
    LoopState,
    TrainConfig,
    epoch_order,
    init_loop_state,
    run_lengths,
    step_dropout_key,
    steps_per_epoch,
    zero_metrics,
)
from jaxopt_zoo.train.steps import make_indexed_train_step
from jaxopt_zoo.transforms.averaging import find_average

__all__ = [
    "NONFINITE_MODES",
    "Callback",
    "LoopState",
    "NonFiniteError",
    "NonFiniteWarning",
    "TrainConfig",
    "epoch_order",
    "init_loop_state",
    "run_lengths",
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
    """Train ``model`` with ``tx`` for ``config.epochs`` epochs (or ``config.steps`` steps),
    evaluating after each epoch (or every ``config.eval_every`` steps and at the end).

    Args:
      model: a Flax linen classifier ``model.apply({"params": p}, x, train=..., rngs=...)``
        returning logits (see :mod:`jaxopt_zoo.models`), or an NNX one (an ``nnx.Module``,
        its class, or :class:`~jaxopt_zoo.models.NNXModel`), trained through ``NNXModel``;
        or the char-LM (:class:`~jaxopt_zoo.models.transformer.CharTransformer`) with
        :class:`~jaxopt_zoo.train.lm.TokenWindows` data.
      tx: any ``optax.GradientTransformation`` (schedules, ``inject_hyperparams`` included).
      train_ds, val_ds: objects with float ``images`` (N, ...) and integer ``labels`` (N,),
        such as ``jaxopt_zoo.data.load_mnist(split, normalize=True)``, or ``(images, labels)``
        pairs. Raw integer pixels are refused rather than silently rescaled. ``val_ds`` may be None
        (then the ``val_*`` entries of the history are None and ``patience`` must be None).
        For the char-LM: a :class:`~jaxopt_zoo.train.lm.TokenWindows` and a fixed ``(x, y)``
        pair of int windows (:func:`jaxopt_zoo.data.text.eval_windows`); it needs
        ``config.steps``, and its records add ``train_bits_per_char`` and
        ``val_bits_per_char`` (losses per character in nats / ln 2).
      config: a :class:`TrainConfig` (default ``TrainConfig()``).
      callbacks: functions called after every optimizer step with the current
        :class:`LoopState` (e.g. to checkpoint). One returning ``True`` stops training at
        once; the returned state is then mid-epoch and resumes exactly when passed back as
        ``state``. The arrays in the state are donated to the next step: copy what you keep
        (``jax.device_get``) before returning.
      state: a state to resume from (e.g. a restored checkpoint); a fresh one by default.

    Returns:
      ``(state, history)``: the final :class:`LoopState`, holding the parameters after the
      *last* step run (not the best one; ``history`` tells which evaluation was best), and a
      list of one dict per evaluation with keys ``epoch`` (evaluations so far, from 1: the
      epoch by default), ``step`` (optimizer steps so far), ``train_loss``,
      ``train_accuracy`` (running means since the previous evaluation, as Keras reports
      them per epoch), ``val_loss``, ``val_accuracy`` and ``seconds`` (wall time since the
      previous evaluation, including this one).

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
      >>> config = TrainConfig(batch_size=8, steps=3, eval_every=2, progress=False)
      >>> _, history = train_and_evaluate(MLP(hidden=(8,)), jz.sgd(0.1), (images, labels),
      ...                                 None, config)  # stops mid-epoch 2
      >>> [(record["epoch"], record["step"]) for record in history]
      [(1, 2), (2, 3)]
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
    guard = config.on_nonfinite != "ignore"
    if isinstance(train_ds, TokenWindows):
        tokens, val = as_token_data(train_ds, val_ds)
        sample, per_epoch = tokens[None, : train_ds.context], None
    else:
        images, labels = as_device_arrays(train_ds, "train_ds")
        val = None if val_ds is None else as_device_arrays(val_ds, "val_ds")
        sample, per_epoch = images[:1], steps_per_epoch(images.shape[0], config)
    if config.patience is not None and val is None:
        raise ValueError(
            "Early stopping (patience set) monitors the validation loss: "
            "pass val_ds, or set patience=None."
        )
    period, budget = run_lengths(per_epoch, config)

    if state is None:
        state = init_loop_state(model, tx, sample, config.seed)
    else:
        state = check_resume_state(state, period)
        check_state_fits(model, tx, sample, state)
    check_trainable(state.params)
    # Donation needs distinct buffers: another library's tx.init (or a state built by hand)
    # may hold one array twice or the params' own arrays. jaxopt_zoo's never do
    # (tests/test_donation.py); their leaves pass through uncopied.
    state = state._replace(
        **dict(
            zip(
                ("params", "opt_state", "totals"),
                distinct_buffers((state.params, state.opt_state, state.totals)),
            )
        )
    )
    # -- several devices (config.devices): everything on the mesh; see train/distributed.py
    data = (tokens, val) if per_epoch is None else (images, labels, val)
    layout, state, data = distributed.prepare(config, tx, state, data)
    on_mesh = distributed.placer(layout)
    if per_epoch is None:
        tokens, val = data
    else:
        images, labels, val = data
    # --
    rng = state.rng
    dropout_key = on_mesh(jax.random.fold_in(rng, _DROPOUT))
    if per_epoch is None:  # the char-LM: windows keyed by the step
        context = int(train_ds.context)
        lm_fn = memoized(_lm_step, model, tx, config.batch_size, context, guard, layout)
        shuffle_key = on_mesh(jax.random.fold_in(rng, _SHUFFLE))

        def train_fn(params, opt_state, totals, step):
            return lm_fn(params, opt_state, totals, tokens, step, shuffle_key, dropout_key)

    else:  # batch step % per_epoch of epoch step // per_epoch's order
        indexed_fn = memoized(_indexed_step, model, tx, config.batch_size, guard, layout)
        orders: dict = {}

        def train_fn(params, opt_state, totals, step):
            e, b = divmod(step, per_epoch)
            if e not in orders:
                orders.clear()
                orders[e] = on_mesh(epoch_order(rng, e, images.shape[0]))
            return indexed_fn(
                params, opt_state, totals, images, labels, orders[e], b, step, dropout_key
            )

    evaluate = None
    if val is not None:
        eval_fn, (val_x, val_y) = memoized(make_eval_fn, model, config.eval_batch_size), val

        def evaluate(params):
            return eval_fn(params, val_x, val_y)

    return _run(
        state,
        config,
        train_fn,
        evaluate,
        period=period,
        budget=budget,
        callbacks=as_callback_list(callbacks),
        per_char=per_epoch is None,
        on_mesh=on_mesh,
        steps_ahead=distributed.steps_ahead(layout),
    )


def _run(
    state: LoopState,
    config: TrainConfig,
    train_fn: Callable,
    evaluate: Optional[Callable],
    *,
    period: int,
    budget: int,
    callbacks: List[Callback],
    per_char: bool,
    on_mesh: Callable[[Any], Any],
    steps_ahead: Optional[int] = None,
) -> Tuple[LoopState, List[dict]]:
    """The loop: steps up to the next evaluation point (a multiple of ``period``, or
    ``budget``), the evaluation, and so on until ``budget`` steps are done and evaluated.
    With ``steps_ahead`` (a mesh of CPU devices), it waits for the step before last every
    so many steps, so that XLA never queues enough executions to deadlock a collective."""
    progress = progress_enabled(config.progress) and distributed.is_primary()
    guard = config.on_nonfinite != "ignore"
    averaging = find_average(state.opt_state) is not None
    by_steps = config.steps is not None or config.eval_every is not None
    sync_every = max(1, min(20, period // 20))
    params, opt_state, totals = state.params, state.opt_state, state.totals
    step, epoch, batch, rng, history = (
        state.step,
        state.epoch,
        state.batch,
        state.rng,
        state.history,
    )

    def current() -> LoopState:
        return LoopState(params, opt_state, step, epoch, batch, rng, totals, history)

    while (step < budget or batch > 0) and not should_stop(history, config.patience):
        t0 = time.perf_counter()
        start = step - batch  # the step of the last evaluation
        target = max(step, min((start // period + 1) * period, budget))
        finite_flags = []  # on_nonfinite="skip": one device bool per step of this period
        bar = None
        if progress:
            bar = tqdm(
                total=target - start,
                initial=batch,
                file=sys.stderr,
                leave=True,
                desc=f"step {target}/{budget}"
                if by_steps
                else f"epoch {epoch + 1}/{config.epochs}",
                unit="step",
            )
        while step < target:
            if not guard:
                params, opt_state, totals = train_fn(params, opt_state, totals, step)
            else:
                params, opt_state, totals, check = train_fn(params, opt_state, totals, step)
                if config.on_nonfinite == "skip":
                    finite_flags.append(check[0])
                elif not bool(check[0]):  # "stop"; the step changed nothing
                    if bar is not None:
                        bar.close()
                    raise nonfinite_error(check, params, current())
            batch += 1
            step += 1
            if steps_ahead is not None and step % steps_ahead == 0:
                jax.block_until_ready(params)  # see distributed.steps_ahead
            if callbacks:
                now = current()
                if any([cb(now) is True for cb in callbacks]):
                    if bar is not None:
                        bar.close()
                    report_skipped(finite_flags, step, epoch, batch, complete=False)
                    return now, list(history)
            if bar is not None:
                bar.update(1)
                if batch % sync_every == 0 or step == target:  # one host sync
                    loss, acc = totals.means()
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)

        report_skipped(finite_flags, step, epoch, batch, complete=True)
        train_loss, train_acc = totals.means()  # waits for the period's last step
        val_loss = val_acc = None
        if evaluate is not None:
            val_loss, val_acc = evaluate(params).means()
        record = epoch_record(
            epoch + 1, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - t0, step
        )
        if per_char:
            record["train_bits_per_char"] = train_loss * BITS_PER_NAT
            record["val_bits_per_char"] = None if val_loss is None else val_loss * BITS_PER_NAT
        if averaging:
            record.update(average_record(evaluate, params, opt_state))
        history = history + (record,)
        epoch, batch, totals = epoch + 1, 0, on_mesh(zero_metrics())
        if bar is not None:
            bar.set_postfix_str(format_record(record))
            bar.close()

    return current(), list(history)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _indexed_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    guard: bool,
    layout: Optional[distributed.Layout] = None,
) -> Callable:
    return make_indexed_train_step(model, tx, batch_size, guard=guard, layout=layout)


def _lm_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    context: int,
    guard: bool,
    layout: Optional[distributed.Layout] = None,
) -> Callable:
    return make_lm_train_step(model, tx, batch_size, context, guard=guard, layout=layout)
