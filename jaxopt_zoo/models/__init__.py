"""Flax models: the reference Keras CNN, the MLP, the char-LM transformer, and a name -> model
factory."""

from __future__ import annotations

import flax.linen as nn

from jaxopt_zoo.models.cnn import CNN, max_pool_2x2
from jaxopt_zoo.models.mlp import INIT_STYLES, MLP, InitStyle, initializers
from jaxopt_zoo.models.transformer import CharTransformer

MODELS = {"charlm": CharTransformer, "cnn": CNN, "mlp": MLP}

__all__ = ["CNN", "CharTransformer", "FlatModel", "INIT_STYLES", "MLP", "MODELS", "InitStyle",
           "get_model", "initializers", "max_pool_2x2"]


def get_model(name: str, init_style: str = "flax") -> nn.Module:
    """The model called ``name`` (``"cnn"``, ``"mlp"`` or ``"charlm"``) with the given init style.

    ``"charlm"`` is :class:`CharTransformer` with its default config (84-token vocabulary,
    context 128); both init styles apply (see ``transformer_initializers``).

    >>> model = get_model("cnn", init_style="keras")
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model: {name!r}. Expected one of {sorted(MODELS)}.")
    initializers(init_style)  # validate now, not at the first model.init
    return MODELS[key](init_style=init_style)


class FlatModel:
    """A Flax model whose parameters are held as a :class:`jaxopt_zoo.FlatParams`.

    ``FlatModel(model).apply({"params": flat}, x, ...)`` runs ``model`` on the tree view of
    the flat buffers, so the trainer (which calls ``model.apply``) and ``jax.grad`` work on
    ``FlatParams`` unchanged, and ``fuse(tx)`` updates them through ``fused_apply``.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def apply(self, variables, *args, **kwargs):
        return self.model.apply({"params": variables["params"].tree()}, *args, **kwargs)
