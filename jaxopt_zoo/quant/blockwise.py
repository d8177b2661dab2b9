"""Block-wise quantize / dequantize: codes plus one float32 scale per block.

A float array is flattened (row-major), split into blocks of ``block_size`` elements (the last
one padded with zeros) and each block stored as its absolute maximum (``absmax``) and one code
per element, the index of a map value (``maps.code_map``) near ``x / absmax``; FP8 stores
``x / (absmax / 448)`` as ``float8_e4m3fn`` instead. Dequantize: ``map[code] * absmax``.

Two quantizers for the map formats, as the references write them (they differ on a few
entries per million, at ties and where ``x * (1 / absmax)`` and ``x / absmax`` round apart):

- ``"bnb"`` (the rule of bitsandbytes' CPU source, ``csrc/common.cpp``): ``q = x / absmax``,
  then the nearest map value, a value exactly halfway going to the lower one. bitsandbytes
  0.50.2's compiled CPU kernel departs from this rule on some entries (on inputs spanning
  several decades 1.4% of signed and 36% of unsigned codes, where the map is dense, up to 7
  codes away): ``tests/test_lowbit.py`` measures it and
  checks that ours is never farther from ``x``;
- ``"torchao"`` (torchao 0.18's ``quantize_8bit_with_qmap``/``quantize_4bit_with_qmap``):
  ``q = x / max(absmax, 1e-12)``, the largest map value ``<= q`` and the next one up, and the
  upper one when ``q - lower >= (upper - lower) * 0.5`` (halfway goes up).

``rounding="stochastic"`` picks the upper of the two neighbours with probability
``(q - lower) / (upper - lower)`` (unbiased: the expected dequantized value is ``x``).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.fast.native import CELL_SHIFT, cell_counts
from jaxopt_zoo.quant.maps import code_map

FP8_MAX = 448.0  # float(jnp.finfo(jnp.float8_e4m3fn).max)
FORMATS = (8, 4, "fp8")
QUANTIZERS = ("bnb", "torchao")
ROUNDINGS = ("nearest", "stochastic")


def num_blocks(size: int, block_size: int) -> int:
    return -(-int(size) // int(block_size))


def _blocks(x: jax.Array, block_size: int) -> jax.Array:
    flat = jnp.ravel(x).astype(jnp.float32)
    pad = num_blocks(flat.size, block_size) * block_size - flat.size
    if pad:
        flat = jnp.pad(flat, (0, pad))
    return flat.reshape(-1, block_size)


@functools.lru_cache(maxsize=64)
def _cell_base(table_bytes: bytes) -> Optional[np.ndarray]:
    """:func:`jaxopt_zoo.fast.native.cell_counts` of the table, capped at ``len(table) - 1``
    (where every value lies below the cell, ``len - 1`` counts the same: the last value is
    below ``q``) so that maps of up to 256 values fit uint8; None where a search is needed."""
    table = np.frombuffer(table_bytes, np.float32)
    base = cell_counts(table)
    if base is None:
        return None
    base = np.minimum(base, table.size - 1)
    return base.astype(np.uint8 if table.size <= 256 else np.int32)


def _search(table: np.ndarray, q: jax.Array, strict: bool) -> jax.Array:
    """The largest index ``i`` with ``table[i] <= q`` (``< q`` if ``strict``), 0 if none;
    ``table`` ascending (NumPy, float32).

    Where no float cell (sign, exponent and top 7 mantissa bits of ``q``) holds more than
    one table value (every map here), two gathers: the count of values below ``q``'s cell,
    from a table built once, and one comparison with the next value. Otherwise a binary
    search of ``log2(len(table))`` gathers (``len(table)`` a power of two). Measured on 8M
    elements on the CPU: 12 ms against 560 ms for the binary search of a 256-entry map.
    """
    table = np.ascontiguousarray(table, np.float32)
    n = table.shape[0]
    base = _cell_base(table.tobytes())
    if base is not None:
        bits = jax.lax.bitcast_convert_type(q.astype(jnp.float32), jnp.uint32)
        cell = (bits >> CELL_SHIFT).astype(jnp.int32)
        c = jnp.asarray(base).at[cell].get(mode="promise_in_bounds").astype(jnp.int32)
        nxt = jnp.asarray(table).at[c].get(mode="promise_in_bounds")
        count = c + ((nxt < q) if strict else (nxt <= q)).astype(jnp.int32)
        return jnp.maximum(count - 1, 0)
    jt = jnp.asarray(table)
    idx = jnp.zeros(q.shape, jnp.int32)
    bit = n // 2
    while bit:
        cand = idx + bit
        v = jt[cand]
        idx = jnp.where((v < q) if strict else (v <= q), cand, idx)
        bit //= 2
    return idx


def _round_to_map(
    q: jax.Array, qmap: np.ndarray, quantizer: str, key: Optional[jax.Array]
) -> jax.Array:
    """Indices (int32) of map values for ``q`` (already scaled into the map's range)."""
    n = qmap.size
    table = jnp.asarray(qmap)
    if key is None and quantizer == "bnb":
        # the number of midpoints below q: nearest, halfway down
        mids = ((qmap[:-1] + qmap[1:]) / np.float32(2)).astype(np.float32)
        return _search(np.concatenate([[-np.inf], mids]).astype(np.float32), q, True)
    lo = _search(qmap, q, False)
    hi = jnp.minimum(lo + 1, n - 1)
    v_lo, v_hi = table[lo], table[hi]
    if key is None:  # torchao: halfway goes up
        up = (q - v_lo) >= (v_hi - v_lo) * 0.5
    else:
        width = v_hi - v_lo
        safe = jnp.where(width > 0, width, 1.0)
        p_up = jnp.where(width > 0, jnp.clip((q - v_lo) / safe, 0.0, 1.0), 0.0)
        up = jax.random.uniform(key, q.shape, jnp.float32) < p_up
    return jnp.where(up, hi, lo)


def _fp8_neighbour(codes: jax.Array, up: jax.Array) -> jax.Array:
    """The next float8_e4m3fn value towards +inf (``up``) or -inf from ``codes``, by stepping
    the sign-magnitude bit pattern (from +-0: the smallest subnormal of the direction's
    sign)."""
    bits = jax.lax.bitcast_convert_type(codes, jnp.uint8)
    neg = (bits & 0x80) != 0
    mag = bits & 0x7F
    zero = mag == 0
    away = up != neg
    new_mag = jnp.where(zero | away, mag + 1, mag - 1).astype(jnp.uint8)
    new_neg = jnp.where(zero, jnp.logical_not(up), neg)
    out = jnp.where(new_neg, new_mag | 0x80, new_mag).astype(jnp.uint8)
    return jax.lax.bitcast_convert_type(out, jnp.float8_e4m3fn)


def _pack4(idx: jax.Array) -> jax.Array:
    """4-bit codes two per byte, the first element in the high nibble (an odd count is
    padded with a zero code)."""
    flat = jnp.ravel(idx)
    if flat.size % 2:
        flat = jnp.pad(flat, (0, 1))
    pairs = flat.reshape(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def _unpack4(codes: jax.Array) -> jax.Array:
    """The flat 4-bit codes of :func:`_pack4`'s bytes (with its padding)."""
    return jnp.stack([codes >> 4, codes & 0x0F], axis=-1).reshape(-1)


def quantize(
    x: jax.Array,
    fmt: Any,
    signed: bool,
    block_size: int,
    quantizer: str = "bnb",
    key: Optional[jax.Array] = None,
) -> Tuple[jax.Array, jax.Array]:
    """Block-wise quantize ``x``.

    Args:
      x: a float array.
      fmt: 8, 4 or ``"fp8"``.
      signed: the signed map (for a moment of either sign) or the non-negative one.
      block_size: elements per block (a power of two).
      quantizer: ``"bnb"`` or ``"torchao"`` (see the module docstring); FP8 is torchao's.
      key: a PRNG key for stochastic rounding (None: nearest).

    Returns:
      ``(codes, scale)``: codes ``uint8`` of ``x``'s shape (8 bits), ``uint8`` of
      ``ceil(size / block_size) * block_size / 2`` packed pairs, the first element in the high
      nibble (4 bits), or ``float8_e4m3fn`` of ``x``'s shape (FP8); ``scale`` float32 of one
      entry per block (``absmax``, or ``absmax / 448`` for FP8).

    Example:
      >>> codes, scale = quantize(jnp.linspace(-1.0, 1.0, 512), 8, True, 256)
      >>> codes.dtype, scale.shape
      (dtype('uint8'), (2,))
    """
    blocks = _blocks(x, block_size)
    absmax = jnp.max(jnp.abs(blocks), axis=1)
    size = int(np.prod(np.shape(x)))
    if fmt == "fp8":
        # a true division as torch does; XLA turns a division by a constant into a
        # multiplication by its reciprocal (one ulp off), which the barrier prevents
        fp8_max = jax.lax.optimization_barrier(jnp.full(absmax.shape, FP8_MAX, jnp.float32))
        scale = jnp.maximum(absmax, 1e-12) / fp8_max
        y = blocks / scale[:, None]
        codes = y.astype(jnp.float8_e4m3fn)
        if key is not None:
            c = codes.astype(jnp.float32)
            other = _fp8_neighbour(codes, c <= y)
            o = other.astype(jnp.float32)
            width = jnp.abs(o - c)
            p_other = jnp.where(width > 0, jnp.abs(y - c) / jnp.where(width > 0, width, 1), 0)
            take = jax.random.uniform(key, y.shape, jnp.float32) < p_other
            codes = jnp.where(take & (c != y), other, codes)
        codes = codes.reshape(-1)[:size].reshape(np.shape(x))
        return codes, scale
    qmap = code_map(int(fmt), signed)
    if quantizer == "bnb":
        safe = jnp.where(absmax > 0, absmax, 1.0)
        q = jnp.clip(blocks / safe[:, None], -1.0, 1.0)
        q = jnp.where(absmax[:, None] > 0, q, 0.0)
    else:
        absmax = jnp.maximum(absmax, 1e-12)
        q = blocks / absmax[:, None]
    idx = _round_to_map(q, qmap, quantizer, key).astype(jnp.uint8)
    if fmt == 4:
        return _pack4(idx), absmax
    return idx.reshape(-1)[:size].reshape(np.shape(x)), absmax


def dequantize(
    codes: jax.Array,
    scale: jax.Array,
    fmt: Any,
    signed: bool,
    shape: Tuple[int, ...],
    block_size: int,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The float array ``codes`` and ``scale`` stand for: ``map[code] * scale`` per block
    (``float(code) * scale`` for FP8), in ``shape`` and ``dtype``.

    Example:
      >>> x = jnp.linspace(-1.0, 1.0, 512)
      >>> y = dequantize(*quantize(x, 8, True, 256), 8, True, x.shape, 256)
      >>> bool(jnp.max(jnp.abs(x - y)) < 0.02)
      True
    """
    size = int(np.prod(shape))
    if fmt == "fp8":
        vals = jnp.ravel(codes).astype(jnp.float32)
    else:
        table = jnp.asarray(code_map(int(fmt), signed))
        idx = _unpack4(codes) if fmt == 4 else jnp.ravel(codes)
        vals = table[idx.astype(jnp.int32)]
    padded_size = num_blocks(size, block_size) * block_size
    if vals.size != padded_size:
        vals = jnp.pad(vals, (0, padded_size - vals.size))
    out = (vals.reshape(-1, block_size) * scale[:, None]).reshape(-1)[:size]
    return out.reshape(shape).astype(dtype)


NORMALIZATIONS = ("block", "rank1")


def rank1_dims(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """The ``(rows, cols)`` a leaf of ``shape`` (two or more dimensions) is normalized as:
    the first dimension, and the others flattened (row-major)."""
    rows = int(shape[0])
    return rows, int(np.prod(shape[1:]))


def rank1_scale(scale: jax.Array, shape: Tuple[int, ...]) -> jax.Array:
    """The ``(rows, cols)`` float32 scale ``min(r_i, c_j)`` of every entry, from the stored
    ``scale = concatenate([r, c])`` (row and column maxima)."""
    rows, _ = rank1_dims(shape)
    r, c = scale[:rows], scale[rows:]
    return jnp.minimum(r[:, None], c[None, :])


def quantize_rank1(
    x: jax.Array, fmt: int, key: Optional[jax.Array] = None
) -> Tuple[jax.Array, jax.Array]:
    """Rank-1 normalization (Li et al. 2023) of a non-negative ``x`` with two or more
    dimensions, in the unsigned ``fmt``-bit map: ``x`` is viewed as ``(rows, cols)``
    (:func:`rank1_dims`), each entry divided by ``min(r_i, c_j)``, ``r_i`` its row's and ``c_j``
    its column's absolute maximum (so the quotient lies in ``[0, 1]``), and rounded to the map as
    torchao's quantizer does (``"torchao"``; stochastic with ``key``).

    Returns:
      ``(codes, scale)``: codes packed two per byte for 4 bits (``ceil(size / 2)`` uint8, the
      first element in the high nibble), or uint8 of ``x``'s shape for 8; ``scale`` float32
      ``concatenate([r, c])`` of ``rows + cols`` entries.

    Example:
      >>> x = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(6))
      >>> codes, scale = quantize_rank1(x, 4)
      >>> codes.shape, scale.shape
      ((12,), (10,))
    """
    shape = tuple(np.shape(x))
    rows, cols = rank1_dims(shape)
    xf = jnp.reshape(x, (rows, cols)).astype(jnp.float32)
    a = jnp.abs(xf)
    scale = jnp.concatenate([jnp.max(a, axis=1), jnp.max(a, axis=0)])
    q = xf / jnp.maximum(rank1_scale(scale, shape), 1e-12)
    idx = _round_to_map(q, code_map(int(fmt), False), "torchao", key).astype(jnp.uint8)
    return (_pack4(idx) if fmt == 4 else idx.reshape(shape)), scale


def dequantize_rank1(
    codes: jax.Array,
    scale: jax.Array,
    fmt: int,
    shape: Tuple[int, ...],
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The array :func:`quantize_rank1`'s ``(codes, scale)`` stand for:
    ``map[code] * min(r_i, c_j)``, in ``shape`` and ``dtype``.

    Example:
      >>> x = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(6))
      >>> y = dequantize_rank1(*quantize_rank1(x, 4), 4, x.shape)
      >>> bool(jnp.array_equal(x, y))
      True
    """
    rows, cols = rank1_dims(shape)
    table = jnp.asarray(code_map(int(fmt), False))
    idx = _unpack4(codes)[: rows * cols] if fmt == 4 else jnp.ravel(codes)
    vals = table[idx.astype(jnp.int32)].reshape(rows, cols)
    return (vals * rank1_scale(scale, shape)).reshape(shape).astype(dtype)
