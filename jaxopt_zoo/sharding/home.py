"""One home device per matrix: whole-matrix work (Newton-Schulz, eigenbases) run once, spread.

Muon orthogonalizes each matrix with a few Newton-Schulz iterations and SOAP refreshes each
matrix's eigenbasis; neither splits into element-wise pieces. Under data parallelism every
device would repeat that work for every matrix. Megatron's and torchtitan's distributed Muon
instead give each matrix a home device that computes it whole, and share the results. Here:

- ``home_device_assignment(shapes, n)`` balances the cost (``newton_schulz_flops`` by
  default) over ``n`` devices, largest first onto the least-loaded device (LPT);
- ``run_on_home_devices(fn, matrices, mesh)`` runs ``fn`` on each matrix on its home device
  only (a ``shard_map`` over the data axis whose body switches on the device index), then
  all-gathers the results, so every device ends with every result. It works inside ``jit``.

The results equal ``[fn(m) for m in matrices]`` exactly: each is computed by the same code on
one device, and the gather only moves bytes.

With a ZeRO-1 state (``zero1_sharding``) each device holds 1/N of every matrix, and gathering
the inputs to every device throws N - 1 of the copies away. ``in_split="zero1"`` says that
the inputs are laid out so (split along :func:`zero1_dim`): each device then packs, for
every home device, its pieces of that device's matrices, and one ``all_to_all`` delivers
them, so a home device receives only its own matrices (~1/N of the bytes per device,
where the all-gather moves all of them). ``out_split="zero1"`` sends the results back the
same way, split as the state keeps them (SOAP's bases); replicated results (Muon's updates,
for replicated parameters) are all-gathered: every device needs every one.
``jz.muon(..., home_zero1=True)`` / ``jz.soap(..., home_zero1=True)`` use it. A single-device
sharding cannot be asked for inside a multi-device ``jit``; this is written as a
``shard_map`` with explicit collectives instead, so it works inside ``jit`` and composes with
the ZeRO-1 layout XLA already has (no resharding before or after).

Muon uses it through ``jz.muon(..., home_devices=mesh)`` (``optim.newton_schulz.orthogonalize``
with ``batched=True``, so that a device batches its own matrices of one shape); SOAP through
``jz.soap(..., home_devices=mesh)`` (``optim.soap_refresh.update_bases``: each statistic's
eigh or power iteration and QR, spread by ``d^3``).
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

__all__ = [
    "assignment_loads",
    "home_device_assignment",
    "matrix_view",
    "newton_schulz_flops",
    "run_on_home_devices",
    "zero1_dim",
]

Shape = Tuple[int, ...]


def matrix_view(shape: Sequence[int]) -> Optional[Tuple[int, int]]:
    """The 2-D view Muon uses: ``(prod(shape[:-1]), shape[-1])``; ``None`` below rank 2.

    Args:
      shape: an array's shape.

    Returns:
      ``(rows, columns)`` of the matrix the leading dimensions are flattened into, or None
      for a scalar or vector.

    Example:
      >>> matrix_view((3, 4, 5)), matrix_view((7,))
      ((12, 5), None)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return None
    return int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]


def newton_schulz_flops(shape: Sequence[int], steps: int = 5) -> float:
    """FLOPs of ``steps`` quintic Newton-Schulz iterations on a matrix of ``shape``.

    On the ``m x n`` view with ``m <= n`` (transposed otherwise), each iteration forms
    ``A = X X^T`` (``2 m^2 n``), ``B = b A + c A A`` (``2 m^3``) and ``a X + B X``
    (``2 m^2 n``). Vectors and scalars cost 0.

    Args:
      shape: the parameter's shape, viewed as a matrix by :func:`matrix_view`.
      steps: the number of iterations.

    Returns:
      ``steps * (4 m^2 n + 2 m^3)`` as a float; 0.0 below rank 2.

    Example:
      >>> newton_schulz_flops((4, 8)), newton_schulz_flops((8, 4), steps=1)
      (3200.0, 640.0)
      >>> newton_schulz_flops((10,))
      0.0
    """
    view = matrix_view(shape)
    if view is None:
        return 0.0
    m, n = sorted(view)
    return float(steps) * (4.0 * m * m * n + 2.0 * m**3)


