"""Optimizer state placed like its parameters, and ZeRO-1 (state sharded over the data axis).

(Meshes, batches and replication are in ``jaxopt_zoo.sharding.mesh``.)

The placement is read from the structure ``tx.init`` produces (``jax.eval_shape``), never from
per-optimizer code, so it holds for every optimizer here, optax's, and any chain of them:

- a state leaf whose key path ends with a parameter's key path and has that parameter's shape
  (``mu``, ``nu``, ``trace``, ...) takes the parameter's ``PartitionSpec``;
- a leaf with the parameter's shape less one dimension (Adafactor's factored row and column
  moments) takes the parameter's spec less that dimension; one with some dimensions of size 1
  (kept reduced dimensions) takes the spec with those dimensions unsharded; one with an
  extra leading dimension before the parameter's shape (a stack of copies: L-BFGS's
  ``(memory, ...)`` history) takes the parameter's spec on the trailing dimensions;
- anything else (step counts, scalars, flat buffers) is replicated.

With ``shard_over="data"`` (ZeRO-1) every state leaf is then also split over that mesh axis
along its largest dimension that the axis size divides and that is not sharded already; leaves
with no such dimension stay as they were (replicated if they were). Parameters stay as they are
(replicated for plain data parallelism): XLA slices the gradient for the sharded update and
gathers the new parameters, with no communication written here.

Non-element-wise optimizers (LAMB's and LARS's trust ratios, Adafactor's factored moments) need
no special code: under ``jax.jit`` with these shardings, GSPMD keeps global semantics, and the
results equal the single-device ones up to the order of floating-point sums.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxopt_zoo.core import GradientTransformation
from jaxopt_zoo.sharding.home import zero1_dim

# The mesh helpers lived here first; re-exported so ``sharding.placement.data_mesh`` etc. keep
# working (and the examples below can use them).
from jaxopt_zoo.sharding.mesh import (  # noqa: F401
    batch_sharding,
    bytes_per_device,
    data_mesh,
    replicate,
    replicated,
    shard_batch,
    use_cpu_devices,
)

KeyPath = Tuple[Any, ...]
SpecEntry = Union[None, str, Tuple[str, ...]]

__all__ = [
    "init_sharded",
    "param_sharding",
    "sharded_update",
    "state_sharding",
    "zero1_sharding",
]


def _leaf_mesh(leaf: Any) -> Optional[Any]:
    sharding = getattr(leaf, "sharding", None)
    return sharding.mesh if isinstance(sharding, NamedSharding) else None


def _leaf_spec(leaf: Any, mesh: Any) -> PartitionSpec:
    """``leaf``'s ``PartitionSpec`` if it carries a ``NamedSharding`` on ``mesh``, else ``P()``."""
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return PartitionSpec()
    if sharding.mesh.shape_tuple != mesh.shape_tuple:
        raise ValueError(
            f"A parameter is sharded over mesh {dict(sharding.mesh.shape)} but the mesh is "
            f"{dict(mesh.shape)}; pass parameters placed on the same mesh."
        )
    return sharding.spec


def param_sharding(params: Any, mesh: Optional[Mesh] = None) -> Any:
    """The parameters' ``NamedSharding`` tree: each leaf's own, or replicated over ``mesh``.

    Leaves that carry a ``NamedSharding`` (``jax.Array`` or ``jax.ShapeDtypeStruct(...,
    sharding=...)``) keep it; the others (NumPy arrays, single-device arrays) are replicated
    over ``mesh``, which is then required.

    Args:
      params: the parameters: arrays or ``jax.ShapeDtypeStruct`` s, with or without a
        ``NamedSharding``.
      mesh: the mesh for the leaves without one; by default the mesh of the first leaf
        that has one.

    Returns:
      A pytree of ``NamedSharding`` s with the structure of ``params``.

    Raises:
      ValueError: no ``mesh`` is given and no leaf carries a ``NamedSharding``, or a
        leaf's mesh has another shape than ``mesh``.

    Example:
      >>> import jax.numpy as jnp
      >>> shardings = param_sharding({"w": jnp.ones((4, 2))}, data_mesh(1))
      >>> shardings["w"].spec
      P()
    """
    m = _find_mesh(params, mesh)
    return jax.tree.map(lambda p: NamedSharding(m, _leaf_spec(p, m)), params)


def _find_mesh(params: Any, mesh: Optional[Mesh]) -> Any:
    if mesh is not None:
        return mesh
    for leaf in jax.tree.leaves(params):
        found = _leaf_mesh(leaf)
        if found is not None:
            return found
    raise ValueError("No mesh: pass mesh= or parameters placed with a NamedSharding.")


# --------------------------------------------------------------------------- #
# Matching state leaves to parameters
# --------------------------------------------------------------------------- #


def _padded(spec: PartitionSpec, ndim: int) -> Tuple[SpecEntry, ...]:
    entries = tuple(spec)
    return entries + (None,) * (ndim - len(entries))


