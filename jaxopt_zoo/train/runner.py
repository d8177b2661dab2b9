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
from jaxopt_zoo.data import Dataset, load
from jaxopt_zoo.models import get_model
from jaxopt_zoo.train import distributed
from jaxopt_zoo.train.checkpoint import Checkpointer, CheckpointError
from jaxopt_zoo.train.loop import (
    LoopState,
    NonFiniteError,
    TrainConfig,
    init_loop_state,
    steps_per_epoch,
    train_and_evaluate,
)
from jaxopt_zoo.train.techniques import Techniques

PRESETS = ("native", "keras", "torch")
# The model initialisation each preset implies: Keras builds layers with glorot_uniform
# kernels and zero biases; everything else uses Flax's defaults.
PRESET_INIT = {"native": "flax", "keras": "keras", "torch": "flax"}


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

    def build(self, steps_per_epoch: int = 1):
        """The optimizer; ``steps_per_epoch`` places SWA's start and SWALR's annealing."""
        kw = dict(self.kwargs)
        lr = self.lr
        if lr is None and self.techniques.swa_lr is not None:  # SWALR starts from the default
            defaults = registry.entry(self.optimizer).defaults()
            lr = defaults.get("learning_rate", defaults.get("lr"))
        if lr is not None:
            kw["learning_rate"] = self.techniques.learning_rate(lr, steps_per_epoch)
        return self.techniques.wrap(registry.get(self.optimizer, **kw), steps_per_epoch)


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
    train: Dataset,
    val: Dataset,
    *,
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    tx=None,
    callbacks=None,
    state: Optional[LoopState] = None,
):
    """Train one model with ``spec``'s optimizer; returns ``(state, history)``.

    Pass the same ``tx`` object across seeds to reuse the compiled step.
    """
    tx = spec.build(steps_per_epoch(len(train.labels), config)) if tx is None else tx
    return train_and_evaluate(
        get_model(model, init_style), tx, train, val, config, callbacks=callbacks, state=state
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
    train: Dataset,
    val: Dataset,
    *,
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    resume: bool = False,
    log: Optional[Callable[[str], None]] = None,
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
    tx = spec.build(steps_per_epoch(len(train.labels), config))
    state = None
    try:
        with ckpt.stop_on_interrupt():  # from here on Ctrl-C saves the current step
            if resume:
                template = init_loop_state(
                    get_model(model, init_style), tx, train.images[:1], config.seed
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
            )
    except NonFiniteError as e:
        if e.state is not None and ckpt.save(e.state, force=True):
            e.args = (f"{e} Its state before that step is saved in {ckpt.directory}.",)
        raise
    ckpt.save(state, force=True)
    if ckpt.interrupted is not None and state.batch != 0:  # stopped mid-epoch by the signal
        ckpt.wait()
        print(
            f"jaxopt-zoo: stopped at step {state.step} (epoch {state.epoch + 1}); the "
            f"checkpoint is in {ckpt.directory}. Run the same command with --resume to "
            "continue.",
            file=sys.stderr,
            flush=True,
        )
        return None
    return history


def compare(
    specs: Sequence[RunSpec],
    train: Dataset,
    val: Dataset,
    *,
    seeds: Sequence[int],
    model: str = "cnn",
    init_style: str = "flax",
    config: TrainConfig,
    on_result=None,
    callbacks=None,
) -> Dict[str, List[List[dict]]]:
    """Train every spec with every seed; returns ``{label: [history per seed]}``.

    ``on_result(label, seed, history)`` is called after each run (to print or save).
    """
    out: Dict[str, List[List[dict]]] = {}
    for spec in specs:
        # one object per optimizer: its compiled step serves every seed
        tx = spec.build(steps_per_epoch(len(train.labels), config))
        for seed in seeds:
            _, history = run(
                spec,
                train,
                val,
                model=model,
                init_style=init_style,
                config=dataclasses.replace(config, seed=int(seed)),
                tx=tx,
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
