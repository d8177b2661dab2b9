"""``quantize_state``: keep any optimizer's moments block-wise quantized between steps."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import GradientTransformation
from jaxopt_zoo.quant.blockwise import (
    FORMATS,
    NORMALIZATIONS,
    QUANTIZERS,
    ROUNDINGS,
    dequantize,
    dequantize_rank1,
    num_blocks,
    quantize,
    quantize_rank1,
)

# State fields that hold a non-negative moment by construction (a second moment, a sum of
# squares): quantized with the unsigned map. Every other moment takes the signed map.
NONNEGATIVE_FIELDS = frozenset(
    {"nu", "nu_max", "sum_of_squares", "v", "exp_avg_sq", "max_exp_avg_sq", "e_g2", "acc"}
)

Bits = Union[int, str]


@jax.tree_util.register_pytree_node_class
class QuantizedArray:
    """A float array stored as ``codes`` and one float32 ``scale`` per block.

    Children (what jit, vmap, checkpoints and shardings see): ``codes`` (uint8, or
    float8_e4m3fn for FP8; 4-bit codes packed two per byte) and ``scale``. Static: ``bits``,
    ``signed``, ``block_size``, ``quantizer``, the original ``shape`` and ``dtype``, and
    ``normalization``: ``"block"`` (``scale`` one absmax per block) or ``"rank1"`` (Li et al.
    2023: ``scale`` the row maxima then the column maxima of the leaf viewed as
    ``(shape[0], rest)``, one float32 vector of ``rows + cols`` entries; ``block_size`` unused).
    """

    def __init__(
        self,
        codes,
        scale,
        bits,
        signed,
        block_size,
        quantizer,
        shape,
        dtype,
        normalization="block",
    ):
        self.codes = codes
        self.scale = scale
        self.bits = bits
        self.signed = signed
        self.block_size = block_size
        self.quantizer = quantizer
        self.shape = tuple(shape)
        self.dtype = jnp.dtype(dtype)
        self.normalization = normalization

    def _meta(self) -> Tuple[Any, ...]:
        return (
            self.bits,
            self.signed,
            self.block_size,
            self.quantizer,
            self.shape,
            self.dtype.name,
            self.normalization,
        )

    def tree_flatten(self):
        return (self.codes, self.scale), self._meta()

    @classmethod
    def tree_unflatten(cls, meta, children):
        return cls(*children, *meta)

    def dequantize(self) -> jax.Array:
        """The float array (in ``dtype``)."""
        if self.normalization == "rank1":
            return dequantize_rank1(self.codes, self.scale, self.bits, self.shape, self.dtype)
        return dequantize(
            self.codes,
            self.scale,
            self.bits,
            self.signed,
            self.shape,
            self.block_size,
            self.dtype,
        )

    def requantize(self, x: jax.Array, key: Optional[jax.Array] = None) -> "QuantizedArray":
        """``x`` (of this shape) quantized with this array's format."""
        if self.normalization == "rank1":
            codes, scale = quantize_rank1(x, self.bits, key)
            return QuantizedArray(codes, scale, *self._meta())
        codes, scale = quantize(x, self.bits, self.signed, self.block_size, self.quantizer, key)
        return QuantizedArray(codes, scale, *self._meta())

    def __repr__(self) -> str:
        return (
            f"QuantizedArray(bits={self.bits!r}, signed={self.signed}, "
            f"block_size={self.block_size}, shape={self.shape}"
            + (", normalization='rank1')" if self.normalization == "rank1" else ")")
        )


class QuantizedState(NamedTuple):
    """State of :func:`quantize_state`: the inner state with its moments as
    :class:`QuantizedArray` s, and the PRNG ``key`` of stochastic rounding (None for nearest)."""

    inner: Any
    key: Any


def _is_q(x: Any) -> bool:
    return isinstance(x, QuantizedArray)


def _field_name(path: Tuple[Any, ...]) -> Optional[str]:
    for k in reversed(path):
        if isinstance(k, jax.tree_util.GetAttrKey):
            return k.name
    return None


def _check_block_size(block_size: Any) -> int:
    if (
        not isinstance(block_size, (int, np.integer))
        or isinstance(block_size, bool)
        or block_size < 2
        or block_size & (block_size - 1)
    ):
        raise ValueError(
            f"Invalid block_size: {block_size!r}; expected a power of two >= 2 (256 for "
            "8-bit and FP8, 128 for 4-bit, as in bitsandbytes and torchao)."
        )
    return int(block_size)


