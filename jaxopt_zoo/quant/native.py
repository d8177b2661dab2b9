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
    _rebuild,
    _stages,
    available,
    map_tables,
    quant_call,
)
from jaxopt_zoo.fast.spec import restack
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
    if not (cfg.bits == 8 and cfg.quantizer == "bnb" and cfg.rounding == "nearest"):
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
    try:
        for m in maps:
            map_tables(m)
    except ValueError:
        return None

    def kernel(params, state, grads):
        blocks = _stages(tx.inner, state.inner)
        assert blocks is not None
        buffers = [getattr(s, f) for spec, s in blocks for f in spec.buffers]
        scalars = jnp.stack(
            [
                jnp.asarray(v, jnp.float32).reshape(())
                for spec, s in blocks
                for v in spec.scalar_values(getattr(s, spec.counter, None))
            ]
        )
        new_p: Dict[str, jax.Array] = {}
        new_b: List[Dict[str, Any]] = [{} for _ in buffers]
        for k in keys:
            olds = [b.buffers[k] for b in buffers]
            args = [x if kd == KIND_F32 else (x.codes, x.scale) for x, kd in zip(olds, kinds[k])]
            outs = quant_call(
                ops,
                kinds[k],
                tx.quant_config.block_size,
                scalars,
                params.buffers[k],
                grads.buffers[k],
                maps[0],
                maps[1],
                args,
            )
            new_p[k] = outs[0]
            for d, old, kd, o in zip(new_b, olds, kinds[k], outs[1:]):
                if kd == KIND_F32:
                    d[k] = o
                else:
                    q = QuantizedArray(
                        o[0], o[1], 8, old.signed, old.block_size, "bnb", old.shape, old.dtype
                    )
                    d[k] = q
        flat_b = [FlatParams(d, b.layout) for d, b in zip(new_b, buffers)]
        new_states, i = [], 0
        for spec, s in blocks:
            new_states.append(_rebuild(s, spec, flat_b[i : i + len(spec.buffers)]))
            i += len(spec.buffers)
        inner = restack(tx.inner, state.inner, new_states)
        return FlatParams(new_p, params.layout), QuantizedState(inner, None)

    return jax.lax.platform_dependent(params, state, grads, cpu=kernel, default=fallback)