def home_device_assignment(
    shapes: Sequence[Sequence[int]],
    num_devices: int,
    cost: Callable[[Shape], float] = newton_schulz_flops,
) -> List[int]:
    """A home device (``0`` to ``num_devices - 1``) for each shape, balancing the total ``cost``.

    Greedy longest-processing-time: the costliest matrix first, each onto the device with
    the least work so far (ties to the lowest index), so the result is deterministic and the
    same on every process. The busiest device carries at most 4/3 of the optimum, and close
    to the mean when matrices are many and none dominates.

    Args:
      shapes: the matrices' shapes, one per matrix (vectors allowed; they cost 0 by
        default).
      num_devices: the number of devices to spread the work over, >= 1.
      cost: the cost of one matrix from its shape (default :func:`newton_schulz_flops`).

    Returns:
      A list with one device index per shape, in the order of ``shapes``.

    Raises:
      ValueError: ``num_devices`` is not an int >= 1.

    Example:
      >>> shapes = [(256, 256), (128, 512), (64, 64), (10,)]
      >>> home_device_assignment(shapes, 2)
      [0, 1, 1, 1]
    """
    if (
        isinstance(num_devices, bool)
        or not isinstance(num_devices, (int, np.integer))
        or num_devices < 1
    ):
        raise ValueError(f"Invalid num_devices: {num_devices!r}. Expected an int >= 1.")
    return _lpt([float(cost(tuple(s))) for s in shapes], num_devices)


def assignment_loads(
    shapes: Sequence[Sequence[int]],
    assignment: Sequence[int],
    num_devices: int,
    cost: Callable[[Shape], float] = newton_schulz_flops,
) -> List[float]:
    """Total ``cost`` per device under ``assignment`` (for reports: max / mean is the spread).

    Args:
      shapes: the matrices' shapes, as given to :func:`home_device_assignment`.
      assignment: the device index of each shape.
      num_devices: the number of devices (the length of the result).
      cost: the cost of one matrix from its shape (default :func:`newton_schulz_flops`).

    Returns:
      A list of ``num_devices`` floats: the summed cost of the matrices on each device.

    Example:
      >>> shapes = [(64, 64), (32, 64), (16, 16)]
      >>> assignment_loads(shapes, home_device_assignment(shapes, 2), 2)
      [7864320.0, 1761280.0]
    """
    loads = [0.0] * num_devices
    for s, d in zip(shapes, assignment):
        loads[d] += float(cost(tuple(s)))
    return loads


def zero1_dim(shape: Sequence[int], num_devices: int, taken: Sequence[int] = ()) -> Optional[int]:
    """The dimension ZeRO-1 splits an array of ``shape`` along over ``num_devices`` devices.

    The largest dimension that ``num_devices`` divides, the first on ties; ``None`` where
    there is none (the array stays whole). This is ``zero1_sharding``'s rule for the state
    leaves of a replicated parameter (``sharding.placement``).

    Args:
      shape: the array's shape.
      num_devices: the number of devices along the split axis.
      taken: dimensions already split over another mesh axis (not candidates).

    Returns:
      A dimension index, or None.

    Example:
      >>> zero1_dim((384, 1536), 8), zero1_dim((20, 20), 8), zero1_dim((16, 16), 8)
      (1, None, 0)
    """
    shape = tuple(int(s) for s in shape)
    free = [d for d in range(len(shape)) if d not in taken and shape[d] % num_devices == 0]
    if not free:
        return None
    return max(free, key=lambda d: (shape[d], -d))


Split = Union[None, str, Sequence[Optional[int]]]


