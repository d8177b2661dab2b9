"""A small decoder-only character transformer (the char-LM workload), in Flax Linen and NNX.

    tokens (B, T) -> token embedding + learned position embedding -> dropout
    -> depth x [ x += Dropout(Proj(CausalSelfAttention(LayerNorm(x))))
                 x += Dropout(Dense(GELU(Dense(LayerNorm(x))))) ]          (pre-norm blocks)
    -> LayerNorm -> head (untied Dense by default) -> logits (B, T, vocab)

Parameter names (Linen; NNX uses the same leaf names): `token_embed/embedding`,
`position_embed/embedding`, `block_{i}/{ln_attn,ln_mlp}/{scale,bias}`,
`block_{i}/{qkv,proj,mlp_in,mlp_out}/{kernel,bias}`, `ln_final/{scale,bias}`,
`head/{kernel,bias}`. Every matrix of a linear map is a `kernel` and nothing else is, so
`decay_mask` (True on kernels) keeps weight decay off biases, norms and embeddings.

Also here: `lm_loss` (mean cross-entropy per character, in nats) and `sample` (jitted
autoregressive sampling, greedy at temperature 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_zoo.models.mlp import InitStyle, initializers

BITS_PER_NAT = 1.0 / math.log(2.0)
LN_EPSILON = 1e-5  # PyTorch's and GPT-2's LayerNorm epsilon (Flax's default is 1e-6)


def _keras_embed_init(
    key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def transformer_initializers(init_style: str) -> tuple[Callable[..., jax.Array], ...]:
    """`(kernel_init, bias_init, embedding_init)` for an init style.

    - `"flax"`: Flax's defaults: LeCun-normal kernels, zero biases, and `nn.Embed`'s
      normal(stddev 1) embeddings.
    - `"keras"`: Keras' defaults: Glorot-uniform kernels, zero biases, and `Embedding`'s
      uniform(-0.05, 0.05) embeddings.

    LayerNorm scales start at one and offsets at zero in both.
    """
    kernel_init, bias_init = initializers(init_style)
    embed_init = nn.linear.default_embed_init if init_style == "flax" else _keras_embed_init
    return kernel_init, bias_init, embed_init


def causal_self_attention(qkv: jax.Array, heads: int) -> jax.Array:
    """Multi-head causal attention of packed `qkv` (B, T, 3 * D) -> (B, T, D).

    `qkv` holds the queries, keys and values side by side; head `h` uses features
    `h * D / heads ... (h + 1) * D / heads` of each. Position `t` attends to positions `<= t`;
    scores are scaled by `1 / sqrt(D / heads)` and the softmax runs in float32.
    """
    b, t, three_d = qkv.shape
    d = three_d // 3
    q, k, v = jnp.split(qkv.reshape(b, t, 3, heads, d // heads), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (B, T, H, Dh)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d // heads)
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))[None, None]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)


def _check_config(
    vocab_size: int,
    context: int,
    width: int,
    depth: int,
    heads: int,
    mlp_ratio: int,
    dropout: float,
) -> None:
    for name, value in [
        ("vocab_size", vocab_size),
        ("context", context),
        ("width", width),
        ("depth", depth),
        ("heads", heads),
        ("mlp_ratio", mlp_ratio),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name}: {value!r} (expected a positive int)")
    if width % heads:
        raise ValueError(f"Invalid heads: width {width} is not divisible by heads {heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Invalid dropout rate: {dropout} (expected [0, 1))")


class Block(nn.Module):
    """One pre-norm transformer block: causal self-attention, then a GELU MLP, each residual."""

    width: int
    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    init_style: InitStyle = "flax"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kernel_init, bias_init, _ = transformer_initializers(self.init_style)
        dense = functools.partial(nn.Dense, kernel_init=kernel_init, bias_init=bias_init)
        drop = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0.0)
        h = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_attn")(x)
        h = causal_self_attention(dense(3 * self.width, name="qkv")(h), self.heads)
        x = x + drop(dense(self.width, name="proj")(h))
        h = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_mlp")(x)
        h = nn.gelu(dense(self.mlp_ratio * self.width, name="mlp_in")(h))
        return x + drop(dense(self.width, name="mlp_out")(h))


class CharTransformer(nn.Module):
    """A decoder-only character transformer (GPT-2 shaped, small); the module docstring draws it.

    Attributes:
      vocab_size: number of tokens (84 for the Shakespeare corpus).
      context: the longest sequence (number of learned positions), 128.
      width: model width D, 128. depth: number of blocks, 4. heads: attention heads, 4
        (D must divide by it). mlp_ratio: MLP hidden width / D, 4.
      dropout: rate after the embeddings and on each residual branch (0: none, needs no key).
      tie_embeddings: False (default): the head is its own `Dense` with a bias, decayed like
        any kernel. True: logits are `x @ token_embedding.T` (no head parameters, GPT-2 style).
      init_style: `"flax"` or `"keras"` (`transformer_initializers`), as for the CNN and MLP.

    The GELU is the tanh approximation (Flax's and GPT-2's); LayerNorm epsilon is 1e-5. The
    default config has 831,316 parameters. Call as `model.apply({"params": p}, tokens)` with
    int tokens of shape (B, T), T <= context; with dropout > 0 and `train=True`, pass
    `rngs={"dropout": key}`. Returns float32 logits of shape (B, T, vocab_size).
    """

    vocab_size: int = 84
    context: int = 128
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = False
    init_style: InitStyle = "flax"

    def __post_init__(self) -> None:
        _check_config(
            self.vocab_size,
            self.context,
            self.width,
            self.depth,
            self.heads,
            self.mlp_ratio,
            self.dropout,
        )
        transformer_initializers(self.init_style)
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        kernel_init, bias_init, embed_init = transformer_initializers(self.init_style)
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"Sequence length {t} exceeds the context {self.context}")
        embed = nn.Embed(self.vocab_size, self.width, embedding_init=embed_init, name="token_embed")
        positions = nn.Embed(
            self.context, self.width, embedding_init=embed_init, name="position_embed"
        )(jnp.arange(t))
        x = embed(tokens) + positions[None]
        x = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0.0)(x)
        for i in range(self.depth):
            x = Block(
                self.width,
                self.heads,
                self.mlp_ratio,
                self.dropout,
                self.init_style,
                name=f"block_{i}",
            )(x, train)
        x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_final")(x)
        if self.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(
                self.vocab_size, kernel_init=kernel_init, bias_init=bias_init, name="head"
            )(x)
        return logits.astype(jnp.float32)


class BlockNNX(nnx.Module):
    """`Block` in Flax NNX: the same math and parameter names."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        init_style: InitStyle = "flax",
        *,
        rngs: nnx.Rngs,
    ):
        kernel_init, bias_init, _ = transformer_initializers(init_style)
        linear = functools.partial(
            nnx.Linear, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs
        )
        self.heads = heads
        self.ln_attn = nnx.LayerNorm(width, epsilon=LN_EPSILON, rngs=rngs)
        self.qkv = linear(width, 3 * width)
        self.proj = linear(width, width)
        self.ln_mlp = nnx.LayerNorm(width, epsilon=LN_EPSILON, rngs=rngs)
        self.mlp_in = linear(width, mlp_ratio * width)
        self.mlp_out = linear(mlp_ratio * width, width)
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        det = not train or self.drop.rate == 0.0
        h = causal_self_attention(self.qkv(self.ln_attn(x)), self.heads)
        x = x + self.drop(self.proj(h), deterministic=det)
        h = nnx.gelu(self.mlp_in(self.ln_mlp(x)))
        return x + self.drop(self.mlp_out(h), deterministic=det)


