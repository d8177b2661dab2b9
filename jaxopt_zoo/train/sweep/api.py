"""Hyperparameter sweeps in one program: every configuration of a grid trained at once.

:func:`sweep` trains the configurations ``grid points x seeds`` of one optimizer together:
one ``jax.jit(jax.vmap(step))`` over the configurations, whose hyperparameters enter as float32
arrays (the optimizer is built inside the vmapped step from traced scalars, so one compile
serves every value) and whose PRNG keys ``PRNGKey(seed)`` give each its own initialization,
data order and dropout under the randomness contract of ``jaxopt_zoo.train.state``. The
step is :func:`jaxopt_zoo.train.steps.train_step`, the one ``train`` takes.

Equality with ``train``: a configuration's final parameters and history equal those of a
separate :func:`~jaxopt_zoo.train.train_and_evaluate` run with the same seed and
hyperparameters *to float32 rounding, not bit for bit*. The keys, example orders and batches are
identical (the same ``fold_in`` counters), but ``vmap`` turns each matrix product into a
batched one, which XLA's CPU backend tiles and sums in another order; the optimizer arithmetic
is elementwise and agrees exactly. Measured on CPU (``tests/test_sweep.py``): the MLP's
final parameters after 2 epochs are bit-identical and its losses within 2.4e-7; the CNN's
parameters within 3e-6 relative (batched convolutions); the char-LM's (SGD with momentum, 20
steps) within 3.8e-7 and its validation losses within 4.8e-7. Adam amplifies the difference
on parameters whose gradient is zero in theory (a transformer's key biases).
The ``sweep`` command builds each configuration's optimizer as ``train`` does
(:meth:`~jaxopt_zoo.train.runner.RunSpec.build`: schedule, clipping, decay mask, SAM,
weight averaging) with the traced learning rate as the schedule's peak; an optimizer that
keeps an average of the weights (EMA, SWA) gets ``val_loss_avg``/``val_accuracy_avg`` too.
Hyperparameters other than the learning rate may also differ at rounding where an optimizer
does arithmetic on a Python-float hyperparameter (``1 - b1`` in float64) that the sweep does
in float32.

A grid too large for memory is split into equal chunks (the last padded with a repeat of the
last configuration, whose results are dropped), each one compiled program run in turn;
:class:`Chunking` says how.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np
import optax

from jaxopt_zoo.core import check_int
from jaxopt_zoo.models.adapter import as_linen_like
from jaxopt_zoo.train.checks import as_device_arrays
from jaxopt_zoo.train.sweep.plan import Chunking, available_memory, plan_chunks
from jaxopt_zoo.train.sweep.run import compiled_fns, run_chunk
from jaxopt_zoo.train.sweep.workloads import Workload, classifier_workload, lm_workload

__all__ = ["Chunking", "SweepConfig", "SweepResult", "grid_points", "sweep"]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Settings of :func:`sweep` (those of :class:`~jaxopt_zoo.train.TrainConfig` it shares
    mean the same).

    Attributes:
      batch_size: examples (classifier) or windows (char-LM) per step.
      epochs: classifier epochs, when ``steps`` is None.
      steps: a step budget instead of epochs (required for the char-LM).
      eval_every: evaluate every so many steps (and after the last); default: after each
        epoch for a classifier, every ``steps // 10`` steps for the char-LM.
      eval_batch_size: examples (or windows) per evaluation batch; memory only.
      eval_windows: the char-LM's fixed validation set: this many evenly spread windows of
        ``eval_windows(val, context, ...)`` (None: all).
      drop_last: drop the last partial batch of an epoch (classifier), as in ``TrainConfig``.
      chunk_size: at most this many configurations per compiled program (None: as many as
        fit in ``memory_budget``).
      memory_budget: bytes the step and evaluation may use (None: half of the free device
        memory, or of the host's available memory on CPU).
      exact: train the configurations one after another, each through the very program
        ``train`` runs (:func:`~jaxopt_zoo.train.train_and_evaluate` with
        ``make_tx(**point)`` built from Python floats and ``TrainConfig(seed=seed, ...)``),
        instead of all at once under ``vmap``. The results are then bit-identical to
        separate ``train`` runs, at the cost of one compile per grid point and no batching
        across configurations (``chunk_size`` and ``memory_budget`` do not apply). Without
        it (the default) a configuration equals its ``train`` run to float32 rounding only:
        ``vmap`` turns each matrix product into a batched one that XLA sums in another order
        (see the module docstring and ``experiments/sweep_exactness.py``).
    """

    batch_size: int = 32
    epochs: int = 10
    steps: Optional[int] = None
    eval_every: Optional[int] = None
    eval_batch_size: int = 1000
    eval_windows: Optional[int] = None
    drop_last: bool = False
    chunk_size: Optional[int] = None
    memory_budget: Optional[int] = None
    exact: bool = False

    def __post_init__(self):
        if not isinstance(self.exact, bool):
            raise TypeError(f"Invalid exact: expected True or False, got {self.exact!r}.")
        check_int("batch_size", self.batch_size, low=1)
        check_int("epochs", self.epochs, low=0)
        check_int("eval_batch_size", self.eval_batch_size, low=1)
        for name in ("steps", "eval_every", "eval_windows", "chunk_size", "memory_budget"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)


