"""Eigenvectors and QR for the optimizers that need them (SOAP), one matrix at a time on
the CPU when batched.

Under ``jax.vmap`` (a sweep trains several configurations in one program), ``jnp.linalg.qr``
and ``jnp.linalg.eigh`` become batched LAPACK calls. In jaxlib 0.10.2 on the CPU, such a call
splits its batch over XLA's intra-op thread pool and blocks its own pool thread until the
pieces are done; when two of them run at once on a small pool (SOAP refreshes several
eigenbases in one step, on a 2-core machine), each waits for work that no free thread can
run, and the program hangs (seen in a vmapped SOAP sweep: every thread asleep, the main
thread waiting in ``ParallelBatchMap``). These wrappers batch by ``jax.lax.map`` instead on
the CPU, one matrix per call, which never blocks a pool thread on another; elsewhere they are
plain ``vmap``. The values are those of ``jnp.linalg``; they are not differentiable (the
optimizers call them on statistics, not inside a loss).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["eigh_vectors", "qr_q"]


def _one_matrix_at_a_time(fn: Callable[[jax.Array], jax.Array]) -> Callable:
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, x):
        del axis_size
        if not in_batched[0]:
            return wrapped(x), False
        if jax.default_backend() == "cpu":
            return jax.lax.map(wrapped, x), True
        return jax.vmap(fn)(x), True

    return wrapped


_qr_q = _one_matrix_at_a_time(lambda x: jnp.linalg.qr(x)[0])
_eigh_vectors = _one_matrix_at_a_time(lambda x: jnp.linalg.eigh(x)[1])


def qr_q(x: jax.Array) -> jax.Array:
    """The ``Q`` of the reduced QR factorization of a matrix, ``jnp.linalg.qr(x)[0]``.

    Args:
      x: a ``(m, n)`` matrix.

    Returns:
      ``Q``, ``(m, min(m, n))`` with orthonormal columns; under ``vmap`` on the CPU,
      computed one matrix at a time (see the module docstring).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4))
      >>> q = jax.vmap(qr_q)(x)
      >>> bool(jnp.allclose(q, jnp.linalg.qr(x)[0]))
      True
    """
    return _qr_q(x)


def eigh_vectors(x: jax.Array) -> jax.Array:
    """The eigenvectors of a symmetric (Hermitian) matrix, ``jnp.linalg.eigh(x)[1]``
    (ascending eigenvalues).

    Args:
      x: a ``(n, n)`` symmetric or Hermitian matrix.

    Returns:
      The ``(n, n)`` eigenvectors as columns; under ``vmap`` on the CPU, computed one
      matrix at a time (see the module docstring).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> a = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3))
      >>> s = a @ jnp.swapaxes(a, 1, 2)
      >>> v = jax.vmap(eigh_vectors)(s)
      >>> bool(jnp.allclose(jnp.abs(v), jnp.abs(jnp.linalg.eigh(s)[1]), atol=1e-5))
      True
    """
    return _eigh_vectors(x)
