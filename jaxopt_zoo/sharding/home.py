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

Muon uses it through ``jz.muon(..., home_devices=mesh)`` (``optim.newton_schulz.orthogonalize``
with ``batched=True``, so that a device batches its own matrices of one shape); SOAP through
``jz.soap(..., home_devices=mesh)`` (``optim.soap_refresh.update_bases``: each statistic's
eigh or power iteration and QR, spread by ``d^3``).
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, List, Optional, Sequence, Tuple

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
    costs = [float(cost(tuple(s))) for s in shapes]
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, d) for d in range(num_devices)]
    home = [0] * len(costs)
    for i in order:
        load, d = heapq.heappop(heap)
        home[i] = d
        heapq.heappush(heap, (load + costs[i], d))
    return home


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


def run_on_home_devices(
    fn: Callable[..., Any],
    matrices: Sequence[jax.Array],
    mesh: Optional[Mesh] = None,
    axis: str = "data",
    assignment: Optional[Sequence[int]] = None,
    cost: Callable[[Shape], float] = newton_schulz_flops,
    *,
    batched: bool = False,
) -> List[jax.Array]:
    """``[fn(m) for m in matrices]``, each ``fn(m)`` computed on its home device only.

    Args:
      fn: a per-matrix function (one array in, one array out).
      matrices: the arrays, any shapes and dtypes; sharded inputs are gathered by XLA.
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

    Returns:
      The results, replicated on every device of ``mesh``. Each device runs ``fn`` only for
      the matrices it is home to, packs them into one flat buffer (padded to the busiest
      device's length), and one all-gather over ``axis`` delivers every result everywhere.

    Raises:
      ValueError: ``assignment`` does not give one device of ``axis`` per matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_zoo.sharding import data_mesh
      >>> outs = run_on_home_devices(lambda m: m.T, [jnp.ones((2, 3)), jnp.ones((4, 4))],
      ...                            data_mesh(1))
      >>> [o.shape for o in outs]
      [(3, 2), (4, 4)]
    """
    mats = list(matrices)
    if mesh is None:  # the mesh set with ``jax.set_mesh``, if any
        context = jax.sharding.get_abstract_mesh()
        mesh = None if context.empty or axis not in context.axis_names else context  # type: ignore[assignment]
    many: Callable[[Sequence[jax.Array]], List[jax.Array]] = (
        (lambda ms: list(fn(list(ms)))) if batched else (lambda ms: [fn(m) for m in ms])
    )
    if mesh is None or mesh.shape[axis] == 1 or not mats:
        return many(mats)
    n = mesh.shape[axis]
    home = (
        list(assignment)
        if assignment is not None
        else home_device_assignment([m.shape for m in mats], n, cost)
    )
    if len(home) != len(mats) or any(not 0 <= d < n for d in home):
        raise ValueError(
            f"Invalid assignment: {home}. Expected one device in 0..{n - 1} per "
            f"matrix ({len(mats)})."
        )
    outs = jax.eval_shape(many, [jax.ShapeDtypeStruct(m.shape, m.dtype) for m in mats])
    dtype = jnp.result_type(*[o.dtype for o in outs])  # promotion is exact, and so is the way back
    groups = [[i for i in range(len(mats)) if home[i] == d] for d in range(n)]
    offset = [0] * len(mats)
    for g in groups:
        pos = 0
        for i in g:
            offset[i] = pos
            pos += int(np.prod(outs[i].shape, dtype=np.int64))
    width = max(1, max(sum(int(np.prod(outs[i].shape, dtype=np.int64)) for i in g) for g in groups))

    def branch(group: List[int]) -> Callable[[Any], jax.Array]:
        def compute(ms: Any) -> jax.Array:
            parts = [r.reshape(-1).astype(dtype) for r in many([ms[i] for i in group])]
            flat = jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)
            return jnp.pad(flat, (0, width - flat.shape[0]))

        return compute

    def body(*ms: jax.Array) -> Tuple[jax.Array, ...]:
        buf = jax.lax.switch(jax.lax.axis_index(axis), [branch(g) for g in groups], ms)
        every = jax.lax.all_gather(buf, axis)  # (n, width): device d's results in row d
        res = []
        for i, o in enumerate(outs):
            size = int(np.prod(o.shape, dtype=np.int64))
            piece = every[home[i], offset[i] : offset[i] + size]
            res.append(piece.reshape(o.shape).astype(o.dtype))
        return tuple(res)

    run = jax.shard_map(
        body, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(), check_vma=False
    )
    return list(run(*mats))
