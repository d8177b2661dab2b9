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

import dataclasses
import sys
import time
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from jaxopt_zoo.core import check_int
from jaxopt_zoo.models.adapter import as_linen_like
from jaxopt_zoo.train.history import epoch_record, format_record, should_stop
from jaxopt_zoo.train.nonfinite import (
    NonFiniteError,
    NonFiniteWarning,
    nonfinite_error,
    report_skipped,
)
from jaxopt_zoo.train.steps import (
    Metrics,
    make_eval_fn,
    make_indexed_train_step,
    memoized,
)
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

_INIT, _SHUFFLE, _DROPOUT = 0, 1, 2  # fold_in tags of the keys derived from LoopState.rng

NONFINITE_MODES = ("ignore", "skip", "stop")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_and_evaluate`.

    Attributes:
      batch_size: examples per optimizer step (Keras' default, 32).
      epochs: the total number of epochs, counting those already done by a resumed state.
      seed: seeds parameter init, the per-epoch shuffles and dropout.
      patience: stop after this many epochs without a lower validation loss (Keras
        ``EarlyStopping(monitor="val_loss")``); None turns early stopping off.
      drop_last: drop the last partial batch of an epoch. False (Keras' behaviour) keeps it;
        it is padded to ``batch_size`` with zero-weight rows so that the step compiles once.
      progress: show tqdm progress bars; None shows them only when stderr is a terminal.
      eval_batch_size: batch size of evaluation (memory only; results do not depend on it
        beyond float rounding).
      on_nonfinite: what a step whose loss, gradients or updated parameters are not all
        finite does. ``"ignore"`` (no check, no cost): it is applied like any other.
        ``"skip"``: it changes nothing (parameters, optimizer state and the epoch's
        running metrics stay as they were; the step count and data position move on), a
        :class:`NonFiniteWarning` at the end of the epoch names the skipped steps, and an
        epoch whose every step is skipped raises :class:`NonFiniteError`. ``"stop"``: it
        changes nothing and :class:`NonFiniteError` names the step and the first
        non-finite leaf (costs one device-to-host sync per step).
    """

    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    patience: Optional[int] = None
    drop_last: bool = False
    progress: Optional[bool] = None
    eval_batch_size: int = 1000
    on_nonfinite: str = "ignore"

    def __post_init__(self):
        check_int("batch_size", self.batch_size, low=1)
        check_int("epochs", self.epochs, low=0)
        check_int("seed", self.seed, low=0)
        check_int("eval_batch_size", self.eval_batch_size, low=1)
        if self.patience is not None:
            check_int("patience", self.patience, low=0)
        if self.on_nonfinite not in NONFINITE_MODES:
            raise ValueError(
                f"Invalid on_nonfinite: {self.on_nonfinite!r}. Expected one of "
                f"{', '.join(map(repr, NONFINITE_MODES))}."
            )


class LoopState(NamedTuple):
    """Everything needed to continue a run exactly: save it to checkpoint, pass it back to
    :func:`train_and_evaluate` as ``state=`` to resume.

    Attributes:
      params: model parameters (the ``"params"`` collection).
      opt_state: the optimizer state.
      step: optimizer steps taken since the start of the run.
      epoch: epochs completed; the epoch in progress is number ``epoch + 1``.
      batch: batches of the epoch in progress already taken, ``0 .. steps_per_epoch``
        (``steps_per_epoch`` means every batch is done but the epoch's evaluation is not).
      rng: the root PRNG key, ``PRNGKey(seed)``; never consumed, every key is derived from it
        and a counter (see the module docstring).
      totals: running training-loss/accuracy sums of the epoch in progress
        (:class:`~jaxopt_zoo.train.steps.Metrics`), so a resumed epoch reports the same
        training metrics as an uninterrupted one.
      history: a tuple with one dict per completed epoch (see ``HISTORY_KEYS``); early
        stopping is recomputed from it.
    """

    params: Any
    opt_state: Any
    step: int
    epoch: int
    batch: int
    rng: jax.Array
    totals: Metrics
    history: Tuple[dict, ...]


Callback = Callable[[LoopState], Optional[bool]]


def steps_per_epoch(num_examples: int, config: TrainConfig) -> int:
    """Optimizer steps in one epoch of ``num_examples`` under ``config`` (the last partial
    batch counts unless ``config.drop_last``).

    Args:
      num_examples: the size of the training set.
      config: the :class:`TrainConfig` (its ``batch_size`` and ``drop_last``).

    Returns:
      ``ceil(num_examples / batch_size)``, or ``floor(...)`` with ``drop_last``.

    Raises:
      ValueError: ``drop_last`` leaves no batch (fewer examples than ``batch_size``).

    Example:
      >>> steps_per_epoch(100, TrainConfig(batch_size=32))
      4
      >>> steps_per_epoch(100, TrainConfig(batch_size=32, drop_last=True))
      3
    """
    n, bs = int(num_examples), config.batch_size
    steps = n // bs if config.drop_last else -(-n // bs)
    if steps == 0:
        raise ValueError(
            f"drop_last=True with {n} training examples and batch_size={bs} "
            "leaves no batch: lower batch_size or set drop_last=False."
        )
    return steps


def epoch_order(rng: jax.Array, epoch: int, num_examples: int) -> jax.Array:
    """The example order (int32 permutation, on the device) of epoch ``epoch`` (from 0).

    ``permutation(fold_in(fold_in(rng, 1), epoch), num_examples)``: a pure function of its
    arguments, so a resumed run shuffles exactly as an uninterrupted one.

    Args:
      rng: the run's root key, ``LoopState.rng`` (``PRNGKey(seed)``).
      epoch: the epoch number, from 0.
      num_examples: the size of the training set.

    Returns:
      An int32 array of shape ``(num_examples,)`` holding each of ``0 .. N-1`` once.

    Example:
      >>> import jax
      >>> order = epoch_order(jax.random.PRNGKey(0), 0, 5)
      >>> order.dtype, sorted(order.tolist())
      (dtype('int32'), [0, 1, 2, 3, 4])
    """
    return _permutation(jax.random.fold_in(rng, _SHUFFLE), epoch, num_examples)


def step_dropout_key(rng: jax.Array, step: int) -> jax.Array:
    """The dropout key of global step ``step`` (from 0).

    ``fold_in(fold_in(rng, 2), step)``: the same key for the same step whether or not the
    run was interrupted and resumed in between.

    Args:
      rng: the run's root key, ``LoopState.rng`` (``PRNGKey(seed)``).
      step: the global step, from 0.

    Returns:
      A PRNG key (the format of ``rng``).

    Example:
      >>> import jax
      >>> rng = jax.random.PRNGKey(0)
      >>> bool((step_dropout_key(rng, 3) == step_dropout_key(rng, 3)).all())
      True
      >>> bool((step_dropout_key(rng, 3) == step_dropout_key(rng, 4)).all())
      False
    """
    return jax.random.fold_in(jax.random.fold_in(rng, _DROPOUT), step)


def init_loop_state(
    model: nn.Module, tx: optax.GradientTransformation, sample_images: Any, seed: int = 0
) -> LoopState:
    """A fresh state: parameters from ``fold_in(PRNGKey(seed), 0)``, ``tx.init`` of them.

    ``sample_images`` only sets the input shape (one example is enough). This is also the
    template to restore a checkpoint into.

    Args:
      model: a Linen classifier or an NNX one (see :func:`train_and_evaluate`).
      tx: the optimizer.
      sample_images: inputs of the model's shape; only the first is used.
      seed: the run's seed (``TrainConfig.seed``).

    Returns:
      A :class:`LoopState` at step, epoch and batch 0, with zero running metrics and an
      empty history.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> state = init_loop_state(MLP(hidden=(8,)), jz.adam(1e-3), jnp.zeros((1, 28, 28, 1)))
      >>> jax.tree.map(jnp.shape, state.params["Dense_0"]), state.step, state.history
      ({'bias': (8,), 'kernel': (784, 8)}, 0, ())
    """
    model = as_linen_like(model)  # NNX modules get Linen's init/apply
    rng = jax.random.PRNGKey(seed)
    x = jnp.asarray(sample_images, jnp.float32)[:1]
    params = memoized(_jitted_init, model)(jax.random.fold_in(rng, _INIT), x)
    return LoopState(params, tx.init(params), 0, 0, 0, rng, _zero_metrics(), ())


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
    images, labels = _as_device_arrays(train_ds, "train_ds")
    val = None if val_ds is None else _as_device_arrays(val_ds, "val_ds")
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
        state = _check_resume_state(state, per_epoch)
        _check_state_fits(model, tx, images[:1], state)
    _check_trainable(state.params)
    # Donation needs distinct buffers: tx.init may return params leaves themselves (a
    # lookahead's slow weights, an average started at the parameters).
    state = state._replace(
        **dict(
            zip(
                ("params", "opt_state", "totals"),
                _distinct_buffers((state.params, state.opt_state, state.totals)),
            )
        )
    )
    callbacks = _as_callback_list(callbacks)
    progress = _progress_enabled(config.progress)
    guard = config.on_nonfinite != "ignore"
    train_fn = memoized(_indexed_step, model, tx, bs, guard)
    eval_fn = None if val is None else memoized(make_eval_fn, model, config.eval_batch_size)
    averaging = find_average(state.opt_state) is not None
    dropout_key = jax.random.fold_in(state.rng, _DROPOUT)
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
        order = epoch_order(rng, epoch, n)
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
            val_loss, val_acc = eval_fn(params, *val).means()  # type: ignore[misc]
        record = epoch_record(
            epoch + 1, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - t0
        )
        if averaging:
            record.update(_evaluate_average(eval_fn, params, opt_state, val))
        history = history + (record,)
        epoch, batch, totals = epoch + 1, 0, _zero_metrics()
        if bar is not None:
            bar.set_postfix_str(format_record(record))
            bar.close()

    return LoopState(params, opt_state, step, epoch, batch, rng, totals, history), list(history)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


@jax.jit
def _shuffle(key: jax.Array, epoch: jax.Array, order: jax.Array) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), order)


def _permutation(shuffle_key: jax.Array, epoch: int, n: int) -> jax.Array:
    return _shuffle(shuffle_key, epoch, jnp.arange(n, dtype=jnp.int32))


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
    model: nn.Module, tx: optax.GradientTransformation, batch_size: int, guard: bool
) -> Callable:
    return make_indexed_train_step(model, tx, batch_size, guard=guard)


def _jitted_init(model: nn.Module) -> Callable:
    return jax.jit(lambda key, x: model.init({"params": key}, x, train=False)["params"])


def _distinct_buffers(tree: Any) -> Any:
    """Copy every array leaf whose device buffer already appeared earlier in ``tree``."""
    seen = set()

    def fresh(x):
        if not isinstance(x, jax.Array):
            return x
        try:
            ptr = x.unsafe_buffer_pointer()
        except Exception:  # noqa: BLE001 -- no single buffer (sharded, deleted): go by object
            ptr = id(x)
        if ptr in seen:
            return jnp.array(x, copy=True)
        seen.add(ptr)
        return x

    return jax.tree.map(fresh, tree)


def _zero_metrics() -> Metrics:
    # Three distinct buffers: the train step donates each of them.
    return Metrics(*(jnp.zeros((), jnp.float32) for _ in range(3)))


def _as_device_arrays(ds: Any, name: str) -> Tuple[jax.Array, jax.Array]:
    if hasattr(ds, "images") and hasattr(ds, "labels"):
        images, labels = ds.images, ds.labels
    elif isinstance(ds, (tuple, list)) and len(ds) == 2:
        images, labels = ds
    else:
        raise TypeError(
            f"Invalid {name}: expected an object with `images` and `labels` "
            f"(e.g. jaxopt_zoo.data.Dataset) or an (images, labels) pair, got "
            f"{type(ds).__name__}."
        )
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise TypeError(
            f"Invalid {name}.images: expected floating-point pixels (e.g. in [0, 1]), got dtype "
            f"{jnp.result_type(images)}. Load with normalize=True "
            "(jaxopt_zoo.data.load_mnist(..., normalize=True)) or scale the images yourself."
        )
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"Invalid {name}.labels: expected integer class labels, got dtype {labels.dtype}."
        )
    labels = labels.astype(jnp.int32)
    if labels.ndim != 1 or images.ndim < 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Invalid {name}: expected images (N, ...) and labels (N,), got "
            f"images {images.shape} and labels {labels.shape}."
        )
    if images.shape[0] == 0:
        raise ValueError(f"Invalid {name}: it holds no examples.")
    return images, labels


def _check_resume_state(state: LoopState, steps_per_epoch: int) -> LoopState:
    if not isinstance(state, LoopState):
        raise TypeError(f"Invalid state: expected a LoopState, got {type(state).__name__}.")
    if not 0 <= int(state.batch) <= steps_per_epoch:
        raise ValueError(
            f"Invalid state: it stopped after batch {state.batch} of an epoch, but this data "
            f"set and batch size give {steps_per_epoch} batches per epoch. Resume with the "
            f"training set and batch_size the state was saved with."
        )
    if len(state.history) != int(state.epoch):
        raise ValueError(
            f"Invalid state: epoch={state.epoch} but the history holds {len(state.history)} epochs."
        )
    # Fresh buffers: the loop donates them, and the caller's state must stay usable.
    params, opt_state, totals = jax.tree.map(
        jnp.array, (state.params, state.opt_state, tuple(state.totals))
    )
    return LoopState(
        params,
        opt_state,
        int(state.step),
        int(state.epoch),
        int(state.batch),
        jnp.asarray(state.rng),
        Metrics(*totals),
        tuple(state.history),
    )


def _check_state_fits(
    model: nn.Module, tx: optax.GradientTransformation, sample: jax.Array, state: LoopState
) -> None:
    """Raise a ValueError naming the first difference when a resumed state's parameters or
    optimizer state do not have the structure and shapes that ``model`` and ``tx`` give."""
    params = jax.eval_shape(memoized(_jitted_init, model), jax.random.PRNGKey(0), sample)
    for what, expected, got in (
        ("params", params, state.params),
        ("opt_state", jax.eval_shape(tx.init, params), state.opt_state),
    ):
        want = {
            jax.tree_util.keystr(p): jnp.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]
        }
        have = {
            jax.tree_util.keystr(p): jnp.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(got)[0]
        }
        if want == have and jax.tree.structure(expected) == jax.tree.structure(got):  # type: ignore[operator]
            continue
        diff = next((k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)), None)
        detail = (
            f"{what}{diff}: expected {want.get(diff, 'nothing')}, got {have.get(diff, 'nothing')}"
            if diff is not None
            else f"{what} is {jax.tree.structure(got)}, expected {jax.tree.structure(expected)}"
        )
        raise ValueError(
            f"Invalid state: it does not fit this model and optimizer ({detail}). "
            "Resume with the model and optimizer the state was saved with."
        )


def _check_trainable(params: Any) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            raise TypeError(
                f"Invalid parameters: leaf {jax.tree_util.keystr(path)} has dtype "
                f"{jnp.result_type(x)}; gradient training needs floating-point parameters "
                "(an integer one would get truncated updates). Make it a float, or keep it "
                "out of the 'params' collection (e.g. in a separate Flax collection)."
            )


def _as_callback_list(callbacks: Any) -> List[Callback]:
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(
                f"Invalid callback: expected a function of the LoopState, got {type(cb).__name__}."
            )
    return callbacks


def _progress_enabled(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False
