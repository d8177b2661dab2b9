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

``fuse`` checks, once per parameter layout, that ``tx`` is exact on the flat layout
(``jaxopt_zoo.fast.check``): every parameter must get the same elementwise formula and
every reduction must span all parameters (a global norm is fine; a per-parameter norm is
not). Per-parameter blocks (trust ratio in LAMB/LARS, Adafactor's factored statistics,
``clip_by_block_rms``, masks and partitions that tell parameters apart) are refused with a
:class:`NotFusableError` that says which part failed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_zoo.fast import native as _native
from jaxopt_zoo.fast.check import analyze
from jaxopt_zoo.fast.layout import FlatParams, Layout

__all__ = ["FusedState", "FusedTransformation", "fuse", "fused_apply", "update_and_apply"]


class FusedTransformation(optax.GradientTransformationExtraArgs):
    """What :func:`fuse` returns: a ``GradientTransformationExtraArgs`` that also carries
    the transformation it runs (``.inner``) and its per-layout check (``.verify``), read
    by :func:`fused_apply`."""

    inner: optax.GradientTransformation
    verify: Callable[[Layout], bool]

    def __new__(cls, init: Any, update: Any, inner: Any, verify: Callable[[Layout], bool]):
        self = super().__new__(cls, init, update)
        self.inner, self.verify = inner, verify
        return self

    def __getnewargs__(self):  # copy and pickle keep what fused_apply reads
        return (self.init, self.update, self.inner, self.verify)

    def _replace(self, **kw):  # new functions: no longer the fused transformation
        return optax.GradientTransformationExtraArgs(**{**self._asdict(), **kw})


class FusedState(NamedTuple):
    """State of ``fuse(tx)``: ``tx``'s state over a :class:`FlatParams`."""

    inner: Any


# --------------------------------------------------------------------------- #
# fuse
# --------------------------------------------------------------------------- #


