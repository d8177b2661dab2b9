"""Named runs: resolve an optimizer by name and preset, load the data, train, summarize.

Shared by the ``jaxopt-zoo`` command and the scripts in ``experiments/``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from jaxopt_zoo import registry
from jaxopt_zoo.data import Dataset, load
from jaxopt_zoo.models import get_model
from jaxopt_zoo.train.loop import LoopState, TrainConfig, train_and_evaluate

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
    optimizer's default), extra keyword arguments, and the label used in tables."""

    optimizer: str
    lr: Optional[float] = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: Optional[str] = None

    @property
    def name(self) -> str:
        return self.label or self.optimizer

    def build(self):
        kw = dict(self.kwargs)
        if self.lr is not None:
            kw["learning_rate"] = self.lr
        return registry.get(self.optimizer, **kw)


def load_data(dataset: str = "mnist", data_dir: Optional[str] = None, *,
              train_limit: Optional[int] = None, val_limit: Optional[int] = None,
              val_size: int = 0, seed: int = 0) -> Tuple[Dataset, Dataset]:
    """Normalized (train, validation) sets. ``val_size=0`` validates on the test split (as
    the background chapter does); otherwise ``val_size`` training examples are held out.
    ``*_limit`` keep the first N examples (for quick runs)."""
    if val_size:
        train, val = load(dataset, "train", data_dir, normalize=True,
                          validation_size=val_size, seed=seed)
    else:
        train = load(dataset, "train", data_dir, normalize=True)
        val = load(dataset, "test", data_dir, normalize=True)

    def head(ds: Dataset, n: Optional[int]) -> Dataset:
        return ds if n is None else Dataset(ds.images[:n], ds.labels[:n])

    return head(train, train_limit), head(val, val_limit)


def run(spec: RunSpec, train: Dataset, val: Dataset, *, model: str = "cnn",
        init_style: str = "flax", config: TrainConfig, tx=None,
        callbacks=None, state: Optional[LoopState] = None):
    """Train one model with ``spec``'s optimizer; returns ``(state, history)``.

    Pass the same ``tx`` object across seeds to reuse the compiled step.
    """
    tx = spec.build() if tx is None else tx
    return train_and_evaluate(get_model(model, init_style), tx, train, val, config,
                              callbacks=callbacks, state=state)


def compare(specs: Sequence[RunSpec], train: Dataset, val: Dataset, *, seeds: Sequence[int],
            model: str = "cnn", init_style: str = "flax", config: TrainConfig,
            on_result=None) -> Dict[str, List[List[dict]]]:
    """Train every spec with every seed; returns ``{label: [history per seed]}``.

    ``on_result(label, seed, history)`` is called after each run (to print or save).
    """
    out: Dict[str, List[List[dict]]] = {}
    for spec in specs:
        tx = spec.build()  # one object per optimizer: its compiled step serves every seed
        for seed in seeds:
            _, history = run(spec, train, val, model=model, init_style=init_style,
                             config=dataclasses.replace(config, seed=int(seed)), tx=tx)
            out.setdefault(spec.name, []).append(history)
            if on_result is not None:
                on_result(spec.name, seed, history)
    return out


def to_builtin(x: Any) -> Any:
    """JSON-friendly copy (numpy scalars to Python)."""
    if isinstance(x, dict):
        return {str(k): to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_builtin(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