def quantize_state(
    inner: GradientTransformation,
    bits: Bits = 8,
    block_size: Optional[int] = None,
    min_size: int = 4096,
    rounding: str = "nearest",
    signed: Union[None, bool, Callable[[Tuple[Any, ...]], bool]] = None,
    quantizer: Optional[str] = None,
    seed: int = 0,
    non_float: str = "keep",
    normalization: str = "block",
) -> GradientTransformation:
    """Keep ``inner``'s moments block-wise quantized between steps (Dettmers et al. 2022;
    Li et al. 2023): codes plus one float32 scale per block, as bitsandbytes and torchao store
    them.

    A moment is a floating state leaf with the shape of its parameter inside a subtree shaped
    like the parameters (``mu``, ``nu``, ``trace``, ``sum_of_squares``, Adafactor's unfactored
    ``v``, ...), with at least ``min_size`` elements; everything else (step counts, factored
    or preconditioner statistics, small leaves) stays as ``inner`` keeps it. ``update``
    dequantizes the moments, runs ``inner.update`` in float32 (its update uses the new moments
    before they are rounded, as in bitsandbytes and torchao), and quantizes the new moments;
    under ``jit`` XLA fuses the three.

    Args:
      inner: the optimizer whose state is quantized.
      bits: 8 (the dynamic map), 4 (torchao's maps, codes packed two per byte) or ``"fp8"``
        (float8_e4m3fn with a per-block scale ``absmax / 448``).
      block_size: elements per scale, a power of two (default 256, or 128 for 4 bits).
      min_size: leaves with fewer elements stay unquantized (bitsandbytes' ``min_8bit_size``,
        torchao's 4096).
      rounding: ``"nearest"`` or ``"stochastic"`` (unbiased; a PRNG key in the state).
      signed: None chooses per moment: the unsigned map for fields in
        ``NONNEGATIVE_FIELDS`` (``nu``, ``sum_of_squares``, ``v``, ...), the signed one
        otherwise; True / False forces one; a function of the leaf's key path decides.
      quantizer: ``"bnb"`` or ``"torchao"`` (see ``jaxopt_zoo.quant.blockwise``); default
        ``"bnb"`` for 8 bits, ``"torchao"`` for 4 bits. ``"torchao"`` also keeps a leaf whose
        size ``block_size`` does not divide in float32, as torchao does.
      seed: seeds the stochastic-rounding key.
      non_float: ``"keep"`` leaves the moments of integer or boolean parameters as ``inner``
        keeps them (the library's rule: optimizers do not refuse integer leaves,
        RELIABILITY.md); ``"error"`` refuses such parameters at ``init``.
      normalization: ``"block"`` (default; torchao's ``AdamW4bit``): one ``absmax`` per
        block for every moment. ``"rank1"`` (4 bits only; Li et al. 2023): the unsigned moments
        (second moments) of leaves with two or more dimensions are scaled entry by entry by
        ``min(r_i, c_j)``, the smaller of the row's and the column's maximum of the leaf viewed
        as ``(shape[0], prod(shape[1:]))``, and store ``rows + cols`` float32 maxima instead of
        one per block; signed moments (first moments) and 1-D leaves stay block-wise, as in
        the paper. The native CPU kernel (8 bits only) does not run it.

    Returns:
      An ``optax.GradientTransformation`` whose state is a :class:`QuantizedState`.

    Raises:
      ValueError: at construction for bits outside {8, 4, "fp8"}, a block size that is not
        a power of two, an unknown rounding, quantizer, ``non_float`` or ``normalization``,
        ``"rank1"`` with ``bits`` other than 4; at ``init`` for an integer or boolean
        parameter with ``non_float="error"`` (complex parameters are accepted and their moments
        left as they are).

    Example:
      >>> tx = jz.quantize_state(jz.adamw(1e-3), bits=8)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, state, params)
    """
    if bits not in FORMATS or isinstance(bits, bool):
        raise ValueError(f"Invalid bits: {bits!r}; expected one of 8, 4 or 'fp8'.")
    if block_size is None:
        block_size = 128 if bits == 4 else 256
    block_size = _check_block_size(block_size)
    if rounding not in ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r}; expected one of {ROUNDINGS}.")
    if quantizer is None:
        quantizer = "bnb" if bits == 8 else "torchao"
    if quantizer not in QUANTIZERS:
        raise ValueError(f"Invalid quantizer: {quantizer!r}; expected one of {QUANTIZERS}.")
    if not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"Invalid min_size: {min_size!r}; expected an integer >= 0.")
    if not (signed is None or isinstance(signed, bool) or callable(signed)):
        raise ValueError(f"Invalid signed: {signed!r}; expected None, a bool or a function.")
    if non_float not in ("keep", "error"):
        raise ValueError(f"Invalid non_float: {non_float!r}; expected 'keep' or 'error'.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Invalid normalization: {normalization!r}; expected one of {NORMALIZATIONS}."
        )
    if normalization == "rank1" and bits != 4:
        raise ValueError(
            f"Invalid normalization: 'rank1' needs bits=4 (Li et al. 2023), got bits={bits!r}."
        )
    stochastic = rounding == "stochastic"

    def is_signed(path: Tuple[Any, ...]) -> bool:
        if signed is None:
            return _field_name(path) not in NONNEGATIVE_FIELDS
        if isinstance(signed, bool):
            return signed
        return bool(signed(path))

    def eligible(x: Any, p: Any) -> bool:
        size = int(np.prod(np.shape(x)))
        return (
            hasattr(x, "dtype")
            and jnp.issubdtype(x.dtype, jnp.floating)
            and jnp.issubdtype(jnp.result_type(p), jnp.floating)
            and np.shape(x) == np.shape(p)
            and size >= max(min_size, 1)
            and (quantizer == "bnb" or size % block_size == 0)
        )

    def init_fn(params):
        for leaf in jax.tree.leaves(params) if non_float == "error" else ():
            if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact):
                raise ValueError(
                    "quantize_state: parameters must be floating point (complex leaves are "
                    f"kept unquantized), found a leaf of dtype "
                    f"{jnp.asarray(leaf).dtype} and shape {np.shape(leaf)}; quantize only the "
                    "float leaves (optax.masked) or cast them."
                )
        state = inner.init(params)
        p_def = jax.tree.structure(params)
        p_leaves = jax.tree.leaves(params)

        def mirrors(node: Any) -> bool:
            if _is_q(node) or node is None:
                return False
            return bool(jax.tree.structure(node) == p_def)  # type: ignore[operator]

        def convert_subtree(path, node):
            if not mirrors(node):
                return node
            leaves = jax.tree.leaves(node)
            out = []
            for x, p in zip(leaves, p_leaves):
                if eligible(x, p):
                    sgn = is_signed(path)
                    norm = (
                        "rank1" if normalization == "rank1" and not sgn and x.ndim >= 2 else "block"
                    )
                    q = QuantizedArray(
                        None, None, bits, sgn, block_size, quantizer, x.shape, x.dtype, norm
                    )
                    # the barrier keeps XLA from constant-folding the quantization of
                    # constant initial moments (slow to compile)
                    out.append(q.requantize(jax.lax.optimization_barrier(x)))
                else:
                    out.append(x)
            return jax.tree.unflatten(p_def, out)

        converted = jax.tree_util.tree_map_with_path(convert_subtree, state, is_leaf=mirrors)
        key = jax.random.PRNGKey(seed) if stochastic else None
        return QuantizedState(converted, key)

    def update_fn(updates, state, params=None, **extra):
        floats = jax.tree.map(
            lambda x: x.dequantize() if _is_q(x) else x, state.inner, is_leaf=_is_q
        )
        new_updates, new_inner = inner.update(updates, floats, params, **extra)
        key = state.key
        if stochastic:
            key, sub = jax.random.split(key)
            n_q = len([x for x in jax.tree.leaves(state.inner, is_leaf=_is_q) if _is_q(x)])
            subkeys = list(jax.random.split(sub, max(n_q, 1)))
        else:
            subkeys = []

        def requant(old, new):
            if not _is_q(old):
                return new
            return old.requantize(new, subkeys.pop(0) if stochastic else None)

        new_state = jax.tree.map(requant, state.inner, new_inner, is_leaf=_is_q)
        return new_updates, QuantizedState(new_state, key)

    return QuantizedTransformation(
        init_fn,
        update_fn,
        inner,
        QuantConfig(bits, block_size, min_size, rounding, quantizer, normalization),
    )


