"""The CPU-fast layers of the reference CNN against the Flax layers they stand in for."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_zoo.models import get_model
from jaxopt_zoo.models.layers import ByteDropout, ShiftConv


@pytest.mark.parametrize("cin,kernel_size,hw", [(1, (3, 3), (28, 28)), (3, (2, 3), (9, 7))])
def test_shift_conv_equals_nn_conv_with_gradients(cin, kernel_size, hw):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, *hw, cin)), jnp.float32)
    ours = ShiftConv(5, kernel_size, bias_init=nn.initializers.normal(1.0), name="Conv_0")
    ref = nn.Conv(
        5, kernel_size, padding="VALID", bias_init=nn.initializers.normal(1.0), name="Conv_0"
    )
    key = jax.random.PRNGKey(1)
    params = ours.init(key, x)
    ref_params = ref.init(key, x)
    # Same parameter names, shapes and initial values (same initializers, same rng path).
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)

    def loss(module, p, x):
        y = module.apply(p, x)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.jit(jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1)))(params, x)
    g_ref = jax.jit(jax.grad(lambda p, x: loss(ref, p, x), argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_the_cnn_keeps_the_keras_layout_of_parameters():
    # The tree a checkpoint or the Keras-weights test relies on: Conv_0, Dense_0, Dense_1.
    params = get_model("cnn").init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "Conv_0": {"kernel": (3, 3, 1, 32), "bias": (32,)},
        "Dense_0": {"kernel": (5408, 256), "bias": (256,)},
        "Dense_1": {"kernel": (256, 10), "bias": (10,)},
    }


def test_byte_dropout_keeps_the_right_fraction_and_scale():
    x = jnp.ones((64, 13, 13, 32))
    for rate, keep in ((0.25, 0.75), (0.5, 0.5), (0.3, 179 / 256)):
        layer = ByteDropout(rate)
        y = layer.apply({}, x, rngs={"dropout": jax.random.PRNGKey(3)})
        kept = np.asarray(y != 0)
        # 346,112 draws: the kept fraction is within 6 standard deviations of keep.
        sd = np.sqrt(keep * (1 - keep) / x.size)
        assert abs(kept.mean() - keep) < 6 * sd, (rate, kept.mean())
        np.testing.assert_allclose(np.asarray(y)[kept], 1 / keep, rtol=1e-6)  # unbiased
        # The same key gives the same mask; another key another one.
        again = layer.apply({}, x, rngs={"dropout": jax.random.PRNGKey(3)})
        other = layer.apply({}, x, rngs={"dropout": jax.random.PRNGKey(4)})
        np.testing.assert_array_equal(y, again)
        assert not np.array_equal(np.asarray(y), np.asarray(other))
    # Masks are not periodic across the four bytes of a random word: neighbours independent.
    y = (
        np.asarray(
            ByteDropout(0.5).apply({}, jnp.ones(400_000), rngs={"dropout": jax.random.PRNGKey(0)})
        )
        != 0
    )
    both = np.mean(y[:-1] & y[1:])
    assert abs(both - 0.25) < 0.005
    # Off in inference and at rate 0; bad rates refused.
    np.testing.assert_array_equal(ByteDropout(0.5, deterministic=True).apply({}, x), x)
    np.testing.assert_array_equal(
        ByteDropout(0.0).apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)}), x
    )
    with pytest.raises(ValueError, match="Invalid dropout rate"):
        ByteDropout(1.0).apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)})


def test_cnn_with_stock_flax_layers_has_the_same_parameters_and_function():
    # CNN(fast_layers=False) is the benchmarks' "stock Flax" model: nn.Conv, nn.max_pool and
    # nn.Dropout. Same parameter tree and initial values, same logits and gradients.
    from jaxopt_zoo.models import CNN

    x = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 28, 28, 1)), jnp.float32)
    fast, stock = CNN(init_style="keras"), CNN(init_style="keras", fast_layers=False)
    params = fast.init(jax.random.PRNGKey(0), x)["params"]
    jax.tree.map(
        np.testing.assert_array_equal, params, stock.init(jax.random.PRNGKey(0), x)["params"]
    )
    np.testing.assert_allclose(
        fast.apply({"params": params}, x), stock.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )

    def loss(model, p):
        return jnp.sum(jnp.tanh(model.apply({"params": p}, x)))

    g_fast, g_stock = jax.grad(loss, 1)(fast, params), jax.grad(loss, 1)(stock, params)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_stock)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
