"""The char-LM workload in the trainer: its data, its jitted step and its model.

:func:`~jaxopt_zoo.train.train_and_evaluate` trains the character transformer when its
training data is a :class:`TokenWindows` (a token stream and a context length) and its
validation data a fixed ``(x, y)`` pair of windows (:func:`jaxopt_zoo.data.text.eval_windows`).
Everything else (the step, the non-finite guard, checkpoints, resume, callbacks) is the
classifier's. The randomness follows the shared contract (``rng = PRNGKey(seed)``):

- initial parameters: ``fold_in(rng, 0)``, the model's input a ``(1, context)`` int32 window;
- the training batch of global step ``s``: ``sample_windows(train_tokens,
  fold_in(fold_in(rng, 1), s), batch_size, context)``;
- dropout of step ``s``: ``fold_in(fold_in(rng, 2), s)``.

so a run resumed at any step draws exactly the windows of an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_zoo.data.text import CharVocab, eval_windows, load_shakespeare, sample_windows
from jaxopt_zoo.models.transformer import BITS_PER_NAT, CharTransformer
from jaxopt_zoo.train.steps import accumulate, jit_loop_step, train_step

__all__ = ["BITS_PER_NAT", "TokenWindows", "load_lm_data", "make_lm_train_step", "lm_model"]

#: The model options of ``--model charlm`` and their defaults (issue 12: 4 layers, 4
#: heads, width 128, context 128).
LM_DEFAULTS = {"context": 128, "width": 128, "depth": 4, "heads": 4}


class TokenWindows(NamedTuple):
    """Training data of the char-LM: random windows of ``context`` tokens of ``tokens``.

    Attributes:
      tokens: the int token stream, ``(N,)`` (e.g. ``load_shakespeare().train``).
      context: the window length ``T`` (at most the model's context).
    """

    tokens: Any
    context: int


def make_lm_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    batch_size: int,
    context: int,
    *,
    guard: bool = False,
    layout: Any = None,
) -> Callable:
    """Jitted char-LM step that draws its own batch of windows from the token stream.

    ``step(params, opt_state, totals, tokens, step, shuffle_key, dropout_key) -> (params,
    opt_state, totals)``, with a :class:`~jaxopt_zoo.train.StepCheck` fourth when
    ``guard=True``. The batch is ``sample_windows(tokens, fold_in(shuffle_key, step),
    batch_size, context)``, the dropout key ``fold_in(dropout_key, step)``; the loss is the
    mean cross-entropy per character and ``totals`` counts characters. ``params``,
    ``opt_state`` and ``totals`` are donated. It is :func:`~jaxopt_zoo.train.train_step`,
    the step of every model.

    Args:
      model: a :class:`~jaxopt_zoo.models.transformer.CharTransformer` (or any Linen model
        mapping int tokens ``(B, T)`` to logits ``(B, T, vocab)``).
      tx: the optimizer.
      batch_size: windows per step.
      context: tokens per window.
      guard: check every step for non-finite values.
      layout: a :class:`~jaxopt_zoo.train.distributed.Layout` for data parallelism: the
        windows are split over its mesh and the outputs keep its shardings; None for one
        device.

    Returns:
      The jitted ``step`` function.

    Example:
      >>> import jax, jax.numpy as jnp, jaxopt_zoo as jz
      >>> from jaxopt_zoo.models import CharTransformer
      >>> from jaxopt_zoo.train import Metrics
      >>> model = CharTransformer(vocab_size=5, context=8, width=8, depth=1, heads=2)
      >>> tokens = jnp.arange(40) % 5
      >>> params = model.init(jax.random.PRNGKey(0), tokens[None, :8])["params"]
      >>> tx = jz.adam(1e-2)
      >>> step = make_lm_train_step(model, tx, batch_size=3, context=8)
      >>> totals = Metrics(*(jnp.zeros(()) for _ in range(3)))
      >>> key = jax.random.PRNGKey(1)
      >>> params, opt_state, totals = step(params, tx.init(params), totals, tokens, 0, key, key)
      >>> float(totals.count)  # 3 windows of 8 characters
      24.0
    """

    def step(params, opt_state, totals, tokens, step, shuffle_key, dropout_key):
        x, y = sample_windows(tokens, jax.random.fold_in(shuffle_key, step), batch_size, context)
        if layout is not None:  # data parallel: each device computes its windows
            x, y = jax.lax.with_sharding_constraint((x, y), layout.batch)
        key = jax.random.fold_in(dropout_key, step)
        r = train_step(model, tx, params, opt_state, x, y, None, key, guard=guard)
        return accumulate(totals, r, guard)

    return jit_loop_step(step, guard, layout)


def as_token_data(
    train_ds: TokenWindows, val_ds: Any
) -> Tuple[jax.Array, Optional[Tuple[jax.Array, jax.Array]]]:
    """The device-resident token stream and validation windows, checked."""
    tokens = jnp.asarray(train_ds.tokens)
    context = train_ds.context
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 1:
        raise ValueError(f"Invalid TokenWindows.context: {context!r} (expected a positive int).")
    if tokens.ndim != 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(
            f"Invalid TokenWindows.tokens: expected a 1-D integer token array, got "
            f"{tokens.dtype} {tokens.shape}."
        )
    if tokens.shape[0] < int(context) + 1:
        raise ValueError(
            f"Invalid TokenWindows: {tokens.shape[0]} tokens are too few for windows of "
            f"context {context} (need at least context + 1)."
        )
    if val_ds is None:
        return tokens.astype(jnp.int32), None
    if not (isinstance(val_ds, (tuple, list)) and len(val_ds) == 2):
        raise TypeError(
            "Invalid val_ds for TokenWindows training: expected an (x, y) pair of int "
            f"windows (jaxopt_zoo.data.text.eval_windows), got {type(val_ds).__name__}."
        )
    x, y = (jnp.asarray(a) for a in val_ds)
    if (
        x.shape != y.shape
        or x.ndim != 2
        or x.shape[0] == 0
        or not (jnp.issubdtype(x.dtype, jnp.integer) and jnp.issubdtype(y.dtype, jnp.integer))
    ):
        raise ValueError(
            "Invalid val_ds: expected two int arrays (windows, T) of the same shape, got "
            f"{x.dtype} {x.shape} and {y.dtype} {y.shape}."
        )
    return tokens.astype(jnp.int32), (x.astype(jnp.int32), y.astype(jnp.int32))


def load_lm_data(
    data_dir: Optional[str] = None, *, context: int = 128, eval_windows_count: int = 256
) -> Tuple[TokenWindows, Tuple[np.ndarray, np.ndarray], CharVocab]:
    """The char-LM's data: training windows, the fixed validation windows and the vocabulary.

    Args:
      data_dir: where ``shakespeare.txt`` is (see :func:`jaxopt_zoo.data.load_shakespeare`;
        None: ``$JAXOPT_ZOO_DATA`` and the cache).
      context: the window length.
      eval_windows_count: how many validation windows, spread evenly over the held-out
        last 10% (:func:`jaxopt_zoo.data.text.eval_windows`).

    Returns:
      ``(TokenWindows(train tokens, context), (x_val, y_val), vocab)``.

    Example:
      >>> train, (x, y), vocab = load_lm_data(context=16, eval_windows_count=4)
      >>> train.context, x.shape, vocab.size
      (16, (4, 16), 84)
    """
    data = load_shakespeare(data_dir)
    return (
        TokenWindows(data.train, int(context)),
        eval_windows(data.val, int(context), int(eval_windows_count)),
        data.vocab,
    )


def lm_model(init_style: str = "flax", vocab_size: int = 84, **options: Any) -> CharTransformer:
    """The ``--model charlm`` transformer: ``LM_DEFAULTS`` updated with ``options``.

    Args:
      init_style: ``"flax"`` or ``"keras"``.
      vocab_size: the vocabulary size (84 for Shakespeare).
      **options: ``context``, ``width``, ``depth``, ``heads`` (or any other
        :class:`~jaxopt_zoo.models.transformer.CharTransformer` attribute).

    Returns:
      A :class:`~jaxopt_zoo.models.transformer.CharTransformer`.

    Example:
      >>> lm_model(depth=1, width=16, context=16).depth
      1
    """
    return CharTransformer(
        vocab_size=vocab_size,
        init_style=init_style,  # type: ignore[arg-type]  # checked by the model
        **{**LM_DEFAULTS, **options},
    )
