"""Name -> optimizer constructor, for the CLI, experiments and tests.

``get("adam", learning_rate=3e-4)`` builds an optimizer; ``available()`` lists the names.
Names with a framework prefix (``"torch.adam"``, ``"keras.adam"``) build the
``jaxopt_zoo.compat`` versions with that framework's formulas and defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from jaxopt_zoo.core import GradientTransformation


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered optimizer: what :func:`get` builds and the README's table shows.

    Attributes:
      name: the registry name (``"adam"``, ``"torch.adam"``).
      factory: the function building the ``GradientTransformation``.
      default_lr: the learning rate used when the caller gives none (None: none needed).
      paper: the reference.
      blocks: the chain of building blocks it is made of.
      verified: the references it is tested against.
      fixed: keyword arguments always passed to ``factory`` (presets such as
        ``nesterov=True``).
    """

    name: str
    factory: Callable[..., GradientTransformation]
    default_lr: Optional[float]  # used when the caller gives no learning rate
    paper: str
    blocks: str
    verified: Tuple[str, ...]  # references it is tested against
    fixed: Dict[str, Any] = dataclasses.field(default_factory=dict)  # preset kwargs

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
    **fixed: Any,
) -> None:
    """Add an optimizer to the registry (``available()``, ``get(name)``, the CLI, the
    table-driven tests).

    Args:
      name: the registry name; ``"torch."`` / ``"keras."`` prefixes for compat optimizers.
      factory: the function building the ``GradientTransformation``.
      default_lr: the learning rate ``get`` passes when none is given (None: required or
        built in).
      paper: the reference, for the README's table.
      blocks: the chain of building blocks, for the README's table.
      verified: the references it is tested against.
      **fixed: keyword arguments always passed to ``factory`` (e.g. ``nesterov=True``).

    Raises:
      ValueError: if ``name`` is already registered.

    Example:
      >>> register("adam_b2_98", jz.adam, default_lr=1e-3, paper="Kingma & Ba 2015",
      ...          blocks="scale_by_adam -> scale_by_learning_rate", b2=0.98)  # doctest: +SKIP
    """
    if name in _REGISTRY:
        raise ValueError(f"An optimizer named {name!r} is already registered.")
    _REGISTRY[name] = Entry(name, factory, default_lr, paper, blocks, tuple(verified), fixed)


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


# --------------------------------------------------------------------------- #
# The built-in optimizers: one line each.
# --------------------------------------------------------------------------- #
from jaxopt_zoo import optim as _o  # noqa: E402

