"""Argument checks of the epoch loop: data sets, resumed states, callbacks."""

from __future__ import annotations

import sys
from typing import Any, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxopt_zoo.train.metrics import Metrics, memoized
from jaxopt_zoo.train.state import Callback, LoopState, jitted_init

__all__: list = []  # internal: the loop's argument checks


def distinct_buffers(tree: Any) -> Any:
    """Copy every array leaf whose device buffer already appeared earlier in ``tree``."""
    seen = set()

    def fresh(x):
        if not isinstance(x, jax.Array):
            return x
        try:
            ptr = x.unsafe_buffer_pointer()
        except Exception:  # noqa: BLE001 -- no single buffer (sharded, deleted): go by object
            ptr = id(x)
        if ptr in seen:
            return jnp.array(x, copy=True)
        seen.add(ptr)
        return x

    return jax.tree.map(fresh, tree)


def as_device_arrays(ds: Any, name: str) -> Tuple[jax.Array, jax.Array]:
    if hasattr(ds, "images") and hasattr(ds, "labels"):
        images, labels = ds.images, ds.labels
    elif isinstance(ds, (tuple, list)) and len(ds) == 2:
        images, labels = ds
    else:
        raise TypeError(
            f"Invalid {name}: expected an object with `images` and `labels` "
            f"(e.g. jaxopt_zoo.data.Dataset) or an (images, labels) pair, got "
            f"{type(ds).__name__}."
        )
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise TypeError(
            f"Invalid {name}.images: expected floating-point pixels (e.g. in [0, 1]), got dtype "
            f"{jnp.result_type(images)}. Load with normalize=True "
            "(jaxopt_zoo.data.load_mnist(..., normalize=True)) or scale the images yourself."
        )
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"Invalid {name}.labels: expected integer class labels, got dtype {labels.dtype}."
        )
    labels = labels.astype(jnp.int32)
    if labels.ndim != 1 or images.ndim < 2 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Invalid {name}: expected images (N, ...) and labels (N,), got "
            f"images {images.shape} and labels {labels.shape}."
        )
    if images.shape[0] == 0:
        raise ValueError(f"Invalid {name}: it holds no examples.")
    return images, labels


def check_resume_state(state: LoopState, steps_per_epoch: int) -> LoopState:
    if not isinstance(state, LoopState):
        raise TypeError(f"Invalid state: expected a LoopState, got {type(state).__name__}.")
    if not 0 <= int(state.batch) <= steps_per_epoch:
        raise ValueError(
            f"Invalid state: it stopped after batch {state.batch} of an epoch, but this data "
            f"set and batch size give {steps_per_epoch} batches per epoch (or per evaluation, "
            "with eval_every). Resume with the training set, batch_size and eval_every the "
            "state was saved with."
        )
    if len(state.history) != int(state.epoch):
        raise ValueError(
            f"Invalid state: epoch={state.epoch} but the history holds {len(state.history)} epochs."
        )
    # Fresh buffers: the loop donates them, and the caller's state must stay usable.
    params, opt_state, totals = jax.tree.map(
        jnp.array, (state.params, state.opt_state, tuple(state.totals))
    )
    return LoopState(
        params,
        opt_state,
        int(state.step),
        int(state.epoch),
        int(state.batch),
        jnp.asarray(state.rng),
        Metrics(*totals),
        tuple(state.history),
    )


def check_state_fits(
    model: nn.Module, tx: optax.GradientTransformation, sample: jax.Array, state: LoopState
) -> None:
    """Raise a ValueError naming the first difference when a resumed state's parameters or
    optimizer state do not have the structure and shapes that ``model`` and ``tx`` give."""
    params = jax.eval_shape(memoized(jitted_init, model), jax.random.PRNGKey(0), sample)
    for what, expected, got in (
        ("params", params, state.params),
        ("opt_state", jax.eval_shape(tx.init, params), state.opt_state),
    ):
        want = {
            jax.tree_util.keystr(p): jnp.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]
        }
        have = {
            jax.tree_util.keystr(p): jnp.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(got)[0]
        }
        if want == have and jax.tree.structure(expected) == jax.tree.structure(got):  # type: ignore[operator]
            continue
        diff = next((k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)), None)
        detail = (
            f"{what}{diff}: expected {want.get(diff, 'nothing')}, got {have.get(diff, 'nothing')}"
            if diff is not None
            else f"{what} is {jax.tree.structure(got)}, expected {jax.tree.structure(expected)}"
        )
        raise ValueError(
            f"Invalid state: it does not fit this model and optimizer ({detail}). "
            "Resume with the model and optimizer the state was saved with."
        )


def check_trainable(params: Any) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            raise TypeError(
                f"Invalid parameters: leaf {jax.tree_util.keystr(path)} has dtype "
                f"{jnp.result_type(x)}; gradient training needs floating-point parameters "
                "(an integer one would get truncated updates). Make it a float, or keep it "
                "out of the 'params' collection (e.g. in a separate Flax collection)."
            )


def as_callback_list(callbacks: Any) -> List[Callback]:
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(
                f"Invalid callback: expected a function of the LoopState, got {type(cb).__name__}."
            )
    return callbacks


def progress_enabled(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False
