"""Optimizer-state memory, from ``init``'s shapes (nothing is allocated)."""

from __future__ import annotations

from typing import Any, Dict

from jaxopt_zoo.registry.base import get


def reference_params() -> Dict[str, Any]:
    """The parameters ``state_bytes_per_param`` measures on by default: one float32
    1024 x 1024 matrix and its 1024 bias (shape-dependent states, such as SOAP's and
    Adafactor's, differ on other shapes).

    Returns:
      A dict of ``jax.ShapeDtypeStruct`` (no arrays).

    Example:
      >>> jax.tree.map(lambda s: (s.shape, str(s.dtype)), reference_params())
      {'bias': ((1024,), 'float32'), 'kernel': ((1024, 1024), 'float32')}
    """
    import jax
    import jax.numpy as jnp

    return {
        "kernel": jax.ShapeDtypeStruct((1024, 1024), jnp.float32),
        "bias": jax.ShapeDtypeStruct((1024,), jnp.float32),
    }


def state_bytes_per_param(name_or_tx: Any, params: Any = None, **kwargs: Any) -> float:
    """Bytes of optimizer state per parameter element: the sizes of the leaves of
    ``jax.eval_shape(tx.init, params)`` (no arrays allocated) over the number of
    parameter elements.

    ``name_or_tx`` is a registered name (built with ``get(name, **kwargs)``) or a
    ``GradientTransformation``. ``params`` is a tree of arrays or ``ShapeDtypeStruct``
    (default: ``reference_params()``, or its matrix alone for an optimizer that refuses
    vectors, such as ``torch.muon``). Adam on float32 gives 8.0 (two moments) plus a few
    bytes of step counters spread over the elements.

    Args:
      name_or_tx: a registered name or a ``GradientTransformation``.
      params: a tree of arrays or ``jax.ShapeDtypeStruct`` (default: ``reference_params()``).
      **kwargs: passed to ``get`` with a name (a ``TypeError`` with a transformation).

    Returns:
      The state's bytes over the number of parameter elements, a float.

    Example:
      >>> round(state_bytes_per_param("adam"), 2)
      8.0
      >>> params = {"w": jax.ShapeDtypeStruct((10, 10), jnp.float32)}
      >>> state_bytes_per_param(jz.sgd(0.1, momentum=0.9), params)  # + a 4-byte count
      4.04
    """
    import jax
    import numpy as np

    tx = get(name_or_tx, **kwargs) if isinstance(name_or_tx, str) else name_or_tx
    if kwargs and not isinstance(name_or_tx, str):
        raise TypeError("state_bytes_per_param: keyword arguments only go with a name.")
    if params is None:
        params = reference_params()
        try:
            jax.eval_shape(tx.init, params)
        except ValueError:  # matrix-only optimizers (torch.muon refuses the bias)
            params = {"kernel": params["kernel"]}
    n = sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))
    if n == 0:
        raise ValueError("state_bytes_per_param: the parameters have no elements.")
    shapes = jax.eval_shape(tx.init, params)
    total = sum(
        int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(shapes)
        if hasattr(x, "dtype")
    )
    return total / n
