"""Quantization maps: the 256 (8-bit) or 16 (4-bit) values a code stands for, sorted, in [-1, 1].

Built here from their definitions (float32 arithmetic in the order the references use, so that
they equal theirs bit for bit; ``tests/test_lowbit.py`` checks):

- the dynamic (tree) map of Dettmers (2016) and Dettmers et al. (2022): a sign bit, a unary
  exponent (a run of zeros ended by a one) and the remaining bits a linear fraction;
  ``bitsandbytes.functional.create_dynamic_map`` and torchao's ``create_dynamic_map``
  (``torchao/optim/quant_utils.py``) give the same 8-bit maps, signed and unsigned;
- torchao's 4-bit maps (``subclass_4bit.py``): the signed dynamic map with 3 exponent bits and
  4 bits in all, and the unsigned linear map ``k / 16, k = 1..16`` without zero (Li et al.
  2023: a second moment quantized to zero would divide by ``eps`` alone).
"""

from __future__ import annotations

import functools
from typing import List

import numpy as np


def _linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """``torch.linspace(start, stop, num)`` in float32: a float32 step, the first half counted
    up from ``start`` and the second half down from ``stop``, each value one fused
    multiply-add (rounded once)."""
    a, b = np.float32(start), np.float32(stop)
    if num == 1:
        return np.array([a], np.float32)
    step = np.float32((b - a) / np.float32(num - 1))
    i = np.arange(num)
    up = (np.float64(a) + np.float64(step) * i).astype(np.float32)
    down = (np.float64(b) - np.float64(step) * (num - 1 - i)).astype(np.float32)
    return np.where(i < num // 2, up, down).astype(np.float32)


def _means(num: int) -> np.ndarray:
    bounds = _linspace_f32(0.1, 1.0, num)
    return ((bounds[:-1] + bounds[1:]) / np.float32(2.0)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _dynamic_map(signed: bool, max_exponent_bits: int, total_bits: int) -> bytes:
    non_sign_bits = total_bits - 1
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    data: List[np.ndarray] = []
    i = 0
    for i in range(max_exponent_bits):
        fraction_items = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
        scale = np.float32(10.0 ** (-(max_exponent_bits - 1) + i))
        vals = (scale * _means(fraction_items)).astype(np.float32)
        data += [vals, -vals] if signed else [vals]
    if extra > 0:
        scale = np.float32(10.0 ** (-(max_exponent_bits - 1) + i))
        vals = (scale * _means(extra + 1)).astype(np.float32)
        data += [vals, -vals] if signed else [vals]
    out = np.concatenate(data + [np.array([0.0, 1.0], np.float32)])
    if out.size != 2**total_bits:
        raise ValueError(
            f"dynamic_map: {max_exponent_bits} exponent bits in {total_bits} bits give "
            f"{out.size} values, expected {2**total_bits}."
        )
    return np.sort(out).astype(np.float32).tobytes()


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """The dynamic (tree) quantization map, sorted, as a float32 NumPy array.

    Equal bit for bit to ``bitsandbytes.functional.create_dynamic_map(signed)`` (8 bits) and to
    torchao's ``create_dynamic_map(True, 3, 4)`` (its signed 4-bit map).

    Args:
      signed: a sign bit (values in [-1, 1]) or none (values in [0, 1], twice as many).
      max_exponent_bits: the longest unary exponent; the smallest magnitude is about
        ``10 ** -(max_exponent_bits - 1)``.
      total_bits: bits per code (8 or 4).

    Returns:
      ``2 ** total_bits`` float32 values, sorted, containing 0 and 1.

    Example:
      >>> m = dynamic_map(signed=False)
      >>> m.shape, float(m[0]), float(m[-1])
      ((256,), 0.0, 1.0)
    """
    raw = _dynamic_map(bool(signed), int(max_exponent_bits), int(total_bits))
    return np.frombuffer(raw, np.float32).copy()


def linear_map_4bit_unsigned() -> np.ndarray:
    """torchao's unsigned 4-bit map: ``k / 16`` for ``k = 1..16`` (no zero).

    Example:
      >>> float(linear_map_4bit_unsigned()[0])
      0.0625
    """
    return _linspace_f32(0.0, 1.0, 17)[1:].copy()


def code_map(bits: int, signed: bool) -> np.ndarray:
    """The map used for ``bits`` (8 or 4) and a signed or non-negative moment.

    8 bits: the dynamic map (bitsandbytes' and torchao's). 4 bits: torchao's signed dynamic map
    (3 exponent bits) or its linear unsigned map without zero.
    """
    if bits == 8:
        return dynamic_map(signed)
    if bits == 4:
        return dynamic_map(True, 3, 4) if signed else linear_map_4bit_unsigned()
    raise ValueError(f"code_map: bits must be 8 or 4, got {bits!r}.")
