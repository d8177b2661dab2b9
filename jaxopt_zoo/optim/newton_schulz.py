"""Newton-Schulz orthogonalization, batched over same-shape matrices (Muon's core).

``orthogonalize_by_newton_schulz`` is the stateless block; ``MuonDimensionNumbers`` says which
axes of a leaf form the matrix. Used by ``jaxopt_zoo.muon`` and ``compat.{torch,keras}.muon``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxopt_zoo.core import EmptyState, GradientTransformation, Scalar, check_int, check_nonneg
from jaxopt_zoo.sharding.home import newton_schulz_flops, run_indexed_on_home_devices

Triple = Tuple[float, float, float]
NsCoeffs = Union[Triple, Sequence[Triple], str]

DEFAULT_NS_COEFFS: Triple = (3.4445, -4.7750, 2.0315)  # Jordan's quintic
NS_COEFFS_PRESETS: Dict[str, Tuple[Triple, ...]] = {
    "standard": (DEFAULT_NS_COEFFS,),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),  # Ahn et al. 2025
}


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a leaf form the matrix: ``x W = y`` with ``W`` of shape
    ``(prod(reduction axes), prod(output axes))``; every other axis is a batch of separate
    matrices. The default ``(0, 1)`` is a JAX dense kernel ``(in, out)``; a conv kernel
    ``(h, w, in, out)`` as one matrix is ``MuonDimensionNumbers((0, 1, 2), 3)``. optax's
    ``optax.contrib.MuonDimensionNumbers`` is accepted too."""

    reduction_axis: Union[int, Sequence[int]] = 0
    output_axis: Union[int, Sequence[int]] = 1


DimsOrFn = Union[None, MuonDimensionNumbers, Any, Callable[[Any], Any]]
# Where each matrix's iteration runs: None (every device that holds it), a Mesh, or True (the
# mesh set with ``jax.set_mesh``): one home device per matrix (``orthogonalize``).
HomeDevices = Union[None, bool, Mesh]


def _is_dims(x: Any) -> bool:
    return hasattr(x, "reduction_axis") and hasattr(x, "output_axis")


class _Box:  # a leaf holding one leaf's dimension numbers (None: not a matrix)
    def __init__(self, dims: Any):
        self.dims = dims


def leaf_dims(spec: DimsOrFn, tree: Any) -> List[Any]:
    """Dimension numbers for each leaf of ``tree`` (a list; ``None`` where ``spec`` says so).

    ``spec``: ``None`` (every leaf a 2-D matrix), one ``MuonDimensionNumbers`` for all, a tree
    of them (a prefix of ``tree``; ``None`` marks a non-matrix leaf), or a function of ``tree``.
    """
    if callable(spec) and not _is_dims(spec):
        spec = spec(tree)
    if spec is None or _is_dims(spec):
        d = spec if spec is not None else MuonDimensionNumbers()
        return [d for _ in jax.tree.leaves(tree)]
    boxed = jax.tree.map(
        lambda d, sub: jax.tree.map(lambda _: _Box(d), sub),
        spec,
        tree,
        is_leaf=lambda x: x is None or _is_dims(x),
    )
    return [b.dims for b in jax.tree.leaves(boxed)]


def _axes(ndim: int, dims: Any) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    as_tuple = lambda a: (a,) if isinstance(a, int) else tuple(a)  # noqa: E731
    red = tuple(a % ndim for a in as_tuple(dims.reduction_axis))
    out = tuple(a % ndim for a in as_tuple(dims.output_axis))
    if ndim < 2 or set(red) & set(out) or not red or not out:
        raise ValueError(
            f"Muon: invalid dimension numbers {dims} for a leaf of rank {ndim}: "
            "reduction and output axes must be disjoint and non-empty."
        )
    batch = tuple(a for a in range(ndim) if a not in red + out)
    return batch, red, out


