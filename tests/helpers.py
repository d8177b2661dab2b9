"""Shared test utilities: run an optimizer over a stream of gradients in one compile."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax


def make_params(shapes, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {f"p{i}": jnp.asarray(rng.normal(size=s), dtype) for i, s in enumerate(shapes)}


def make_grad_stream(params, steps, seed=1, scale=1.0):
    """Random gradients, stacked along a leading axis of length ``steps``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(scale * rng.normal(size=(steps,) + p.shape), p.dtype), params
    )


def trajectory(tx, params, grads):
    """Parameters after each step when ``tx`` is fed the stacked gradient stream ``grads``.

    One ``jit`` + ``lax.scan``: a single compile for the whole stream.
    """

    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        _, traj = jax.lax.scan(body, (params, tx.init(params)), grads)
        return traj

    return run(params, grads)


def max_rel_err(a, b):
    """Largest relative error ``max|a - b| / max|b|``, per leaf over all its elements and
    steps, maximised over leaves. Relative to each leaf's scale rather than elementwise,
    so that an element passing through zero does not turn rounding into a large ratio."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise AssertionError(f"shapes differ: {x.shape} vs {y.shape}")
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return worst


def _stand_in_loss(p):
    """``0.5 * sum(|p|**2)`` in float32: one function (one identity), so that transforms
    compiled per loss function (line searches) compile once."""
    return 0.5 * sum(
        jnp.sum(jnp.square(jnp.abs(x).astype(jnp.float32))) for x in jax.tree.leaves(p)
    )


def stand_in_extra_args(name, params, grads, step=0, loss=None):
    """The ``update`` keyword arguments that registry entry ``name`` needs
    (``Entry.extra_args``), for the registry-wide tests that feed random gradients without
    a loss: the loss is taken as ``0.5 * sum(|p|**2)`` (so ``value``, ``value_fn``, ``grad``
    and ``obj_fn`` agree with one another, if not with the random gradients), or ``loss``
    where a test has the true one, and ``key`` is folded from ``step``."""
    import jaxopt_zoo as jz

    loss = loss or _stand_in_loss

    out = {}
    for a in jz.entry(name).extra_args:
        if a == "value":
            out[a] = loss(params)
        elif a in ("value_fn", "obj_fn"):
            out[a] = loss
        elif a == "grad":
            out[a] = grads
        elif a == "key":
            out[a] = jax.random.fold_in(jax.random.key(0), step)
    return out


@contextlib.contextmanager
def torch_precision(dtype: str):
    """float64 (``dtype == "float64"``) or float32 as torch's default dtype and in JAX
    (``enable_x64``) for the block: a parity test runs both libraries at one precision."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    try:
        with jax.enable_x64(dtype == "float64"):
            yield
    finally:
        torch.set_default_dtype(old)


def checkpoint_round_trip(path, params, opt_state, optimizer):
    """``opt_state`` saved in a trainer checkpoint (orbax, through ``Checkpointer``) and
    restored: asserts the same structure and every leaf bit-identical in the same dtype, and
    returns the restored state."""
    from jaxopt_zoo.train import Checkpointer, LoopState, Metrics

    metrics = Metrics(*map(jnp.float32, (1, 2, 3)))
    loop = LoopState(params, opt_state, 2, 0, 2, jax.random.PRNGKey(0), metrics, ())
    meta = {"model": "mlp32", "optimizer": optimizer}
    with Checkpointer(path, metadata=meta) as ck:
        assert ck.save(loop, force=True)
    restored, _ = Checkpointer(path, metadata=meta).restore_latest(loop)
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(opt_state)):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    return restored.opt_state