def _lpt(costs: Sequence[float], num_devices: int) -> List[int]:
    """Longest processing time first: each item onto the least-loaded device (ties: lowest)."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, d) for d in range(num_devices)]
    home = [0] * len(costs)
    for i in order:
        load, d = heapq.heappop(heap)
        home[i] = d
        heapq.heappush(heap, (load + costs[i], d))
    return home


def home_mesh(mesh: Optional[Mesh], axis: str) -> Optional[Any]:
    """``mesh``, or the mesh set with ``jax.set_mesh`` when it has ``axis``, or None."""
    if mesh is not None:
        return mesh
    context = jax.sharding.get_abstract_mesh()
    return None if context.empty or axis not in context.axis_names else context


def _split_dims(
    split: Split, shapes: Sequence[Tuple[int, ...]], n: int, name: str
) -> List[Optional[int]]:
    """One split dimension (or None: whole on every device) per shape."""
    if split is None:
        return [None] * len(shapes)
    if isinstance(split, str):
        if split != "zero1":
            raise ValueError(f'Invalid {name}: {split!r}. Expected None, "zero1" or dims.')
        return [zero1_dim(s, n) for s in shapes]
    dims = list(split)
    ok = len(dims) == len(shapes) and all(
        k is None or (isinstance(k, (int, np.integer)) and 0 <= k < len(s) and s[k] % n == 0)
        for k, s in zip(dims, shapes)
    )
    if not ok:
        raise ValueError(
            f"Invalid {name}: {dims}. Expected one dimension that {n} divides (or None) per "
            f"array of shapes {list(shapes)}."
        )
    return [None if k is None else int(k) for k in dims]


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _piece(shape: Sequence[int], dim: int, n: int) -> Tuple[int, ...]:
    return tuple(s // n if j == dim else s for j, s in enumerate(shape))


def _offsets(groups: List[List[int]], sizes: Dict[int, int]) -> Tuple[Dict[int, int], int]:
    """Where each item of ``sizes`` sits in its group's flat buffer, and the width of the
    widest group's (at least 1): the buffers of one collective share one shape."""
    offset: Dict[int, int] = {}
    width = 1
    for g in groups:
        pos = 0
        for i in g:
            if i in sizes:
                offset[i] = pos
                pos += sizes[i]
        width = max(width, pos)
    return offset, width


def _pack(parts: Sequence[jax.Array], width: int, dtype: Any) -> jax.Array:
    flats = [p.reshape(-1).astype(dtype) for p in parts]
    flat = jnp.concatenate(flats) if flats else jnp.zeros((0,), dtype)
    return jnp.pad(flat, (0, width - flat.shape[0]))


def _spec(dim: Optional[int], ndim: int, axis: str) -> PartitionSpec:
    if dim is None:
        return PartitionSpec()
    return PartitionSpec(*[axis if j == dim else None for j in range(ndim)])


