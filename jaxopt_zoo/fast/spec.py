"""What a block is, as data: :class:`BlockSpec`, carried by the transformation itself.

A block's properties that the fast path and the registry read (element-wise or not, its
kernel stage, its named scalars, its state buffers, the parts of a chain) are a frozen
:class:`BlockSpec`. :func:`describe` returns the transformation as a
:class:`SpecifiedTransformation` (or ``...ExtraArgs``): still an
``optax.GradientTransformation`` (a NamedTuple ``(init, update)``), with the spec as a
typed attribute of the object, not of its functions.

What survives a wrapper: passing the object around, storing it (``copy``, ``pickle``),
``jaxopt_zoo.chain`` (whose own spec lists its parts) keep the spec. Anything that builds
a new transformation around it (``optax.chain``, ``optax.inject_hyperparams``,
``masked``, ``_replace``) gets no spec, so the fast path treats it as unknown: ``fuse``
checks it by probing and the native kernel leaves it to XLA. A wrapper can therefore drop
the fast path but never run a block with another block's description.
:func:`jaxopt_zoo.fast.native.explain` says which part kept a transformation off the kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import jax
import optax

from jaxopt_zoo.fast.stages import STAGES

__all__ = [
    "BlockSpec",
    "NeedsExtraArgsError",
    "SpecifiedTransformation",
    "SpecifiedTransformationExtraArgs",
    "block_names",
    "describe",
    "is_elementwise",
    "leaf_specs",
    "restack",
    "spec_of",
]

Scalar = Union[float, jax.Array, Callable[[Any], Any]]


class NeedsExtraArgsError(TypeError):
    """Raised by an ``update`` called without keyword arguments it needs (a line search's
    ``value_fn``): the fast path's probe, which has none to give, refuses the
    transformation (``NotFusableError``) instead of failing."""


@dataclasses.dataclass(frozen=True, eq=False)
class BlockSpec:
    """A block's properties as data.

    Attributes:
      name: the block's constructor, e.g. ``"scale_by_adam"``.
      elementwise: True when the block's update of each element is the same formula of
        that element's gradient, state and parameter for every parameter, with no
        reduction (``fuse`` then accepts it without probing it).
      stage: the kernel stage it runs as (a key of
        ``jaxopt_zoo.fast.STAGES``), or None (no kernel; XLA).
      scalars: the stage's named scalars: a number or array, or a function of the block's
        step count (the state's ``counter`` field before this step; a schedule, a bias
        correction).
      buffers: the state fields the stage reads and rewrites, in the stage's order. After
        a kernel step the block's state is ``state._replace(**new_buffers)`` with its
        ``counter`` field, if it has one, advanced by one (saturating, like
        ``jaxopt_zoo.core.increment``).
      parts: for a chain, its transformations in order (its state is the tuple of theirs).
      wraps: for a wrapper, the transformations it runs inside (named for readers such as
        the registry; the kernel does not open a wrapper).
      counter: the name of the state's step-count field (``"count"``; e.g. ``"t"`` for a
        state named as in optax.contrib).

    A spec with a ``stage`` is checked against the table at construction: its scalars must
    be exactly the stage's and its buffers as many as the stage's.
    """

    name: str
    elementwise: bool = False
    stage: Optional[str] = None
    scalars: Mapping[str, Scalar] = dataclasses.field(default_factory=dict)
    buffers: Tuple[str, ...] = ()
    parts: Tuple[Any, ...] = ()
    wraps: Tuple[Any, ...] = ()
    counter: str = "count"

    def __post_init__(self) -> None:
        if self.stage is None:
            return
        if self.stage not in STAGES:
            raise ValueError(
                f"BlockSpec {self.name}: unknown kernel stage {self.stage!r}; "
                f"known: {sorted(STAGES)}."
            )
        st = STAGES[self.stage]
        if set(self.scalars) != set(st.scalars):
            raise ValueError(
                f"BlockSpec {self.name}: stage {self.stage!r} takes the scalars "
                f"{list(st.scalars)}, got {sorted(self.scalars)}."
            )
        if len(self.buffers) != len(st.buffers):
            raise ValueError(
                f"BlockSpec {self.name}: stage {self.stage!r} takes "
                f"{len(st.buffers)} state buffers, got {list(self.buffers)}."
            )

    def scalar_values(self, count: Any) -> List[Any]:
        """The stage's scalars for a step at ``count``, in the kernel's order."""
        if self.stage is None:
            raise ValueError(f"BlockSpec {self.name} has no kernel stage.")
        values = [self.scalars[n] for n in STAGES[self.stage].scalars]
        return [v(count) if callable(v) else v for v in values]


class SpecifiedTransformation(optax.GradientTransformation):
    """A ``GradientTransformation`` that carries its :class:`BlockSpec` (``.spec``)."""

    spec: BlockSpec

    def __new__(cls, init: Any, update: Any, spec: BlockSpec):
        self = super().__new__(cls, init, update)
        self.spec = spec
        return self

    def __getnewargs__(self):  # copy and pickle keep the spec
        return (self.init, self.update, self.spec)

    def _replace(self, **kw):  # new functions: a new, undescribed transformation
        return optax.GradientTransformation(**{**self._asdict(), **kw})


class SpecifiedTransformationExtraArgs(optax.GradientTransformationExtraArgs):
    """A ``GradientTransformationExtraArgs`` that carries its :class:`BlockSpec`."""

    spec: BlockSpec

    def __new__(cls, init: Any, update: Any, spec: BlockSpec):
        self = super().__new__(cls, init, update)
        self.spec = spec
        return self

    def __getnewargs__(self):
        return (self.init, self.update, self.spec)

    def _replace(self, **kw):
        return optax.GradientTransformationExtraArgs(**{**self._asdict(), **kw})


def describe(tx: optax.GradientTransformation, spec: BlockSpec) -> Any:
    """``tx`` as the same transformation carrying ``spec`` (extra-args support kept).

    The result has ``tx``'s own ``init`` and ``update`` and is still an
    ``optax.GradientTransformation`` (a ``GradientTransformationExtraArgs`` when ``tx`` is
    one); :func:`spec_of` reads the spec back. Blocks call this on what they return, so that
    ``fuse`` and the native kernel know what they are (see the module docstring for what
    keeps the spec and what drops it).

    Args:
      tx: the transformation to describe.
      spec: its :class:`BlockSpec`. Describe only what is true of ``tx``: ``fuse`` trusts
        ``elementwise=True`` without probing, and the kernel runs ``stage`` in place of
        ``tx.update``.

    Returns:
      A ``SpecifiedTransformation`` or ``SpecifiedTransformationExtraArgs`` (both in
      ``jaxopt_zoo.fast.spec``).

    Raises:
      TypeError: ``spec`` is not a :class:`BlockSpec`.

    Example:
      >>> import optax
      >>> tx = describe(optax.scale(-0.1), BlockSpec("negated_tenth", elementwise=True))
      >>> spec_of(tx).name, spec_of(tx).elementwise
      ('negated_tenth', True)
      >>> isinstance(tx, optax.GradientTransformation)
      True
    """
    if not isinstance(spec, BlockSpec):
        raise TypeError(f"describe: expected a BlockSpec, got {type(spec).__name__}.")
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return SpecifiedTransformationExtraArgs(tx.init, tx.update, spec)
    return SpecifiedTransformation(tx.init, tx.update, spec)


def spec_of(tx: Any) -> Optional[BlockSpec]:
    """The :class:`BlockSpec` that ``tx`` carries, or None (a transformation made elsewhere).

    Args:
      tx: any object; typically a transformation made by a jaxopt_zoo constructor.

    Returns:
      The spec given to :func:`describe`, or None when ``tx`` carries none (optax's
      transformations, and anything built around a described one).

    Example:
      >>> import optax, jaxopt_zoo as jz
      >>> spec = spec_of(jz.adam(1e-3))  # a chain: its parts carry their own specs
      >>> spec.name, [spec_of(part).name for part in spec.parts]
      ('chain', ['scale_by_adam', 'scale_by_learning_rate'])
      >>> spec_of(optax.adam(1e-3)) is None
      True
    """
    if isinstance(tx, (SpecifiedTransformation, SpecifiedTransformationExtraArgs)):
        spec = vars(tx).get("spec")
        return spec if isinstance(spec, BlockSpec) else None
    return None


def leaf_specs(tx: Any, state: Any = None) -> Optional[List[Tuple[BlockSpec, Any]]]:
    """The blocks of ``tx`` with chains opened, as ``(spec, its state)`` pairs in order
    (state None when ``state`` is None), or None when some part carries no spec or the
    state does not have the chain's nesting."""
    spec = spec_of(tx)
    if spec is None:
        return None
    if not spec.parts:
        return [(spec, state)]
    if state is not None and (not isinstance(state, tuple) or len(state) != len(spec.parts)):
        return None
    out: List[Tuple[BlockSpec, Any]] = []
    for i, part in enumerate(spec.parts):
        got = leaf_specs(part, None if state is None else state[i])
        if got is None:
            return None
        out += got
    return out


