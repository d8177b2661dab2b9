"""The reference Keras CNN for MNIST.

Conv2D(32, 3x3, VALID) ReLU -> MaxPool 2x2 -> Dropout(0.25) -> Flatten
-> Dense(256) ReLU -> Dropout(0.5) -> Dense(10) logits
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from jaxopt_zoo.models.layers import ByteDropout, ShiftConv
from jaxopt_zoo.models.mlp import InitStyle, initializers


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 and VALID padding on NHWC input.

    Written as a reshape and a max rather than ``nn.max_pool`` (``reduce_window``), whose
    gradient is a slow ``select_and_scatter`` on CPU: the whole CNN train step runs about
    2.5x faster this way. An odd trailing row or column is dropped, as VALID pooling does
    (26x26 -> 13x13, 27x27 -> 13x13).

    Args:
      x: an ``(N, H, W, C)`` array.

    Returns:
      The ``(N, H // 2, W // 2, C)`` maxima of the 2x2 blocks.

    Example:
      >>> max_pool_2x2(jnp.ones((2, 26, 26, 32))).shape
      (2, 13, 13, 32)
    """
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :]
    return x.reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
    """The reference Keras MNIST CNN (1.39M parameters for 28x28x1 input).

    Attributes:
      num_classes: number of output logits.
      init_style: ``"flax"`` (LeCun-normal kernels) or ``"keras"`` (Glorot-uniform kernels);
        biases start at zero in both.
      fast_layers: True (default): the first convolution, the pooling and dropout computed
        the CPU-fast way (:mod:`jaxopt_zoo.models.layers`, :func:`max_pool_2x2`). False: Flax's
        stock ``nn.Conv``, ``nn.max_pool`` and ``nn.Dropout``. Both have the same parameters
        (names, shapes, initializers) and compute the same function; the benchmarks run both
        to show which part of the speed is the model and which the optimizer.

    Call as ``model.apply({"params": p}, x, train=True, rngs={"dropout": key})`` with ``x`` of
    shape ``(N, 28, 28, 1)`` or ``(N, 28, 28)``; ``train=False`` (the default) turns dropout
    off and needs no key.
    """

    num_classes: int = 10
    init_style: InitStyle = "flax"
    fast_layers: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kernel_init, bias_init = initializers(self.init_style)
        if x.ndim == 3:  # (N, H, W) grayscale: add the channel axis
            x = x[..., None]
        # The fast layers are nn.Conv, nn.max_pool and nn.Dropout computed faster on CPU
        # (models/layers.py); same parameters.
        if self.fast_layers:
            conv, dropout = ShiftConv, ByteDropout
        else:
            conv, dropout = functools.partial(nn.Conv, padding="VALID"), nn.Dropout  # type: ignore[assignment]
        x = conv(32, (3, 3), kernel_init=kernel_init, bias_init=bias_init, name="Conv_0")(x)
        x = nn.relu(x)
        x = max_pool_2x2(x) if self.fast_layers else nn.max_pool(x, (2, 2), strides=(2, 2))
        x = dropout(0.25, deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(256, kernel_init=kernel_init, bias_init=bias_init)(x)
        x = nn.relu(x)
        x = dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=kernel_init, bias_init=bias_init)(x)
