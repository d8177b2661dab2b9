"""Shampoo's inverse p-th roots, for every statistic of a step at once.

Every ``precondition_frequency`` steps Shampoo replaces each factor's root ``(L + ridge)^(-1/p)``.
The statistics of one shape, dtype and exponent are stacked and computed together (one batched
``eigh`` or coupled Newton iteration per group; on the CPU the batch runs one matrix at a time,
see ``optim.linalg``). With ``home_devices`` (a ``Mesh``, or ``True`` for the one set with
``jax.set_mesh``) each statistic's root runs once, on one home device along ``home_axis``
(balanced by ``d^3``), and one all-gather shares the roots
(``sharding.run_indexed_on_home_devices``),
as SOAP's eigenbases and Muon's orthogonalizations do.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxopt_zoo.optim.linalg import _one_matrix_at_a_time
from jaxopt_zoo.sharding.home import run_indexed_on_home_devices

ROOT_METHODS = ("eigh", "newton")
EPSILON_MODES = ("relative", "init")


def eigh_root(s: jax.Array, p: int, eps: float, relative: bool) -> jax.Array:
    """``(S + eps * lambda_max(S) I)^(-1/p)`` (without the ridge unless ``relative``) of a
    symmetric positive semi-definite ``S`` from its eigendecomposition; eigenvalues below the
    dtype's smallest normal number are raised to it (an exact zero has no finite root)."""
    w, v = jnp.linalg.eigh(s)
    if relative:
        w = w + eps * jnp.maximum(w[-1], 1e-16)
    w = jnp.maximum(w, jnp.finfo(w.dtype).tiny)
    return (v * (w ** (-1.0 / p)).astype(v.dtype)[None, :]) @ jnp.conj(v.T)


def max_eigenvalue(s: jax.Array, iters: int = 100) -> jax.Array:
    """The largest eigenvalue of a PSD ``s`` by ``iters`` power iterations from the all-ones
    vector (clamped at 1e-16), as the coupled Newton iteration's ridge needs."""
    tiny = jnp.finfo(s.dtype).tiny

    def body(_, v):
        u = s @ v
        return u / jnp.maximum(jnp.linalg.norm(u), tiny)

    v = jax.lax.fori_loop(0, iters, body, jnp.full((s.shape[0],), 1.0 / s.shape[0] ** 0.5, s.dtype))
    return jnp.maximum(jnp.real(jnp.vdot(v, s @ v)), 1e-16)


def newton_root(
    s: jax.Array,
    p: int,
    eps: float,
    relative: bool,
    max_iters: int = 100,
    tol: float = 1e-3,
    max_error_ratio: float = 1.2,
) -> jax.Array:
    """``(S + ridge)^(-1/p)`` by the coupled Newton iteration (Guo & Higham 2006), as Anil et
    al.'s and pytorch_optimizer's: ``M_0 = z S``, ``X_0 = z^(1/p) I`` with
    ``z = (1 + p) / (2 ||S||_F)``; ``T = (1 + 1/p) I - M / p``, ``X <- X T``,
    ``M <- T^p M``, until ``max|M - I| <= tol`` or the error grows by more than
    ``max_error_ratio`` (then the previous ``X``), at most ``max_iters`` times. The ridge is
    ``eps * lambda_max(S)`` (power iteration) with ``relative``."""
    if s.shape[0] == 1:  # exact, as the reference's
        r = jnp.real(s) * (1 + eps) if relative else jnp.real(s)
        return (r ** (-1.0 / p)).astype(s.dtype)
    eye = jnp.eye(s.shape[0], dtype=s.dtype)
    if relative:
        s = s + eps * max_eigenvalue(s) * eye
    z = (1 + p) / (2 * jnp.linalg.norm(s))
    root0 = eye * z ** (1.0 / p)
    m0 = s * z
    alpha = -1.0 / p

    def power(x: jax.Array) -> jax.Array:
        out = x
        for _ in range(p - 1):
            out = out @ x
        return out

    def cond(c):
        i, _, _, _, done = c
        return jnp.logical_and(i < max_iters, jnp.logical_not(done))

    def body(c):
        i, root, m, prev, _ = c
        t = (1 - alpha) * eye + alpha * m
        new_root = root @ t
        new_m = power(t) @ m
        err = jnp.max(jnp.abs(new_m - eye))
        diverged = err > prev * max_error_ratio
        done = jnp.logical_or(diverged, err <= tol)
        root = jnp.where(diverged, root, new_root)
        return i + 1, root, new_m, err, done

    start = (jnp.int32(0), root0, m0, jnp.max(jnp.abs(m0 - eye)), jnp.bool_(False))
    return jax.lax.while_loop(cond, body, start)[1]


def refresh_cost(shape: Tuple[int, ...]) -> float:
    """``d^3`` for a ``(d, d)`` statistic: eigh and each Newton step are cubic."""
    return float(shape[-1]) ** 3


_ROOT_FNS: Dict[Tuple[Any, ...], Callable[[jax.Array], jax.Array]] = {}


def _root_fn(method: str, p: int, eps: float, relative: bool) -> Callable[[jax.Array], jax.Array]:
    """The per-matrix root, batched one matrix at a time on the CPU (cached, so that a jit
    sees one function per configuration)."""
    key = (method, p, float(eps), relative)
    if key not in _ROOT_FNS:
        if method == "eigh":
            fn = lambda s: eigh_root(s, p, eps, relative)  # noqa: E731
        else:
            fn = lambda s: newton_root(s, p, eps, relative)  # noqa: E731
        _ROOT_FNS[key] = _one_matrix_at_a_time(fn)
    return _ROOT_FNS[key]


def inverse_roots(
    stats: Sequence[jax.Array],
    exponents: Sequence[int],
    method: str,
    eps: float,
    relative: bool,
    home_devices: Any = None,
    home_axis: str = "data",
) -> List[jax.Array]:
    """``root(stats[k], exponents[k])`` for every ``k``; those of one shape, dtype and exponent
    stacked and computed as one batch, each on its home device with ``home_devices``."""

    def many(which: Sequence[int], mats: Sequence[jax.Array]) -> List[jax.Array]:
        groups: Dict[Tuple[Any, ...], List[int]] = {}
        for j, (k, m) in enumerate(zip(which, mats)):
            groups.setdefault((m.shape, m.dtype, exponents[k]), []).append(j)
        out: List[Any] = [None] * len(mats)
        for (_, _, p), items in groups.items():
            fn = _root_fn(method, p, eps, relative)
            stacked = jnp.stack([mats[j] for j in items])
            roots = jax.vmap(fn)(stacked)
            for n, j in enumerate(items):
                out[j] = roots[n]
        return out

    mats = list(stats)
    if not mats:
        return []
    if home_devices is None or home_devices is False:
        return many(range(len(mats)), mats)
    return run_indexed_on_home_devices(
        many,
        mats,
        home_devices if isinstance(home_devices, Mesh) else None,
        home_axis,
        costs=[refresh_cost(tuple(m.shape)) for m in mats],
    )
