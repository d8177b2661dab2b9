"""SOAP's eigenbasis updates, for every preconditioner matrix of a step at once.

The first call takes each statistic's eigenvectors (``eigh``); every ``precondition_frequency``
steps after, one power iteration re-orthonormalized by QR refreshes them. Both are whole-matrix
work, ``O(d^3)`` per ``(d, d)`` statistic. With ``home_devices`` (a ``Mesh``, or ``True`` for
the one set with ``jax.set_mesh``), each matrix's update runs once, on one home device along
``home_axis``, the devices balanced by ``d^3`` (``sharding.home_device_assignment``), and one
all-gather shares the results (``sharding.run_on_home_devices``) instead of every device
repeating every matrix. The collectives sit inside a ``lax.switch`` on the step count, which
every device takes the same way.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxopt_zoo.optim.linalg import eigh_vectors, qr_q
from jaxopt_zoo.sharding.home import home_mesh, run_on_home_devices


def eigenbasis(gg: jax.Array) -> jax.Array:
    """Eigenvectors of ``gg``, largest eigenvalue first (as ``torch.linalg.eigh`` + flip)."""
    eye = jnp.eye(gg.shape[0], dtype=gg.dtype)
    return jnp.flip(eigh_vectors(gg + 1e-30 * eye), axis=1)


def power_qr(gg: jax.Array, q: jax.Array, qr_dtype: Optional[Any]) -> Tuple[jax.Array, jax.Array]:
    """One power iteration ``gg @ q`` re-orthonormalized by QR, columns sorted by the
    estimated eigenvalues ``diag(q^H gg q)`` (descending); returns the new basis and that
    order (to permute the second moment with)."""
    prod = gg @ q
    est = jnp.real(jnp.sum(jnp.conj(q) * prod, axis=0))
    order = jnp.argsort(-est)
    prod = prod[:, order]
    if qr_dtype is not None:
        return qr_q(prod.astype(qr_dtype)).astype(q.dtype), order
    return qr_q(prod), order


def refresh_cost(shape: Tuple[int, ...]) -> float:
    """``d^3`` for a ``(d, d)`` statistic (or a stack of them): eigh and QR are both cubic."""
    return float(shape[-1]) ** 3


def _packed_power_qr(qr_dtype: Optional[Any]) -> Callable[[jax.Array], jax.Array]:
    """``power_qr`` on ``stack([gg, q], axis=1)`` (``(d, 2, d)``: rows stay rows, so a ZeRO-1
    split of ``gg`` and ``q`` by rows is one of the stack), returning ``(d, d + 1)``: the new
    basis, then the order as a last column (integers below 2^24: exact in every float dtype),
    so that one array carries both through ``run_on_home_devices`` (and splits by rows like
    the basis)."""

    def fn(gq: jax.Array) -> jax.Array:
        new_q, order = power_qr(gq[:, 0], gq[:, 1], qr_dtype)
        return jnp.concatenate([new_q, order.astype(new_q.dtype)[:, None]], axis=1)

    return fn


def update_bases(
    branch: jax.Array,
    ggs: Sequence[jax.Array],
    qs: Sequence[jax.Array],
    nus: Sequence[jax.Array],
    where: Sequence[Tuple[int, int]],
    qr_dtype: Optional[Any],
    home_devices: Any = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> Tuple[List[jax.Array], List[jax.Array]]:
    """The bases after a step: ``branch`` 0 keeps ``qs``, 1 takes ``eigenbasis(gg)``, 2 runs
    ``power_qr`` and permutes the second moments to match.

    ``ggs[k]`` and ``qs[k]`` are matrix ``k``'s statistic and basis; ``where[k]`` is
    ``(leaf, axis)``: which of ``nus`` (second moments, in the preconditioned shape) it
    preconditions, along which axis. Returns the new bases and second moments.

    ``home_zero1``: the statistics and bases are split by rows over ``home_axis`` (ZeRO-1:
    each ``(d, d)`` leaf whose ``d`` the axis divides); each is moved only to its home
    device and the new basis goes back split the same way (two all-to-alls of ~1/N of the
    bytes, where the replicated layout all-gathers them to every device).
    """
    mesh = home_devices if isinstance(home_devices, Mesh) else None
    n = 1
    if home_devices is not None and home_devices is not False:
        found = home_mesh(mesh, home_axis)
        n = 1 if found is None else int(found.shape[home_axis])

    def home_map(fn: Callable[[jax.Array], jax.Array], mats: List[jax.Array]) -> List[jax.Array]:
        if home_devices is None or home_devices is False:
            return [fn(m) for m in mats]
        rows = [0 if m.shape[0] % n == 0 else None for m in mats] if home_zero1 else None
        return run_on_home_devices(
            fn, mats, mesh, home_axis, cost=refresh_cost, in_split=rows, out_split=rows
        )

    def keep(ggs_, qs_, nus_):
        return list(qs_), list(nus_)

    def from_eigh(ggs_, qs_, nus_):
        return home_map(eigenbasis, list(ggs_)), list(nus_)

    def refresh(ggs_, qs_, nus_):
        stacked = [jnp.stack([m, q], axis=1) for m, q in zip(ggs_, qs_)]
        outs = home_map(_packed_power_qr(qr_dtype), stacked)
        new_nus = list(nus_)
        new_qs = []
        for (leaf, axis), out in zip(where, outs):
            d = out.shape[0]
            new_qs.append(out[:, :d])
            order = jnp.real(out[:, d]).astype(jnp.int32)
            new_nus[leaf] = jnp.take(new_nus[leaf], order, axis=axis)
        return new_qs, new_nus

    if not ggs:
        return list(qs), list(nus)
    return jax.lax.switch(branch, (keep, from_eigh, refresh), list(ggs), list(qs), list(nus))
