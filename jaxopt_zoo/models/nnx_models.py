"""The reference CNN and MLP as Flax NNX modules, on the same fast layers as the Linen ones.

The NNX models compute exactly what their Linen twins (:class:`jaxopt_zoo.models.CNN`,
:class:`jaxopt_zoo.models.MLP`) compute: the same functions
(:func:`~jaxopt_zoo.models.layers.shift_conv`, :func:`~jaxopt_zoo.models.layers.byte_dropout`,
:func:`~jaxopt_zoo.models.max_pool_2x2`), the same initializers and the same parameter tree
(``Conv_0``, ``Dense_0``, ``Dense_1``; ``kernel`` and ``bias`` in each), so weights and
checkpoints move between the two with ``nnx.to_pure_dict`` / ``nnx.replace_by_pure_dict``.
Given the same weights they give the same outputs (tested). Train them with
``nnx.Optimizer`` and any jaxopt_zoo optimizer, or with
:func:`jaxopt_zoo.train.train_and_evaluate` through :class:`~jaxopt_zoo.models.NNXModel`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import jax
import numpy as np
from flax import nnx

from jaxopt_zoo.models.cnn import max_pool_2x2
from jaxopt_zoo.models.layers import byte_dropout, check_dropout_rate, shift_conv
from jaxopt_zoo.models.mlp import InitStyle, initializers


class ShiftConv(nnx.Module):
    """NNX twin of :class:`jaxopt_zoo.models.layers.ShiftConv`: a VALID, stride-1 2-D
    convolution computed by :func:`~jaxopt_zoo.models.layers.shift_conv`.

    Args:
      in_features: input channels ``cin``.
      out_features: output channels.
      kernel_size: ``(kh, kw)``.
      kernel_init: initializer of ``kernel`` ``(kh, kw, cin, out_features)``.
      bias_init: initializer of ``bias`` ``(out_features,)``.
      rngs: ``nnx.Rngs`` with a ``params`` (or default) stream.

    Example:
      >>> conv = ShiftConv(1, 32, (3, 3), rngs=nnx.Rngs(0))
      >>> conv(jnp.zeros((2, 28, 28, 1))).shape
      (2, 26, 26, 32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Tuple[int, int],
        *,
        kernel_init: Any = jax.nn.initializers.lecun_normal(),
        bias_init: Any = jax.nn.initializers.zeros,
        rngs: nnx.Rngs,
    ):
        kh, kw = kernel_size
        self.kernel = nnx.Param(kernel_init(rngs.params(), (kh, kw, in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.kernel[...], self.bias[...]
        return shift_conv(x, kernel.astype(x.dtype)) + bias.astype(x.dtype).reshape(1, 1, 1, -1)


class ByteDropout(nnx.Module):
    """NNX twin of :class:`jaxopt_zoo.models.layers.ByteDropout` (8 random bits per element,
    :func:`~jaxopt_zoo.models.layers.byte_dropout`), with ``nnx.Dropout``'s interface.

    Args:
      rate: the probability of dropping an element, ``0 <= rate < 1``.
      deterministic: if True, return the input unchanged; ``model.eval()``,
        ``model.train()`` and ``nnx.view(model, deterministic=...)`` set it.
      rngs: ``nnx.Rngs`` whose ``dropout`` stream is forked into the layer, or None (then a
        key must be passed at call time).

    Call as ``layer(x, deterministic=None, rngs=None)``: a call-time ``deterministic`` or
    ``rngs`` (``nnx.Rngs``, an ``RngStream`` or a key) takes precedence over the stored one.

    Example:
      >>> drop = ByteDropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = drop(jnp.ones((2, 8)))
    """

    def __init__(
        self, rate: float, *, deterministic: bool = False, rngs: Optional[nnx.Rngs] = None
    ):
        check_dropout_rate(rate)
        self.rate = rate
        self.deterministic = deterministic
        self.rngs = nnx.data(None) if rngs is None else rngs["dropout"].fork()

    def __call__(
        self, x: jax.Array, *, deterministic: Optional[bool] = None, rngs: Any = None
    ) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0.0:
            return x
        rngs = self.rngs if rngs is None else rngs
        if rngs is None:
            raise ValueError(
                "ByteDropout: deterministic is False but there is no dropout key: "
                "build the layer with rngs=nnx.Rngs(dropout=...) or pass rngs."
            )
        if isinstance(rngs, nnx.Rngs):
            key = rngs["dropout"]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        else:
            key = rngs
        return byte_dropout(x, self.rate, key)

    def set_view(self, deterministic: Optional[bool] = None):
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic


def _dense(fan_in: int, fan_out: int, init: Tuple[Any, Any], rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(fan_in, fan_out, kernel_init=init[0], bias_init=init[1], rngs=rngs)


class CNN(nnx.Module):
    """The reference Keras MNIST CNN in NNX, the twin of :class:`jaxopt_zoo.models.CNN`.

    ``Conv2D(32, 3x3, VALID) ReLU -> MaxPool 2x2 -> Dropout(0.25) -> Flatten -> Dense(256)
    ReLU -> Dropout(0.5) -> Dense(num_classes)`` logits; 1.39M parameters for 28x28x1 input.

    Args:
      num_classes: number of output logits.
      init_style: ``"flax"`` (LeCun-normal kernels) or ``"keras"`` (Glorot-uniform
        kernels); zero biases in both.
      input_shape: ``(H, W, C)`` of one example (NNX builds the dense layer eagerly).
      rngs: ``nnx.Rngs`` with ``params`` (and, for training, ``dropout``) streams.

    Call as ``model(x)`` with ``x`` of shape ``(N, H, W, C)`` or ``(N, H, W)``. Dropout is on
    (NNX's convention) until ``model.eval()``; ``model(x, train=False)`` turns it off for one
    call, and ``rngs=`` passes the dropout key for one call.

    Example:
      >>> model = CNN(init_style="keras", rngs=nnx.Rngs(params=0, dropout=1))
      >>> logits = model(jnp.zeros((8, 28, 28, 1)))
    """

    def __init__(
        self,
        num_classes: int = 10,
        init_style: InitStyle = "flax",
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ):
        init = initializers(init_style)
        h, w, c = input_shape
        self.Conv_0 = ShiftConv(c, 32, (3, 3), kernel_init=init[0], bias_init=init[1], rngs=rngs)
        self.dropout_0 = ByteDropout(0.25, rngs=rngs)
        self.Dense_0 = _dense((h - 2) // 2 * ((w - 2) // 2) * 32, 256, init, rngs)
        self.dropout_1 = ByteDropout(0.5, rngs=rngs)
        self.Dense_1 = _dense(256, num_classes, init, rngs)

    def __call__(
        self, x: jax.Array, train: Optional[bool] = None, *, rngs: Any = None
    ) -> jax.Array:
        det = None if train is None else not train
        if x.ndim == 3:  # (N, H, W) grayscale: add the channel axis
            x = x[..., None]
        x = max_pool_2x2(jax.nn.relu(self.Conv_0(x)))
        x = self.dropout_0(x, deterministic=det, rngs=rngs)
        x = jax.nn.relu(self.Dense_0(x.reshape((x.shape[0], -1))))
        x = self.dropout_1(x, deterministic=det, rngs=rngs)
        return self.Dense_1(x)


class MLP(nnx.Module):
    """Flatten -> Dense(128) ReLU -> Dense(10) logits in NNX, the twin of
    :class:`jaxopt_zoo.models.MLP` (layers ``Dense_0`` ... ``Dense_k``).

    Args:
      hidden: widths of the hidden layers (default ``(128,)``).
      num_classes: number of output logits.
      init_style: ``"flax"`` or ``"keras"``, as for :class:`CNN`.
      input_shape: the shape of one example (flattened to ``prod(input_shape)`` inputs).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    ``model(x, train=...)`` accepts ``train`` (and ``rngs``) for an interface shared with
    :class:`CNN`; the MLP has no dropout.

    Example:
      >>> model = MLP(rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((4, 28, 28, 1))).shape
      (4, 10)
    """

    def __init__(
        self,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        init_style: InitStyle = "flax",
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ):
        init = initializers(init_style)
        widths = [int(np.prod(input_shape)), *hidden, num_classes]
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"Dense_{i}", _dense(widths[i], widths[i + 1], init, rngs))

    def __call__(
        self, x: jax.Array, train: Optional[bool] = None, *, rngs: Any = None
    ) -> jax.Array:
        del train, rngs
        x = x.reshape((x.shape[0], -1))
        for i in range(self.num_layers):
            x = getattr(self, f"Dense_{i}")(x)
            if i < self.num_layers - 1:
                x = jax.nn.relu(x)
        return x
