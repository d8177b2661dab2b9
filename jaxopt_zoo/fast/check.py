"""Is a transformation exact on the flat layout? The check behind ``fuse``.

``fuse(tx)`` runs ``tx`` once over one buffer per dtype; that equals running it on the
tree only when every parameter gets the same element-wise formula and every reduction
spans all parameters (a global norm is fine; a per-parameter norm is not). This module
decides it with public JAX APIs only (no primitive names):

- blocks whose :class:`~jaxopt_zoo.fast.spec.BlockSpec` says ``elementwise`` (and chains
  of them) are accepted as they are;
- anything else is *probed*: ``tx.init`` and two ``tx.update`` steps run, eagerly, on the
  tree and on the flat buffers from the same pseudo-random parameters and gradients (with
  exact zeros), with forward derivatives (``jax.jvp``) along random gradient and parameter
  directions, so that small terms (weight decay, eps) are compared at full weight. The
  results must agree to the dtype's rounding. A refusal names its cause, found by further
  probes: noise (constant inputs give varying outputs), a per-parameter reduction (moving
  one element moves the others of its parameter only), factored or masked state, or a
  formula that differs between parameters;
- whether the update of one buffer reads another (a global reduction), which decides if
  ``fused_apply`` may run the buffers one after another, is read from the data flow of
  ``jax.make_jaxpr``'s equations (inputs to outputs, nothing else).

A probe is evidence, not a proof: a difference smaller than the dtype's rounding on the
probe, or in fewer than one element in 10,000 of a parameter, is not seen.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from jaxopt_zoo.fast.layout import FlatParams, Layout
from jaxopt_zoo.fast.spec import is_elementwise

__all__ = ["NotFusableError", "analyze", "check_fusable"]

_TOL = {
    "float64": 1e-9,
    "complex128": 1e-9,
    "float32": 1e-4,
    "complex64": 1e-4,
    "bfloat16": 3e-2,
    "float16": 1e-2,
}


class NotFusableError(ValueError):
    """``fuse`` was given a transformation that is not exact on flat buffers."""


class _Mismatch(Exception):
    """The probe saw a difference: ``where`` (an output path) and ``leaf`` (an index)."""

    def __init__(self, where: str, leaf: Optional[int], why: str = ""):
        super().__init__(where)
        self.where, self.leaf, self.why = where, leaf, why


def check_fusable(tx: Any, params_or_layout: Any) -> None:
    """Raise :class:`NotFusableError` unless ``tx`` is exact on the flat layout of the
    parameters, i.e. unless ``fuse(tx)`` gives the same results as ``tx``.

    Always probes ``tx`` (see the module docstring), even when its ``BlockSpec`` says it
    is element-wise: a test that the spec tells the truth (``fuse`` trusts such a spec).
    The probe runs ``tx.init`` and two ``tx.update`` steps on the tree and on flat buffers
    of pseudo-random values: a few small compilations per call.

    Args:
      tx: the transformation to check (any ``optax.GradientTransformation``).
      params_or_layout: the parameters as a tree of arrays or ``jax.ShapeDtypeStruct`` s,
        a :class:`~jaxopt_zoo.fast.FlatParams` or a :class:`~jaxopt_zoo.fast.Layout`.

    Raises:
      NotFusableError: ``tx`` is not exact on flat buffers; the message names the cause
        (a per-parameter reduction, noise, factored or masked state, ...).

    Example:
      >>> import jax.numpy as jnp, optax, jaxopt_zoo as jz
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> check_fusable(jz.adam(1e-3), params)  # fine: returns None
      >>> try:
      ...     check_fusable(optax.scale_by_trust_ratio(), params)  # a per-parameter norm
      ... except jz.NotFusableError as e:
      ...     print(e)
      fuse: this transformation is not exact on flat buffers: it reduces over ...
    """
    analyze(tx, params_or_layout, trust_spec=False)


def analyze(tx: Any, params_or_layout: Any, *, trust_spec: bool = True) -> bool:
    """Check ``tx`` like :func:`check_fusable`; return whether each buffer's update reads
    no other buffer (then ``fused_apply`` may update the buffers one at a time)."""
    layout = as_layout(params_or_layout)
    if not layout.buffers:
        return True  # no elements (an empty tree or only zero-size arrays): nothing differs
    if trust_spec and is_elementwise(tx):
        return True
    _probe(tx, layout)
    return separable(tx, layout)


def as_layout(params_or_layout: Any) -> Layout:
    """The :class:`Layout` of a tree, a ``FlatParams`` or a layout."""
    if isinstance(params_or_layout, Layout):
        return params_or_layout
    if isinstance(params_or_layout, FlatParams):
        return params_or_layout.layout
    return Layout.of(params_or_layout)


# --------------------------------------------------------------------------- #
# The probe
# --------------------------------------------------------------------------- #


def _values(layout: Layout, seed: int, zeros: float = 0.0, const: Optional[float] = None) -> Any:
    """A tree of this layout: per-leaf scales 1.5..4.5 (so per-parameter statistics
    differ), a fraction ``zeros`` of exact zeros, or every element ``const``."""
    rng = np.random.default_rng(seed)
    leaves = []
    for i, (shape, dt) in enumerate(zip(layout.shapes, layout.dtypes)):
        dtype = jnp.dtype(dt)
        if const is not None:
            x = np.full(shape, const)
        else:
            x = np.asarray(rng.normal(size=shape)) * (1.5 + i % 4)
            if jnp.issubdtype(dtype, jnp.complexfloating):
                x = x + 1j * np.asarray(rng.normal(size=shape))
            x = np.where(rng.random(shape) < zeros, 0, x)
        if not jnp.issubdtype(dtype, jnp.inexact):
            x = np.round(np.real(x))
        leaves.append(jnp.asarray(x, dtype))
    return layout.treedef.unflatten(leaves)


def _tangent(tree: Any, seed: int) -> Any:
    """A random direction (zeros for integer leaves; see :func:`_float0`)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (
            jnp.asarray(rng.normal(size=x.shape), x.dtype)
            if jnp.issubdtype(x.dtype, jnp.inexact)
            else jnp.zeros_like(x)
        ),
        tree,
    )


