"""The registry itself: :class:`Entry`, :func:`register`, :func:`available`, :func:`entry`
and :func:`get`. The built-in optimizers are registered by ``jaxopt_zoo.registry.builtin``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from jaxopt_zoo.core import GradientTransformation


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered optimizer: what :func:`get` builds and the optimizer table shows
    (docs/optimizers.md).

    Attributes:
      name: the registry name (``"adam"``, ``"torch.adam"``).
      factory: the function building the ``GradientTransformation``.
      default_lr: the learning rate used when the caller gives none (None: none needed).
      paper: the reference.
      blocks: the chain of building blocks it is made of.
      verified: the references it is tested against.
      fixed: keyword arguments always passed to ``factory`` (presets such as
        ``nesterov=True``).
      extra_args: keyword arguments its ``update`` needs besides ``(grads, state,
        params)``: ``"value"`` (the loss at ``params``: Polyak step, MoMo, L-BFGS),
        ``"value_fn"`` (the loss as a function of the parameters, for line searches),
        ``"grad"`` (the gradient again, for line searches), ``"obj_fn"`` (Sophia's
        objective of the parameters), ``"key"`` (a PRNG key). The trainer and the
        registry-wide tests pass exactly these.
    """

    name: str
    factory: Callable[..., GradientTransformation]
    default_lr: Optional[float]  # used when the caller gives no learning rate
    paper: str
    blocks: str
    verified: Tuple[str, ...]  # references it is tested against
    fixed: Dict[str, Any] = dataclasses.field(default_factory=dict)  # preset kwargs
    extra_args: Tuple[str, ...] = ()  # update(..., **{name: ...}) it needs

    def defaults(self) -> Dict[str, Any]:
        """The constructor's keyword defaults, with this entry's presets applied."""
        sig = inspect.signature(self.factory)
        out = {
            k: p.default
            for k, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        out.update(self.fixed)
        if self.default_lr is not None:
            out["learning_rate"] = self.default_lr
        return out


_REGISTRY: Dict[str, Entry] = {}
# The keyword arguments an optimizer's update may need (Entry.extra_args).
EXTRA_ARGS = ("value", "value_fn", "grad", "obj_fn", "key")


class UnknownOptimizerError(KeyError, ValueError):
    """An optimizer name that is not registered (a KeyError whose message reads well)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(
    name: str,
    factory: Callable[..., GradientTransformation],
    *,
    default_lr: Optional[float],
    paper: str,
    blocks: str,
    verified: Tuple[str, ...] = (),
    extra_args: Tuple[str, ...] = (),
    **fixed: Any,
) -> None:
    """Add an optimizer to the registry (``available()``, ``get(name)``, the CLI, the
    table-driven tests).

    Args:
      name: the registry name; ``"torch."`` / ``"keras."`` prefixes for compat optimizers.
      factory: the function building the ``GradientTransformation``.
      default_lr: the learning rate ``get`` passes when none is given (None: required or
        built in).
      paper: the reference, for the optimizer table.
      blocks: the chain of building blocks, for the optimizer table.
      verified: the references it is tested against.
      extra_args: the keyword arguments ``update`` needs (see :class:`Entry`).
      **fixed: keyword arguments always passed to ``factory`` (e.g. ``nesterov=True``).

    Raises:
      ValueError: if ``name`` is already registered.

    Example:
      >>> register("adam_b2_98", jz.adam, default_lr=1e-3, paper="Kingma & Ba 2015",
      ...          blocks="scale_by_adam -> scale_by_learning_rate", b2=0.98)  # doctest: +SKIP
    """
    if name in _REGISTRY:
        raise ValueError(f"An optimizer named {name!r} is already registered.")
    unknown = set(extra_args) - set(EXTRA_ARGS)
    if unknown:
        raise ValueError(
            f"{name}: unknown extra_args {sorted(unknown)}; expected some of {EXTRA_ARGS}."
        )
    _REGISTRY[name] = Entry(
        name, factory, default_lr, paper, blocks, tuple(verified), fixed, tuple(extra_args)
    )


def available(prefix: Optional[str] = None) -> List[str]:
    """Registered names, sorted; ``prefix="torch."`` lists the PyTorch-compatible ones.

    Args:
      prefix: None for the native optimizers, or a prefix such as ``"torch."`` or
        ``"keras."``.

    Example:
      >>> "adam" in available() and "torch.adam" in available("torch.")
      True
    """
    names = sorted(_REGISTRY)
    if prefix is None:
        return [n for n in names if "." not in n]
    return [n for n in names if n.startswith(prefix)]


def entry(name: str) -> Entry:
    """The registry's :class:`Entry` for ``name``: the factory, default learning rate, paper,
    building blocks and the references it is verified against.

    Args:
      name: a registered name (``"adam"``, ``"torch.adam"``, ``"keras.rmsprop"``).

    Raises:
      UnknownOptimizerError: (a ``KeyError``) for an unknown name, suggesting close ones.

    Example:
      >>> entry("adam").paper
      'Kingma & Ba 2015'
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownOptimizerError(
            f"Unknown optimizer {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def get(name: str, **kwargs: Any) -> GradientTransformation:
    """Build the optimizer ``name``; ``learning_rate`` defaults to the entry's default.

    Args:
      name: a registered name (see :func:`available`).
      **kwargs: the optimizer's arguments; ``learning_rate`` is also accepted for ``lr``.

    Returns:
      The ``GradientTransformation``.

    Raises:
      UnknownOptimizerError: for an unknown name (a ``KeyError``, with suggestions).

    Example:
      >>> tx = get("adamw", learning_rate=3e-4, weight_decay=1e-2)
      >>> tx = get("torch.sgd", lr=0.1, momentum=0.9)
    """
    e = entry(name)
    params = inspect.signature(e.factory).parameters
    if "learning_rate" in kwargs and "learning_rate" not in params and "lr" in params:
        kwargs = dict(kwargs)
        kwargs["lr"] = kwargs.pop("learning_rate")
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {unknown}; it takes {', '.join(params)}.")
    kw = dict(e.fixed)
    if e.default_lr is not None and "learning_rate" in params:
        kw["learning_rate"] = e.default_lr
    kw.update(kwargs)
    return e.factory(**kw)