class SweepResult(NamedTuple):
    """What :func:`sweep` returns.

    Attributes:
      records: one dict per configuration, in grid order (each grid point, then each seed):
        ``{"hparams": {...}, "seed": s, "history": [...]}``; the history has the keys of
        ``metrics.json`` (``epoch``, ``step``, ``train_loss``, ``train_accuracy``,
        ``val_loss``, ``val_accuracy``, ``seconds``; the char-LM adds ``train_bits_per_char``
        and ``val_bits_per_char``). ``seconds`` is the wall time of the whole chunk since the
        previous evaluation (its configurations train together).
      params: the final parameters as NumPy arrays, one leading axis over the configurations.
      chunking: how the grid was split (:class:`Chunking`).
      compile_seconds: time spent compiling the step and the evaluation (0 with
        ``exact=True``, where each ``train`` run compiles its own and counts it in its
        ``seconds``).
      seconds: total wall time, compilation included.
    """

    records: List[Dict[str, Any]]
    params: Any
    chunking: Chunking
    compile_seconds: float
    seconds: float


def grid_points(grid: Mapping[str, Sequence[float]]) -> List[Dict[str, float]]:
    """The points of a hyperparameter grid: the product of its value lists, first key slowest.

    Args:
      grid: hyperparameter name -> list of numbers (e.g. ``{"learning_rate": [1e-3, 3e-3]}``).

    Returns:
      A list of ``{name: value}`` dicts (Python floats).

    Raises:
      ValueError: an empty grid or value list; TypeError: a value that is not a number.

    Example:
      >>> grid_points({"learning_rate": [0.1, 0.3], "b1": [0.9]})
      [{'learning_rate': 0.1, 'b1': 0.9}, {'learning_rate': 0.3, 'b1': 0.9}]
    """
    if not grid:
        raise ValueError("Invalid grid: it is empty; expected e.g. {'learning_rate': [1e-3]}.")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(
                f"Invalid grid[{name!r}]: expected a non-empty list of numbers, got {values!r}."
            )
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise TypeError(
                    f"Invalid grid[{name!r}] value {v!r}: only numeric hyperparameters can be "
                    "swept (they enter the compiled step as arrays); fix non-numeric ones "
                    "in make_tx instead."
                )
    names = list(grid)
    return [
        {n: float(v) for n, v in zip(names, values)}
        for values in itertools.product(*(grid[n] for n in names))
    ]