def is_elementwise(tx: Any) -> bool:
    """Whether every block of ``tx`` (chains opened) carries a spec saying ``elementwise``."""
    blocks = leaf_specs(tx)
    return blocks is not None and all(spec.elementwise for spec, _ in blocks)


def block_names(tx: Any) -> Optional[List[str]]:
    """The names of the blocks of ``tx`` in order, chains and wrappers opened (a wrapper
    as ``name(inner, ...)``), or None when some part carries no spec."""
    blocks = leaf_specs(tx)
    if blocks is None:
        return None
    out: List[str] = []
    for spec, _ in blocks:
        if spec.wraps:
            inner = [block_names(w) for w in spec.wraps]
            if any(i is None for i in inner):
                return None
            out.append(f"{spec.name}({' -> '.join(n for i in inner for n in i or [])})")
        else:
            out.append(spec.name)
    return out


def restack(tx: Any, state: Any, new_states: List[Any]) -> Any:
    """Put the blocks' new states (in :func:`leaf_specs` order) back in ``tx``'s nesting."""
    it = iter(new_states)

    def build(t: Any, s: Any) -> Any:
        spec = spec_of(t)
        if spec is None or not spec.parts:
            return next(it)
        return tuple(build(sub, ss) for sub, ss in zip(spec.parts, s))

    return build(tx, state)