def _axes(entry: SpecEntry) -> Tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _fits(
    entries: Tuple[SpecEntry, ...], shape: Tuple[int, ...], mesh: Mesh
) -> Tuple[SpecEntry, ...]:
    """Drop the sharding of any dimension that the devices along it do not divide."""
    sizes = dict(mesh.shape)
    out = []
    for e, s in zip(entries, shape):
        k = int(np.prod([sizes[a] for a in _axes(e)], dtype=np.int64))
        out.append(e if k and s % k == 0 else None)
    return tuple(out)


def _derive(
    shape: Tuple[int, ...], pshape: Tuple[int, ...], pentries: Tuple[SpecEntry, ...]
) -> Optional[Tuple[SpecEntry, ...]]:
    """The spec of a state leaf of ``shape`` that belongs to a parameter of ``pshape``."""
    if shape == pshape:
        return pentries
    if len(shape) == len(pshape) - 1:  # one dimension reduced away (factored moments)
        for i in range(len(pshape)):
            if pshape[:i] + pshape[i + 1 :] == shape:
                return pentries[:i] + pentries[i + 1 :]
    if len(shape) == len(pshape) and all(s in (p, 1) for s, p in zip(shape, pshape)):
        return tuple(e if s == p else None for e, s, p in zip(pentries, shape, pshape))
    if len(shape) == len(pshape) + 1 and shape[1:] == pshape:
        # a stack of parameter-shaped copies (L-BFGS's (memory, ...) history): each copy
        # placed like the parameter, the stacking dimension free (ZeRO-1 may split it)
        return (None,) + tuple(pentries)
    return None


def _keyless(key: Any) -> bool:
    return isinstance(key, jax.tree_util.FlattenedIndexKey)


def _add_axis(
    entries: Tuple[SpecEntry, ...], shape: Tuple[int, ...], mesh: Mesh, axis: str
) -> Tuple[SpecEntry, ...]:
    """ZeRO-1: split the largest free dimension that ``axis`` divides over ``axis``."""
    if any(axis in _axes(e) for e in entries):
        return entries
    taken = [i for i, e in enumerate(entries) if e is not None]
    d = zero1_dim(shape, mesh.shape[axis], taken)  # largest free; the first one on ties
    if d is None:
        return entries
    return entries[:d] + (axis,) + entries[d + 1 :]


def state_sharding(
    tx: GradientTransformation,
    params: Any,
    mesh: Optional[Mesh] = None,
    *,
    shard_over: Optional[str] = None,
) -> Any:
    """The ``NamedSharding`` of every leaf of ``tx.init(params)``, placed like the parameters.

    Args:
      tx: any ``optax.GradientTransformation`` (ours, optax's, a chain of both).
      params: the parameters: arrays (their ``NamedSharding`` is used; others count as
        replicated) or ``jax.ShapeDtypeStruct`` s, optionally with ``sharding=``.
      mesh: the mesh; needed only when no parameter carries a ``NamedSharding``.
      shard_over: a mesh axis name for ZeRO-1 (see the module docstring); ``None`` places the
        state exactly like the parameters.

    Returns:
      A pytree with the structure of ``tx.init(params)`` whose leaves are ``NamedSharding`` s
      (usable as ``out_shardings`` of ``jax.jit`` and with ``jax.device_put``).

    Raises:
      ValueError: ``shard_over`` is not an axis of the mesh, or there is no mesh.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
      >>> shardings = state_sharding(jz.adam(1e-3), params, data_mesh(1), shard_over="data")
      >>> adam_state = jax.tree.map(lambda s: s.spec, shardings)[0]
      >>> adam_state.count, adam_state.mu["w"]
      (P(), P('data', None))
    """
    mesh = _find_mesh(params, mesh)
    if shard_over is not None and shard_over not in mesh.shape:
        raise ValueError(
            f"Invalid shard_over: {shard_over!r}. Expected one of the mesh axes "
            f"{tuple(mesh.shape)}."
        )
    by_path: Dict[KeyPath, Tuple[Tuple[int, ...], Tuple[SpecEntry, ...]]] = {}
    for path, p in jax.tree_util.tree_leaves_with_path(params):
        shape = tuple(np.shape(p))
        by_path[tuple(path)] = (shape, _padded(_leaf_spec(p, mesh), len(shape)))
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(np.shape(p), p.dtype), params)
    state_shapes = jax.eval_shape(tx.init, abstract)

    def place(path: KeyPath, leaf: Any) -> NamedSharding:
        shape = tuple(leaf.shape)
        entries: Optional[Tuple[SpecEntry, ...]] = None
        path = tuple(path)
        # A leaf of a node without keys inside a parameter's place (a QuantizedArray's codes
        # and scales: jaxopt_zoo.quant) belongs to that parameter too: codes of its shape are
        # placed like it, scales (one per block of the flattened leaf) get the ZeRO-1 split.
        nested = (path, path[:-1]) if path and _keyless(path[-1]) else (path,)
        for where in nested:
            for k in range(len(where), -1, -1):  # the longest parameter path that ends it
                hit = by_path.get(where[len(where) - k :])
                if hit is not None:
                    entries = _derive(shape, *hit)
                    break
            if entries is not None:
                break
        entries = _fits(entries, shape, mesh) if entries is not None else (None,) * len(shape)
        if shard_over is not None:
            entries = _add_axis(entries, shape, mesh, shard_over)
        return NamedSharding(mesh, PartitionSpec(*entries))

    return jax.tree_util.tree_map_with_path(place, state_shapes)