def run_on_home_devices(
    fn: Callable[..., Any],
    matrices: Sequence[jax.Array],
    mesh: Optional[Mesh] = None,
    axis: str = "data",
    assignment: Optional[Sequence[int]] = None,
    cost: Callable[[Shape], float] = newton_schulz_flops,
    *,
    batched: bool = False,
    in_split: Split = None,
    out_split: Split = None,
) -> List[jax.Array]:
    """``[fn(m) for m in matrices]``, each ``fn(m)`` computed on its home device only.

    Args:
      fn: a per-matrix function (one array in, one array out).
      matrices: the arrays, any shapes and dtypes.
      mesh: the mesh; ``None`` takes the one set with ``jax.set_mesh`` (so an optimizer's
        ``update`` can call this without being handed a mesh); with no mesh, or an ``axis``
        of size 1, ``fn`` runs plainly.
      axis: the mesh axis whose devices share the work; devices along other mesh axes repeat
        it.
      assignment: home device per matrix; by default ``home_device_assignment`` over the
        shapes with ``cost``.
      cost: the cost of one matrix from its shape, for the default assignment.
      batched: ``fn`` takes a list of matrices and returns the list of their results (each
        device calls it once, on its own matrices, so it can batch those of one shape), and
        the result is ``fn(matrices)``.
      in_split: how ``matrices`` lie along ``axis``. ``None`` (default): whole on every
        device (replicated): nothing moves in. ``"zero1"``: each split ``n`` ways along
        :func:`zero1_dim` (the ZeRO-1 layout of ``zero1_sharding``; whole where no
        dimension divides), or a sequence with one such dimension (or None) per matrix.
        Split matrices are moved only to their home device: one all-to-all in which every
        device sends each home device its piece of that device's matrices, about ``1/n`` of
        the matrices' bytes per device instead of all of them (XLA's all-gather for a
        replicated input). The layout is not checked: inputs laid out otherwise are
        resharded by XLA first (same results, more bytes moved).
      out_split: how the results are returned. ``None`` (default): replicated on every
        device (one all-gather: each device receives every result, as replicated
        parameters need their updates). ``"zero1"`` or dims: split along ``axis`` like
        ``in_split`` (one all-to-all: each device receives only its piece of every result,
        as a ZeRO-1 state needs it); results with no such dimension come back replicated.

    Returns:
      The results, laid out as ``out_split`` says. Each device runs ``fn`` only for the
      matrices it is home to; buffers are packed flat per device, padded to the busiest
      device's length (the bytes moved are read from the compiled program by
      ``sharding.compiled_stats``).

    Raises:
      ValueError: ``assignment`` does not give one device of ``axis`` per matrix, or
        ``in_split`` / ``out_split`` is not a dimension ``n`` divides per matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_zoo.sharding import data_mesh
      >>> outs = run_on_home_devices(lambda m: m.T, [jnp.ones((2, 3)), jnp.ones((4, 4))],
      ...                            data_mesh(1))
      >>> [o.shape for o in outs]
      [(3, 2), (4, 4)]
    """
    many: Callable[[List[int], Sequence[jax.Array]], List[jax.Array]] = (
        (lambda idx, ms: list(fn(list(ms)))) if batched else (lambda idx, ms: [fn(m) for m in ms])
    )
    return run_indexed_on_home_devices(
        many,
        matrices,
        mesh,
        axis,
        assignment,
        costs=None,
        cost=cost,
        in_split=in_split,
        out_split=out_split,
    )


