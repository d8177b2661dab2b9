"""GaLore: a base optimizer run on gradients projected onto a low-rank subspace refreshed
by SVD every few steps (Zhao et al. 2024)."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_int,
    check_nonneg,
    increment,
    is_zero,
    zero_count,
)
from jaxopt_zoo.optim.adam import scale_by_adam
from jaxopt_zoo.optim.soap import decay_after_step
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.masking import masked
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "galore", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the rows (``reduction_axis``) and the columns
    (``output_axis``) of the matrix GaLore projects (as optax.contrib's, whose instances
    are accepted too)."""

    reduction_axis: Union[Sequence[int], int] = 0
    output_axis: Union[Sequence[int], int] = 1


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore` (names as in optax.contrib): the step ``count``,
    the base optimizer's state (on the projected gradients) and one ``projector`` per
    parameter (a ``(0, 0)`` array for parameters that are not projected)."""

    count: StepCount
    base_optimizer_state: Any
    projector: Any


def _is_dim_nums(x: Any) -> bool:
    return hasattr(x, "reduction_axis") and hasattr(x, "output_axis")


def _is_dim_leaf(x: Any) -> bool:
    return x is None or _is_dim_nums(x)


def _axes(a: Union[Sequence[int], int], ndim: int) -> Tuple[int, ...]:
    return (a % ndim,) if isinstance(a, int) else tuple(i % ndim for i in a)


class _Matrix(NamedTuple):
    """How one parameter is seen as a matrix: to and from the ``(rows, cols)`` view."""

    to_2d: Callable[[jax.Array], jax.Array]
    from_2d: Callable[[jax.Array], jax.Array]
    rows: int
    cols: int


def _matrix_view(shape: Tuple[int, ...], dims: Any) -> _Matrix:
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"GaLore projects parameters of rank >= 2; got shape {shape}.")
    red, out = _axes(dims.reduction_axis, ndim), _axes(dims.output_axis, ndim)
    if set(red) & set(out) or len(set(red) | set(out)) != ndim:
        raise ValueError(
            f"GaLore dimension numbers {tuple(dims)} for shape {shape}: the reduction and "
            "output axes must be disjoint and cover every axis."
        )
    perm = red + out
    inv = tuple(sorted(range(ndim), key=lambda i: perm[i]))
    rows, cols = math.prod(shape[i] for i in red), math.prod(shape[i] for i in out)
    permuted = tuple(shape[i] for i in perm)
    return _Matrix(
        lambda x: x.transpose(perm).reshape(rows, cols),
        lambda y: y.reshape(permuted).transpose(inv),
        rows,
        cols,
    )


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: Scalar = 1.0,
    base_optimizer: Optional[GradientTransformation] = None,
    weight_dimension_numbers: Any = None,
    *,
    projection_type: str = "reverse_std",
    proj_step_offset: int = 0,
) -> GradientTransformation:
    """Run ``base_optimizer`` on low-rank projections of the matrix gradients; see
    :func:`galore`.

    Args:
      rank: the projection's rank (at most the matrix's smaller side).
      update_proj_gap: refresh the projector every this many steps.
      scale: multiplies the projected-back updates (of projected parameters only).
      base_optimizer: a transformation that needs no parameters (default
        ``scale_by_adam()``); its state is shaped like the projected gradients.
      weight_dimension_numbers: None (project 2-D parameters), one
        :class:`GaLoreDimensionNumbers` (every parameter of rank >= 2), a tree of them with
        None for parameters left alone, or a function of the parameters returning one.
      projection_type: ``"reverse_std"`` (optax's): a matrix with ``rows >= cols`` is
        projected from the left, ``P^T G`` with ``P`` its top-``rank`` left singular
        vectors, a wide one from the right; ``"std"`` (the GaLore authors' and
        pytorch_optimizer's): the other way round.
      proj_step_offset: refresh at the first step and whenever ``(count + offset) % gap ==
        0`` (0-based ``count``): 0 is optax's and the authors' schedule, 1
        pytorch_optimizer's (which counts steps from 1).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`GaLoreState`.

    Example:
      >>> tx = jz.scale_by_galore(rank=2)
      >>> p = {"w": jnp.ones((4, 3))}
      >>> u, s = tx.update(p, tx.init(p), p)
      >>> s.projector["w"].shape
      (4, 2)
    """
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise TypeError(f"Invalid rank: {rank!r}. Expected a positive integer.")
    check_int("rank", rank, low=1)
    gap = check_int("update_proj_gap", update_proj_gap, low=1)
    offset = check_int("proj_step_offset", proj_step_offset, low=0)
    if projection_type not in ("reverse_std", "std"):
        raise ValueError(
            f"Invalid projection_type: {projection_type!r}. Expected 'reverse_std' (optax's) "
            "or 'std' (the GaLore authors')."
        )
    base = scale_by_adam() if base_optimizer is None else base_optimizer

    def dim_list(params: Any) -> list:
        leaves = jax.tree.leaves(params)
        wdn = weight_dimension_numbers
        if wdn is None:
            dims = [GaLoreDimensionNumbers() if jnp.ndim(p) == 2 else None for p in leaves]
        elif _is_dim_nums(wdn):
            dims = [wdn if jnp.ndim(p) >= 2 else None for p in leaves]
        else:
            tree = wdn(params) if callable(wdn) else wdn
            dims = jax.tree.leaves(tree, is_leaf=_is_dim_leaf)
            if len(dims) != len(leaves):
                raise ValueError(
                    f"galore: weight_dimension_numbers has {len(dims)} entries (None for "
                    f"parameters left alone) but the parameters have {len(leaves)} leaves."
                )
        # nothing to project in an empty matrix
        return [None if d is None or jnp.size(p) == 0 else d for p, d in zip(leaves, dims)]

    def left(view: _Matrix) -> bool:
        tall = view.rows >= view.cols
        return tall if projection_type == "reverse_std" else not tall

    def shapes(p: Any, d: Any) -> Tuple[Any, Any]:
        """The projector and the projected gradient (zeros) for one parameter."""
        if d is None:
            return jnp.zeros((0, 0), p.dtype), jnp.zeros_like(p)
        v = _matrix_view(p.shape, d)
        r = min(rank, v.rows, v.cols)
        if left(v):
            return jnp.zeros((v.rows, r), p.dtype), jnp.zeros((r, v.cols), p.dtype)
        return jnp.zeros((v.cols, r), p.dtype), jnp.zeros((v.rows, r), p.dtype)

    def init_fn(params):
        leaves, tdef = jax.tree.flatten(params)
        pairs = [shapes(p, d) for p, d in zip(leaves, dim_list(params))]
        return GaLoreState(
            count=zero_count(),
            base_optimizer_state=base.init(jax.tree.unflatten(tdef, [q for _, q in pairs])),
            projector=jax.tree.unflatten(tdef, [P for P, _ in pairs]),
        )

    def update_fn(updates, state, params=None):
        del params
        if jax.tree.structure(updates) != jax.tree.structure(state.projector):  # type: ignore[operator]
            raise ValueError(
                "scale_by_galore: the gradient tree does not match the optimizer state.\n"
                f"  gradients:         {jax.tree.structure(updates)}\n"
                f"  state (from init): {jax.tree.structure(state.projector)}"
            )
        leaves, tdef = jax.tree.flatten(updates)
        projectors = jax.tree.leaves(state.projector)
        k = state.count
        refresh = (k + offset) % gap == 0
        if offset:
            refresh = refresh | (k == 0)
        dims = dim_list(updates)
        low: list = []
        new_proj: list = []
        views: list = []
        for g, P, d in zip(leaves, projectors, dims):
            if d is None:
                low.append(g)
                new_proj.append(P)
                views.append(None)
                continue
            v = _matrix_view(g.shape, d)
            g2 = v.to_2d(g)
            r = min(rank, v.rows, v.cols)
            is_left = left(v)

            def svd_projector(g2=g2, r=r, is_left=is_left, dt=P.dtype):
                # in float32, as optax and pytorch_optimizer (which do so for float64 too);
                # complex64 for complex parameters (then P^H replaces P^T)
                sd = jnp.complex64 if jnp.iscomplexobj(g2) else jnp.float32
                u, _, vh = jnp.linalg.svd(g2.astype(sd), full_matrices=False)
                return (u[:, :r] if is_left else jnp.conj(vh[:r, :]).T).astype(dt)

            P = jax.lax.cond(refresh, svd_projector, lambda P=P: P)
            low.append(jnp.conj(P).T @ g2 if is_left else g2 @ P)
            new_proj.append(P)
            views.append((v, is_left))
        low_tree = jax.tree.unflatten(tdef, low)
        low_updates, base_state = base.update(low_tree, state.base_optimizer_state)
        out = []
        for u, P, g, vw in zip(jax.tree.leaves(low_updates), new_proj, leaves, views):
            if vw is None:
                out.append(u)
                continue
            v, is_left = vw
            full = P @ u if is_left else u @ jnp.conj(P).T
            out.append((scale * v.from_2d(full)).astype(g.dtype))
        new_state = GaLoreState(increment(k), base_state, jax.tree.unflatten(tdef, new_proj))
        return jax.tree.unflatten(tdef, out), new_state

    return GradientTransformation(init_fn, update_fn)


def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: Scalar = 1.0,
    base_optimizer: Optional[GradientTransformation] = None,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    weight_dimension_numbers: Any = None,
    *,
    projection_type: str = "reverse_std",
    proj_step_offset: int = 0,
    decay_after_update: bool = False,
) -> GradientTransformation:
    """GaLore (Zhao et al. 2024, https://arxiv.org/abs/2403.03507): the base optimizer
    (Adam by default) keeps its state for ``P^T G`` (``rank x n``) instead of ``G`` (``m x
    n``), and its update is projected back, ``P u``.

    For each matrix parameter (``m x n``, ``m >= n``; wide matrices use ``G Q`` and
    ``u Q^T`` with right singular vectors), at step ``k`` (0-based)::

        P_k = top-rank left singular vectors of G_k  if k % update_proj_gap == 0 else P_{k-1}
        u_k = base_optimizer(P_k^T G_k);       x_{k+1} = x_k - lr_k (scale P_k u_k + wd x_k)

    Other parameters run the base optimizer on their full gradient. The SVD runs in
    float32 (as in optax and pytorch_optimizer). Blocks: ``scale_by_galore ->
    add_decayed_weights -> scale_by_learning_rate``. The defaults are ``optax.contrib.galore``'s.

    The GaLore authors' code (and pytorch_optimizer's ``GaLore``, which follows it) differ
    in four ways, each an option here: they project a tall matrix from the right, onto its
    ``n x rank`` right singular vectors (``projection_type="std"``; optax's side keeps the
    smaller projector, the authors' the smaller state); pytorch_optimizer counts steps from
    1, so its refreshes come one step earlier than optax's and the authors'
    (``proj_step_offset=1``); their Adam puts ``eps`` outside the bias correction
    (``base_optimizer=jz.compat.keras.scale_by_keras_adam(0.9, 0.999, 1e-6)``); and they decay
    the parameters after the step, ``x <- (x + u) (1 - lr wd)`` (``decay_after_update``).
    SVD signs differ between LAPACK builds (torch's and jax's); the trajectory depends on
    them only through the base optimizer's state carried across a refresh.

    Args:
      learning_rate: a number or a schedule of the step count.
      rank, update_proj_gap, scale, base_optimizer: as in :func:`scale_by_galore`.
      weight_dimension_numbers, projection_type: as in :func:`scale_by_galore`.
      proj_step_offset: as in :func:`scale_by_galore`.
      weight_decay: decoupled decay strength (times the learning rate).
      mask: which parameters decay (a tree of bools or a function of params).
      decay_after_update: decay the updated parameters (the authors' order) instead of the
        current ones.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.galore(1e-2, rank=2)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)
    parts: list[Any] = [
        scale_by_galore(
            rank,
            update_proj_gap,
            scale,
            base_optimizer,
            weight_dimension_numbers,
            projection_type=projection_type,
            proj_step_offset=proj_step_offset,
        )
    ]
    if is_zero(weight_decay):
        parts.append(scale_by_learning_rate(learning_rate))
    elif decay_after_update:
        parts.append(scale_by_learning_rate(learning_rate))
        decay = decay_after_step(learning_rate, weight_decay, skip_first=False)
        parts.append(decay if mask is None else masked(decay, mask))
    else:
        parts += [add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate)]
    return chain(*parts)
