"""bfloat16 parameters without a float32 master copy: stochastic rounding or Kahan-compensated
updates, so that updates below half a bfloat16 ulp are not lost."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    check_int,
    require_params,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe, spec_of

ROUNDINGS = ("stochastic", "kahan", "nearest")


class Bf16ParamsState(NamedTuple):
    """State of :func:`bf16_params`: the ``inner`` optimizer's state (built on float32
    views of the parameters), the PRNG ``key`` of the stochastic rounding (a raw uint32
    key; split once per step) and the Kahan ``compensation`` (bfloat16, like the
    bfloat16 parameters; ``None`` elsewhere and for the other roundings)."""

    inner: Any
    key: jax.Array
    compensation: Any


def stochastic_round_bf16(x: jax.Array, bits16: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to bfloat16 away from zero with probability (low 16 bits of
    ``x``) / 2^16, given 16 random bits per element: torchao's ``_fp32_to_bf16_sr``, bit
    for bit given the same bits (its ``torch.randint(0, 1 << 16)``).

    ::

        b = bits(x); frac = b & 0xFFFF; trunc = b & 0xFFFF0000
        out = trunc + 0x10000 if bits16 < frac else trunc     (uint32; then exact in bf16)

    Unbiased: ``E[out] = x`` for finite ``x`` (rounding up past the largest bfloat16 gives
    inf, as in torchao).

    Args:
      x: float32 values.
      bits16: integers in ``[0, 2^16)`` of ``x``'s shape (any integer dtype).

    Returns:
      bfloat16 values of ``x``'s shape.

    Example:
      >>> x = jnp.float32(1.0 + 2.0**-9)  # a quarter of the way from 1 to the next bf16
      >>> float(stochastic_round_bf16(x, jnp.uint32(0x3FFF))), float(
      ...     stochastic_round_bf16(x, jnp.uint32(0x4000)))
      (1.0078125, 1.0)
    """
    b = jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32), jnp.uint32)
    frac = b & jnp.uint32(0xFFFF)
    trunc = b & jnp.uint32(0xFFFF0000)
    up = jnp.asarray(bits16).astype(jnp.uint32) < frac
    out = jnp.where(up, trunc + jnp.uint32(0x10000), trunc)
    return jax.lax.bitcast_convert_type(out, jnp.float32).astype(jnp.bfloat16)