def run_indexed_on_home_devices(
    many: Callable[[List[int], Sequence[jax.Array]], List[jax.Array]],
    matrices: Sequence[jax.Array],
    mesh: Optional[Mesh] = None,
    axis: str = "data",
    assignment: Optional[Sequence[int]] = None,
    *,
    costs: Optional[Sequence[float]] = None,
    cost: Callable[[Shape], float] = newton_schulz_flops,
    in_split: Split = None,
    out_split: Split = None,
) -> List[jax.Array]:
    """:func:`run_on_home_devices` for a batched ``many(indices, matrices)`` that is also told
    which matrices (their indices in ``matrices``) it gets, and with the cost given per
    matrix (``costs``) where the shape alone does not fix it (Muon's dimension numbers)."""
    mats = list(matrices)
    mesh = home_mesh(mesh, axis)
    if mesh is None or mesh.shape[axis] == 1 or not mats:
        return list(many(list(range(len(mats))), mats))
    n = mesh.shape[axis]
    if assignment is not None:
        home = list(assignment)
    else:
        home = _lpt(
            [float(c) for c in costs]
            if costs is not None
            else [float(cost(tuple(m.shape))) for m in mats],
            n,
        )
    if len(home) != len(mats) or any(not 0 <= d < n for d in home):
        raise ValueError(
            f"Invalid assignment: {home}. Expected one device in 0..{n - 1} per "
            f"matrix ({len(mats)})."
        )
    k = len(mats)
    in_dims = _split_dims(in_split, [tuple(m.shape) for m in mats], n, "in_split")
    outs = jax.eval_shape(
        lambda ms: list(many(list(range(k)), ms)),
        [jax.ShapeDtypeStruct(m.shape, m.dtype) for m in mats],
    )
    out_dims = _split_dims(out_split, [tuple(o.shape) for o in outs], n, "out_split")
    groups = [[i for i in range(k) if home[i] == d] for d in range(n)]

    # In: every device sends home device d its piece of each of d's split matrices.
    in_dim = {i: dim for i, dim in enumerate(in_dims) if dim is not None}
    out_dim = {i: dim for i, dim in enumerate(out_dims) if dim is not None}
    in_piece = {i: _piece(mats[i].shape, dim, n) for i, dim in in_dim.items()}
    in_off, in_width = _offsets(groups, {i: _size(p) for i, p in in_piece.items()})
    in_dtype = jnp.result_type(*[mats[i].dtype for i in in_piece]) if in_piece else None
    # Out: split results go back piece by piece (home d sends device j its j-th pieces), the
    # others whole to every device. Promotion is exact, and so is the way back.
    out_piece = {i: _piece(outs[i].shape, dim, n) for i, dim in out_dim.items()}
    whole = {i: _size(o.shape) for i, o in enumerate(outs) if out_dims[i] is None}
    split_off, split_width = _offsets(groups, {i: _size(p) for i, p in out_piece.items()})
    whole_off, whole_width = _offsets(groups, whole)
    split_dtype = jnp.result_type(*[outs[i].dtype for i in out_piece]) if out_piece else None
    whole_dtype = jnp.result_type(*[outs[i].dtype for i in whole]) if whole else None

    def branch(group: List[int]) -> Callable[..., Tuple[jax.Array, ...]]:
        def compute(ms: Any, recv: Any) -> Tuple[jax.Array, ...]:
            wholes = []
            for i in group:
                if i not in in_piece:  # whole on every device already
                    wholes.append(ms[i])
                    continue
                size, start = _size(in_piece[i]), in_off[i]
                parts = [recv[j, start : start + size].reshape(in_piece[i]) for j in range(n)]
                wholes.append(jnp.concatenate(parts, axis=in_dim[i]).astype(mats[i].dtype))
            res = dict(zip(group, many(list(group), wholes))) if group else {}
            bufs = []
            if out_piece:  # row j: the j-th pieces of this device's results, for device j
                pieces = {i: jnp.split(res[i], n, axis=out_dim[i]) for i in group if i in out_piece}
                rows = [
                    _pack([p[j] for p in pieces.values()], split_width, split_dtype)
                    for j in range(n)
                ]
                bufs.append(jnp.stack(rows))
            if whole:
                bufs.append(_pack([res[i] for i in group if i in whole], whole_width, whole_dtype))
            return tuple(bufs)

        return compute

    def body(*ms: jax.Array) -> Tuple[jax.Array, ...]:
        recv = None
        if in_piece:  # after the all-to-all, row j: device j's pieces of this device's matrices
            send = [_pack([ms[i] for i in g if i in in_piece], in_width, in_dtype) for g in groups]
            recv = jax.lax.all_to_all(jnp.stack(send), axis, 0, 0, tiled=True)
        index = jax.lax.axis_index(axis)
        bufs = list(jax.lax.switch(index, [branch(g) for g in groups], ms, recv))
        res: List[Any] = [None] * k
        if out_piece:  # row d: home device d's pieces for this device
            got = jax.lax.all_to_all(bufs.pop(0), axis, 0, 0, tiled=True)
            for i, shape in out_piece.items():
                piece = got[home[i], split_off[i] : split_off[i] + _size(shape)]
                res[i] = piece.reshape(shape).astype(outs[i].dtype)
        if whole:  # row d: home device d's results
            every = jax.lax.all_gather(bufs.pop(0), axis)
            for i, size in whole.items():
                flat = every[home[i], whole_off[i] : whole_off[i] + size]
                res[i] = flat.reshape(outs[i].shape).astype(outs[i].dtype)
        return tuple(res)

    run = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=tuple(_spec(d, m.ndim, axis) for d, m in zip(in_dims, mats)),
        out_specs=tuple(_spec(d, len(o.shape), axis) for d, o in zip(out_dims, outs)),
        check_vma=False,
    )
    return list(run(*mats))
