"""The state of a training run and the pure functions that derive its randomness.

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
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxopt_zoo.core import check_int
from jaxopt_zoo.models.adapter import as_linen_like
from jaxopt_zoo.train.metrics import Metrics, memoized
from jaxopt_zoo.transforms.bf16_params import params_for

__all__ = [
    "NONFINITE_MODES",
    "Callback",
    "LoopState",
    "TrainConfig",
    "epoch_order",
    "init_loop_state",
    "run_lengths",
    "step_dropout_key",
    "steps_per_epoch",
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
      steps: a budget of optimizer steps in place of ``epochs`` (which is then ignored):
        the run stops after ``steps`` steps in all, mid-epoch if need be. The char-LM
        (:class:`~jaxopt_zoo.train.lm.TokenWindows` data) has no epochs and needs it.
      eval_every: evaluate every this many optimizer steps, and after the last one,
        instead of after every epoch. None: after every epoch (classifiers), only at the
        end (the char-LM). With ``steps`` or ``eval_every`` set the history holds one
        record per evaluation, and ``patience`` counts evaluations.
      devices: train data-parallel on a mesh of this many devices (over all processes;
        see :mod:`jaxopt_zoo.train.distributed`): the batch split over them, the
        parameters replicated. ``batch_size`` must be a multiple of it. None: one device,
        as placed by JAX.
      shard_optimizer_state: with ``devices``, split every optimizer-state leaf over the
        devices (ZeRO-1) instead of replicating it.
    """

    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    patience: Optional[int] = None
    drop_last: bool = False
    progress: Optional[bool] = None
    eval_batch_size: int = 1000
    on_nonfinite: str = "ignore"
    steps: Optional[int] = None
    eval_every: Optional[int] = None
    devices: Optional[int] = None
    shard_optimizer_state: bool = False

    def __post_init__(self):
        check_int("batch_size", self.batch_size, low=1)
        check_int("epochs", self.epochs, low=0)
        check_int("seed", self.seed, low=0)
        check_int("eval_batch_size", self.eval_batch_size, low=1)
        if self.patience is not None:
            check_int("patience", self.patience, low=0)
        if self.steps is not None:
            check_int("steps", self.steps, low=0)
        if self.eval_every is not None:
            check_int("eval_every", self.eval_every, low=1)
        if self.devices is not None:
            check_int("devices", self.devices, low=1)
            if self.batch_size % self.devices:
                raise ValueError(
                    f"Invalid batch_size {self.batch_size} for devices={self.devices}: each "
                    f"device takes batch_size / devices rows; use a multiple of {self.devices}."
                )
        if self.shard_optimizer_state and self.devices is None:
            raise ValueError(
                "shard_optimizer_state=True splits the optimizer state over a mesh: set "
                "devices=N too."
            )
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
      epoch: evaluations done, one per epoch by default (then: epochs completed; the epoch
        in progress is number ``epoch + 1``); with ``TrainConfig.eval_every`` or ``steps``
        one per evaluation period.
      batch: steps of the period in progress already taken, ``0 .. steps_per_epoch``
        (all of them means every step is done but the evaluation is not). The data
        position is a function of ``step`` alone: batch ``step % steps_per_epoch`` of
        epoch ``step // steps_per_epoch`` (classifiers), windows keyed by ``step`` (LM).
      rng: the root PRNG key, ``PRNGKey(seed)``; never consumed, every key is derived from it
        and a counter (see the module docstring).
      totals: running training-loss/accuracy sums of the epoch in progress
        (:class:`~jaxopt_zoo.train.metrics.Metrics`), so a resumed epoch reports the same
        training metrics as an uninterrupted one.
      history: a tuple with one dict per evaluation (see ``HISTORY_KEYS``); early
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


def run_lengths(per_epoch: Optional[int], config: TrainConfig) -> Tuple[int, int]:
    """``(eval period, step budget)`` of a run: evaluations every ``period`` steps (and after
    the last one) and ``budget`` steps in all.

    Args:
      per_epoch: optimizer steps per epoch (:func:`steps_per_epoch`), or None for data
        without epochs (the char-LM).
      config: the :class:`TrainConfig` (``steps``, ``eval_every``, ``epochs``).

    Returns:
      ``(config.eval_every or per_epoch, config.steps or config.epochs * per_epoch)``; for
      the char-LM the period defaults to the whole budget (one evaluation, at the end).

    Raises:
      ValueError: data without epochs and no ``config.steps``.

    Example:
      >>> run_lengths(10, TrainConfig(epochs=3)), run_lengths(10, TrainConfig(steps=25))
      ((10, 30), (10, 25))
      >>> run_lengths(None, TrainConfig(steps=300, eval_every=100))
      (100, 300)
    """
    if per_epoch is None:
        if config.steps is None:
            raise ValueError(
                "The char-LM has no epochs: give it a step budget, TrainConfig(steps=N) "
                "(--steps N)."
            )
        budget = config.steps
        return config.eval_every or max(budget, 1), budget
    budget = config.steps if config.steps is not None else config.epochs * per_epoch
    return config.eval_every or per_epoch, budget


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

    ``sample_images`` only sets the input shape (one example is enough): float images, or
    integer tokens ``(1, context)`` for the char-LM (integer inputs keep their dtype). This
    is also the template to restore a checkpoint into.

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
    x = jnp.asarray(sample_images)[:1]
    if not jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32)
    params = memoized(jitted_init, model)(jax.random.fold_in(rng, _INIT), x)
    params = params_for(tx, params)  # bfloat16 for jz.bf16_params (issue 19)
    return LoopState(params, tx.init(params), 0, 0, 0, rng, zero_metrics(), ())


@jax.jit
def _shuffle(key: jax.Array, epoch: jax.Array, order: jax.Array) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), order)


def _permutation(shuffle_key: jax.Array, epoch: int, n: int) -> jax.Array:
    return _shuffle(shuffle_key, epoch, jnp.arange(n, dtype=jnp.int32))


def jitted_init(model: nn.Module) -> Callable:
    return jax.jit(lambda key, x: model.init({"params": key}, x, train=False)["params"])


def zero_metrics() -> Metrics:
    # Three distinct buffers: the train step donates each of them.
    return Metrics(*(jnp.zeros((), jnp.float32) for _ in range(3)))
