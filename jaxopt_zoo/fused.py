"""Fused execution: the optimizer runs once over one contiguous buffer per dtype.

An elementwise optimizer (Adam, SGD, Lion, RMSprop, ...) does the same arithmetic on every
element of every parameter, so it gives the same numbers whether it sees 256 leaves or one
long vector holding all of them. Running it on the long vector lets XLA emit one loop per
dtype instead of one per leaf, and keeps its state in a few big buffers that a donated,
jitted step updates in place.

Two ways in:

- ``fuse(tx)``: a drop-in ``GradientTransformation``. Its state holds flat buffers; each
  update concatenates the gradients per dtype, runs ``tx`` once, and splits the updates back
  into the parameters' tree. The packing and the split cost extra passes over memory (on
  CPU more than flattening saves: see BENCHMARKS.md).
- ``FlatParams``: keep the parameters themselves as flat buffers (``FlatParams.from_tree``)
  and view them as a tree only inside the loss (``params.tree()``). Gradients with respect
  to a ``FlatParams`` are a ``FlatParams``, so ``fuse(tx).update`` and
  ``optax.apply_updates`` touch each buffer once. ``fused_apply(fuse(tx))`` is that step as
  one function, chunk by chunk when the buffers are split: the fastest path.

``fuse`` checks, once per parameter layout and before anything runs, that ``tx`` is exact on
the flat layout: it traces ``tx.update`` on both layouts and requires that every parameter
gets the same elementwise formula and that every reduction spans all parameters (a global
norm is fine; a per-parameter norm is not). Per-parameter blocks (trust ratio in LAMB/LARS,
Adafactor's factored statistics, ``clip_by_block_rms``, masks and partitions that tell
parameters apart) are refused with a :class:`NotFusableError` that says which part failed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_zoo import native as native_mod
from jaxopt_zoo.core import GradientTransformation, GradientTransformationExtraArgs

__all__ = ["FlatParams", "FusedState", "Layout", "NotFusableError", "check_fusable", "fuse",
           "fused_apply"]


class NotFusableError(ValueError):
    """``fuse`` was given a transformation that is not exact on flat buffers."""


# --------------------------------------------------------------------------- #
# Layout: where each leaf lives in the flat buffers
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of a tree of arrays packed into flat buffers.

    ``buffers``: ``(key, dtype, size)`` per buffer, one per dtype (or ``chunks`` per dtype).
    ``pieces``: per leaf, ``(key, start, stop)`` ranges that hold it, in order.
    Hashable, so it can be the static part of a pytree and a cache key.
    """

    treedef: Any
    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[str, ...]
    buffers: Tuple[Tuple[str, str, int], ...]
    pieces: Tuple[Tuple[Tuple[str, int, int], ...], ...]

    @staticmethod
    def of(tree: Any, chunks: int = 1) -> "Layout":
        """The layout of ``tree`` (arrays or ``ShapeDtypeStruct``s), ``chunks`` buffers a dtype."""
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"Invalid chunks: {chunks!r}. Expected an integer >= 1.")
        leaves, treedef = jax.tree.flatten(tree)
        shapes, dtypes = [], []
        for x in leaves:
            if not hasattr(x, "shape") or not hasattr(x, "dtype"):
                x = jnp.asarray(x)
            shapes.append(tuple(int(d) for d in x.shape))
            dtypes.append(jnp.dtype(x.dtype).name)
        sizes = [math.prod(s) for s in shapes]
        buffers: List[Tuple[str, str, int]] = []
        pieces: List[List[Tuple[str, int, int]]] = [[] for _ in leaves]
        for dt in sorted(set(dtypes)):
            members = [i for i, d in enumerate(dtypes) if d == dt]
            total = sum(sizes[i] for i in members)
            if total == 0:
                continue
            n_chunks = min(chunks, total)
            bounds = [total * c // n_chunks for c in range(n_chunks + 1)]
            keys = [dt if n_chunks == 1 else f"{dt}.{c}" for c in range(n_chunks)]
            buffers += [(k, dt, bounds[c + 1] - bounds[c]) for c, k in enumerate(keys)]
            pos = 0  # global offset of the current leaf within this dtype
            for i in members:
                lo, hi = pos, pos + sizes[i]
                for c, k in enumerate(keys):
                    a, b = max(lo, bounds[c]), min(hi, bounds[c + 1])
                    if a < b:
                        pieces[i].append((k, a - bounds[c], b - bounds[c]))
                pos = hi
        return Layout(treedef, tuple(shapes), tuple(dtypes), tuple(buffers),
                      tuple(tuple(p) for p in pieces))

    @property
    def num_leaves(self) -> int:
        return len(self.shapes)

    def buffer_structs(self) -> Dict[str, jax.ShapeDtypeStruct]:
        return {k: jax.ShapeDtypeStruct((n,), jnp.dtype(dt)) for k, dt, n in self.buffers}

    def flatten(self, tree: Any) -> Dict[str, jax.Array]:
        """Pack ``tree`` (this layout's structure; dtypes are cast) into the flat buffers."""
        leaves = self.treedef.flatten_up_to(tree)
        parts: Dict[str, List[jax.Array]] = {k: [] for k, _, _ in self.buffers}
        for i, leaf in enumerate(leaves):
            flat = jnp.ravel(jnp.asarray(leaf)).astype(self.dtypes[i])
            off = 0
            for k, a, b in self.pieces[i]:
                parts[k].append(flat if (off, b - a) == (0, flat.size) else flat[off: off + b - a])
                off += b - a
        out = {}
        for k, dt, n in self.buffers:
            ps = parts[k]
            out[k] = ps[0] if len(ps) == 1 else jnp.concatenate(ps)
        return out

    def unflatten(self, buffers: Dict[str, jax.Array]) -> Any:
        """The tree of this layout, viewing (slicing and reshaping) the flat buffers."""
        leaves = []
        for shape, dt, pcs in zip(self.shapes, self.dtypes, self.pieces):
            if not pcs:
                leaves.append(jnp.zeros(shape, dt))
                continue
            segs = []
            for k, a, b in pcs:
                buf = buffers[k]
                segs.append(buf if (a, b) == (0, buf.shape[0]) else buf[a:b])
            flat = segs[0] if len(segs) == 1 else jnp.concatenate(segs)
            leaves.append(flat.reshape(shape))
        return self.treedef.unflatten(leaves)

    def group_of_leaf(self) -> Tuple[Tuple[str, ...], ...]:
        return tuple(tuple(k for k, _, _ in pcs) for pcs in self.pieces)


@jax.tree_util.register_pytree_node_class
class FlatParams:
    """Parameters stored as one flat buffer per dtype, with the tree's layout kept static.

    A pytree whose leaves are the flat buffers: ``jax.grad`` of a loss of a ``FlatParams``
    returns a ``FlatParams``, ``tx.init`` / ``tx.update`` / ``optax.apply_updates`` work on
    it buffer by buffer, and a jitted step donating it updates the buffers in place.

    >>> fp = FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
    >>> fp.tree()["w"].shape
    (2, 3)
    """

    def __init__(self, buffers: Dict[str, Any], layout: Layout):
        self.buffers = dict(buffers)
        self.layout = layout

    @classmethod
    def from_tree(cls, tree: Any, chunks: int = 1) -> "FlatParams":
        """Pack ``tree`` into flat buffers (``chunks`` per dtype, e.g. one per core)."""
        layout = Layout.of(tree, chunks)
        return cls(layout.flatten(tree), layout)

    def tree(self) -> Any:
        """The parameters as the original tree (slices and reshapes of the buffers)."""
        return self.layout.unflatten(self.buffers)

    def tree_flatten(self):
        keys = tuple(sorted(self.buffers))
        return tuple(self.buffers[k] for k in keys), (keys, self.layout)

    @classmethod
    def tree_unflatten(cls, aux, children):
        keys, layout = aux
        return cls(dict(zip(keys, children)), layout)

    def __repr__(self) -> str:
        bufs = ", ".join(f"{k}: {getattr(v, 'shape', '?')}"
                         for k, v in sorted(self.buffers.items()))
        return f"FlatParams({self.layout.num_leaves} leaves in {{{bufs}}})"


class FusedState(NamedTuple):
    """State of ``fuse(tx)``: ``tx``'s state over a :class:`FlatParams`."""

    inner: Any


# --------------------------------------------------------------------------- #
# fuse
# --------------------------------------------------------------------------- #

def fuse(tx: GradientTransformation, *, chunks: int = 1, check: bool = True
         ) -> GradientTransformationExtraArgs:
    """Run ``tx`` on one contiguous buffer per dtype; same results, fewer and bigger loops.

    Args:
      tx: an elementwise transformation, e.g. ``jaxopt_zoo.adam(1e-3)`` or a chain of
        elementwise blocks (``clip_by_global_norm`` and ``skip_not_finite`` are allowed too:
        their reductions span all parameters).
      chunks: buffers per dtype. ``1`` is the default; more splits each dtype's elements
        into that many buffers (independent loops) when the parameters are given as a tree.
      check: verify once per parameter layout that ``tx`` is exact on flat buffers (traced,
        nothing is computed) and raise :class:`NotFusableError` otherwise. ``False`` skips it.

    Returns:
      A ``GradientTransformationExtraArgs``. ``init(params)`` and ``update(grads, state,
      params)`` accept a tree (packed and unpacked on every call) or a :class:`FlatParams`
      (used as is: the fast path). Updates come back in the container the gradients came in.
      The state is a :class:`FusedState`.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.fuse(jz.adam(1e-3))
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)  # same tree back
    """
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"Invalid chunks: {chunks!r}. Expected an integer >= 1.")
    checked: Dict[Layout, bool] = {}  # layout -> separable (no reduction across buffers)
    extra_ok = isinstance(tx, GradientTransformationExtraArgs)

    def as_flat(tree, layout=None) -> FlatParams:
        if isinstance(tree, FlatParams):
            return tree
        layout = Layout.of(tree, chunks) if layout is None else layout
        return FlatParams(layout.flatten(tree), layout)

    def verify(layout: Layout) -> bool:
        if layout not in checked:
            checked[layout] = _check(tx, layout) if check else False
        return checked[layout]

    def init_fn(params):
        flat = as_flat(params)
        verify(flat.layout)
        return FusedState(inner=tx.init(flat))

    def update_fn(updates, state, params=None, **extra):
        if not isinstance(state, FusedState):
            raise TypeError(f"fuse: expected the FusedState made by this transformation's "
                            f"init, got {type(state).__name__}.")
        flat_u = as_flat(updates)
        layout = flat_u.layout
        verify(layout)
        flat_p = None
        if params is not None:
            if isinstance(params, FlatParams):
                if params.layout != layout:
                    raise ValueError("fuse: the updates and the params have different layouts: "
                                     "pass both as trees or both as FlatParams of one layout.")
                flat_p = params
            else:
                flat_p = as_flat(params, layout)
        if extra_ok:
            new_u, inner = tx.update(flat_u, state.inner, flat_p, **extra)
        else:
            new_u, inner = tx.update(flat_u, state.inner, flat_p)
        if not isinstance(updates, FlatParams):
            new_u = layout.unflatten(new_u.buffers)
        return new_u, FusedState(inner=inner)

    update_fn._fused = (tx, verify, extra_ok)  # for fused_apply
    return GradientTransformationExtraArgs(init_fn, update_fn)


