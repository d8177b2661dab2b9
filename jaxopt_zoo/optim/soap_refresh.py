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
from jaxopt_zoo.sharding.home import run_on_home_devices


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
    """``power_qr`` on ``stack([gg, q])``, returning ``(d + 1, d)``: the new basis, then the
    order as a last row (integers below 2^24: exact in every float dtype), so that one array
    carries both through ``run_on_home_devices``."""

    def fn(gq: jax.Array) -> jax.Array:
        new_q, order = power_qr(gq[0], gq[1], qr_dtype)
        return jnp.concatenate([new_q, order.astype(new_q.dtype)[None, :]], axis=0)

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
) -> Tuple[List[jax.Array], List[jax.Array]]:
    """The bases after a step: ``branch`` 0 keeps ``qs``, 1 takes ``eigenbasis(gg)``, 2 runs
    ``power_qr`` and permutes the second moments to match.

    ``ggs[k]`` and ``qs[k]`` are matrix ``k``'s statistic and basis; ``where[k]`` is
    ``(leaf, axis)``: which of ``nus`` (second moments, in the preconditioned shape) it
    preconditions, along which axis. Returns the new bases and second moments.
    """

    def home_map(fn: Callable[[jax.Array], jax.Array], mats: List[jax.Array]) -> List[jax.Array]:
        if home_devices is None or home_devices is False:
            return [fn(m) for m in mats]
        mesh = home_devices if isinstance(home_devices, Mesh) else None
        return run_on_home_devices(fn, mats, mesh, home_axis, cost=refresh_cost)

    def keep(ggs_, qs_, nus_):
        return list(qs_), list(nus_)

    def from_eigh(ggs_, qs_, nus_):
        return home_map(eigenbasis, list(ggs_)), list(nus_)

    def refresh(ggs_, qs_, nus_):
        stacked = [jnp.stack([m, q]) for m, q in zip(ggs_, qs_)]
        outs = home_map(_packed_power_qr(qr_dtype), stacked)
        new_nus = list(nus_)
        new_qs = []
        for (leaf, axis), out in zip(where, outs):
            d = out.shape[1]
            new_qs.append(out[:d])
            order = jnp.real(out[d]).astype(jnp.int32)
            new_nus[leaf] = jnp.take(new_nus[leaf], order, axis=axis)
        return new_qs, new_nus

    if not ggs:
        return list(qs), list(nus)
    return jax.lax.switch(branch, (keep, from_eigh, refresh), list(ggs), list(qs), list(nus))
