"""Layer-wise adaptive optimizers: LAMB and LARS."""

from __future__ import annotations

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    chain,
    is_zero,
)
from jaxopt_zoo.optim.adam import scale_by_adam
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.masking import masked
from jaxopt_zoo.transforms.momentum import trace
from jaxopt_zoo.transforms.trust_ratio import scale_by_trust_ratio
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """LAMB (You et al. 2020, https://arxiv.org/abs/1904.00962).

    ::

        a_t = m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p_{t-1}   (Adam + decay)
        p_t = p_{t-1} - lr * (||p_{t-1}|| / ||a_t||) * a_t                       (per leaf)

    The ratio is 1 where either norm is zero.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root.
      eps_root: added inside the square root.
      weight_decay: decoupled decay, added before the trust ratio.
      mask: which parameters decay: a tree of booleans or a function of the params returning
        one (None: all).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.lamb(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    parts = [scale_by_adam(b1, b2, eps, eps_root)]
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, mask))
    parts += [scale_by_trust_ratio(), scale_by_learning_rate(learning_rate)]
    return chain(*parts)


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: Scalar = 0.001,
    eps: Scalar = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: Scalar = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS (You, Gitman & Ginsburg 2017, https://arxiv.org/abs/1708.03888).

    ::

        d_t = g_t + weight_decay * p_{t-1}
        d_t = trust_coefficient * ||p_{t-1}|| / (||d_t|| + eps) * d_t     (per leaf)
        b_t = momentum * b_{t-1} + lr * d_t;   p_t = p_{t-1} - b_t

    The masks (trees of booleans or functions of the params; ``True``: all) choose which
    leaves decay and which get the trust ratio, e.g. excluding biases and norms.

    Args:
      learning_rate: a number or a schedule of the step count (``jaxopt_zoo.schedules``).
      weight_decay: decay added to the gradient before the trust ratio.
      weight_decay_mask: which parameters decay (True: all; a tree of booleans or a
        function of the params).
      trust_coefficient: ``eta`` of the trust ratio ``eta * ||p|| / ||u||``.
      eps: added to ``||u||``.
      trust_ratio_mask: which parameters get the trust ratio (True: all).
      momentum: momentum coefficient applied after the learning rate.
      nesterov: Nesterov momentum.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.lars(0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """

    def as_mask(m):
        return (lambda p: True) if m is True else m

    parts = []
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, as_mask(weight_decay_mask)))
    parts += [
        masked(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
            as_mask(trust_ratio_mask),
        ),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    ]
    return chain(*parts)
