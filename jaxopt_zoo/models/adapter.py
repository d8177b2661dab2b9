"""Linen-style ``init``/``apply`` over an NNX module, so that code written for Linen models
(:mod:`jaxopt_zoo.train`, ``flax.training.TrainState``) trains NNX ones unchanged."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

_ADAPTERS: "weakref.WeakKeyDictionary[Any, NNXModel]" = weakref.WeakKeyDictionary()


class NNXModel:
    """An NNX module seen as a Linen one: ``init(rngs, x, train=...)`` and
    ``apply({"params": p}, x, train=..., rngs={"dropout": key})``, built on ``nnx.split``
    and ``nnx.merge``.

    ``p`` is the module's ``nnx.Param`` state as a plain nested dict (``nnx.to_pure_dict``),
    so the optimizer, ``jax.grad``, checkpoints and :class:`jaxopt_zoo.FlatParams` see an
    ordinary pytree. Every other variable (RNG streams, constants) is taken from the module
    as it was when wrapped and is not changed by ``apply``: batch statistics are not carried
    between steps, so models with ``BatchNorm`` need a loop of their own (``nnx.Optimizer``).

    Args:
      module: an ``nnx.Module`` instance, or a factory ``f(rngs=nnx.Rngs(...))`` returning
        one (a module class or ``functools.partial`` of one). With a factory, ``init(key)``
        builds the module from ``nnx.Rngs(params=key, dropout=key)``, so each seed gives its
        own initial parameters; with an instance, ``init`` returns the instance's own
        parameters whatever the key.

    ``apply`` calls the merged module as ``module(x, *args, **kwargs)``; ``train`` switches
    dropout on or off with ``nnx.view(module, deterministic=not train)``, and ``rngs``
    reseeds every RNG stream of the module from the given keys (a stream named in ``rngs``
    gets that key, any other the ``"dropout"`` one, each folded with the stream's position)
    so that each step's dropout masks depend only on the key passed.

    Example:
      >>> from flax import nnx
      >>> from jaxopt_zoo.models import NNXModel, nnx_models
      >>> model = NNXModel(nnx_models.CNN)  # the class: a factory of rngs
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
      >>> logits = model.apply({"params": params}, jnp.zeros((4, 28, 28, 1)), train=True,
      ...                      rngs={"dropout": jax.random.PRNGKey(1)})
    """

    def __init__(self, module: Union[nnx.Module, Callable[..., nnx.Module]]):
        if isinstance(module, nnx.Module):
            self.factory: Optional[Callable[..., nnx.Module]] = None
            instance = module
        elif callable(module):
            self.factory = module
            instance = module(rngs=nnx.Rngs(0))
        else:
            raise TypeError(
                f"Invalid module: expected an nnx.Module or a factory of one, got "
                f"{type(module).__name__}."
            )
        graphdef, params, *rest = nnx.split(instance, nnx.Param, ...)
        self.graphdef: Any = graphdef
        self._params = nnx.to_pure_dict(params)
        self._rest = nnx.to_pure_dict(rest[0])

    def init(
        self, rngs: Any, x: jax.Array, *args: Any, train: bool = False, **kwargs: Any
    ) -> Dict[str, Any]:
        """``{"params": p}``: a new module's parameters (factory) or the instance's."""
        del x, args, train, kwargs
        if self.factory is None:
            return {"params": jax.tree.map(jnp.array, self._params)}
        key = rngs["params"] if isinstance(rngs, Mapping) else rngs
        module = self.factory(rngs=nnx.Rngs(params=key, dropout=key))
        return {"params": nnx.to_pure_dict(nnx.state(module, nnx.Param))}

    def bind(self, params: Any) -> nnx.Module:
        """A live NNX module holding ``params`` (e.g. the trained ``state.params``)."""
        return nnx.merge(self.graphdef, params, self._rest)

    def apply(
        self,
        variables: Mapping[str, Any],
        x: jax.Array,
        *args: Any,
        train: Optional[bool] = None,
        rngs: Optional[Mapping[str, jax.Array]] = None,
        **kwargs: Any,
    ) -> Any:
        """Run the module with parameters ``variables["params"]``; see the class docstring."""
        module = self.bind(variables["params"])
        if rngs:
            _reseed(module, rngs)
        if train is not None:
            module = nnx.view(module, deterministic=not train, raise_if_not_found=False)
        return module(x, *args, **kwargs)


def _reseed(module: nnx.Module, rngs: Mapping[str, jax.Array]) -> None:
    streams = [s for _, s in nnx.iter_graph(module) if isinstance(s, nnx.RngStream)]
    for i, stream in enumerate(streams):
        key = rngs.get(stream.key.tag, rngs.get("dropout"))
        if key is None:
            continue
        key = jnp.asarray(key)
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        stream.key.set_value(jax.random.fold_in(key, i))
        stream.count.set_value(jnp.zeros((), jnp.uint32))


def as_linen_like(model: Any) -> Any:
    """``model`` with Linen's ``init``/``apply``: an NNX module (or a module class or
    factory of ``rngs``) wrapped in :class:`NNXModel`, cached per module so that repeated
    calls reuse the trainer's compiled steps; anything else (a Linen module, an
    :class:`NNXModel`, any object with ``apply``) returned unchanged.

    Example:
      >>> from jaxopt_zoo.models import nnx_models
      >>> model = as_linen_like(nnx_models.MLP(rngs=nnx.Rngs(0)))
      >>> hasattr(model, "apply")
      True

    Args:
      model: a Linen module, an NNX module, an NNX module class or a factory of ``rngs``.
    """
    is_nnx = isinstance(model, nnx.Module) or (
        isinstance(model, type) and issubclass(model, nnx.Module)
    )
    if not is_nnx:
        return model
    try:
        return _ADAPTERS[model]
    except (KeyError, TypeError):
        pass
    adapter = NNXModel(model)
    try:
        _ADAPTERS[model] = adapter
    except TypeError:  # not weak-referenceable
        pass
    return adapter
