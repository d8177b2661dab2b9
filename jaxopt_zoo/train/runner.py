"""Named runs: resolve an optimizer by name and preset, load the data, train, summarize.

Shared by the ``jaxopt-zoo`` command and the scripts in ``experiments/``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from jaxopt_zoo import registry
from jaxopt_zoo.core import chain
from jaxopt_zoo.data import Dataset, load
from jaxopt_zoo.models import get_model
from jaxopt_zoo.train import distributed
from jaxopt_zoo.train.checkpoint import Checkpointer, CheckpointError
from jaxopt_zoo.train.lm import TokenWindows, lm_model
from jaxopt_zoo.train.loop import (
    LoopState,
    NonFiniteError,
    TrainConfig,
    init_loop_state,
    run_lengths,
    steps_per_epoch,
    train_and_evaluate,
)
from jaxopt_zoo.train.techniques import Techniques

PRESETS = ("native", "keras", "torch")
# The model initialisation each preset implies: Keras builds layers with glorot_uniform
# kernels and zero biases; everything else uses Flax's defaults.
PRESET_INIT = {"native": "flax", "keras": "keras", "torch": "flax"}


# The update keywords the trainer passes (train.steps.train_step): the batch loss.
TRAINER_EXTRA_ARGS = ("value",)


def resolve_optimizer(name: str, preset: str = "native") -> str:
    """The registry name of ``name`` under ``preset`` (``adam`` + keras -> ``keras.adam``).

    Qualified names (``torch.adam``) are taken as they are. Raises the registry's
    ``UnknownOptimizerError`` (a KeyError) for unknown names.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {', '.join(PRESETS)}.")
    full = name if ("." in name or preset == "native") else f"{preset}.{name}"
    registry.entry(full)  # raises with suggestions
    return full


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One optimizer configuration to train: registry name, learning rate (None: the
    optimizer's default), extra keyword arguments, the label used in tables, and SAM or
    weight averaging around it (:class:`~jaxopt_zoo.train.techniques.Techniques`)."""

    optimizer: str
    lr: Optional[float] = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: Optional[str] = None
    techniques: Techniques = Techniques()

    @property
    def name(self) -> str:
        return self.label or self.optimizer

    def build(self, steps_per_epoch: int = 1, total_steps: Optional[int] = None):
        """The optimizer; ``steps_per_epoch`` places SWA's start and SWALR's annealing,
        ``total_steps`` (the run's optimizer steps) sizes a learning-rate schedule."""
        t = self.techniques
        kw = dict(self.kwargs)
        entry = registry.entry(self.optimizer)
        missing = [a for a in entry.extra_args if a not in TRAINER_EXTRA_ARGS]
        if missing:
            raise ValueError(
                f"{self.optimizer}'s update needs {', '.join(missing)} (the loss as a function "
                "of the parameters, for its line search), which a mini-batch trainer does not "
                "give: for a full-batch problem use jaxopt_zoo.minimize (docs/full-batch.md)."
            )
        defaults = entry.defaults()
        lr = self.lr
        if lr is None and (t.swa_lr is not None or t.schedule != "constant" or t.decay_mask):
            lr = defaults.get("learning_rate", defaults.get("lr"))  # the schedule's peak
        if lr is not None:
            lr = kw["learning_rate"] = t.learning_rate(lr, steps_per_epoch, total_steps)
        kw, decay = t.decay_kwargs(defaults, kw, lr)
        tx = registry.get(self.optimizer, **kw)
        if decay is not None:  # decoupled, masked decay after the optimizer's update
            tx = chain(tx, decay)
        return t.wrap(tx, steps_per_epoch)


def run_lengths_of(train: Any, config: TrainConfig) -> Tuple[int, int]:
    """``(steps per epoch or eval period, total steps)`` of a run on ``train`` (a
    ``Dataset`` or the char-LM's ``TokenWindows``): what :meth:`RunSpec.build` needs."""
    per_epoch = (
        None if isinstance(train, TokenWindows) else steps_per_epoch(len(train.labels), config)
    )
    period, budget = run_lengths(per_epoch, config)
    return per_epoch or period, budget


def build_model(name: str, init_style: str = "flax", options: Optional[Mapping] = None):
    """The model ``name`` (``cnn``, ``mlp``, ``charlm``); ``options`` set the char-LM's
    ``context``, ``width``, ``depth``, ``heads`` and ``vocab_size``."""
    if name == "charlm":
        return lm_model(init_style, **dict(options or {}))
    if options:
        raise ValueError(f"Model options {sorted(options)} are for --model charlm, not {name}.")
    return get_model(name, init_style)


def sample_input(train: Any):
    """One model input like ``train``'s: an image, or an int window of the char-LM."""
    if isinstance(train, TokenWindows):
        return np.zeros((1, train.context), np.int32)
    return train.images[:1]


def load_data(
    dataset: str = "mnist",
    data_dir: Optional[str] = None,
    *,
    train_limit: Optional[int] = None,
    val_limit: Optional[int] = None,
    val_size: int = 0,
    seed: int = 0,
) -> Tuple[Dataset, Dataset]:
    """Normalized (train, validation) sets. ``val_size=0`` validates on the test split (as
    the background chapter does); otherwise ``val_size`` training examples are held out.
    ``*_limit`` keep the first N examples (for quick runs)."""
    if val_size:
        train, val = load(
            dataset, "train", data_dir, normalize=True, validation_size=val_size, seed=seed
        )
    else:
        train = load(dataset, "train", data_dir, normalize=True)  # type: ignore[assignment]
        val = load(dataset, "test", data_dir, normalize=True)  # type: ignore[assignment]

    def head(ds: Dataset, n: Optional[int]) -> Dataset:
        return ds if n is None else Dataset(ds.images[:n], ds.labels[:n])

    return head(train, train_limit), head(val, val_limit)  # type: ignore[arg-type]


def run(
    spec: RunSpec,
    train: Any,
    val: Any,
    *,
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    tx=None,
    callbacks=None,
    state: Optional[LoopState] = None,
    model_options: Optional[Mapping] = None,
):
    """Train one model with ``spec``'s optimizer; returns ``(state, history)``.

    Pass the same ``tx`` object across seeds to reuse the compiled step. For
    ``model="charlm"``, ``train`` is a :class:`~jaxopt_zoo.train.lm.TokenWindows`, ``val``
    the fixed ``(x, y)`` windows and ``model_options`` the transformer's size
    (:func:`build_model`).
    """
    tx = spec.build(*run_lengths_of(train, config)) if tx is None else tx
    return train_and_evaluate(
        build_model(model, init_style, model_options),
        tx,
        train,
        val,
        config,
        callbacks=callbacks,
        state=state,
    )


class CheckpointsExistError(CheckpointError):
    """The checkpoint directory already holds checkpoints of this run and ``resume`` is off."""


def open_checkpointer(
    directory: Union[str, os.PathLike],
    identity: Mapping[str, Any],
    *,
    keep: int = 3,
    every_steps: Optional[int] = None,
    resume: bool = False,
) -> Checkpointer:
    """The :class:`Checkpointer` of a named run, checked before anything is written.

    ``identity`` (optimizer, model, seed, data, ...) is recorded with the checkpoints, and a
    directory holding another run's checkpoints is refused (``CheckpointMismatchError``).
    One holding checkpoints of *this* run raises :class:`CheckpointsExistError` unless
    ``resume`` is set, so that a finished or interrupted run is never overwritten by accident.
    """
    ckpt = Checkpointer(directory, keep=keep, every_steps=every_steps, metadata=dict(identity))
    if ckpt.latest_number() is not None and not resume:
        raise CheckpointsExistError(
            f"--checkpoint-dir {directory} already holds checkpoints of this run; add --resume "
            "to continue it, or choose another folder"
        )
    return ckpt


def run_with_checkpoints(
    ckpt: Checkpointer,
    spec: RunSpec,
    train: Any,
    val: Any,
    *,
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    resume: bool = False,
    log: Optional[Callable[[str], None]] = None,
    model_options: Optional[Mapping] = None,
    callbacks: Sequence[Callable] = (),
) -> Optional[List[dict]]:
    """Train one run with checkpoints; the history, or None when a signal stopped training.

    - ``resume``: continue from the newest good checkpoint in ``ckpt`` (a fresh start when
      there is none); ``log`` receives what was restored.
    - Ctrl-C or SIGTERM saves the current step and returns None (see
      :meth:`Checkpointer.stop_on_interrupt`); the run then resumes exactly.
    - A :class:`NonFiniteError` saves the state before the failing step and is re-raised
      with the checkpoint's location in its message.
    - The final state is always saved.
    - ``config.devices``: the checkpoint is restored straight onto this run's mesh (each
      process reads its shards), whatever device count wrote it.
    - ``callbacks`` run after the checkpointer's, after every step.
    """
    tx = spec.build(*run_lengths_of(train, config))
    state = None
    try:
        with ckpt.stop_on_interrupt():  # from here on Ctrl-C saves the current step
            if resume:
                template = init_loop_state(
                    build_model(model, init_style, model_options),
                    tx,
                    sample_input(train),
                    config.seed,
                )
                # on a mesh: restore each leaf onto its sharding there (any saved layout)
                template = distributed.prepare(config, tx, template, ())[1]
                state, message = ckpt.restore_latest(template)
                (log or _say)(message)
            state, history = run(
                spec,
                train,
                val,
                model=model,
                init_style=init_style,
                config=config,
                tx=tx,
                callbacks=[ckpt.callback, *callbacks],
                state=state,
                model_options=model_options,
            )
    except NonFiniteError as e:
        if e.state is not None and ckpt.save(e.state, force=True):
            e.args = (f"{e} Its state before that step is saved in {ckpt.directory}.",)
        raise
    ckpt.save(state, force=True)
    if ckpt.interrupted is not None and state.batch != 0:  # stopped mid-epoch by the signal
        ckpt.wait()
        where = "" if config.steps or config.eval_every else f" (epoch {state.epoch + 1})"
        print(
            f"jaxopt-zoo: stopped at step {state.step}{where}; the "
            f"checkpoint is in {ckpt.directory}. Run the same command with --resume to "
            "continue.",
            file=sys.stderr,
            flush=True,
        )
        return None
    return history


def compare(
    specs: Sequence[RunSpec],
    train: Any,
    val: Any,
    *,
    seeds: Sequence[int],
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    on_result=None,
    model_options: Optional[Mapping] = None,
    callbacks=None,
) -> Dict[str, List[List[dict]]]:
    """Train every spec with every seed; returns ``{label: [history per seed]}``.

    ``on_result(label, seed, history)`` is called after each run (to print or save).
    """
    out: Dict[str, List[List[dict]]] = {}
    for spec in specs:
        # one object per optimizer: its compiled step serves every seed
        tx = spec.build(*run_lengths_of(train, config))
        for seed in seeds:
            _, history = run(
                spec,
                train,
                val,
                model=model,
                init_style=init_style,
                config=dataclasses.replace(config, seed=int(seed)),
                tx=tx,
                model_options=model_options,
                callbacks=callbacks,
            )
            out.setdefault(spec.name, []).append(history)
            if on_result is not None:
                on_result(spec.name, seed, history)
    return out


def _say(message: str) -> None:
    print(message, flush=True)


def to_builtin(x: Any) -> Any:
    """JSON-friendly copy (numpy scalars to Python)."""
    if isinstance(x, dict):
        return {str(k): to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_builtin(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