def _float0(tangent: Any) -> Any:
    """Integer leaves of a tangent as the float0 zeros that ``jax.jvp`` wants."""
    return jax.tree.map(
        lambda x: (
            x if jnp.issubdtype(x.dtype, jnp.inexact) else np.zeros(x.shape, jax.dtypes.float0)
        ),
        tangent,
    )


def _run(
    tx: Any, params: Any, grads: List[Any], d_params: Optional[Any], as_tree: Any
) -> List[Any]:
    """Outputs (as trees) of the second of two steps: its values and, unless ``d_params``
    is None, their derivative along ``d_params``."""
    state = tx.init(params)
    _, state = tx.update(grads[0], state, params)
    if d_params is None:
        return [as_tree(tx.update(grads[1], state, params))]
    out, d_out = jax.jvp(lambda p: tx.update(grads[1], state, p), (params,), (_float0(d_params),))
    return [as_tree(out), as_tree(d_out)]


def _unflat(tree: Any) -> Any:
    """FlatParams nodes replaced by their trees."""
    is_flat = lambda x: isinstance(x, FlatParams)  # noqa: E731
    return jax.tree.map(lambda x: x.tree() if is_flat(x) else x, tree, is_leaf=is_flat)


def _probe(tx: Any, layout: Layout) -> None:
    with jax.ensure_compile_time_eval():  # concrete values, even inside a jit trace
        _probe_now(tx, layout)


