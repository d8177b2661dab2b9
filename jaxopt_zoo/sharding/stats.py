"""What a compiled program costs per device: memory, and the bytes its collectives produce.

Read from the compiled executable itself (``jax.jit(f).lower(...).compile()``), so the numbers
are XLA's, not a model of them: ``memory_analysis()`` for the per-device buffers and the
optimized HLO text for the collectives XLA inserted (all-reduce, reduce-scatter, all-gather,
all-to-all, collective-permute).
"""

from __future__ import annotations

import re
from typing import Any, Dict

__all__ = ["collective_bytes", "compiled_stats"]

_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_OPS = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
# "%x = <shape or (tuple of shapes)> <op>(" where <op> is a collective or its "-done" half
# (the "-start" half of an async pair carries operands and results: counted at "-done").
_INSTR = re.compile(
    r"=\s+(\(.*?\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+(" + "|".join(_OPS) + r")(-done)?\("
)
_ARRAY = re.compile(r"([a-z0-9]+)\[([0-9,]*)\]")


def collective_bytes(hlo_text: str) -> Dict[str, int]:
    """Bytes of every collective's result in optimized HLO text, per device, by op name.

    An all-gather counts its gathered output, a reduce-scatter its shard, an all-reduce its
    full result: the data each device ends up with, a proxy for the traffic.

    Args:
      hlo_text: optimized HLO text, e.g. ``compiled.as_text()``. An asynchronous
        collective is counted once, at its ``-done`` half.

    Returns:
      ``{op name: bytes}`` for the collectives present (an empty dict when there are
      none).

    Example:
      >>> collective_bytes("%ag = f32[8,4]{1,0} all-gather(f32[2,4]{1,0} %p), dimensions={0}")
      {'all-gather': 128}
    """
    out: Dict[str, int] = {}
    for m in _INSTR.finditer(hlo_text):
        total = 0
        for dtype, dims in _ARRAY.findall(m.group(1)):
            n = 1
            for d in filter(None, dims.split(",")):
                n *= int(d)
            total += n * _DTYPE_BYTES.get(dtype, 4)
        out[m.group(2)] = out.get(m.group(2), 0) + total
    return out


def compiled_stats(compiled: Any) -> Dict[str, Any]:
    """Per-device memory (bytes) and collective bytes of a compiled program.

    Args:
      compiled: ``jax.jit(f).lower(*args).compile()``.

    Returns:
      ``{"argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "collectives":
      {op: bytes}}``; memory fields are ``None`` where the backend does not report them.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> compiled = jax.jit(lambda x: 2 * x).lower(jnp.ones(4)).compile()
      >>> stats = compiled_stats(compiled)
      >>> stats["argument_bytes"], stats["collectives"]
      (16, {})
    """
    mem = compiled.memory_analysis()

    def field(name: str) -> Any:
        return None if mem is None else int(getattr(mem, name, 0))

    return {
        "argument_bytes": field("argument_size_in_bytes"),
        "output_bytes": field("output_size_in_bytes"),
        "temp_bytes": field("temp_size_in_bytes"),
        "alias_bytes": field("alias_size_in_bytes"),
        "collectives": collective_bytes(compiled.as_text()),
    }
