"""Adam, AdamW and Lion with 8-bit, 4-bit and FP8 state: the names users know from
bitsandbytes (``Adam8bit``, ``AdamW8bit``, ``Lion8bit``) and torchao (``AdamW4bit``,
``AdamWFp8``), built as ``quantize_state(adamw(...))`` (``jaxopt_zoo.quant``, docs/low-bit.md).

Where the references differ (tests/test_lowbit.py measures each):

- 8 bits, ``scheme="bnb"`` (default) quantizes as bitsandbytes' CPU source does
  (``x / absmax``, nearest map value, halfway down, any leaf of ``min_size`` elements or more);
  ``scheme="torchao"`` as torchao's ``AdamW8bit`` (``x / max(absmax, 1e-12)``, halfway up, and
  only leaves whose size the block size divides). Both use the same maps; the quantizers pick
  different codes on a fraction of entries and the trajectories drift apart from there, as
  any two 8-bit runs with different roundings do.
- bitsandbytes' ``Adam8bit`` decays weights decoupled (``p *= 1 - lr * wd``), like AdamW;
  torchao's ``Adam8bit`` adds ``wd * p`` to the gradient (L2). ``adam_8bit`` follows
  bitsandbytes.
- torchao computes ``1 - b^t`` in float32 from a float32 step tensor and the update with
  ``lerp``; bitsandbytes and we in float64 scalars and ``b * m + (1 - b) * g``: rounding-level
  differences.
"""

from __future__ import annotations

from typing import Optional

from jaxopt_zoo.core import GradientTransformation, MaskOrFn, Scalar, ScalarOrSchedule
from jaxopt_zoo.optim.adam import adamw
from jaxopt_zoo.optim.lion import lion
from jaxopt_zoo.quant.state import quantize_state

SCHEMES = ("bnb", "torchao")


def _scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"Invalid scheme: {scheme!r}; expected one of {SCHEMES}.")
    return scheme


def adamw_8bit(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    mask: MaskOrFn = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    rounding: str = "nearest",
    scheme: str = "bnb",
    seed: int = 0,
) -> GradientTransformation:
    """AdamW with 8-bit block-wise state (Dettmers et al. 2022, arXiv:2110.02861):
    bitsandbytes' ``AdamW8bit``.

    ``adamw`` (``m_t``, ``v_t`` and the update as there) with ``m`` stored in the signed and
    ``v`` in the unsigned dynamic map, one float32 ``absmax`` per ``block_size`` elements:
    about 2.03 bytes of state per parameter instead of 8. Each step dequantizes, updates in
    float32, takes the new ``absmax`` and quantizes again; the parameter update uses the float32
    moments before rounding.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2: decay rates of the first and second moments, in [0, 1).
      eps: added outside the square root.
      weight_decay: decoupled decay rate (multiplied by the learning rate).
      mask: which parameters decay (a tree of booleans or a function of the params).
      block_size: elements per scale (a power of two).
      min_size: smaller leaves keep float32 moments (bitsandbytes' ``min_8bit_size``).
      rounding: ``"nearest"`` or ``"stochastic"``.
      scheme: ``"bnb"`` (bitsandbytes) or ``"torchao"`` (torchao's ``AdamW8bit``: its rounding
        and its rule keeping leaves that ``block_size`` does not divide in float32).
      seed: the stochastic-rounding key's seed.

    Returns:
      An ``optax.GradientTransformation`` (``quantize_state(adamw(...), bits=8)``).

    Example:
      >>> tx = jz.adamw_8bit(1e-3)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, tx.init(params), params)
    """
    return quantize_state(
        adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask),
        bits=8,
        block_size=block_size,
        min_size=min_size,
        rounding=rounding,
        quantizer=_scheme(scheme),
        seed=seed,
    )


def adam_8bit(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    rounding: str = "nearest",
    scheme: str = "bnb",
    seed: int = 0,
) -> GradientTransformation:
    """Adam with 8-bit block-wise state: bitsandbytes' ``Adam8bit``.

    :func:`adamw_8bit` with ``weight_decay=0`` by default; a non-zero decay is decoupled, as in
    bitsandbytes (torchao's ``Adam8bit`` adds it to the gradient instead).

    Args:
      learning_rate, b1, b2, eps, weight_decay, mask, block_size, min_size, rounding, scheme:
        as in :func:`adamw_8bit`, and so is seed.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adam_8bit(1e-3)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, tx.init(params), params)
    """
    return adamw_8bit(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        mask,
        block_size=block_size,
        min_size=min_size,
        rounding=rounding,
        scheme=scheme,
        seed=seed,
    )


