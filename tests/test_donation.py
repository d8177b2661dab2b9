"""Every optimizer state can be donated together with the parameters (RELIABILITY.md,
"Donation").

A train step is jitted with the parameters and the optimizer state donated,
``jax.jit(step, donate_argnums=(0, 1))``. That fails ("Attempt to donate the same buffer
twice") when ``init`` puts one array in the state twice, or puts the parameters' own arrays
in it (eagerly, ``jnp.asarray(p)`` and ``p.astype(p.dtype)`` return ``p`` itself). Every
registered optimizer and every wrapper around one goes through two checks: the structure of
``init``'s output (eager and jitted), and two donated steps equal to two un-donated ones.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from tests.helpers import stand_in_extra_args

ALL_NAMES = jz.available() + jz.available("torch.") + jz.available("keras.")

# Small trees: a matrix, a vector and, for the structural check, a conv kernel (the donated
# steps leave it out: compiling takes time in proportion to the leaves; torch.muon takes
# matrices only).
_RNG = np.random.default_rng(0)
_VALUES = {
    "w": _RNG.normal(size=(4, 3)).astype(np.float32),
    "b": _RNG.normal(size=(3,)).astype(np.float32),
    "k": _RNG.normal(size=(3, 3, 2, 4)).astype(np.float32),
}
_GRADS = {k: (0.5 * v + 0.1).astype(np.float32) for k, v in _VALUES.items()}


def _loss(params):
    return sum(0.5 * jnp.sum(p**2) for p in jax.tree.leaves(params))


def _adam():
    return jz.adam(1e-2)


# Wrappers around one optimizer, and presets the registry's defaults do not reach:
# name -> (transformation, extra keyword arguments of update given the params).
def _no_extra(p):
    return {}


WRAPPED = {
    # min_dim_size_to_factor=2: the factored statistics (the default factors no small leaf)
    "adafactor factored": (jz.adafactor(1e-2, min_dim_size_to_factor=2), _no_extra),
    "sam": (jz.sam(_adam()), lambda p: {"grad_fn": jax.grad(_loss)}),
    "swa": (jz.swa(_adam()), _no_extra),
    "ema_weights": (jz.ema_weights(_adam(), 0.9), _no_extra),
    "lookahead": (jz.lookahead(_adam(), sync_period=2), _no_extra),  # syncs at step 2
    "reduce_on_plateau": (jz.chain(_adam(), jz.reduce_on_plateau()), lambda p: {"value": _loss(p)}),
    "schedule_free": (jz.schedule_free(_adam(), 1e-2), _no_extra),
    "skip_not_finite": (jz.skip_not_finite(_adam()), _no_extra),
    "cautious": (jz.cautious(_adam()), _no_extra),
    "masked": (jz.masked(_adam(), lambda p: {k: k != "b" for k in p}), _no_extra),
    "partition": (
        jz.partition(
            {"a": _adam(), "s": jz.sgd(0.1, momentum=0.9)},
            lambda p: {k: "s" if k == "b" else "a" for k in p},
        ),
        _no_extra,
    ),
    "optax.inject_hyperparams": (optax.inject_hyperparams(jz.adam)(learning_rate=1e-2), _no_extra),
    "optax.MultiSteps": (optax.MultiSteps(_adam(), every_k_schedule=2), _no_extra),
    "fuse": (jz.fuse(_adam()), _no_extra),
}
# The fast path, jz.fused_apply(jz.fuse(adam)) on FlatParams: the one-pass kernel where it is
# available (CPU), and the XLA step chunk by chunk.
FAST = ["fused_apply", "fused_apply XLA chunks=2"]
CASES = ALL_NAMES + list(WRAPPED) + FAST


def _params(name, kernel=True):
    """New arrays (donation deletes them) for the case ``name``, and its gradients."""
    keys = ["w", "b", "k"] if kernel else ["w", "b"]
    keys = ["w"] if name == "torch.muon" else keys
    p = {k: jnp.asarray(_VALUES[k]) for k in keys}
    g = {k: jnp.asarray(_GRADS[k]) for k in keys}
    if name in FAST:
        chunks = 2 if "chunks" in name else 1
        p, g = jz.FlatParams.from_tree(p, chunks), jz.FlatParams.from_tree(g, chunks)
    return p, g


@functools.lru_cache(maxsize=None)
def _case(name):
    """``(transformation, step(params, state, grads) -> (params, state))``, built once."""
    if name in FAST:
        tx = jz.fuse(_adam())
        return tx, jz.fused_apply(tx, native="XLA" not in name)
    if name in WRAPPED:
        tx, extra = WRAPPED[name]
    else:  # the registry's stand-in loss where update needs one (kw below)
        tx, extra = jz.get(name), lambda p: {}

    def step(params, state, grads):
        kw = stand_in_extra_args(name, params, grads) if name in ALL_NAMES else {}
        updates, state = tx.update(grads, state, params, **extra(params), **kw)
        return optax.apply_updates(params, updates), state

    return tx, step


def _arrays(tree):
    """The leaves of ``tree``, each a ``jax.Array`` (a NumPy array or Python number in a
    state could not be donated)."""
    leaves = jax.tree.leaves(tree)
    assert all(isinstance(x, jax.Array) for x in leaves), [type(x) for x in leaves]
    return leaves


def _buffer(x):
    """The device buffer's address (None for zero-size or multi-device arrays)."""
    try:
        return x.unsafe_buffer_pointer() if x.size else None
    except Exception:  # noqa: BLE001 -- no single buffer: compare by object only
        return None