_OPTAX = ("optax",)
register(
    "sgd",
    _o.sgd,
    default_lr=0.01,
    paper="Robbins & Monro 1951",
    blocks="scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "momentum",
    _o.sgd,
    default_lr=0.01,
    paper="Polyak 1964",
    blocks="trace -> scale_by_learning_rate",
    verified=_OPTAX,
    momentum=0.9,
)
register(
    "nesterov",
    _o.sgd,
    default_lr=0.01,
    paper="Nesterov 1983; Sutskever et al. 2013",
    blocks="trace(nesterov) -> scale_by_learning_rate",
    verified=_OPTAX,
    momentum=0.9,
    nesterov=True,
)
register(
    "adagrad",
    _o.adagrad,
    default_lr=0.01,
    paper="Duchi et al. 2011",
    blocks="scale_by_rss -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "rmsprop",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Hinton 2012 (Lecture 6e)",
    blocks="scale_by_rms -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "rmsprop_centered",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Graves 2013",
    blocks="scale_by_rms(centered) -> scale_by_learning_rate",
    verified=_OPTAX,
    centered=True,
)
register(
    "rmsprop_nesterov",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Goodfellow et al. 2016, Alg. 8.6",
    blocks="scale_by_rms -> scale_by_learning_rate -> trace(nesterov)",
    verified=_OPTAX,
    momentum=0.9,
    nesterov=True,
)
register(
    "adadelta",
    _o.adadelta,
    default_lr=1.0,
    paper="Zeiler 2012",
    blocks="scale_by_adadelta -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adam",
    _o.adam,
    default_lr=1e-3,
    paper="Kingma & Ba 2015",
    blocks="scale_by_adam -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adamw",
    _o.adamw,
    default_lr=1e-3,
    paper="Loshchilov & Hutter 2019",
    blocks="scale_by_adam -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "amsgrad",
    _o.amsgrad,
    default_lr=1e-3,
    paper="Reddi et al. 2018",
    blocks="scale_by_adam(amsgrad) -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adamax",
    _o.adamax,
    default_lr=2e-3,
    paper="Kingma & Ba 2015, sec. 7.1",
    blocks="scale_by_adamax -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "nadam",
    _o.nadam,
    default_lr=2e-3,
    paper="Dozat 2016",
    blocks="scale_by_adam(nesterov) -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "nadamw",
    _o.nadamw,
    default_lr=1e-3,
    paper="Dozat 2016; Loshchilov & Hutter 2019",
    blocks="scale_by_adam(nesterov) -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "radam",
    _o.radam,
    default_lr=1e-3,
    paper="Liu et al. 2020",
    blocks="scale_by_radam -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adabelief",
    _o.adabelief,
    default_lr=1e-3,
    paper="Zhuang et al. 2020",
    blocks="scale_by_belief -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "yogi",
    _o.yogi,
    default_lr=1e-2,
    paper="Zaheer et al. 2018",
    blocks="scale_by_yogi -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lion",
    _o.lion,
    default_lr=1e-4,
    paper="Chen et al. 2023",
    blocks="scale_by_lion -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lamb",
    _o.lamb,
    default_lr=1e-3,
    paper="You et al. 2020",
    blocks="scale_by_adam -> add_decayed_weights -> scale_by_trust_ratio -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lars",
    _o.lars,
    default_lr=0.1,
    paper="You et al. 2017",
    blocks="add_decayed_weights -> masked(scale_by_trust_ratio) -> scale_by_learning_rate -> trace",
    verified=_OPTAX,
)
register(
    "muon",
    _o.muon,
    default_lr=0.02,
    paper="Jordan et al. 2024; Liu et al. 2025",
    blocks="partition(scale_by_muon -> scale_by_muon_shape -> add_decayed_weights -> "
    "scale_by_learning_rate | adamw)",
    verified=_OPTAX,
)
register(
    "adafactor",
    _o.adafactor,
    default_lr=1e-2,
    paper="Shazeer & Stern 2018",
    blocks="scale_by_factored_rms -> clip_by_block_rms -> scale_by_learning_rate -> "
    "scale_by_param_block_rms",
    verified=_OPTAX,
)
register(
    "soap",
    _o.soap,
    default_lr=3e-3,
    paper="Vyas et al. 2024",
    blocks="scale_by_soap -> scale_by_learning_rate -> decay_after_step",
    verified=("pytorch_optimizer",),
)

# Optimizers of 2024, each verified against its authors' code and the other references.
_SF = ("schedulefree", "optax.contrib")
register(
    "schedule_free_sgd",
    _o.schedule_free_sgd,
    default_lr=None,
    paper="Defazio et al. 2024",
    blocks="schedule_free(add_decayed_weights -> scale_by_learning_rate)",
    verified=_SF,
)
register(
    "schedule_free_adamw",
    _o.schedule_free_adamw,
    default_lr=None,
    paper="Defazio et al. 2024",
    blocks="schedule_free(scale_by_rms -> add_decayed_weights -> scale_by_learning_rate)",
    verified=_SF + ("keras",),
)
register(
    "prodigy",
    _o.prodigy,
    default_lr=None,
    paper="Mishchenko & Defazio 2024",
    blocks="prodigy (one block: d*lr enters the estimate of d)",
    verified=("prodigyopt", "optax.contrib"),
)
register(
    "adopt",
    _o.adopt,
    default_lr=1e-3,
    paper="Taniguchi et al. 2024",
    blocks="scale_by_adopt -> add_decayed_weights -> scale_by_learning_rate",
    verified=("pytorch_optimizer", "optax.contrib"),
)
register(
    "mars",
    _o.mars,
    default_lr=None,
    paper="Yuan et al. 2024",
    blocks="scale_by_mars -> partition(add_decayed_weights -> scale_by_learning_rate)",
    verified=("pytorch_optimizer",),
)
register(
    "ademamix",
    _o.ademamix,
    default_lr=1e-3,
    paper="Pagliardini et al. 2024",
    blocks="scale_by_ademamix -> add_decayed_weights -> scale_by_learning_rate",
    verified=("pytorch_optimizer", "optax.contrib"),
)

