"""What training and evaluation measure: loss and accuracy sums, and a data set's evaluation.

:class:`Metrics` holds sums over examples, not means, so that batches (and the steps of an
epoch) add up; every train step (:mod:`jaxopt_zoo.train.steps`) returns one and the loop keeps
their running total. :func:`make_eval_fn` and :func:`evaluate` measure a whole data set in
inference mode with the same weighted cross-entropy.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = [
    "Metrics",
    "batch_metrics",
    "evaluate",
    "make_eval_fn",
    "weighted_cross_entropy",
]


class Metrics(NamedTuple):
    """Sums over examples, so that batches add up: ``loss / count`` is the mean loss."""

    loss: jax.Array  # sum of weight * cross-entropy
    correct: jax.Array  # sum of weight * [argmax == label]
    count: jax.Array  # type: ignore[assignment]  # sum of weights

    @staticmethod
    def zeros() -> "Metrics":
        z = jnp.zeros((), jnp.float32)
        return Metrics(z, z, z)

    def means(self) -> Tuple[float, float]:
        """``(mean loss, accuracy)`` as Python floats (one device-to-host transfer)."""
        loss, correct, count = (float(v) for v in jax.device_get(tuple(self)))
        if count == 0:
            return float("nan"), float("nan")
        return loss / count, correct / count


def batch_metrics(
    logits: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None
) -> Metrics:
    """Weighted softmax cross-entropy and accuracy sums for one batch of logits.

    Sums, not means, so that batches add up (:class:`Metrics`). A row with weight 0
    contributes nothing, even when its loss is infinite.

    Args:
      logits: ``(batch, classes)`` logits (computed in float32), or ``(batch, T, classes)``
        for sequences (the char-LM's next-character logits).
      labels: ``(batch,)`` integer class labels, or ``(batch, T)``.
      weights: ``(batch,)`` per-example weights (0 for padded rows); None means all 1.
        With ``(batch, T)`` labels each weight counts for every position of its example.

    Returns:
      :class:`Metrics` of float32 scalars: ``loss = sum(w * ce)``, ``correct = sum(w *
      [argmax == label])`` and ``count = sum(w)`` (characters, for sequences).

    Example:
      >>> import jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
      >>> m = batch_metrics(logits, jnp.array([0, 0, 0]), jnp.array([1.0, 1.0, 0.0]))
      >>> [round(float(v), 4) for v in m]  # loss, correct, count
      [1.4402, 1.0, 2.0]
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    if weights is None:
        weights = jnp.ones(ce.shape, jnp.float32)
    w = weights.astype(jnp.float32)
    # (B,) weights of (B, T) sequence labels: one weight per example, counted per position.
    w = jnp.broadcast_to(w.reshape(w.shape + (1,) * (ce.ndim - w.ndim)), ce.shape)
    # where, not w * ce alone: a padded row with an infinite loss must not turn the sum to nan.
    return Metrics(jnp.sum(jnp.where(w > 0, w * ce, 0.0)), jnp.sum(w * hit), jnp.sum(w))


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: Optional[jax.Array] = None
) -> jax.Array:
    """Mean softmax cross-entropy over the examples with nonzero weight.

    ``sum(w * ce) / sum(w)``: with 0/1 weights this is the plain mean over the rows with
    weight 1, so a zero-padded batch has the loss and the gradients of the unpadded one.

    Args:
      logits: ``(batch, classes)`` logits.
      labels: ``(batch,)`` integer class labels.
      weights: ``(batch,)`` per-example weights; None means all 1.

    Returns:
      A float32 scalar (0 when every weight is 0).

    Example:
      >>> import jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
      >>> labels = jnp.array([0, 0, 1])
      >>> padded = weighted_cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]))
      >>> round(float(padded), 4), round(float(weighted_cross_entropy(logits[:2], labels[:2])), 4)
      (0.7201, 0.7201)
    """
    m = batch_metrics(logits, labels, weights)
    return m.loss / jnp.maximum(m.count, 1.0)