def fan_in_out(shape: Tuple[int, ...], dims: Any) -> Tuple[int, int]:
    """``(prod of the reduction axes, prod of the output axes)`` of a leaf."""
    _, red, out = _axes(len(shape), dims)
    return math.prod(shape[a] for a in red), math.prod(shape[a] for a in out)


# --------------------------------------------------------------------------- #
# Newton-Schulz, batched
# --------------------------------------------------------------------------- #


def coeff_table(ns_coeffs: NsCoeffs, ns_steps: int) -> Tuple[Triple, ...]:
    """One ``(a, b, c)`` per iteration: a triple repeated ``ns_steps`` times, a sequence of
    triples as given (``ns_steps`` ignored), or a preset name (``"standard"``, ``"dion"``)."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(
                f"Invalid ns_coeffs: {ns_coeffs!r}. Expected a triple, a sequence "
                f"of triples or one of {sorted(NS_COEFFS_PRESETS)}."
            )
        preset = NS_COEFFS_PRESETS[ns_coeffs]
        return preset * ns_steps if len(preset) == 1 else preset
    given: Any = ns_coeffs
    try:
        rows = [tuple(float(v) for v in row) for row in given]
        nested = True
    except TypeError:
        rows, nested = [tuple(float(v) for v in given)], False
    if not rows or any(len(r) != 3 for r in rows):
        raise ValueError(
            f"Invalid ns_coeffs: {ns_coeffs!r}. Expected (a, b, c) or a sequence "
            "of (a, b, c) triples, one per iteration."
        )
    table: Tuple[Triple, ...] = tuple((r[0], r[1], r[2]) for r in rows)
    return table if nested else table * ns_steps


def _dot(x, y, acc):
    """Batched ``x @ y`` accumulated in ``acc``. On the CPU a bfloat16 / float16 product is
    taken as a float32 product of the same (upcast) operands: a product of two bfloat16
    numbers is exact in float32, so this is the bfloat16 product with float32 accumulation,
    but XLA:CPU runs its float32 GEMM instead of its slower low-precision one (most CPUs
    have no bfloat16 matrix instructions; BENCHMARKS.md, Muon's step)."""
    low = x.dtype in (jnp.bfloat16, jnp.float16)
    if low and jnp.dtype(acc) == jnp.float32 and jax.default_backend() == "cpu":
        x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    return jnp.einsum("bij,bjk->bik", x, y, preferred_element_type=acc)


def use_gram(shape: Tuple[int, ...], dtype: Any, method: str, n_steps: int) -> bool:
    """Whether ``newton_schulz`` iterates on the Gram matrix: ``method="gram"``, or ``"auto"``
    where that saves arithmetic (``(4K - 3) n^3 + 2 n^2 m < K (n^3 + 2 n^2 m)`` multiply-adds
    for ``K`` steps on ``n x m``, i.e. ``m > 1.5 n`` at K = 5) in float32 / float64 only."""
    if method not in ("auto", "standard", "gram"):
        raise ValueError(f"Invalid ns_method: {method!r}. Expected 'auto', 'standard' or 'gram'.")
    n, m = shape[-2:]
    if method != "auto":
        return method == "gram"
    low = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return not low and (4 * n_steps - 3) * n + 2 * m < n_steps * (n + 2 * m)


def newton_schulz(
    x: jax.Array, coeffs: Sequence[Triple], eps: Any, *, clamp_eps: bool = False, gram: bool = False
) -> jax.Array:
    """Orthogonalize a batch ``x`` of shape ``(batch, n, m)`` with ``n <= m``.

    ``x <- x / (||x||_F + eps)`` (or ``/ max(||x||_F, eps)`` with ``clamp_eps``, as torch),
    then per ``(a, b, c)``: ``A = x x^H; x <- a x + (b A + c A A) x``. The arithmetic runs
    in ``x``'s dtype; a bfloat16 ``x`` multiplies with float32 accumulation and rounds each
    product to bfloat16, as torch's CPU and GPU matmuls do.

    ``gram``: the same iteration on ``n x n`` matrices only. With ``P_k = a I + b A_k + c
    A_k^2`` (Hermitian), ``x_{k+1} = P_k x_k`` gives ``A_{k+1} = P_k A_k P_k`` and ``x_K = Q
    x_0`` with ``Q = P_{K-1} ... P_0``: one ``n x n x m`` product at each end instead of two
    per step. Exact in exact arithmetic; in bfloat16 ``Q``'s rounding would swamp the small
    singular directions, so ``"auto"`` keeps it to float32 / float64.
    """
    low = x.dtype == jnp.bfloat16 or x.dtype == jnp.float16
    acc = jnp.float32 if low else x.dtype
    xf = x.astype(acc)
    norm = jnp.sqrt(jnp.sum((xf * xf.conj()).real, axis=(1, 2), keepdims=True))
    norm = jnp.maximum(norm, eps) if clamp_eps else norm + eps
    x = (xf / norm.astype(x.real.dtype).astype(acc)).astype(x.dtype)  # bf16: a bf16 norm
    if gram:
        return _gram_newton_schulz(x, coeffs)
    for a, b, c in coeffs:
        g = _dot(x, jnp.swapaxes(x, 1, 2).conj(), acc).astype(x.dtype)
        poly = (b * g.astype(acc) + c * _dot(g, g, acc)).astype(x.dtype)
        x = (a * x.astype(acc) + _dot(poly, x, acc)).astype(x.dtype)
    return x


def _gram_newton_schulz(x: jax.Array, coeffs: Sequence[Triple]) -> jax.Array:
    g = _dot(x, jnp.swapaxes(x, 1, 2).conj(), x.dtype)
    eye = jnp.eye(x.shape[1], dtype=x.dtype)[None]
    q = None
    for k, (a, b, c) in enumerate(coeffs):
        p = a * eye + b * g + c * _dot(g, g, x.dtype)
        q = p if q is None else _dot(p, q, x.dtype)
        if k + 1 < len(coeffs):
            g = _dot(p, _dot(g, p, x.dtype), x.dtype)
    return _dot(q, x, x.dtype) if q is not None else x


def ns_compute_dtype(dtype: Any, ns_dtype: Optional[Any]) -> Any:
    """Complex leaves: complex64 (complex128); real: ``ns_dtype``, or float32 (float64)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.complex64)
    if ns_dtype is not None:
        return jnp.dtype(ns_dtype)
    return jnp.promote_types(dtype, jnp.float32)


def _wide(x: jax.Array, d: Any, ns_dtype: Optional[Any]) -> Tuple[jax.Array, Callable]:
    """``x`` as a ``(batch, n, m)`` stack with ``n <= m`` in the iteration's dtype, and the
    function that turns the orthogonalized stack back into ``x``'s layout and dtype."""
    batch, red, outa = _axes(x.ndim, d)
    perm = batch + red + outa
    inv = tuple(sorted(range(x.ndim), key=lambda k: perm[k]))
    unflat = tuple(x.shape[a] for a in perm)
    n_in, n_out = fan_in_out(x.shape, d)
    m = x.transpose(perm).reshape(math.prod(x.shape[a] for a in batch), n_in, n_out)
    tall = n_in > n_out
    if tall:
        m = jnp.swapaxes(m, 1, 2)

    def back(y: jax.Array) -> jax.Array:
        y = jnp.swapaxes(y, 1, 2) if tall else y
        return y.reshape(unflat).transpose(inv).astype(x.dtype)

    return m.astype(ns_compute_dtype(x.dtype, ns_dtype)), back


def _newton_schulz_stacks(
    stacks: Sequence[jax.Array],
    coeffs: Sequence[Triple],
    eps: Any,
    clamp_eps: bool,
    ns_method: str,
) -> List[jax.Array]:
    """``newton_schulz`` of each ``(batch, n, m)`` stack, those of one ``(n, m)`` and dtype
    concatenated and iterated together."""
    out: List[Any] = [None] * len(stacks)
    groups: Dict[Tuple[Any, ...], List[int]] = {}
    for i, m in enumerate(stacks):
        groups.setdefault((m.shape[1:], m.dtype), []).append(i)
    for items in groups.values():
        parts = [stacks[i] for i in items]
        stacked = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
        gram = use_gram(stacked.shape, stacked.dtype, ns_method, len(coeffs))
        ortho = newton_schulz(stacked, coeffs, eps, clamp_eps=clamp_eps, gram=gram)
        start = 0
        for i in items:
            out[i] = ortho[start : start + stacks[i].shape[0]]
            start += stacks[i].shape[0]
    return out


def stack_flops(shape: Tuple[int, ...], dtype: Any, ns_method: str, steps: int) -> float:
    """FLOPs of ``newton_schulz`` on a ``(batch, n, m)`` stack (``n <= m``): ``2 K (n^3 + 2 n^2
    m)`` per matrix, or ``2 ((4K - 3) n^3 + 2 n^2 m)`` in the Gram form (see ``use_gram``)."""
    b, n, m = shape
    if use_gram(shape, dtype, ns_method, steps):
        return 2.0 * b * ((4 * steps - 3) * n**3 + 2 * n * n * m)
    return b * newton_schulz_flops((n, m), steps)


def check_home_devices(home_devices: Any, home_axis: Any) -> None:
    """Raise a ``TypeError`` / ``ValueError`` unless ``home_devices`` is None, a bool or a
    ``Mesh`` with the axis ``home_axis``."""
    if home_devices is not None and not isinstance(home_devices, (bool, Mesh)):
        raise TypeError(
            f"Invalid home_devices: {home_devices!r}. Expected None, True (the mesh set with "
            "jax.set_mesh) or a jax.sharding.Mesh (e.g. jaxopt_zoo.sharding.data_mesh(8))."
        )
    if isinstance(home_devices, Mesh) and home_axis not in home_devices.shape:
        raise ValueError(
            f"Invalid home_axis: {home_axis!r}. Expected one of the mesh axes "
            f"{tuple(home_devices.shape)}."
        )


def orthogonalize(
    leaves: Sequence[jax.Array],
    dims: Sequence[Any],
    coeffs: Sequence[Triple],
    eps: Any,
    ns_dtype: Optional[Any] = None,
    *,
    clamp_eps: bool = False,
    ns_method: str = "standard",
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> List[jax.Array]:
    """Newton-Schulz on each leaf with dimension numbers (others returned unchanged).

    Each leaf is laid out as ``(batch, fan_in, fan_out)`` and turned wide (``n <= m``, so the
    Gram matrix ``x x^H`` is the small side); all matrices of one oriented shape and dtype
    are stacked and orthogonalized in one batched computation, then split back.

    ``home_devices`` (a ``Mesh``, or ``True`` for the mesh set with ``jax.set_mesh``): each
    matrix's iteration runs once, on one home device along ``home_axis``, the devices
    balanced by Newton-Schulz FLOPs (``sharding.home_device_assignment``); each device
    batches its own matrices of one shape, and one all-gather shares the results
    (``sharding.run_on_home_devices``). The same arithmetic per matrix, so the same result.
    ``home_zero1``: the leaves are split along ``home_axis`` in the ZeRO-1 layout
    (``sharding.zero1_dim``), and each is moved whole only to its home device (one
    all-to-all, ~1/N of the bytes an all-gather to every device moves).
    """
    out = list(leaves)
    idx = [i for i, d in enumerate(dims) if d is not None]
    if not idx:
        return out
    mats = [leaves[i] for i in idx]
    mat_dims = [dims[i] for i in idx]

    def run(which: Sequence[int], ms: Sequence[jax.Array]) -> List[jax.Array]:
        wide = [_wide(m, mat_dims[j], ns_dtype) for j, m in zip(which, ms)]
        res = _newton_schulz_stacks([w for w, _ in wide], coeffs, eps, clamp_eps, ns_method)
        return [back(r) for (_, back), r in zip(wide, res)]

    if home_devices is None or home_devices is False:
        results = run(range(len(mats)), mats)
    else:
        costs = []
        for m, d in zip(mats, mat_dims):
            w = jax.eval_shape(lambda x, d=d: _wide(x, d, ns_dtype)[0], m)
            costs.append(stack_flops(w.shape, w.dtype, ns_method, len(coeffs)))
        results = run_indexed_on_home_devices(
            run,
            mats,
            home_devices if isinstance(home_devices, Mesh) else None,
            home_axis,
            costs=costs,
            in_split="zero1" if home_zero1 else None,
        )
    for i, r in zip(idx, results):
        out[i] = r
    return out


# --------------------------------------------------------------------------- #
# Blocks
# --------------------------------------------------------------------------- #


def orthogonalize_by_newton_schulz(
    ns_coeffs: NsCoeffs = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    eps: Scalar = 1e-8,
    *,
    weight_dimension_numbers: DimsOrFn = None,
    ns_dtype: Optional[Any] = None,
    clamp_eps: bool = False,
    ns_method: str = "auto",
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> GradientTransformation:
    """Replace each matrix update by its Newton-Schulz orthogonalization (stateless).

    See ``newton_schulz``, ``use_gram`` (``ns_method``) and ``orthogonalize``; leaves whose
    dimension numbers are ``None`` pass through unchanged. The iteration is written out in
    :func:`muon`; matrices of one oriented shape are stacked and iterated together.

    Args:
      ns_coeffs: ``(a, b, c)`` (default Jordan's quintic), a sequence of triples (one per
        iteration), or a preset ``"standard"`` / ``"dion"``.
      ns_steps: iterations, an int >= 1 (ignored for a sequence of triples).
      eps: added to the Frobenius norm of the input.
      weight_dimension_numbers: which axes form the matrix (``None``: every leaf is 2-D).
      ns_dtype: dtype of the iteration (``None``: float32, float64 for float64 input).
      clamp_eps: divide by ``max(norm, eps)`` instead of ``norm + eps`` (torch's form).
      ns_method: ``"auto"``, ``"standard"`` or ``"gram"``.
      home_devices: ``None`` (each device that runs the update iterates every matrix), a
        ``Mesh`` or ``True`` (the mesh set with ``jax.set_mesh``): each matrix's iteration
        runs once, on one home device along ``home_axis``, and the results are shared
        (see ``orthogonalize``; the same results).
      home_axis: the mesh axis whose devices share the iterations.
      home_zero1: the updates arrive split over ``home_axis`` as a ZeRO-1 state is (Muon's
        momentum with ``shard_over=home_axis``): each matrix's pieces are moved only to its
        home device (see ``orthogonalize``).

    Returns:
      A stateless ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.orthogonalize_by_newton_schulz()
      >>> g = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
      >>> o, _ = tx.update(g, tx.init(g))
      >>> s = jnp.linalg.svd(o["w"], compute_uv=False)  # singular values pushed near 1
      >>> o["w"].shape, bool(jnp.all((s > 0.6) & (s < 1.2)))
      ((4, 3), True)
    """
    coeffs = coeff_table(ns_coeffs, check_int("ns_steps", ns_steps, low=1))
    use_gram((1, 1), jnp.float32, ns_method, 1)  # validates ns_method
    check_nonneg("eps", eps, schedule_ok=False)
    check_home_devices(home_devices, home_axis)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        dims = leaf_dims(weight_dimension_numbers, updates)
        new = orthogonalize(
            leaves,
            dims,
            coeffs,
            eps,
            ns_dtype,
            clamp_eps=clamp_eps,
            ns_method=ns_method,
            home_devices=home_devices,
            home_axis=home_axis,
            home_zero1=home_zero1,
        )
        return jax.tree.unflatten(treedef, new), state

    return GradientTransformation(init_fn, update_fn)