# The other frameworks' semantics: "torch.<name>" and "keras.<name>" with their defaults.
from jaxopt_zoo.compat import keras as _keras  # noqa: E402
from jaxopt_zoo.compat import torch as _torch  # noqa: E402

for _fw, _mod, _where in (("torch", _torch, "torch.optim"), ("keras", _keras, "keras.optimizers")):
    for _n, _cls in _mod.CLASS_NAMES.items():
        register(
            f"{_fw}.{_n}",
            getattr(_mod, _n),
            default_lr=None,
            paper=f"{_where}.{_cls}",
            blocks=f"compat.{_fw}",
            verified=(_fw,),
        )


# --------------------------------------------------------------------------- #
# Optimizer-state memory, from init's shapes (nothing is allocated)
# --------------------------------------------------------------------------- #


def reference_params() -> Dict[str, Any]:
    """The parameters ``state_bytes_per_param`` measures on by default: one float32
    1024 x 1024 matrix and its 1024 bias (shape-dependent states, such as SOAP's and
    Adafactor's, differ on other shapes).

    Returns:
      A dict of ``jax.ShapeDtypeStruct`` (no arrays).

    Example:
      >>> jax.tree.map(lambda s: (s.shape, str(s.dtype)), reference_params())
      {'bias': ((1024,), 'float32'), 'kernel': ((1024, 1024), 'float32')}
    """
    import jax
    import jax.numpy as jnp

    return {
        "kernel": jax.ShapeDtypeStruct((1024, 1024), jnp.float32),
        "bias": jax.ShapeDtypeStruct((1024,), jnp.float32),
    }


def state_bytes_per_param(name_or_tx: Any, params: Any = None, **kwargs: Any) -> float:
    """Bytes of optimizer state per parameter element: the sizes of the leaves of
    ``jax.eval_shape(tx.init, params)`` (no arrays allocated) over the number of
    parameter elements.

    ``name_or_tx`` is a registered name (built with ``get(name, **kwargs)``) or a
    ``GradientTransformation``. ``params`` is a tree of arrays or ``ShapeDtypeStruct``
    (default: ``reference_params()``, or its matrix alone for an optimizer that refuses
    vectors, such as ``torch.muon``). Adam on float32 gives 8.0 (two moments) plus a few
    bytes of step counters spread over the elements.

    Args:
      name_or_tx: a registered name or a ``GradientTransformation``.
      params: a tree of arrays or ``jax.ShapeDtypeStruct`` (default: ``reference_params()``).
      **kwargs: passed to ``get`` with a name (a ``TypeError`` with a transformation).

    Returns:
      The state's bytes over the number of parameter elements, a float.

    Example:
      >>> round(state_bytes_per_param("adam"), 2)
      8.0
      >>> params = {"w": jax.ShapeDtypeStruct((10, 10), jnp.float32)}
      >>> state_bytes_per_param(jz.sgd(0.1, momentum=0.9), params)  # + a 4-byte count
      4.04
    """
    import jax
    import numpy as np

    tx = get(name_or_tx, **kwargs) if isinstance(name_or_tx, str) else name_or_tx
    if kwargs and not isinstance(name_or_tx, str):
        raise TypeError("state_bytes_per_param: keyword arguments only go with a name.")
    if params is None:
        params = reference_params()
        try:
            jax.eval_shape(tx.init, params)
        except ValueError:  # matrix-only optimizers (torch.muon refuses the bias)
            params = {"kernel": params["kernel"]}
    n = sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))
    if n == 0:
        raise ValueError("state_bytes_per_param: the parameters have no elements.")
    shapes = jax.eval_shape(tx.init, params)
    total = sum(
        int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(shapes)
        if hasattr(x, "dtype")
    )
    return total / n