def _probe_now(tx: Any, layout: Layout) -> None:
    tree_p = _values(layout, 1)
    grads = [_values(layout, 2 + k, zeros=0.25) for k in range(2)]
    d_params: Optional[Any] = _tangent(tree_p, 11)

    def flat(tree):
        return FlatParams(layout.flatten(tree), layout)

    # One compiled program per layout (compiling beats running op by op, which compiles
    # every operation for every shape).
    def on_tree(p, gs, dp):
        return _run(tx, p, gs, dp, lambda x: x)

    def on_flat(p, gs, dp):
        return _run(tx, p, gs, dp, _unflat)

    try:
        want = jax.jit(on_tree)(tree_p, grads, d_params)
    except (TypeError, ValueError, NotImplementedError):  # no forward derivative (a
        # callback, a custom_vjp): compare the values only; a real error is raised again
        d_params = None
        want = jax.jit(on_tree)(tree_p, grads, d_params)
    try:
        got = jax.jit(on_flat)(
            flat(tree_p), [flat(g) for g in grads], None if d_params is None else flat(d_params)
        )
    except Exception as e:  # noqa: BLE001 -- a failure on flat buffers is a refusal
        raise NotFusableError(
            _message(
                _diagnose(
                    tx,
                    layout,
                    _Mismatch("", None, f"it fails on flat buffers ({type(e).__name__}: {e})"),
                )
            )
        ) from None
    try:
        for a, b in zip(got, want):
            _compare(a, b, layout)
    except _Mismatch as m:
        raise NotFusableError(_message(_diagnose(tx, layout, m))) from None


def _compare(got: Any, want: Any, layout: Layout) -> None:
    """Raise :class:`_Mismatch` at the first output that differs beyond rounding."""
    structures: List[Any] = [jax.tree.structure(got), jax.tree.structure(want)]
    if structures[0] != structures[1]:
        raise _Mismatch("state", None, "its state is organised differently on flat buffers")
    names = ("updates", "state")
    # A global reduction over a bfloat16 buffer is rounded per buffer instead of per leaf,
    # and carries that rounding into every parameter: the loosest dtype's tolerance.
    tol = max(_TOL.get(dt, 1e-4) for dt in layout.dtypes)
    for part, g_tree, w_tree in zip(names, got, want):
        for (path, w), g in zip(
            jax.tree_util.tree_flatten_with_path(w_tree)[0], jax.tree.leaves(g_tree)
        ):
            where = part + jax.tree_util.keystr(path)
            if jnp.shape(g) != jnp.shape(w):
                raise _Mismatch(where, None)
            if not _close(np.asarray(g), np.asarray(w), jnp.result_type(w), tol):
                raise _Mismatch(where, _leaf_of(where, w, layout))


def _close(got: np.ndarray, want: np.ndarray, dtype: Any, tol: float) -> bool:
    if got.dtype == jax.dtypes.float0 or not jnp.issubdtype(dtype, jnp.inexact):
        return got.dtype == jax.dtypes.float0 or bool(np.array_equal(got, want))
    # complex if either side is (a flat buffer may hold a real leaf in a complex dtype)
    complex_ = jnp.issubdtype(dtype, jnp.complexfloating) or np.iscomplexobj(got)
    wide = np.complex128 if complex_ or np.iscomplexobj(want) else np.float64
    got, want = got.astype(wide), want.astype(wide)
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return False
    scale = float(np.max(np.abs(want[finite]), initial=0.0))
    bad = np.abs(got - want) > tol * scale
    bad &= finite
    # A handful of elements may land on the other side of a discontinuity (a sign, a
    # maximum) when a global sum is rounded in another order; a formula differs everywhere.
    return int(np.sum(bad)) <= want.size // 10_000


def _leaf_of(where: str, leaf: Any, layout: Layout) -> Optional[int]:
    """The parameter an output leaf belongs to, by path suffix (None: not per-parameter)."""
    paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(
            layout.treedef.unflatten(list(range(layout.num_leaves)))
        )[0]
    ]
    for i in sorted(range(len(paths)), key=lambda i: -len(paths[i])):
        if where.endswith(paths[i]) and tuple(jnp.shape(leaf)) == layout.shapes[i]:
            return i
    return None