def fused_apply(fused: GradientTransformation, *, native: bool = True) -> Any:
    """``step(params, state, grads) -> (params, state)``: update and apply in one function.

    ``fused`` must come from :func:`fuse`. On CPU, with float32 ``FlatParams`` and an
    optimizer assembled from blocks that have a one-pass kernel (``sgd``, ``momentum``,
    ``nesterov``, ``adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``, ``adamax``,
    ``lion``, ``rmsprop``, ``adagrad``, their schedules and chains of their blocks; see
    :mod:`jaxopt_zoo.native`), the whole step is one pass of a small C++ kernel that reads
    and writes every buffer once, on all CPU threads: 1.5-1.9x optax's Adam at 8M parameters
    (BENCHMARKS.md). ``native=False`` (or the environment
    variable ``JAXOPT_ZOO_NATIVE=0``) keeps everything in XLA. The results agree with the
    plain optimizer to float32 rounding.

    In XLA (other optimizers, dtypes or platforms): with ``FlatParams`` split into several chunks
    (``FlatParams.from_tree(tree, chunks=k)``) and an optimizer whose update of one element
    needs no other element (no global norm), the step runs chunk after chunk: the moments,
    the update and the new parameters of one chunk are computed while that chunk is still in
    the CPU cache (XLA otherwise writes the new moments of the whole buffer and reads them
    back to update the parameters). Otherwise it is ``update`` then ``optax.apply_updates``.
    Jit it with the params and state donated::

        step = jax.jit(jz.fused_apply(tx), donate_argnums=(0, 1))

    (Params first: JAX pairs donated inputs with outputs of the same shape in order, so
    ``(params, state) -> (params, state)`` lets every buffer be updated in place.)

    Args:
      fused: a transformation returned by :func:`fuse`.
      native: allow the one-pass CPU kernel (when it covers the optimizer).

    Returns:
      ``step(params, state, grads) -> (params, state)``.

    Example:
      >>> tx = jz.fuse(jz.adam(1e-3))
      >>> params = jz.FlatParams.from_tree({"w": jnp.ones((4, 3)), "b": jnp.zeros(3)})
      >>> step = jax.jit(jz.fused_apply(tx), donate_argnums=(0, 1))
      >>> params, state = step(params, tx.init(params), jax.tree.map(jnp.ones_like, params))
    """
    info = getattr(fused.update, "_fused", None)
    if info is None:
        raise TypeError("fused_apply expects a transformation made by jaxopt_zoo.fuse(tx); "
                        "wrap it first: fused_apply(fuse(tx)).")
    tx, verify, extra_ok = info
    use_native = bool(native)

    def xla_step(params, state, grads, **extra):
        if isinstance(params, FlatParams) and isinstance(grads, FlatParams) \
                and len(params.buffers) > 1 and verify(params.layout):
            return _chunked_step(tx, extra_ok, grads, state, params, extra)
        updates, state = fused.update(grads, state, params, **extra)
        return _apply(params, updates), state

    def xla_inner(params, inner, grads):
        new_params, new_state = xla_step(params, FusedState(inner=inner), grads)
        return new_params, new_state.inner

    def step(params, state, grads, **extra):
        # float32 FlatParams and a chain of blocks with a one-pass kernel: the native kernel
        # on CPU (jaxopt_zoo.native), XLA elsewhere; otherwise XLA.
        if use_native and not extra and isinstance(state, FusedState):
            out = native_mod.fused_step(tx, params, state.inner, grads, fallback=xla_inner)
            if out is not None:
                return out[0], FusedState(inner=out[1])
        return xla_step(params, state, grads, **extra)

    return step


