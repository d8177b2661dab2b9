"""What one configuration of a sweep computes, written once per workload and vmapped by
:mod:`jaxopt_zoo.train.sweep`.

A workload gives the sweep four pure pieces, each a function of ONE configuration (the
sweep ``jax.vmap``s them over the grid):

- ``init(rng) -> params``: the model's parameters from ``fold_in(rng, 0)``, as
  :func:`~jaxopt_zoo.train.init_loop_state` draws them;
- ``batch(data, aux, rng, batch, step) -> (x, y, weights)``: the training batch of global step
  ``step`` under the randomness contract (the classifier reads rows ``order[batch*B:...]`` of
  its epoch's permutation ``aux``; the char-LM samples windows with
  ``fold_in(fold_in(rng, 1), step)``);
- ``evaluate(params, *val) -> Metrics``: sums over the fixed validation set;
- ``epoch_aux(rngs, epoch)``: the per-configuration data that changes once per epoch (the
  classifier's example orders; nothing for the char-LM).

The train step itself is :func:`jaxopt_zoo.train.steps.train_step`, the one every ``train``
run takes; its dropout key is :func:`~jaxopt_zoo.train.step_dropout_key`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.data.text import eval_windows, sample_windows
from jaxopt_zoo.train.state import _INIT, _SHUFFLE, epoch_order
from jaxopt_zoo.train.steps import Metrics, gather_batch, make_eval_fn

__all__: list = []  # internal: the public API is jaxopt_zoo.train.sweep


@dataclasses.dataclass(frozen=True)
class Workload:
    """One workload of a sweep (see the module docstring). ``steps_per_epoch`` is None for
    a workload without epochs (the char-LM); ``extra_keys`` are history keys beyond the
    classifier's (bits per character)."""

    model: Any
    init: Callable[[jax.Array], Any]
    batch: Callable[..., Tuple[jax.Array, jax.Array, Optional[jax.Array]]]
    evaluate: Callable[..., Metrics]
    epoch_aux: Callable[[jax.Array, int], Any]
    train_data: Tuple[jax.Array, ...]
    val_data: Optional[Tuple[jax.Array, ...]]
    steps_per_epoch: Optional[int]
    lm: bool = False


def classifier_workload(
    model: nn.Module,
    images: jax.Array,
    labels: jax.Array,
    val: Optional[Tuple[jax.Array, jax.Array]],
    batch_size: int,
    steps_per_epoch: int,
    eval_batch_size: int,
) -> Workload:
    """The classifier of ``train`` (MNIST-like images, integer labels), batch for batch."""
    n = images.shape[0]
    sample = images[:1]

    def init(rng):
        return model.init({"params": jax.random.fold_in(rng, _INIT)}, sample, train=False)["params"]

    def batch(data, order, rng, b, step):
        del rng, step
        return gather_batch(data[0], data[1], order, b, batch_size)

    def epoch_aux(rngs, epoch):
        return jax.vmap(lambda r: epoch_order(r, epoch, n))(rngs)

    return Workload(
        model=model,
        init=init,
        batch=batch,
        evaluate=make_eval_fn(model, eval_batch_size),
        epoch_aux=epoch_aux,
        train_data=(images, labels),
        val_data=val,
        steps_per_epoch=steps_per_epoch,
    )


def lm_workload(
    model: nn.Module,
    train_tokens: Any,
    val_tokens: Optional[Any],
    batch_size: int,
    eval_windows_count: Optional[int],
    eval_batch_size: int,
) -> Workload:
    """The char-LM under the contract: windows of ``model.context`` tokens, the batch of step
    ``s`` sampled with ``fold_in(fold_in(rng, 1), s)``, evaluation on the fixed windows
    ``eval_windows(val_tokens, context, eval_windows_count)``, metrics per character."""
    context = int(model.context)
    tokens = jnp.asarray(np.asarray(train_tokens), jnp.int32)
    if tokens.ndim != 1 or tokens.shape[0] < context + 1:
        raise ValueError(
            f"Invalid train tokens: expected a 1-D int array of more than {context} tokens "
            f"(the model's context), got shape {tokens.shape}."
        )
    val = None
    if val_tokens is not None:
        vx, vy = eval_windows(np.asarray(val_tokens), context, eval_windows_count)
        val = (jnp.asarray(vx), jnp.asarray(vy))
    sample = jnp.zeros((1, context), jnp.int32)

    def init(rng):
        return model.init({"params": jax.random.fold_in(rng, _INIT)}, sample, train=False)["params"]

    def batch(data, aux, rng, b, step):
        del aux, b
        key = jax.random.fold_in(jax.random.fold_in(rng, _SHUFFLE), step)
        x, y = sample_windows(data[0], key, batch_size, context)
        return x, y, None

    return Workload(
        model=model,
        init=init,
        batch=batch,
        evaluate=make_eval_fn(model, eval_batch_size),  # per character for (N, T) labels
        epoch_aux=lambda rngs, epoch: None,
        train_data=(tokens,),
        val_data=val,
        steps_per_epoch=None,
        lm=True,
    )
