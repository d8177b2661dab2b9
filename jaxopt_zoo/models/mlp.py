"""The reference MLP (784 -> 128 ReLU -> 10) and the init styles shared by the models."""

from __future__ import annotations

from typing import Callable, Literal, Sequence, Tuple

import flax.linen as nn
import jax

InitStyle = Literal["flax", "keras"]
INIT_STYLES = ("flax", "keras")


def initializers(init_style: str) -> Tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
    """``(kernel_init, bias_init)`` for an init style.

    - ``"flax"``: Flax's defaults, ``lecun_normal()`` kernels (truncated normal, variance
      ``1 / fan_in``) and zero biases.
    - ``"keras"``: Keras' defaults, ``glorot_uniform()`` kernels (uniform on ``[-a, a]``,
      ``a = sqrt(6 / (fan_in + fan_out))``) and zero biases. For an HWIO conv kernel JAX's
      default axes (``in_axis=-2, out_axis=-1``, the rest a receptive field) give
      ``fan_in = kh*kw*cin`` and ``fan_out = kh*kw*cout``, which is Keras' convention.

    Args:
      init_style: ``"flax"`` or ``"keras"``.

    Returns:
      ``(kernel_init, bias_init)``, JAX initializers ``init(key, shape, dtype)``.

    Raises:
      ValueError: for another init style.

    Example:
      >>> kernel_init, bias_init = initializers("keras")
      >>> kernel_init(jax.random.PRNGKey(0), (784, 128)).shape
      (784, 128)
    """
    if init_style == "flax":
        return jax.nn.initializers.lecun_normal(), jax.nn.initializers.zeros
    if init_style == "keras":
        return jax.nn.initializers.glorot_uniform(), jax.nn.initializers.zeros
    raise ValueError(f"Invalid init_style: {init_style!r}. Expected one of {INIT_STYLES}.")


class MLP(nn.Module):
    """Flatten -> Dense(128) ReLU -> Dense(10) logits.

    Attributes:
      hidden: widths of the hidden layers (default ``(128,)``).
      num_classes: number of output logits.
      init_style: ``"flax"`` (LeCun-normal kernels) or ``"keras"`` (Glorot-uniform kernels);
        biases start at zero in both.

    Call as ``model.apply({"params": p}, x, train=...)`` with ``x`` of shape ``(N, 28, 28, 1)``
    or ``(N, 784)``. ``train`` is accepted for an interface shared with :class:`CNN`; the MLP
    has no dropout, so it changes nothing.
    """

    hidden: Sequence[int] = (128,)
    num_classes: int = 10
    init_style: InitStyle = "flax"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        kernel_init, bias_init = initializers(self.init_style)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init, name=f"Dense_{i}")(x)
            x = nn.relu(x)
        return nn.Dense(
            self.num_classes,
            kernel_init=kernel_init,
            bias_init=bias_init,
            name=f"Dense_{len(self.hidden)}",
        )(x)