def is_fused(tx: GradientTransformation) -> bool:
    """Whether ``tx`` was made by :func:`fuse`."""
    return getattr(tx.update, "_fused", None) is not None


def update_and_apply(tx: GradientTransformation, grads: Any, state: Any, params: Any,
                     **extra: Any) -> Tuple[Any, Any]:
    """``(new params, new state)``: ``fused_apply(tx)`` for a transformation made by
    :func:`fuse` (the one-pass kernel on float32 FlatParams), else ``tx.update`` and
    ``optax.apply_updates``. Extra keyword arguments go to ``tx.update``. The trainer's
    step calls this."""
    if is_fused(tx):
        return fused_apply(tx)(params, state, grads, **extra)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state


def _apply(params, updates):
    return jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
                        params, updates)


def _chunked_step(tx, extra_ok, grads, state, params, extra):
    """Run ``tx`` buffer by buffer, in order, each buffer updated and applied before the next.

    Exact when the analysis found no reduction across buffers: the scalar state (step counts,
    schedules) then evolves identically in every chunk and is taken from the first.
    """
    is_flat = lambda x: isinstance(x, FlatParams)  # noqa: E731
    keys = sorted(params.buffers)
    new_p, new_inner, prev = {}, {}, None
    for k in keys:
        sub = lambda fp, k=k: FlatParams({k: fp.buffers[k]}, params.layout)  # noqa: E731
        inner_k = jax.tree.map(lambda x: sub(x) if is_flat(x) else x, state.inner,
                               is_leaf=is_flat)
        g_k, p_k = sub(grads), sub(params)
        if prev is not None:  # order the chunks: this one starts after the last one ended
            (g_k, p_k, inner_k), _ = jax.lax.optimization_barrier(((g_k, p_k, inner_k), prev))
        if extra_ok:
            u_k, inner_k = tx.update(g_k, inner_k, p_k, **extra)
        else:
            u_k, inner_k = tx.update(g_k, inner_k, p_k)
        p_k = _apply(p_k, u_k)
        new_p[k], new_inner[k] = p_k, inner_k
        prev = (p_k, inner_k)
    first = new_inner[keys[0]]
    leaves_by_key = {k: jax.tree.leaves(new_inner[k], is_leaf=is_flat) for k in keys}
    merged = []
    for i, leaf in enumerate(jax.tree.leaves(first, is_leaf=is_flat)):
        if is_flat(leaf):
            merged.append(FlatParams({k: leaves_by_key[k][i].buffers[k] for k in keys},
                                     params.layout))
        else:
            merged.append(leaf)
    inner = jax.tree.unflatten(jax.tree.structure(first, is_leaf=is_flat), merged)
    out_p = FlatParams({k: new_p[k].buffers[k] for k in keys}, params.layout)
    return out_p, FusedState(inner=inner)


