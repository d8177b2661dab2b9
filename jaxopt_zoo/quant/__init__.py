"""Block-wise quantized optimizer state (8-bit, 4-bit, FP8): maps, quantize / dequantize and
the :func:`quantize_state` wrapper that keeps any optimizer's moments quantized between steps
(docs/low-bit.md)."""

from jaxopt_zoo.quant.blockwise import dequantize, quantize
from jaxopt_zoo.quant.maps import code_map, dynamic_map, linear_map_4bit_unsigned

__all__ = ["code_map", "dequantize", "dynamic_map", "linear_map_4bit_unsigned", "quantize"]