# --------------------------------------------------------------------------- #
# Why: further probes on the tree, only after a difference was seen
# --------------------------------------------------------------------------- #


def _diagnose(tx: Any, layout: Layout, m: _Mismatch) -> str:
    structs = layout.treedef.unflatten(
        [jax.ShapeDtypeStruct(s, jnp.dtype(d)) for s, d in zip(layout.shapes, layout.dtypes)]
    )
    odd = list(_odd_state(tx, structs, layout))
    for _, shape in odd:
        if any(len(shape) < len(ps) and _drops_axes(shape, ps) for ps in layout.shapes):
            return (
                "it reduces over some axes of a parameter (factored statistics, as in "
                "Adafactor), which a flat buffer does not have"
            )
    with jax.ensure_compile_time_eval():
        if _quietly(_varies_under_constant_inputs, tx, layout):
            return (
                "it adds a value not derived from the parameters (e.g. noise shaped like "
                "a parameter)"
            )
        if _quietly(_reduces_per_parameter, tx, layout):
            return (
                "it reduces over single parameters (a per-parameter norm, RMS or "
                "statistic, as in trust-ratio scaling (LAMB, LARS), clip_by_block_rms or "
                "Adafactor), which differs on one flat buffer"
            )
    if odd:
        return (
            f"state entry `{odd[0][0]}` is not shaped like the parameters (masked, "
            "partitioned or factored state)"
        )
    if m.why:
        return m.why
    if m.leaf is None:
        return f"`{m.where}` evolves differently on flat buffers"
    name = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(structs)[0][m.leaf][0])
    return (
        f"parameter `{name or '<root>'}` gets a different formula for `{m.where}` than "
        f"the other {layout.dtypes[m.leaf]} parameters (a mask, a partition or a "
        "shape-dependent choice tells the parameters apart)"
    )


def _quietly(probe: Any, tx: Any, layout: Layout) -> bool:
    """A diagnostic probe; one that cannot run says nothing (the refusal stands)."""
    try:
        return bool(probe(tx, layout))
    except Exception:  # noqa: BLE001 -- only the reason's wording depends on it
        return False


def _drops_axes(shape: Tuple[int, ...], full: Tuple[int, ...]) -> bool:
    """Whether ``shape`` is ``full`` with some axes removed (a factored statistic)."""
    it = iter(full)
    return all(any(d == e for e in it) for d in shape)


def _odd_state(tx: Any, structs: Any, layout: Layout) -> Iterator[Tuple[str, Tuple[int, ...]]]:
    """Floating state entries that are neither scalars nor shaped like the parameters."""
    treedef, shapes = layout.treedef, layout.shapes

    def paramlike(x: Any) -> bool:
        leaves, td = jax.tree.flatten(x)
        if td != treedef:
            return False
        if treedef.num_nodes == 1 and not jnp.issubdtype(leaves[0].dtype, jnp.inexact):
            return False  # a bare-array parameter: do not mistake a step count for it
        return all(tuple(leaf.shape) == s for leaf, s in zip(leaves, shapes))

    state = jax.eval_shape(tx.init, structs)
    for path, sub in jax.tree_util.tree_flatten_with_path(state, is_leaf=paramlike)[0]:
        if paramlike(sub) or sub.shape == () or not jnp.issubdtype(sub.dtype, jnp.inexact):
            continue
        yield "state" + jax.tree_util.keystr(path), tuple(sub.shape)


def _varies_under_constant_inputs(tx: Any, layout: Layout) -> bool:
    """Equal inputs everywhere, yet some parameter's outputs vary from element to element."""
    p, g = _values(layout, 0, const=-1.25), _values(layout, 0, const=0.75)
    u, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(g, p)
    return any(
        np.size(x) > 1 and not np.all(np.asarray(x) == np.asarray(x).ravel()[0])
        for x in jax.tree.leaves(u)
    )