# --------------------------------------------------------------------------- #
# The exactness check: trace tx.update on both layouts and compare the formulas
# --------------------------------------------------------------------------- #

_CALLS = ("pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "checkpoint", "jit")
_REDUCE_OP = {"reduce_sum": "add", "reduce_max": "max", "reduce_min": "min",
              "reduce_and": "and", "reduce_or": "or", "reduce_prod": "mul"}
_ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp complex conj
    convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
    floor ge gt igamma imag integer_pow is_finite le lgamma log log1p logistic lt max min mul
    ne neg nextafter not or pow real reduce_precision rem round rsqrt select_n sign sin sinh
    sqrt square sub tan tanh xor square stop_gradient
""".split())
_IDENTITY = {"add": 0, "or": False, "max": -np.inf, "min": np.inf, "and": True, "mul": 1}
try:
    from jax.extend.core import Literal as _Literal
except ImportError:  # older JAX
    from jax.core import Literal as _Literal


class _Refuse(Exception):
    pass


class _AV:
    """Abstract value of one traced variable.

    kind: ``"arr"`` a per-parameter array (``leaf`` says which parameter or buffer);
    ``"sc"`` a value the same for every element of every parameter (a scalar, or a scalar
    broadcast to some shape); ``"agg"`` a reduction ``{term: set of leaves}`` under ``op``
    not yet known to span all parameters; ``"vec"`` a small vector of such scalars
    (``jnp.stack`` of per-leaf results); ``"opq"`` anything else.
    """

    __slots__ = ("kind", "expr", "leaf", "op", "terms", "items", "why")

    def __init__(self, kind, expr=None, leaf=None, op=None, terms=None, items=None, why=""):
        self.kind, self.expr, self.leaf = kind, expr, leaf
        self.op, self.terms, self.items, self.why = op, terms, items, why


def _shape(v) -> Tuple[int, ...]:
    return tuple(getattr(getattr(v, "aval", None), "shape", ()))


class _Tracer:
    """Interprets a jaxpr over :class:`_AV` values, hash-consing the formulas."""

    def __init__(self, table: Dict[Any, int], all_leaves: frozenset):
        self.table = table
        self.all = all_leaves
        self.lits: Dict[int, Any] = {}
        self.has_global = False

    def intern(self, e) -> int:
        return self.table.setdefault(e, len(self.table))

    def clean(self, av: _AV) -> _AV:
        """A reduction used as a value: allowed if it spans every parameter exactly once."""
        if av.kind == "vec" and len(av.items) == 1:
            return self.clean(av.items[0])
        if av.kind != "agg":
            return av
        seen: set = set()
        for leaves in av.terms.values():
            if seen & leaves:
                raise _Refuse("a reduction counts some parameters twice")
            seen |= leaves
        if seen != self.all:
            raise _Refuse("it reduces over single parameters (a per-parameter norm, RMS or "
                          "statistic, as in trust-ratio scaling (LAMB, LARS), clip_by_block_rms "
                          "or Adafactor), which differs on one flat buffer")
        self.has_global = True
        return _AV("sc", self.intern(("global", av.op, frozenset(av.terms))))

    def literal(self, val) -> _AV:
        arr = np.asarray(val)
        if arr.shape != ():
            return _AV("opq", why="a non-scalar constant")
        e = self.intern(("lit", arr.dtype.name, arr.item()))
        self.lits[e] = arr.item()
        return _AV("sc", e)

    def run(self, jaxpr, consts: List[_AV], args: List[_AV]) -> List[_AV]:
        env: Dict[Any, _AV] = {}

        def read(v):
            if isinstance(v, _Literal):
                return self.literal(v.val)
            return env[v]

        for v, a in zip(jaxpr.constvars, consts):
            env[v] = a
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def closed(self, cj, args):
        return self.run(cj.jaxpr, [self.const(c) for c in cj.consts], args)

    def const(self, c) -> _AV:
        try:
            return self.literal(np.asarray(c))
        except Exception:  # noqa: BLE001 -- e.g. a PRNG key array
            return _AV("opq", why="a constant that is not a number")

    def eqn(self, eqn, ins: List[_AV]) -> List[_AV]:
        name = eqn.primitive.name
        n_out = len(eqn.outvars)
        out_shapes = [_shape(v) for v in eqn.outvars]
        if name in _CALLS:
            sub = (eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
                   or eqn.params.get("fun_jaxpr"))
            if sub is not None:
                return self.closed(sub, ins) if hasattr(sub, "consts") else \
                    self.run(sub, [], ins)
        kinds = {a.kind for a in ins}
        if "opq" in kinds:
            why = next(a.why for a in ins if a.kind == "opq")
            if kinds <= {"opq", "sc"} and name not in _REDUCE_OP:
                return [_AV("opq", why=why) for _ in range(n_out)]
            raise _Refuse(f"{why} meets a per-parameter value in `{name}`")
        if name in _REDUCE_OP:
            return [self.reduce(name, eqn, ins[0])]
        if name in ("concatenate", "stack"):
            items = []
            for a, v in zip(ins, eqn.invars):
                if a.kind == "vec":
                    items += a.items
                elif a.kind in ("sc", "agg") and math.prod(_shape(v)) == 1:
                    items.append(a)
                else:
                    raise _Refuse(f"it joins parameters together (`{name}`)")
            return [_AV("vec", items=items)]
        if name in ("reshape", "squeeze", "expand_dims", "broadcast_in_dim", "copy", "copy_p"):
            return [self.reshape(name, ins[0], _shape(eqn.invars[0]), out_shapes[0])]
        if name in _REDUCE_OP.values() and len(ins) == 2 and "agg" in kinds:
            merged = self.merge(name, ins[0], ins[1])
            if merged is not None:
                return [merged]
        if name == "convert_element_type" and ins[0].kind == "agg":
            a = ins[0]
            dt = jnp.dtype(eqn.params["new_dtype"]).name
            terms = {self.intern(("cvt", dt, t)): ls for t, ls in a.terms.items()}
            return [_AV("agg", op=a.op, terms=terms)]
        vals = [self.clean(a) for a in ins]
        if any(a.kind == "vec" for a in vals):
            raise _Refuse(f"`{name}` computes with a vector of per-parameter results")
        key = (name, _params_key(eqn.params), tuple(a.expr for a in vals))
        leaves = {a.leaf for a in vals if a.kind == "arr"}
        if not leaves:  # only shared scalars (or their broadcasts) in
            if all(s == () for s in out_shapes) or name in _ELEMENTWISE:
                return [_AV("sc", self.intern(key + (i,))) for i in range(n_out)]
            return [_AV("opq", why=f"a `{name}` not derived from the parameters (e.g. noise "
                                   "shaped like a parameter)") for _ in range(n_out)]
        if name not in _ELEMENTWISE:
            raise _Refuse(f"it applies `{name}` to a parameter, which is not elementwise")
        if len(leaves) > 1:
            raise _Refuse(f"`{name}` combines two different parameters")
        leaf = leaves.pop()
        return [_AV("arr", self.intern(key + (i,)), leaf=leaf) for i in range(n_out)]

    def reshape(self, name, a: _AV, in_shape, out_shape) -> _AV:
        if a.kind == "arr":
            if in_shape == out_shape:
                return a
            raise _Refuse(f"it reshapes or broadcasts a parameter (`{name}`)")
        if a.kind == "sc":
            return a  # a broadcast scalar is still the same value everywhere
        if a.kind == "agg":
            if out_shape == ():
                return a
            if out_shape == (1,):
                return _AV("vec", items=[a])
            return self.clean(a)
        if math.prod(out_shape) == len(a.items):  # vec
            return a if out_shape != () else a.items[0]
        return _AV("opq", why=f"a `{name}` of a vector of per-parameter results")

    def reduce(self, name, eqn, a: _AV) -> _AV:
        op = _REDUCE_OP[name]
        in_shape = _shape(eqn.invars[0])
        if a.kind == "arr":
            if tuple(sorted(eqn.params.get("axes", ()))) != tuple(range(len(in_shape))):
                raise _Refuse("it reduces over some axes of a parameter (factored "
                              "statistics, as in Adafactor), which a flat buffer does not have")
            if math.prod(in_shape) == 0:
                return self.literal(_IDENTITY[op])
            term = self.intern(("red", name, a.expr))
            return _AV("agg", op=op, terms={term: frozenset([a.leaf])})
        if a.kind == "vec":
            acc = None
            for item in a.items:
                acc = item if acc is None else self.combine(op, acc, item)
            return acc
        if a.kind == "agg" or math.prod(in_shape) == 1:
            return a
        raise _Refuse(f"it reduces ({name}) a broadcast value, whose result depends on a "
                      "parameter's size")

    def combine(self, op, x: _AV, y: _AV) -> _AV:
        m = self.merge(op, x, y)
        if m is not None:
            return m
        x, y = self.clean(x), self.clean(y)
        return _AV("sc", self.intern((op, "fold", x.expr, y.expr)))

    def merge(self, op, x: _AV, y: _AV) -> Optional[_AV]:
        """Two partial reductions joined by their own operator: one bigger aggregate."""
        ident = _IDENTITY.get(op)
        for a, b in ((x, y), (y, x)):
            if a.kind == "agg" and a.op == op and b.kind == "sc" and ident is not None \
                    and b.expr in self.lits and self.lits[b.expr] == ident:
                return a
        if x.kind == "agg" and y.kind == "agg" and x.op == y.op == op:
            terms = dict(x.terms)
            for t, ls in y.terms.items():
                if t in terms and terms[t] & ls:
                    raise _Refuse("a reduction counts some parameters twice")
                terms[t] = terms.get(t, frozenset()) | ls
            return _AV("agg", op=op, terms=terms)
        return None


def _params_key(params: Dict[str, Any]) -> str:
    items = []
    for k in sorted(params):
        if k in ("shape", "sharding", "broadcast_dimensions", "dimensions", "axes"):
            continue
        items.append((k, str(params[k])))
    return repr(items)


def _labels(tree: Any, param_def, param_shapes, tag: str, tracer: _Tracer,
            leaf_ids) -> Tuple[List[_AV], List[Tuple[Any, Any]]]:
    """Abstract values for the leaves of ``tree`` and, per leaf, ``(slot, leaf id)`` (the
    slot names where it sits; leaf id is None for leaves not shaped like the parameters)."""
    def paramlike(x):
        try:
            leaves, td = jax.tree.flatten(x)
        except Exception:  # noqa: BLE001
            return False
        if td != param_def:
            return False
        if len(leaves) == 1 and param_def.num_nodes == 1 \
                and not jnp.issubdtype(leaves[0].dtype, jnp.inexact):
            return False  # a bare-array parameter: do not mistake a step count for it
        return all(tuple(leaf.shape) == s for leaf, s in zip(leaves, param_shapes))

    avs, slots = [], []
    items, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=paramlike)
    for path, sub in items:
        where = tag + jax.tree_util.keystr(path)
        if paramlike(sub):
            for leaf, lid in zip(jax.tree.leaves(sub), leaf_ids):
                dt = jnp.dtype(leaf.dtype).name
                avs.append(_AV("arr", tracer.intern(("in", where, dt)), leaf=lid))
                slots.append((where, lid))
            continue
        for leaf in jax.tree.leaves(sub):
            if tuple(leaf.shape) == ():
                avs.append(_AV("sc", tracer.intern(("in", where))))
            else:
                avs.append(_AV("opq", why=f"state entry `{where}` is not shaped like the "
                                         "parameters (masked, partitioned or factored state)"))
            slots.append((where, None))
    return avs, slots


def _formulas(tx, params_struct, tracer: _Tracer, leaf_ids) -> Dict[Tuple[Any, Any], Any]:
    """``{(slot, leaf id): formula}`` of every output of ``tx.update`` on ``params_struct``."""
    leaves, pdef = jax.tree.flatten(params_struct)
    shapes = [tuple(x.shape) for x in leaves]
    state = jax.eval_shape(tx.init, params_struct)
    closed, out_shape = jax.make_jaxpr(
        lambda g, s, p: tx.update(g, s, p), return_shape=True)(params_struct, state,
                                                               params_struct)
    args = []
    for tree, tag in ((params_struct, "updates"), (state, "state"), (params_struct, "params")):
        avs, _ = _labels(tree, pdef, shapes, tag, tracer, leaf_ids)
        args += avs
    outs = tracer.closed(closed, args)
    out_u, out_s = out_shape
    _, slots_u = _labels(out_u, pdef, shapes, "out", tracer, leaf_ids)
    _, slots_s = _labels(out_s, pdef, shapes, "state", tracer, leaf_ids)
    result = {}
    for (where, lid), av in zip(slots_u + slots_s, outs):
        av = tracer.clean(av)
        if lid is None:
            if av.kind != "sc":
                raise _Refuse(f"state entry `{where}` is not shaped like the parameters "
                              "(masked, partitioned or factored state)")
        elif av.kind == "arr" and av.leaf != lid:
            raise _Refuse(f"output `{where}` of one parameter is computed from another")
        elif av.kind not in ("arr", "sc"):
            raise _Refuse(f"output `{where}` is not an elementwise function of the parameter")
        result[(where, lid)] = av.expr
    return result


def check_fusable(tx: GradientTransformation, params_or_layout: Any) -> None:
    """Raise :class:`NotFusableError` unless ``tx`` is exact on the flat layout of the
    parameters (a tree, ``ShapeDtypeStruct`` tree, ``FlatParams`` or ``Layout``).

    Traces ``tx.update`` abstractly on the tree and on the flat buffers (no arrays are
    allocated) and compares, for every parameter, the formula of each output element.

    Args:
      tx: the transformation to check.
      params_or_layout: the parameters (or their shapes) it will update.

    Raises:
      NotFusableError: naming the first parameter whose update differs, and why.

    Example:
      >>> jz.check_fusable(jz.adam(1e-3), {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)})
    """
    _check(tx, params_or_layout)


def _check(tx: GradientTransformation, params_or_layout: Any) -> bool:
    """``check_fusable``; returns whether the buffers can also be updated one at a time."""
    if isinstance(params_or_layout, Layout):
        layout = params_or_layout
    elif isinstance(params_or_layout, FlatParams):
        layout = params_or_layout.layout
    else:
        layout = Layout.of(params_or_layout)
    if not layout.buffers:
        return True  # no elements (an empty tree or only zero-size arrays): nothing can differ
    tree_struct = layout.treedef.unflatten(
        [jax.ShapeDtypeStruct(s, jnp.dtype(d)) for s, d in zip(layout.shapes, layout.dtypes)])
    flat_struct = FlatParams(layout.buffer_structs(), layout)
    table: Dict[Any, int] = {}
    n = layout.num_leaves
    sizes = [math.prod(s) for s in layout.shapes]
    try:
        tree_tracer = _Tracer(table, frozenset(i for i in range(n) if sizes[i] > 0))
        tree_f = _formulas(tx, tree_struct, tree_tracer, list(range(n)))
        keys = sorted(k for k, _, _ in layout.buffers)  # FlatParams' leaf order
        flat_tracer = _Tracer(table, frozenset(keys))
        flat_f = _formulas(tx, flat_struct, flat_tracer, keys)
    except _Refuse as e:
        raise NotFusableError(_message(str(e))) from None
    groups = layout.group_of_leaf()
    names = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(tree_struct)[0]]
    for (where, lid), expr in tree_f.items():
        if lid is None:
            if flat_f.get((where, None)) != expr:
                raise NotFusableError(_message(
                    f"state entry `{where}` evolves differently on flat buffers"))
            continue
        if sizes[lid] == 0:
            continue
        for key in groups[lid]:
            if flat_f.get((where, key)) != expr:
                raise NotFusableError(_message(
                    f"parameter `{names[lid] or '<root>'}` gets a different formula for "
                    f"`{where}` than the other {layout.dtypes[lid]} parameters (a mask, a "
                    f"partition or a shape-dependent choice tells the parameters apart)"))
    return not flat_tracer.has_global


def _message(reason: str) -> str:
    return (f"fuse: this transformation is not exact on flat buffers: {reason}. fuse runs "
            "the optimizer once over one buffer per dtype, which equals the per-parameter "
            "result only for elementwise optimizers that treat every parameter alike (Adam, "
            "SGD, Lion, RMSprop, ...; global-norm clipping is fine). Use this optimizer "
            "without fuse.")