def zero1_sharding(
    tx: GradientTransformation, params: Any, mesh: Optional[Mesh] = None, axis: str = "data"
) -> Any:
    """``state_sharding(tx, params, mesh, shard_over=axis)``: the ZeRO-1 state layout.

    Each state leaf is split over ``axis`` along its largest dimension that the axis
    divides (see the module docstring); the parameters stay as they are.

    Args:
      tx: any ``optax.GradientTransformation``.
      params: the parameters, as for :func:`state_sharding`.
      mesh: the mesh; needed only when no parameter carries a ``NamedSharding``.
      axis: the data-parallel mesh axis to split the state over.

    Returns:
      A pytree of ``NamedSharding`` s with the structure of ``tx.init(params)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> params = {"w": jnp.ones((4, 2))}
      >>> shardings = zero1_sharding(jz.sgd(0.1, momentum=0.9), params, data_mesh(1))
      >>> trace_state = shardings[0]  # the step count stays replicated
      >>> trace_state.count.spec, trace_state.trace["w"].spec
      (P(), P('data', None))
    """
    return state_sharding(tx, params, mesh, shard_over=axis)


def init_sharded(
    tx: GradientTransformation,
    params: Any,
    mesh: Optional[Mesh] = None,
    *,
    shard_over: Optional[str] = None,
) -> Any:
    """``tx.init(params)`` created directly in its sharded layout (see ``state_sharding``).

    Each device allocates only its shards: the state is never materialized whole on one
    device. ``params`` are placed with ``param_sharding(params, mesh)`` first.

    Args:
      tx: any ``optax.GradientTransformation``.
      params: the parameters, as for :func:`state_sharding` (arrays, not
        ``ShapeDtypeStruct`` s: ``tx.init`` reads them).
      mesh: the mesh; needed only when no parameter carries a ``NamedSharding``.
      shard_over: a mesh axis name for ZeRO-1, or None.

    Returns:
      ``tx.init(params)``, its leaves placed with ``state_sharding(tx, params, mesh,
      shard_over=shard_over)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> params = {"w": jnp.ones((4, 2))}
      >>> state = init_sharded(jz.adam(1e-3), params, data_mesh(1), shard_over="data")
      >>> state[0].mu["w"].shape, state[0].mu["w"].sharding.spec
      ((4, 2), P('data', None))
    """
    p_sh = param_sharding(params, mesh)
    s_sh = state_sharding(tx, params, mesh, shard_over=shard_over)
    return jax.jit(tx.init, in_shardings=(p_sh,), out_shardings=s_sh)(params)


def sharded_update(
    tx: GradientTransformation,
    params: Any,
    mesh: Optional[Mesh] = None,
    *,
    shard_over: Optional[str] = None,
    donate: bool = True,
) -> Callable:
    """A jitted ``(grads, state, params) -> (new_params, new_state)`` on the sharded layout.

    The gradients and the returned parameters are laid out like ``params``
    (``param_sharding``), the state as ``state_sharding(tx, params, mesh,
    shard_over=shard_over)``. With ZeRO-1, each device updates its shard of the state and XLA
    gathers the new parameters. Inside a larger jitted train step, use the same shardings as
    that step's ``out_shardings`` instead (see docs/scale-out.md).

    Args:
      tx: any ``optax.GradientTransformation``.
      params: the parameters (or ``jax.ShapeDtypeStruct`` s) that fix the layout.
      mesh: the mesh; needed only when no parameter carries a ``NamedSharding``.
      shard_over: a mesh axis name for ZeRO-1, or None.
      donate: donate the state and the parameters passed to the step (they are deleted;
        their buffers hold the results).

    Returns:
      ``step(grads, state, params) -> (new params, new state)``, jitted.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz, numpy as np
      >>> tx, mesh = jz.sgd(0.1), data_mesh(1)
      >>> params = {"w": jnp.ones((4, 2))}
      >>> step = sharded_update(tx, params, mesh, shard_over="data")
      >>> state = init_sharded(tx, params, mesh, shard_over="data")
      >>> grads = {"w": jnp.ones((4, 2))}
      >>> params, state = step(grads, state, replicate(params, mesh))
      >>> print(np.asarray(params["w"][0]).round(3))
      [0.9 0.9]
    """
    p_sh = param_sharding(params, mesh)
    s_sh = state_sharding(tx, params, mesh, shard_over=shard_over)

    def step(grads: Any, state: Any, params: Any) -> Tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(
        step,
        in_shardings=(p_sh, s_sh, p_sh),
        out_shardings=(p_sh, s_sh),
        donate_argnums=(1, 2) if donate else (),
    )