def adamw_4bit(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    mask: MaskOrFn = None,
    *,
    block_size: int = 128,
    min_size: int = 4096,
    rounding: str = "nearest",
    seed: int = 0,
    normalization: str = "block",
) -> GradientTransformation:
    """AdamW with 4-bit block-wise state: torchao's ``AdamW4bit``.

    ``m`` in torchao's signed 4-bit dynamic map (3 exponent bits), ``v`` in its linear map
    ``k / 16, k = 1..16`` (no zero, so no division by ``eps`` alone), both with one float32
    ``absmax`` per 128 elements and codes packed two per byte: about 1.06 bytes per parameter.
    Li et al. (2023, arXiv:2309.01507) quantize the second moment with rank-1 normalization
    (the scale of an entry is the smaller of its row's and its column's maximum) and blocks of
    128 for the first moment only; torchao, and this by default, use block-wise ``absmax``
    for both; ``normalization="rank1"`` turns on the paper's second moment.

    Args:
      learning_rate, b1, b2, eps, weight_decay, mask, min_size, rounding, seed: as in
        :func:`adamw_8bit`.
      block_size: elements per scale (a power of two; default 128).
      normalization: ``"block"`` (torchao) or ``"rank1"`` (Li et al. 2023, for the second
        moment of leaves with two or more dimensions; see :func:`quantize_state`).

    Returns:
      An ``optax.GradientTransformation`` (``quantize_state(adamw(...), bits=4)``).

    Example:
      >>> tx = jz.adamw_4bit(1e-3)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, tx.init(params), params)
    """
    return quantize_state(
        adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask),
        bits=4,
        block_size=block_size,
        min_size=min_size,
        rounding=rounding,
        quantizer="torchao",
        seed=seed,
        normalization=normalization,
    )


def adamw_fp8(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    mask: MaskOrFn = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    """AdamW with FP8 (e4m3) state: torchao's ``AdamWFp8``.

    Both moments stored as ``float8_e4m3fn`` of ``x / scale`` with ``scale = absmax / 448``
    per block of 256 (round to nearest even): about 2.03 bytes per parameter.

    Args:
      learning_rate, b1, b2, eps, weight_decay, mask, block_size, min_size, rounding, seed:
        as in :func:`adamw_8bit`.

    Returns:
      An ``optax.GradientTransformation`` (``quantize_state(adamw(...), bits="fp8")``).

    Example:
      >>> tx = jz.adamw_fp8(1e-3)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, tx.init(params), params)
    """
    return quantize_state(
        adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask),
        bits="fp8",
        block_size=block_size,
        min_size=min_size,
        rounding=rounding,
        quantizer="torchao",
        seed=seed,
    )


def lion_8bit(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
    rounding: str = "nearest",
    seed: int = 0,
    mu_dtype: Optional[str] = None,
) -> GradientTransformation:
    """Lion with an 8-bit momentum (signed dynamic map): bitsandbytes' ``Lion8bit``.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1: interpolation between momentum and gradient inside the sign, in [0, 1).
      b2: decay rate of the momentum, in [0, 1).
      weight_decay: decoupled decay rate (bitsandbytes' default 0).
      mask, block_size, min_size, rounding, seed: as in :func:`adamw_8bit`.
      mu_dtype: the momentum's dtype between dequantize and quantize (default the
        parameter's).

    Returns:
      An ``optax.GradientTransformation`` (``quantize_state(lion(...), bits=8)``).

    Example:
      >>> tx = jz.lion_8bit(1e-4)
      >>> params = {"w": jnp.ones((64, 64))}
      >>> updates, state = tx.update({"w": jnp.ones((64, 64))}, tx.init(params), params)
    """
    return quantize_state(
        lion(learning_rate, b1, b2, mu_dtype, weight_decay=weight_decay, mask=mask),
        bits=8,
        block_size=block_size,
        min_size=min_size,
        rounding=rounding,
        quantizer="bnb",
        seed=seed,
    )
