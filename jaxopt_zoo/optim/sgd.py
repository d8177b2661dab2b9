"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any, Optional

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_nonneg,
    is_zero,
)
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import trace
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Optional[Scalar] = None,
    nesterov: bool = False,
    dampening: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    accumulator_dtype: Optional[Any] = None,
) -> GradientTransformation:
    """SGD with optional (Nesterov) momentum and L2 weight decay (Robbins & Monro 1951;
    Polyak 1964; Sutskever et al. 2013).

    ::

        g_t = grad_t + weight_decay * p_{t-1}
        b_t = momentum * b_{t-1} + (1 - dampening) * g_t      (b_1 = g_1)
        d_t = g_t + momentum * b_t  if nesterov  else  b_t     (d_t = g_t without momentum)
        p_t = p_{t-1} - lr * d_t

    This is PyTorch's ``torch.optim.SGD`` update and, without dampening and weight decay,
    optax's ``sgd``.

    Args:
      learning_rate: a number or a schedule of the step count.
      momentum: momentum coefficient (``None`` or 0: plain SGD).
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      dampening: scales the gradient entering the momentum buffer by ``1 - dampening``.
      weight_decay: coupled L2 penalty added to the gradient.
      accumulator_dtype: dtype of the momentum buffer (default: the parameter's).

    Example:
      >>> tx = jz.sgd(0.1, momentum=0.9, nesterov=True)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    parts = []
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay))
    has_momentum = momentum is not None and not is_zero(momentum)
    if nesterov and not has_momentum:
        raise ValueError(
            f"Invalid momentum: {momentum!r}. Nesterov momentum needs momentum > 0; pass "
            "momentum=0.9, say, or nesterov=False."
        )
    if has_momentum:
        check_nonneg("momentum", momentum, schedule_ok=False)
        parts.append(trace(momentum, nesterov, dampening, accumulator_dtype))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)