def fuse(
    tx: optax.GradientTransformation, *, chunks: int = 1, check: bool = True
) -> "FusedTransformation":
    """Run ``tx`` on one contiguous buffer per dtype; same results, fewer and bigger loops.

    Args:
      tx: an elementwise transformation, e.g. ``jaxopt_zoo.adam(1e-3)`` or a chain of
        elementwise blocks (``clip_by_global_norm`` and ``skip_not_finite`` are allowed too:
        their reductions span all parameters).
      chunks: buffers per dtype. ``1`` is the default; more splits each dtype's elements
        into that many buffers (independent loops) when the parameters are given as a tree.
      check: verify once per parameter layout that ``tx`` is exact on flat buffers and raise
        :class:`NotFusableError` otherwise: blocks whose ``BlockSpec`` says element-wise are
        accepted as they are, anything else is probed (``jaxopt_zoo.fast.check``: two
        compiled steps on each layout). ``False`` skips it. For ``quantize_state(inner)``
        (``adamw_8bit``, ...) ``inner`` is checked; the quantization blocks then run along
        the flat buffers instead of each parameter.

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
    extra_ok = isinstance(tx, optax.GradientTransformationExtraArgs)

    def as_flat(tree, layout=None) -> FlatParams:
        if isinstance(tree, FlatParams):
            return tree
        layout = Layout.of(tree, chunks) if layout is None else layout
        return FlatParams(layout.flatten(tree), layout)

    # quantize_state(inner): the check is the inner optimizer's. The quantization blocks are
    # then taken along each flat buffer (a block may span two parameters), a different
    # grouping from the tree's, the same format and arithmetic (docs/low-bit.md).
    probe = tx.inner if getattr(tx, "quant_config", None) is not None else tx

    def verify(layout: Layout) -> bool:
        if layout not in checked:
            checked[layout] = analyze(probe, layout) if check else False
        return checked[layout]

    def init_fn(params):
        flat = as_flat(params)
        verify(flat.layout)
        return FusedState(inner=tx.init(flat))

    def update_fn(updates, state, params=None, **extra):
        if not isinstance(state, FusedState):
            raise TypeError(
                f"fuse: expected the FusedState made by this transformation's "
                f"init, got {type(state).__name__}."
            )
        flat_u = as_flat(updates)
        layout = flat_u.layout
        verify(layout)
        flat_p = None
        if params is not None:
            if isinstance(params, FlatParams):
                if params.layout != layout:
                    raise ValueError(
                        "fuse: the updates and the params have different layouts: "
                        "pass both as trees or both as FlatParams of one layout."
                    )
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

    return FusedTransformation(init_fn, update_fn, tx, verify)


def fused_apply(fused: optax.GradientTransformation, *, native: bool = True) -> Any:
    """``step(params, state, grads) -> (params, state)``: update and apply in one function.

    ``fused`` must come from :func:`fuse`. On CPU, with float32 ``FlatParams`` and an
    optimizer assembled from blocks that have a one-pass kernel (``sgd``, ``momentum``,
    ``nesterov``, ``adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``, ``adamax``,
    ``lion``, ``rmsprop``, ``adagrad``, their schedules and chains of their blocks; see
    :mod:`jaxopt_zoo.fast.native`), the whole step is one pass of a small C++ kernel that reads
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
    Jit it with the params and state donated, as in the example (params first: JAX pairs
    donated inputs with outputs of the same shape in order, so ``(params, state) -> (params,
    state)`` lets every buffer be updated in place).

    Args:
      fused: a transformation made by :func:`fuse`.
      native: allow the one-pass kernel (:mod:`jaxopt_zoo.fast.native`) where it applies.

    Returns:
      ``step(params, state, grads, **extra) -> (new params, new state)``, not jitted;
      ``params`` and ``grads`` are trees or :class:`FlatParams` (the fast path), extra
      keyword arguments go to ``update`` (and keep the step in XLA).

    Raises:
      TypeError: ``fused`` was not made by :func:`fuse`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz, numpy as np
      >>> tx = jz.fuse(jz.adam(0.1))
      >>> params = jz.FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
      >>> grads = jz.FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
      >>> step = jax.jit(jz.fused_apply(tx), donate_argnums=(0, 1))
      >>> params, state = step(params, tx.init(params), grads)
      >>> print(np.asarray(params.tree()["b"]).round(3))
      [-0.1 -0.1 -0.1]
    """
    if not isinstance(fused, FusedTransformation):
        raise TypeError(
            "fused_apply expects a transformation made by jaxopt_zoo.fuse(tx); "
            "wrap it first: fused_apply(fuse(tx))."
        )
    tx, verify = fused.inner, fused.verify
    extra_ok = isinstance(tx, optax.GradientTransformationExtraArgs)
    use_native = bool(native)

    def xla_step(params, state, grads, **extra):
        if (
            isinstance(params, FlatParams)
            and isinstance(grads, FlatParams)
            and len(params.buffers) > 1
            and verify(params.layout)
        ):
            return _chunked_step(tx, extra_ok, grads, state, params, extra)
        updates, state = fused.update(grads, state, params, **extra)
        return _apply(params, updates), state

    def xla_inner(params, inner, grads):
        new_params, new_state = xla_step(params, FusedState(inner=inner), grads)
        return new_params, new_state.inner

    def step(params, state, grads, **extra):
        # float32 FlatParams and a chain of blocks with a one-pass kernel: the native kernel
        # on CPU (jaxopt_zoo.fast.native), XLA elsewhere; otherwise XLA.
        if use_native and not extra and isinstance(state, FusedState):
            out = _native.fused_step(tx, params, state.inner, grads, fallback=xla_inner)
            if out is not None:
                return out[0], FusedState(inner=out[1])
        return xla_step(params, state, grads, **extra)

    return step


def is_fused(tx: optax.GradientTransformation) -> bool:
    """Whether ``tx`` was made by :func:`fuse` (so that :func:`fused_apply` accepts it).

    Args:
      tx: any transformation.

    Returns:
      True for a :class:`FusedTransformation`, else False (including a fused
      transformation rebuilt with ``_replace``).

    Example:
      >>> import jaxopt_zoo as jz
      >>> is_fused(jz.fuse(jz.adam(1e-3))), is_fused(jz.adam(1e-3))
      (True, False)
    """
    return isinstance(tx, FusedTransformation)


def update_and_apply(
    tx: optax.GradientTransformation, grads: Any, state: Any, params: Any, **extra: Any
) -> Tuple[Any, Any]:
    """``(new params, new state)``: ``fused_apply(tx)`` for a transformation made by
    :func:`fuse` (the one-pass kernel on float32 FlatParams), else ``tx.update`` and
    ``optax.apply_updates``. Extra keyword arguments go to ``tx.update``. The trainer's
    step calls this.

    Args:
      tx: any ``optax.GradientTransformation``, fused or not.
      grads: the gradients, shaped like ``params``.
      state: ``tx``'s state (``tx.init(params)``).
      params: the parameters (a tree, or a :class:`FlatParams` for a fused ``tx``).
      **extra: keyword arguments for ``tx.update`` (``value=``, ``grad_fn=`` for a
        ``GradientTransformationExtraArgs``).

    Returns:
      ``(new params, new state)``; the results of both paths agree to float32 rounding.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz, numpy as np
      >>> params = {"w": jnp.ones(3)}
      >>> for tx in (jz.adam(0.1), jz.fuse(jz.adam(0.1))):
      ...     new, state = update_and_apply(tx, {"w": jnp.ones(3)}, tx.init(params), params)
      ...     print(np.asarray(new["w"]).round(3))
      [0.9 0.9 0.9]
      [0.9 0.9 0.9]
    """
    if is_fused(tx):
        return fused_apply(tx)(params, state, grads, **extra)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state


def _apply(params, updates):
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates
    )


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
        inner_k = jax.tree.map(
            lambda x, sub=sub: sub(x) if is_flat(x) else x, state.inner, is_leaf=is_flat
        )
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
            merged.append(
                FlatParams({k: leaves_by_key[k][i].buffers[k] for k in keys}, params.layout)
            )
        else:
            merged.append(leaf)
    inner = jax.tree.unflatten(jax.tree.structure(first, is_leaf=is_flat), merged)
    out_p = FlatParams({k: new_p[k].buffers[k] for k in keys}, params.layout)
    return out_p, FusedState(inner=inner)
