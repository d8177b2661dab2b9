"""Small pieces shared by the optimizer families."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    chain,
    is_zero,
    stat_dtype,
)
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


def moment_dtype(param: jax.Array, dtype: Optional[Any]) -> Any:
    return jnp.dtype(dtype) if dtype is not None else param.dtype


def init_moments(params: Any, mu_dtype: Optional[Any] = None, fill: Any = 0.0):
    """First moments shaped like the params (``mu_dtype`` or the param's dtype) and second
    moments in ``stat_dtype`` of the params' dtype (real; float32 for float16 params), both
    filled with ``fill``."""
    mu = jax.tree.map(lambda p: jnp.full(p.shape, fill, moment_dtype(p, mu_dtype)), params)
    nu = jax.tree.map(lambda p: jnp.full(p.shape, fill, stat_dtype(p.dtype)), params)
    return mu, nu


def scaled_with_decay(
    scaler: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """``scaler -> decoupled weight decay (if any) -> -learning_rate``."""
    parts = [scaler]
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, mask))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)