def _assert_donatable(state, params, where):
    """No two leaves of ``state`` are one array or share a buffer; none is a parameter's."""
    given, _ = _arrays(params), _arrays(state)
    seen_ids = {id(p): "a parameter" for p in given}
    seen_bufs = {_buffer(p): "a parameter" for p in given if _buffer(p) is not None}
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        at = f"{where}: state{jax.tree_util.keystr(path)}"
        assert id(x) not in seen_ids, f"{at} is the same array as {seen_ids[id(x)]}"
        seen_ids[id(x)] = at
        b = _buffer(x)
        if b is not None:
            assert b not in seen_bufs, f"{at} shares a buffer with {seen_bufs[b]}"
            seen_bufs[b] = at


@pytest.mark.parametrize("name", CASES)
def test_init_holds_no_array_twice_and_no_parameter(name):
    tx, _ = _case(name)
    params, _ = _params(name)
    _assert_donatable(tx.init(params), params, "eager init")
    _assert_donatable(jax.jit(tx.init)(params), params, "jitted init")


@pytest.mark.parametrize("name", CASES)
def test_two_donated_steps_equal_two_plain_steps(name):
    tx, step = _case(name)
    # keep_unused: state the step does not read (recomputed slots, flags) is donated too
    plain = jax.jit(step, keep_unused=True)
    donated = jax.jit(step, donate_argnums=(0, 1), keep_unused=True)

    params, grads = _params(name, kernel=False)
    state = tx.init(params)
    for _ in range(2):
        params, state = plain(params, state, grads)

    d_params, grads = _params(name, kernel=False)
    d_state = tx.init(d_params)  # eager init: the case that aliased the parameters
    for i in range(2):
        given = _arrays((d_params, d_state))
        d_params, d_state = donated(d_params, d_state, grads)
        # the donation happened: every buffer given was taken over by the step
        assert all(x.is_deleted() for x in given), f"step {i + 1}: not every buffer donated"
        _assert_donatable(d_state, d_params, f"after donated step {i + 1}")

    assert jax.tree.structure((d_params, d_state)) == jax.tree.structure((params, state))
    for a, b in zip(_arrays((d_params, d_state)), _arrays((params, state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
