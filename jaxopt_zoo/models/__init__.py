"""Flax models: the reference Keras CNN and the MLP in Linen and NNX, the char-LM
transformer, and a name -> model factory.

The Linen models (:class:`CNN`, :class:`MLP`) and their NNX twins (:mod:`.nnx_models`) share
the CPU-fast layers of :mod:`.layers` and the same parameter tree. :class:`NNXModel` gives an
NNX module Linen's ``init``/``apply``, which is what :mod:`jaxopt_zoo.train` calls.
"""

from __future__ import annotations

import functools
from typing import Any

import jaxopt_zoo._train_extra  # noqa: F401  (a clear error without [train])
from jaxopt_zoo.models import nnx_models
from jaxopt_zoo.models.adapter import NNXModel, as_linen_like
from jaxopt_zoo.models.cnn import CNN, max_pool_2x2
from jaxopt_zoo.models.mlp import INIT_STYLES, MLP, InitStyle, initializers
from jaxopt_zoo.models.transformer import CharTransformer

MODELS = {"charlm": CharTransformer, "cnn": CNN, "mlp": MLP}
# The char-LM's NNX twin (transformer.CharTransformerNNX) takes its own arguments; not here.
NNX_MODELS = {"cnn": nnx_models.CNN, "mlp": nnx_models.MLP}
APIS = ("linen", "nnx")

__all__ = [
    "APIS",
    "CNN",
    "CharTransformer",
    "INIT_STYLES",
    "MLP",
    "MODELS",
    "NNXModel",
    "NNX_MODELS",
    "InitStyle",
    "as_linen_like",
    "get_model",
    "initializers",
    "max_pool_2x2",
    "nnx_models",
]


def get_model(name: str, init_style: str = "flax", api: str = "linen") -> Any:
    """The model called ``name`` (``"cnn"``, ``"mlp"`` or ``"charlm"``) with the given init style.

    Args:
      name: ``"cnn"`` (the reference Keras CNN), ``"mlp"`` (784-128-10) or ``"charlm"``
        (:class:`CharTransformer`, default config; Linen only).
      init_style: ``"flax"`` (LeCun-normal kernels) or ``"keras"`` (Glorot-uniform).
      api: ``"linen"`` (a ``flax.linen`` module) or ``"nnx"`` (the NNX twin from
        :mod:`.nnx_models`, wrapped in :class:`NNXModel` so that the trainer and any
        Linen-style code can ``init`` and ``apply`` it; each seed builds its own weights).

    Returns:
      An object with Linen's ``init(rngs, x, train=...)`` and ``apply({"params": p}, x,
      train=..., rngs=...)``.

    Example:
      >>> model = get_model("cnn", init_style="keras")
      >>> same = get_model("cnn", init_style="keras", api="nnx")
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model: {name!r}. Expected one of {sorted(MODELS)}.")
    if api not in APIS:
        raise ValueError(f"Unknown api: {api!r}. Expected one of {APIS}.")
    initializers(init_style)  # validate now, not at the first model.init
    if api == "nnx":
        return _nnx_model(key, init_style)
    return MODELS[key](init_style=init_style)


@functools.lru_cache(maxsize=None)
def _nnx_model(key: str, init_style: str) -> NNXModel:
    # One adapter per (name, init style), as Linen modules compare equal: the trainer's
    # compiled steps (memoized on the model) are reused across runs and seeds.
    return NNXModel(functools.partial(NNX_MODELS[key], init_style=init_style))