class CharTransformerNNX(nnx.Module):
    """`CharTransformer` in Flax NNX: same attributes, math and leaf names.

    Blocks live in `blocks[i]` (the Linen `block_{i}`); with the same parameters both compute
    the same logits (tested). Call as `model(tokens, train=False)`; dropout draws from the
    `rngs` given at construction.
    """

    def __init__(
        self,
        vocab_size: int = 84,
        context: int = 128,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        tie_embeddings: bool = False,
        init_style: InitStyle = "flax",
        *,
        rngs: nnx.Rngs,
    ):
        _check_config(vocab_size, context, width, depth, heads, mlp_ratio, dropout)
        kernel_init, bias_init, embed_init = transformer_initializers(init_style)
        self.context = context
        self.token_embed = nnx.Embed(vocab_size, width, embedding_init=embed_init, rngs=rngs)
        self.position_embed = nnx.Embed(context, width, embedding_init=embed_init, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.blocks = nnx.List(
            [
                BlockNNX(width, heads, mlp_ratio, dropout, init_style, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.ln_final = nnx.LayerNorm(width, epsilon=LN_EPSILON, rngs=rngs)
        self.head = (
            None
            if tie_embeddings
            else nnx.Linear(
                width, vocab_size, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs
            )
        )

    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"Sequence length {t} exceeds the context {self.context}")
        x = self.token_embed(tokens) + self.position_embed(jnp.arange(t))[None]
        x = self.drop(x, deterministic=not train or self.drop.rate == 0.0)
        for block in self.blocks:
            x = block(x, train)
        x = self.ln_final(x)
        logits = self.token_embed.attend(x) if self.head is None else self.head(x)
        return logits.astype(jnp.float32)


def _leaf_name(path: tuple[Any, ...]) -> Any:
    """The last dict key on `path` (an NNX Variable adds a trailing `.value` attribute)."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return keys[-1] if keys else None


def decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True on `kernel` leaves (the linear maps' matrices).

    False on biases, LayerNorm scales and offsets, and embeddings (token and position), the
    usual choice for language models. Pass it (or the function itself) as the `mask` of
    `optax.add_decayed_weights` / `optax.adamw`. Works on Linen params and on NNX state.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "kernel", params)


def lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy per token in nats (times `BITS_PER_NAT` for bits per character).

    `logits` (..., vocab) and int `targets` (...) of the same leading shape; computed in
    float32. `weights` (optional) has the shape of `targets` or a prefix of it, such as (B,)
    per window: the loss is then `sum(w * ce) / sum(w)` over tokens with `w > 0`, so a batch
    padded with zero-weight windows has the loss of the unpadded one.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {logits.shape} and targets {targets.shape} do not match")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    if weights is None:
        return jnp.mean(losses)
    if weights.shape != targets.shape[: weights.ndim]:
        raise ValueError(f"weights {weights.shape} is not a prefix of targets {targets.shape}")
    w = weights.astype(jnp.float32).reshape(weights.shape + (1,) * (targets.ndim - weights.ndim))
    w = jnp.broadcast_to(w, targets.shape)
    return jnp.sum(jnp.where(w > 0, w * losses, 0.0)) / jnp.maximum(jnp.sum(w), 1e-12)


@functools.partial(jax.jit, static_argnames=("model", "length"))
def sample(
    model: CharTransformer,
    params: Any,
    prompt: jax.Array,
    length: int,
    key: jax.Array,
    temperature: float | jax.Array = 1.0,
) -> jax.Array:
    """Generates `length` tokens after `prompt`, one at a time (jitted; no KV cache).

    Each new token is drawn from `softmax(logits / temperature)` of the model run on the last
    `model.context` tokens, with key `fold_in(key, i)` for the i-th token; temperature 0 takes
    the argmax (greedy; `key` is then unused). `prompt` is int (P,) or (B, P) with P >= 1.

    Returns:
        int32 tokens of shape (length,) or (B, length): the continuation, without the prompt.
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    single = prompt.ndim == 1
    if single:
        prompt = prompt[None]
    b, p = prompt.shape
    if p < 1:
        raise ValueError("sample needs a prompt of at least one token")
    total = p + length
    w = min(model.context, total)
    temperature = jnp.asarray(temperature, jnp.float32)
    buffer = jnp.concatenate([prompt, jnp.zeros((b, length), jnp.int32)], axis=1)

    def step(i: jax.Array, buffer: jax.Array) -> jax.Array:
        pos = p + i
        start = jnp.maximum(pos - w, 0)
        window = jax.lax.dynamic_slice(buffer, (0, start), (b, w))
        logits = model.apply({"params": params}, window)
        last = jax.lax.dynamic_index_in_dim(logits, pos - 1 - start, axis=1, keepdims=False)
        scale = jnp.where(temperature > 0, temperature, 1.0)
        drawn = jax.random.categorical(jax.random.fold_in(key, i), last / scale, axis=-1)
        token = jnp.where(temperature > 0, drawn, jnp.argmax(last, axis=-1)).astype(jnp.int32)
        return jax.lax.dynamic_update_slice(buffer, token[:, None], (0, pos))

    out = jax.lax.fori_loop(0, length, step, buffer)[:, p:]
    return out[0] if single else out