def sweep(
    model: Any,
    make_tx: Callable[..., optax.GradientTransformation],
    grid: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    train: Any,
    val: Any,
    config: Optional[SweepConfig] = None,
    *,
    log: Optional[Callable[[str], None]] = None,
) -> SweepResult:
    """Train every configuration ``grid point x seed`` at once in one vmapped program.

    Args:
      model: a Linen classifier (as for :func:`~jaxopt_zoo.train.train_and_evaluate`) or a
        :class:`~jaxopt_zoo.models.CharTransformer` (with token arrays as ``train``/``val``).
      make_tx: ``make_tx(**hparams) -> GradientTransformation``, called inside the vmapped
        step with float32 scalar tracers for the swept hyperparameters, e.g.
        ``lambda learning_rate: jz.adam(learning_rate)``.
      grid: hyperparameter name -> values (see :func:`grid_points`).
      seeds: the seeds each grid point is trained with.
      train, val: the classifier's datasets (``Dataset`` or ``(images, labels)``; ``val``
        may be None), or the char-LM's 1-D int token arrays (``load_shakespeare().train``,
        ``.val``).
      config: a :class:`SweepConfig` (default ``SweepConfig()``).
      log: called with progress lines (the chunking, each evaluation); None is silent.

    Returns:
      A :class:`SweepResult`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import MLP
      >>> images = jax.random.uniform(jax.random.PRNGKey(0), (16, 28, 28, 1))
      >>> data = (images, jnp.arange(16) % 10)
      >>> result = sweep(MLP(hidden=(8,)), lambda learning_rate: jz.sgd(learning_rate),
      ...                {"learning_rate": [0.1, 0.3]}, [0, 1], data, data,
      ...                SweepConfig(batch_size=8, epochs=2))
      >>> [(r["hparams"]["learning_rate"], r["seed"], len(r["history"])) for r in result.records]
      [(0.1, 0, 2), (0.1, 1, 2), (0.3, 0, 2), (0.3, 1, 2)]
      >>> result.params["Dense_0"]["kernel"].shape, result.chunking.describe()
      ((4, 784, 8), '4 configs in 1 chunk')
    """
    t_start = time.perf_counter()
    config = SweepConfig() if config is None else config
    if not isinstance(config, SweepConfig):
        raise TypeError(f"Invalid config: expected a SweepConfig, got {type(config).__name__}.")
    points = grid_points(grid)
    seeds = [check_int("seed", s, low=0) for s in seeds]
    if not seeds:
        raise ValueError("Invalid seeds: expected at least one seed, got none.")
    configs = [(p, s) for p in points for s in seeds]
    _check_make_tx(make_tx, points[0])
    workload = _workload(as_linen_like(model), train, val, config)
    total, evals = _schedule(workload, config)
    say = log or (lambda _: None)
    if config.exact:
        return _sweep_exact(model, make_tx, configs, train, val, config, say, t_start)
    fns = compiled_fns(workload, make_tx, points[0])

    chunking, compiled, compile_s = plan_chunks(
        fns,
        workload,
        names=list(points[0]),
        num_configs=len(configs),
        chunk_size=config.chunk_size,
        budget=config.memory_budget or available_memory() // 2,
    )
    say(chunking.describe())
    records: List[Dict[str, Any]] = []
    final = []
    for c in range(chunking.chunks):
        part = configs[c * chunking.size : (c + 1) * chunking.size]
        padded = part + [part[-1]] * (chunking.size - len(part))
        histories, params = run_chunk(fns, compiled, workload, padded, total, evals, say)
        for (point, seed), history in zip(part, histories):
            records.append({"hparams": dict(point), "seed": seed, "history": history})
        final.append(jax.tree.map(lambda x, k=len(part): np.asarray(x)[:k], params))
        if chunking.chunks > 1:
            say(f"chunk {c + 1}/{chunking.chunks} done")
    params = jax.tree.map(lambda *xs: np.concatenate(xs), *final)
    return SweepResult(records, params, chunking, compile_s, time.perf_counter() - t_start)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _sweep_exact(model, make_tx, configs, train, val, config, say, t_start) -> SweepResult:
    """``SweepConfig(exact=True)``: each configuration through ``train``'s own program."""
    from jaxopt_zoo.train.loop import train_and_evaluate
    from jaxopt_zoo.train.state import TrainConfig

    if _is_tokens(train):
        from jaxopt_zoo.data.text import eval_windows
        from jaxopt_zoo.train.lm import TokenWindows

        context = int(model.context)
        train_data: Any = TokenWindows(np.asarray(train), context)
        val_data: Any = None
        if val is not None:
            val_data = eval_windows(np.asarray(val), context, config.eval_windows)
    else:
        train_data, val_data = train, val
    say(f"{len(configs)} configs, one at a time (exact)")
    records: List[Dict[str, Any]] = []
    final = []
    compile_s = 0.0
    txs: Dict[tuple, Any] = {}  # one optimizer object per grid point: its seeds share a compile
    for point, seed in configs:
        key = tuple(sorted(point.items()))
        if key not in txs:
            txs[key] = make_tx(**point)
        run_config = TrainConfig(
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=seed,
            drop_last=config.drop_last,
            progress=False,
            eval_batch_size=config.eval_batch_size,
            steps=config.steps,
            eval_every=config.eval_every,
        )
        state, history = train_and_evaluate(model, txs[key], train_data, val_data, run_config)
        records.append({"hparams": dict(point), "seed": seed, "history": history})
        final.append(jax.tree.map(np.asarray, state.params))
        last = history[-1] if history else {}
        say(
            f"{dict(point)} seed {seed}: "
            + ", ".join(
                f"{k} {v:.4f}" for k, v in last.items() if k.startswith("val_") and v is not None
            )
        )
    params = jax.tree.map(lambda *xs: np.stack(xs), *final)
    chunking = Chunking(len(configs), len(configs), 1, None, 0, True)
    return SweepResult(records, params, chunking, compile_s, time.perf_counter() - t_start)


