"""DP-SGD: SGD on clipped, noised per-example gradients (Abadi et al. 2016)."""

from __future__ import annotations

from typing import Optional

from jaxopt_zoo.core import GradientTransformation, Scalar, ScalarOrSchedule, chain
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.momentum import trace
from jaxopt_zoo.transforms.privacy import differentially_private_aggregate


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    seed: int,
    momentum: Optional[Scalar] = None,
    nesterov: bool = False,
    *,
    per_example: bool = True,
) -> GradientTransformation:
    r"""DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy",
    https://arxiv.org/abs/1607.00133).

    Takes per-example gradients (every leaf with the batch on axis 0). With ``B`` examples
    and ``C = l2_norm_clip``::

        g_bar = (sum_i g_i min(1, C / ||g_i||) + C noise_multiplier xi_t) / B,  xi_t ~ N(0, I)
        p_t = p_{t-1} - lr_t g_bar        (or SGD with momentum / Nesterov on g_bar)

    The noise key starts from ``seed`` and lives in the state (reproducible runs).

    Args:
      learning_rate: a number or a schedule of the step count.
      l2_norm_clip: the largest per-example global norm ``C``, >= 0.
      noise_multiplier: the noise's standard deviation over ``C``, >= 0.
      seed: the noise's initial PRNG seed (an int, or a key).
      momentum: momentum of :func:`jaxopt_zoo.trace` on ``g_bar`` (None: none).
      nesterov: Nesterov momentum.
      per_example: False: the gradient is one example's, without a batch axis (the registry
        entry ``"dpsgd"`` uses this, so that it takes ordinary gradients).

    Returns:
      ``chain(differentially_private_aggregate, trace, scale_by_learning_rate)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
      >>> params = {"w": jnp.ones(3)}
      >>> per_example = {"w": jnp.ones((8, 3))}  # a batch of 8 examples' gradients
      >>> updates, state = tx.update(per_example, tx.init(params), params)
      >>> updates["w"].shape
      (3,)

    Equals ``optax.contrib.dpsgd`` (0.2.8), noise included, in float32 and float64.
    """
    parts = [
        differentially_private_aggregate(
            l2_norm_clip, noise_multiplier, key=seed, per_example=per_example
        )
    ]
    if momentum is not None:
        parts.append(trace(momentum, nesterov=nesterov))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)