def _is_bf16(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.dtype(x.dtype) == jnp.bfloat16


def _f32(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(jnp.float32) if _is_bf16(x) else x, tree)


def bf16_params(
    inner: GradientTransformation, rounding: str = "stochastic", seed: int = 0
) -> GradientTransformationExtraArgs:
    """Train bfloat16 parameters without a float32 master copy.

    ``inner`` runs in float32 on float32 views of the bfloat16 parameters and gradients
    (its state is float32, as ``inner.init`` makes it for float32 parameters), as torchao's
    optimizers do for bfloat16 parameters. The new value ``p + u`` (float32) is then
    rounded to bfloat16:

    - ``"stochastic"``: up or down with probabilities proportional to the distances
      (:func:`stochastic_round_bf16`, torchao's ``bf16_stochastic_round``), 16 fresh random
      bits per element from the key in the state; unbiased, so an update below half an ulp
      still moves the parameter in expectation.
    - ``"kahan"``: Kahan-compensated summation with a bfloat16 buffer ``c`` (Zamirai et al.
      2020, "Revisiting BFloat16 Training", Alg. 2): ``y = u - c``, ``s = rn(p + y)``,
      ``c = (s - p) - y``, ``p = s``; the arithmetic in float32, ``c`` stored in bfloat16
      (the paper's arithmetic is all bfloat16). The rounding error of each step is carried
      into the next, so small updates accumulate. Deterministic; 2 more bytes per parameter.
    - ``"nearest"``: round to nearest even (what ``optax.apply_updates`` does alone): an
      update below half an ulp is lost.

    The returned updates (float32 for bfloat16 leaves) are ``rounded - p``, so that
    ``optax.apply_updates(params, updates)`` (``p + u`` in float32, cast to bfloat16) lands
    exactly on the rounded value whenever ``rounded - p`` is exact in float32: always,
    unless a parameter shrinks in magnitude by a factor of over 2^15 in one step (then it
    lands within ``2^-24 |p|`` of it). Leaves that are not bfloat16 take ``inner``'s update
    unchanged.

    Args:
      inner: the optimizer (any ``optax.GradientTransformation``; extra ``update`` arguments
        are passed through).
      rounding: ``"stochastic"``, ``"kahan"`` or ``"nearest"``.
      seed: the stochastic rounding's PRNG seed (the key lives in the state).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`Bf16ParamsState`.

    Example:
      >>> tx = jz.bf16_params(jz.adamw(1e-3), rounding="stochastic", seed=0)
      >>> params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"].dtype
      dtype(bfloat16)
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r}. Expected one of {ROUNDINGS}.")
    seed = check_int("seed", seed, low=0)
    if not isinstance(inner, GradientTransformation) and not (
        hasattr(inner, "init") and hasattr(inner, "update")
    ):
        raise TypeError(f"bf16_params wraps an optax GradientTransformation, got {inner!r}.")
    extra_ok = isinstance(inner, GradientTransformationExtraArgs)

    def init_fn(params):
        comp = None
        if rounding == "kahan":
            comp = jax.tree.map(
                lambda p: jnp.zeros(p.shape, jnp.bfloat16) if _is_bf16(p) else None, params
            )
        return Bf16ParamsState(
            inner=inner.init(_f32(params)), key=jax.random.PRNGKey(seed), compensation=comp
        )

    def update_fn(updates, state, params=None, **extra):
        require_params(params, "bf16_params")
        p32 = _f32(params)
        if extra_ok:
            u32, inner_state = inner.update(_f32(updates), state.inner, p32, **extra)
        else:
            u32, inner_state = inner.update(_f32(updates), state.inner, p32)
        treedef: Any  # its stub lacks flatten_up_to
        leaves, treedef = jax.tree.flatten(params)
        u_leaves = treedef.flatten_up_to(u32)
        p32_leaves = treedef.flatten_up_to(p32)
        key, sub = jax.random.split(state.key)
        keys = jax.random.split(sub, max(1, len(leaves)))
        comp_leaves = (
            treedef.flatten_up_to(state.compensation)
            if rounding == "kahan"
            else [None] * len(leaves)
        )
        out, comp_out = [], []
        for i, (p, p_32, u, c) in enumerate(zip(leaves, p32_leaves, u_leaves, comp_leaves)):
            if not _is_bf16(p):
                out.append(u.astype(p.dtype))
                comp_out.append(c)
                continue
            u = u.astype(jnp.float32)
            if rounding == "stochastic":
                bits = jax.random.bits(keys[i], p.shape, jnp.uint32) >> 16
                new = stochastic_round_bf16(p_32 + u, bits)
            elif rounding == "kahan":
                y = u - c.astype(jnp.float32)
                new = (p_32 + y).astype(jnp.bfloat16)
                c = ((new.astype(jnp.float32) - p_32) - y).astype(jnp.bfloat16)
            else:
                new = (p_32 + u).astype(jnp.bfloat16)
            out.append(new.astype(jnp.float32) - p_32)
            comp_out.append(c)
        comp = treedef.unflatten(comp_out) if rounding == "kahan" else None
        return treedef.unflatten(out), Bf16ParamsState(inner_state, key, comp)

    spec = BlockSpec("bf16_params", wraps=(inner,))
    return describe(GradientTransformationExtraArgs(init_fn, update_fn), spec)


def params_for(tx: Any, params: Any) -> Any:
    """``params`` as ``tx`` trains them: cast to bfloat16 (:func:`cast_params_bf16`) when
    ``tx`` is a :func:`bf16_params` wrapper, unchanged otherwise. The trainer calls it on a
    model's fresh parameters before ``tx.init``.

    Args:
      tx: the optimizer.
      params: a model's parameters.

    Returns:
      ``params``, cast for a ``bf16_params`` optimizer.

    Example:
      >>> params = {"w": jnp.ones(2)}
      >>> jz.params_for(jz.bf16_params(jz.sgd(0.1)), params)["w"].dtype
      dtype(bfloat16)
      >>> jz.params_for(jz.sgd(0.1), params)["w"].dtype
      dtype('float32')
    """
    spec = spec_of(tx)
    return cast_params_bf16(params) if spec is not None and spec.name == "bf16_params" else params


def cast_params_bf16(params: Any) -> Any:
    """Floating-point leaves of ``params`` cast to bfloat16 (others unchanged): the
    parameters :func:`bf16_params` is meant for.

    Args:
      params: a tree of arrays.

    Returns:
      The tree with bfloat16 floating-point leaves.

    Example:
      >>> jz.cast_params_bf16({"w": jnp.ones(2), "n": jnp.arange(2)})["w"].dtype
      dtype(bfloat16)
    """
    return jax.tree.map(
        lambda x: (
            x.astype(jnp.bfloat16)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        params,
    )
