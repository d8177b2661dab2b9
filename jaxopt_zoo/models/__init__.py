"""Flax models: the reference Keras CNN and the MLP, and a name -> model factory."""

from __future__ import annotations

import flax.linen as nn

from jaxopt_zoo.models.cnn import CNN, max_pool_2x2
from jaxopt_zoo.models.mlp import INIT_STYLES, MLP, InitStyle, initializers

MODELS = {"cnn": CNN, "mlp": MLP}

__all__ = ["CNN", "INIT_STYLES", "MLP", "MODELS", "InitStyle", "get_model", "initializers",
           "max_pool_2x2"]


def get_model(name: str, init_style: str = "flax") -> nn.Module:
    """The model called ``name`` (``"cnn"`` or ``"mlp"``) with the given init style.

    >>> model = get_model("cnn", init_style="keras")
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model: {name!r}. Expected one of {sorted(MODELS)}.")
    initializers(init_style)  # validate now, not at the first model.init
    return MODELS[key](init_style=init_style)