def _reduces_per_parameter(tx: Any, layout: Layout) -> bool:
    """Moving one element of one parameter moves other elements of that parameter only."""
    p, g = _values(layout, 1), _values(layout, 2)  # no zeros: sqrt(v) is smooth
    leaves_p, treedef = jax.tree.flatten(p)

    @jax.jit
    def jvp(g, s, p, d):  # the updates' derivative along d in both gradient and parameter
        return jax.jvp(lambda g, p: tx.update(g, s, p), (g, p), (_float0(d), _float0(d)))[1][0]

    state = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[1])(g, p)
    for i, x in enumerate(leaves_p):
        if x.size < 2 or not jnp.issubdtype(x.dtype, jnp.inexact):
            continue
        one = [jnp.zeros_like(y) for y in leaves_p]
        one[i] = jnp.zeros(x.size, x.dtype).at[0].set(1).reshape(x.shape)
        du = jvp(g, state, p, jax.tree.unflatten(treedef, one))  # compiled once
        moved = [np.nan_to_num(np.asarray(t)).ravel() != 0 for t in jax.tree.leaves(du)]
        if np.any(moved[i][1:]) and not any(np.any(t) for j, t in enumerate(moved) if j != i):
            return True
    return False


# --------------------------------------------------------------------------- #
# Which buffers each buffer's update reads: data flow of the jaxpr
# --------------------------------------------------------------------------- #


def _buffer_tags(tree: Any) -> List[Optional[str]]:
    """Per leaf of ``tree``: the key of the flat buffer it is, or None (a shared value)."""
    tags: List[Optional[str]] = []
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, FlatParams)):
        if isinstance(node, FlatParams):
            tags += sorted(node.buffers)
        else:
            tags.append(None)
    return tags


def separable(tx: Any, layout: Layout) -> bool:
    """Whether, on the flat buffers, every output of a buffer is computed from that buffer
    and shared values only, and every shared output (a step count) from no buffer.

    Read from ``jax.make_jaxpr``: each equation's outputs are taken to depend on all its
    inputs (nested jaxprs included), so the answer errs on the side of "no".
    """
    if len(layout.buffers) < 2:
        return True
    flat = FlatParams(layout.buffer_structs(), layout)
    state = jax.eval_shape(tx.init, flat)

    def update(g, s, p):
        return tx.update(g, s, p)

    closed = jax.make_jaxpr(update)(flat, state, flat)
    out = jax.eval_shape(update, flat, state, flat)
    jaxpr = closed.jaxpr
    in_tags, out_tags = _buffer_tags((flat, state, flat)), _buffer_tags(out)
    if len(jaxpr.invars) != len(in_tags) or len(jaxpr.outvars) != len(out_tags):
        raise RuntimeError(
            "jaxopt_zoo.fast.check.separable: jax.make_jaxpr no longer has one "
            "input and output variable per leaf; this analysis needs updating."
        )
    deps: dict = {v: frozenset() for v in jaxpr.constvars}
    for v, tag in zip(jaxpr.invars, in_tags):
        deps[v] = frozenset() if tag is None else frozenset([tag])

    def read(v: Any) -> frozenset:
        return frozenset() if isinstance(v, Literal) else deps[v]

    for eqn in jaxpr.eqns:
        d = frozenset().union(*(read(v) for v in eqn.invars))
        for v in eqn.outvars:
            deps[v] = d
    return all(read(v) <= ({tag} if tag else set()) for v, tag in zip(jaxpr.outvars, out_tags))


def _message(reason: str) -> str:
    return (
        f"fuse: this transformation is not exact on flat buffers: {reason}. fuse runs "
        "the optimizer once over one buffer per dtype, which equals the per-parameter "
        "result only for elementwise optimizers that treat every parameter alike (Adam, "
        "SGD, Lion, RMSprop, ...; global-norm clipping is fine). Use this optimizer "
        "without fuse."
    )