class QuantConfig(NamedTuple):
    """The format :func:`quantize_state` keeps moments in (read by the native CPU kernel,
    ``jaxopt_zoo.fast.native``, which runs 8-bit, ``"bnb"``, nearest-rounded state)."""

    bits: Bits
    block_size: int
    min_size: int
    rounding: str
    quantizer: str
    normalization: str = "block"


class QuantizedTransformation(GradientTransformation):
    """What :func:`quantize_state` returns: a ``GradientTransformation`` that also carries
    the optimizer it wraps (``.inner``) and the format (``.quant_config``), so that
    ``jz.fused_apply(jz.fuse(tx))`` can run the step in the native kernel."""

    inner: GradientTransformation
    quant_config: QuantConfig

    def __new__(cls, init: Any, update: Any, inner: Any, quant_config: QuantConfig):
        self = super().__new__(cls, init, update)
        self.inner, self.quant_config = inner, quant_config
        return self

    def native_fused_step(
        self, params: Any, state: Any, grads: Any, fallback: Callable
    ) -> Optional[Tuple[Any, Any]]:
        """The step in the native 8-bit kernel, or None (``jaxopt_zoo.quant.native``)."""
        from jaxopt_zoo.quant.native import fused_step

        return fused_step(self, params, state, grads, fallback, QuantizedArray, QuantizedState)

    def __getnewargs__(self):  # copy and pickle keep what the native path reads
        return (self.init, self.update, self.inner, self.quant_config)

    def _replace(self, **kw):  # new functions: no longer the quantized transformation
        return GradientTransformation(**{**self._asdict(), **kw})


def quantized_leaves(state: Any):
    """The :class:`QuantizedArray` s in a state (for inspection and tests)."""
    return [x for x in jax.tree.leaves(state, is_leaf=_is_q) if _is_q(x)]


__all__ = [
    "NONNEGATIVE_FIELDS",
    "QuantConfig",
    "QuantizedTransformation",
    "QuantizedArray",
    "QuantizedState",
    "num_blocks",
    "quantize_state",
    "quantized_leaves",
]