def make_eval_fn(model: nn.Module, batch_size: int = 1000) -> Callable:
    """Jitted ``eval_fn(params, images, labels) -> Metrics`` over a whole data set.

    Runs the model in inference mode (no dropout) in batches of ``batch_size`` inside one
    ``fori_loop``: one compile per data-set shape, one device call per evaluation. The last
    batch is taken flush with the end of the data and the rows already counted get weight 0.

    Args:
      model: a Linen classifier, applied with ``train=False``.
      batch_size: examples per batch (memory only; a data set smaller than it is one
        batch).

    Returns:
      The jitted ``eval_fn``; ``eval_fn(...).means()`` is ``(mean loss, accuracy)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxopt_zoo.models import MLP
      >>> model = MLP(hidden=(8,))
      >>> images, labels = jnp.ones((7, 28, 28, 1)), jnp.arange(7)
      >>> params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
      >>> metrics = make_eval_fn(model, batch_size=3)(params, images, labels)
      >>> float(metrics.count)  # batches of 3: rows 0-2, 3-5 and 6 (in a batch of 4-6)
      7.0
    """

    def eval_fn(params, images, labels):
        n = images.shape[0]
        bs = min(batch_size, n)
        num_batches = -(-n // bs)

        def body(b, totals):
            start = b * bs
            lo = jnp.minimum(start, n - bs)  # clamp the last batch inside the data
            x = jax.lax.dynamic_slice_in_dim(images, lo, bs)
            y = jax.lax.dynamic_slice_in_dim(labels, lo, bs)
            w = (lo + jnp.arange(bs) >= start).astype(jnp.float32)
            logits = model.apply({"params": params}, x, train=False)
            m = batch_metrics(logits, y, w)  # type: ignore[arg-type]
            return Metrics(*(t + v for t, v in zip(totals, m)))

        return jax.lax.fori_loop(0, num_batches, body, Metrics.zeros())

    return jax.jit(eval_fn)


def evaluate(
    model: nn.Module, params: Any, images: Any, labels: Any, batch_size: int = 1000
) -> Tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on a data set, as Python floats.

    Runs :func:`make_eval_fn`'s function, built once per ``(model, batch_size)`` and
    reused by later calls (``model`` in inference mode: no dropout).

    Args:
      model: a Linen classifier, applied with ``train=False``.
      params: its parameters.
      images: the inputs, ``(N, ...)`` (converted to float32).
      labels: ``(N,)`` integer labels.
      batch_size: examples per batch (memory only).

    Returns:
      ``(mean loss, accuracy)``.

    Raises:
      ValueError: the data set is empty.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxopt_zoo.models import MLP
      >>> model = MLP(hidden=(8,))
      >>> images, labels = jnp.zeros((5, 28, 28, 1)), jnp.zeros(5, jnp.int32)
      >>> params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
      >>> loss, accuracy = evaluate(model, params, images, labels)  # zero inputs: zero logits
      >>> round(loss, 4), accuracy  # log(10), and argmax 0 everywhere
      (2.3026, 1.0)
    """
    if len(images) == 0:
        raise ValueError("evaluate: the data set is empty; expected at least one example.")
    fn = memoized(make_eval_fn, model, batch_size)
    return fn(params, jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)).means()


@functools.lru_cache(maxsize=16)
def _memo(factory: Callable, *args: Any) -> Callable:
    return factory(*args)


def memoized(factory: Callable, *args: Any) -> Callable:
    """``factory(*args)`` memoized on its (hashable) arguments, so that a jitted step and its
    compiled executables are reused by later runs with the same model and optimizer object;
    built afresh when an argument is unhashable (e.g. a model with a list attribute)."""
    try:
        hash(args)
    except TypeError:
        return factory(*args)
    return _memo(factory, *args)