def _check_make_tx(make_tx: Callable, point: Mapping[str, float]) -> None:
    """Build the optimizer once with concrete values, so a bad name fails before compiling."""
    tx = make_tx(**point)
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"Invalid make_tx: expected it to return an optax GradientTransformation, got "
            f"{type(tx).__name__}."
        )


def _is_tokens(x: Any) -> bool:
    return isinstance(x, (np.ndarray, jax.Array)) and x.ndim == 1


def _workload(model: Any, train: Any, val: Any, config: SweepConfig) -> Workload:
    if _is_tokens(train):
        if not hasattr(model, "context"):
            raise TypeError(
                "Invalid model: token arrays as train data need a language model with a "
                f"`context` (CharTransformer), got {type(model).__name__}."
            )
        if config.steps is None:
            raise ValueError("The char-LM trains for a step budget: set SweepConfig(steps=N).")
        return lm_workload(
            model, train, val, config.batch_size, config.eval_windows, config.eval_batch_size
        )
    images, labels = as_device_arrays(train, "train")
    val_arrays = None if val is None else as_device_arrays(val, "val")
    n, bs = images.shape[0], config.batch_size
    per_epoch = n // bs if config.drop_last else -(-n // bs)
    if per_epoch == 0:
        raise ValueError(
            f"drop_last=True with {n} training examples and batch_size={bs} leaves no batch."
        )
    return classifier_workload(
        model, images, labels, val_arrays, bs, per_epoch, config.eval_batch_size
    )


def _schedule(workload: Workload, config: SweepConfig):
    """``(total steps, sorted evaluation steps)``: evaluation happens after those steps."""
    per_epoch = workload.steps_per_epoch
    total = config.steps if config.steps is not None else config.epochs * (per_epoch or 0)
    if config.eval_every is not None:
        every = config.eval_every
    elif per_epoch is not None:
        every = per_epoch
    else:
        every = max(1, total // 10)
    evals = sorted({s for s in range(every, total + 1, every)} | ({total} if total else set()))
    return total, evals
