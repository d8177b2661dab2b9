"""The native CPU kernel for 8-bit state: ``fused_apply(fuse(quantize_state(...)))`` on
float32 ``FlatParams`` (``jaxopt_zoo.fast.native`` calls :func:`fused_step` through the
transformation's ``native_fused_step``; the fast path itself knows nothing of quantization)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.fast.layout import FlatParams
from jaxopt_zoo.fast.native import (
    KIND_F32,
    KIND_SIGNED8,
    KIND_UNSIGNED8,
    _stages,
    available,
    map_tables,
    quant_call,
    staged_step,
)
from jaxopt_zoo.fast.stages import STAGES
from jaxopt_zoo.quant.maps import code_map


def fused_step(
    tx: Any,
    params: FlatParams,
    state: Any,
    grads: FlatParams,
    fallback: Callable,
    QuantizedArray: Any,
    QuantizedState: Any,
) -> Optional[Tuple[Any, Any]]:
    """``fast.native.fused_step`` for ``quantize_state(inner)`` (``adamw_8bit``, ``adam_8bit``,
    ...): the step in the 8-bit kernel when the format is 8 bits, ``"bnb"``, nearest
    rounding, ``inner`` a chain of blocks with stages and every state buffer float32 or 8-bit;
    else None (the caller runs XLA). Traceable; on platforms other than the CPU, ``fallback``.
    """
    # QuantizedArray and QuantizedState come from jaxopt_zoo.quant.state, which calls this
    cfg = tx.quant_config
    if not (
        cfg.bits == 8
        and cfg.quantizer == "bnb"
        and cfg.rounding == "nearest"
        and cfg.normalization == "block"
    ):
        return None
    if not isinstance(state, QuantizedState) or state.key is not None:
        return None
    keys = sorted(params.buffers)
    if not keys or sorted(grads.buffers) != keys or params.layout != grads.layout:
        return None
    if any(
        jnp.result_type(x) != jnp.float32
        for x in [*params.buffers.values(), *grads.buffers.values()]
    ):
        return None
    blocks = _stages(tx.inner, state.inner)
    if blocks is None:
        return None

    def kind(x: Any) -> Optional[int]:
        if isinstance(x, QuantizedArray):
            ok = (
                x.bits == 8
                and x.quantizer == "bnb"
                and x.normalization == "block"
                and x.block_size == cfg.block_size
                and x.dtype == jnp.float32
                and len(x.shape) == 1
            )
            return (KIND_SIGNED8 if x.signed else KIND_UNSIGNED8) if ok else None
        return KIND_F32 if jnp.result_type(x) == jnp.float32 else None

    buffers = [getattr(s, f) for spec, s in blocks for f in spec.buffers]
    kinds: Dict[str, List[int]] = {}
    for k in keys:
        row = []
        for b in buffers:
            if not (isinstance(b, FlatParams) and sorted(b.buffers) == keys):
                return None
            kd = kind(b.buffers[k])
            if kd is None:
                return None
            row.append(kd)
        kinds[k] = row
    if not available():
        return None
    ops = [STAGES[spec.stage].opcode for spec, _ in blocks if spec.stage is not None]
    maps = (code_map(8, True), code_map(8, False))
    try:  # the kernel's tables (built once per map, reused by quant_call)
        for m in maps:
            map_tables(m)
    except ValueError:
        return None

    def kernel(params, state, grads):
        def call(key, scalars, p, g, olds):
            args = [x if kd == KIND_F32 else (x.codes, x.scale) for x, kd in zip(olds, kinds[key])]
            outs = quant_call(ops, kinds[key], cfg.block_size, scalars, p, g, *maps, args)
            new = [
                o
                if kd == KIND_F32
                else QuantizedArray(o[0], o[1], 8, x.signed, x.block_size, "bnb", x.shape, x.dtype)
                for x, kd, o in zip(olds, kinds[key], outs[1:])
            ]
            return outs[0], new

        new_params, inner = staged_step(tx.inner, state.inner, params, grads, call)
        return new_params, QuantizedState(inner, None)

    return jax.lax.platform_dependent(params, state, grads, cpu=kernel, default=fallback)
