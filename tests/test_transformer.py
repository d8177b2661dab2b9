"""Tests of jaxopt_zoo.models.transformer: the char-LM (Linen and NNX), decay mask, loss and
sampling."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_zoo import adam
from jaxopt_zoo.data import load_shakespeare, sample_windows
from jaxopt_zoo.models import MODELS, get_model
from jaxopt_zoo.models.transformer import (
    BITS_PER_NAT,
    CharTransformer,
    CharTransformerNNX,
    decay_mask,
    lm_loss,
    sample,
)

TINY = {"vocab_size": 11, "context": 16, "width": 16, "depth": 2, "heads": 4}


@functools.cache
def _cached_init(model, seed):
    # Eager init: once each primitive is compiled, a new config costs milliseconds, where a
    # jitted init compiles the whole network again.
    return model.init(jax.random.key(seed), jnp.zeros((1, model.context), jnp.int32))["params"]


def _init(model, seed=0):
    return _cached_init(model, seed)


@functools.cache
def _apply(model, seed=0, **kwargs):
    params = _init(model, seed)
    return jax.jit(lambda tokens: model.apply({"params": params}, tokens, **kwargs))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _expected_count(v, t, d, depth, mlp=4, tied=False):
    linear = lambda i, o: i * o + o
    block = 2 * 2 * d + linear(d, 3 * d) + linear(d, d) + linear(d, mlp * d) + linear(mlp * d, d)
    return v * d + t * d + depth * block + 2 * d + (0 if tied else linear(d, v))


def test_default_config_and_registry():
    model = get_model("charlm")
    assert isinstance(model, CharTransformer) and MODELS["charlm"] is CharTransformer
    assert (model.vocab_size, model.context, model.width, model.depth, model.heads) == (
        84,
        128,
        128,
        4,
        4,
    )
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 128), jnp.int32))
    assert _count(params) == _expected_count(84, 128, 128, 4) == 831_316
    assert get_model("charlm", init_style="keras").init_style == "keras"
    with pytest.raises(ValueError, match="init_style"):
        get_model("charlm", init_style="torch")


@pytest.mark.parametrize("tied", [False, True])
def test_shapes_count_and_decay_mask(tied):
    model = CharTransformer(**TINY, tie_embeddings=tied)
    params = _init(model)
    assert _count(params) == _expected_count(11, 16, 16, 2, tied=tied)
    logits = _apply(model)(jnp.ones((3, 5), jnp.int32))
    assert logits.shape == (3, 5, 11) and logits.dtype == jnp.float32
    mask = decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = sorted(k for k, m in flat.items() if m)
    assert len(decayed) == 4 * 2 + (0 if tied else 1)
    assert all(k.endswith("['kernel']") for k in decayed)
    assert not any(flat[k] for k in flat if "embed" in k or "ln_" in k or "bias" in k)
    # Usable as optax's weight-decay mask: embeddings and biases are left alone.
    tx = optax.add_decayed_weights(0.5, mask=decay_mask)
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(upd["token_embed"]["embedding"]).max()) == 0.0
    np.testing.assert_allclose(
        upd["block_0"]["qkv"]["kernel"], 0.5 * params["block_0"]["qkv"]["kernel"]
    )


def test_invalid_config():
    with pytest.raises(ValueError, match="divisible"):
        CharTransformer(width=10, heads=4)
    with pytest.raises(ValueError, match="Invalid depth"):
        CharTransformer(depth=0)
    with pytest.raises(ValueError, match="dropout"):
        CharTransformer(dropout=1.0)
    model = CharTransformer(**TINY)
    with pytest.raises(ValueError, match="exceeds the context"):
        model.apply({"params": _init(model)}, jnp.zeros((1, 17), jnp.int32))


def test_causal_masking():
    model = CharTransformer(**TINY)
    tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 11)
    apply = _apply(model)
    base = apply(tokens)
    for j in (0, 7, 15):
        changed = apply(tokens.at[:, j].set((tokens[:, j] + 1) % 11))
        np.testing.assert_array_equal(changed[:, :j], base[:, :j])  # the past is untouched
        assert float(jnp.abs(changed[:, j] - base[:, j]).max()) > 1e-4  # the present moves
    # A shorter sequence gives the same logits as the prefix of a longer one.
    np.testing.assert_allclose(apply(tokens[:, :5]), base[:, :5], rtol=1e-5, atol=1e-5)
    # Batch rows are independent.
    np.testing.assert_allclose(apply(tokens[1:]), base[1:], rtol=1e-5, atol=1e-5)


def test_dropout():
    model = CharTransformer(**TINY, dropout=0.5)
    params = _init(model)
    tokens = jnp.ones((2, 8), jnp.int32)
    quiet = _apply(model)(tokens)
    plain = CharTransformer(**TINY)  # dropout 0: the same function as dropout > 0 at eval
    np.testing.assert_allclose(quiet, plain.apply({"params": params}, tokens), rtol=1e-5, atol=1e-5)
    train = jax.jit(
        lambda key: model.apply({"params": params}, tokens, train=True, rngs={"dropout": key})
    )
    a, b, c = train(jax.random.key(0)), train(jax.random.key(0)), train(jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, quiet) and not np.allclose(a, c)


@pytest.mark.parametrize("tied", [False, True])
def test_nnx_matches_linen(tied):
    linen = CharTransformer(**TINY, tie_embeddings=tied)
    params = _init(linen, seed=4)
    model = CharTransformerNNX(**TINY, tie_embeddings=tied, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    assert _count(state) == _count(params)

    def linen_path(path):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if keys[0] == "blocks":
            keys = [f"block_{keys[1]}"] + keys[2:]
        return tuple(keys)

    lookup = {tuple(k.key for k in p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    copied = jax.tree_util.tree_map_with_path(lambda p, _: lookup[linen_path(p)], state)
    nnx.update(model, copied)
    tokens = jax.random.randint(jax.random.key(5), (2, 12), 0, 11)
    np.testing.assert_allclose(
        nnx.jit(lambda m, t: m(t))(model, tokens), _apply(linen, 4)(tokens), rtol=1e-5, atol=1e-5
    )
    assert sum(jax.tree.leaves(decay_mask(state))) == 8 + (0 if tied else 1)


def test_lm_loss():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    targets = jnp.array([[0, 4, 2], [1, 1, 3]])
    manual = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))
    np.testing.assert_allclose(lm_loss(logits, targets), manual, rtol=1e-6)
    uniform = lm_loss(jnp.zeros((4, 7, 84)), jnp.zeros((4, 7), jnp.int32))
    np.testing.assert_allclose(uniform, math.log(84), rtol=1e-6)
    np.testing.assert_allclose(uniform * BITS_PER_NAT, math.log2(84), rtol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        lm_loss(logits, targets[:, :2])
    # Weights per window or per token; zero-weight padding (even with infinite logits) is ignored.
    padded = jnp.concatenate([logits, jnp.full((1, 3, 5), jnp.inf)])
    padded_targets = jnp.concatenate([targets, targets[:1]])
    np.testing.assert_allclose(
        lm_loss(padded, padded_targets, jnp.array([1.0, 1.0, 0.0])), manual, rtol=1e-6
    )
    per_token = jnp.ones((3, 3)).at[2].set(0.0)
    np.testing.assert_allclose(lm_loss(padded, padded_targets, per_token), manual, rtol=1e-6)
    with pytest.raises(ValueError, match="prefix"):
        lm_loss(logits, targets, jnp.ones((3,)))


@pytest.mark.needs_data("shakespeare")
def test_adam_steps_reduce_the_loss_on_shakespeare():
    data = load_shakespeare(download=False)
    model = CharTransformer(vocab_size=data.vocab.size, context=32, width=32, depth=1, heads=2)
    params = _init(model)
    tokens = jnp.asarray(data.train[:200_000])
    tx = adam(3e-3)

    def loss_fn(p, x, y):
        return lm_loss(model.apply({"params": p}, x), y)

    @jax.jit
    def step(carry, key):
        p, s = carry
        x, y = sample_windows(tokens, key, 16, 32)
        grads = jax.grad(loss_fn)(p, x, y)
        upd, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, upd), s), None

    val_x, val_y = sample_windows(jnp.asarray(data.val), jax.random.key(99), 64, 32)
    evaluate = jax.jit(loss_fn)
    before = float(evaluate(params, val_x, val_y))
    (params, _), _ = jax.lax.scan(
        step, (params, tx.init(params)), jax.random.split(jax.random.key(0), 60)
    )
    after = float(evaluate(params, val_x, val_y))
    assert before > 4.0  # about ln(84) = 4.43 plus the spread of the initial logits
    assert after < 3.3 < before, (before, after)  # unigram statistics alone give about 3.3


def _manual_greedy(apply, context, prompt, length):
    seq = list(prompt)
    for _ in range(length):
        window = jnp.asarray(seq[-context:], jnp.int32)[None]
        seq.append(int(jnp.argmax(apply(window)[0, -1])))
    return seq[len(prompt) :]


def test_sample():
    model = CharTransformer(**dict(TINY, context=4))
    params = _init(model, seed=2)
    prompt = jnp.array([1, 2, 3], jnp.int32)
    key = jax.random.key(7)
    out = sample(model, params, prompt, 10, key, 1.0)  # 13 tokens > context 4: slides
    assert out.shape == (10,) and out.dtype == jnp.int32
    assert int(out.min()) >= 0 and int(out.max()) < 11
    np.testing.assert_array_equal(sample(model, params, prompt, 10, key, 1.0), out)
    assert not np.array_equal(sample(model, params, prompt, 10, jax.random.key(8), 1.0), out)
    greedy = sample(model, params, prompt, 10, key, 0.0)
    apply = _apply(model, 2)
    assert greedy.tolist() == _manual_greedy(apply, 4, [1, 2, 3], 10)
    np.testing.assert_array_equal(sample(model, params, prompt, 10, jax.random.key(9), 0.0), greedy)
    # Batched prompts: each row as if alone.
    batch = sample(model, params, jnp.stack([prompt, prompt[::-1]]), 10, key, 0.0)
    assert batch.shape == (2, 10)
    np.testing.assert_array_equal(batch[0], greedy)
    assert batch[1].tolist() == _manual_greedy(apply, 4, [3, 2, 1], 10)
