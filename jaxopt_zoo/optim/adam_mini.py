"""Adam-mini: one second moment per parameter block (Zhang et al. 2024)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    bias_correction,
    check_betas,
    check_int,
    check_same_structure,
    ema_update,
    increment,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import scaled_with_decay

RULES = ("adam_mini", "pytorch_optimizer")
LAYOUTS = ("flax", "torch")
KINDS = ("element", "tensor", "rows", "columns", "heads")


class MiniBlocks(NamedTuple):
    """How one leaf is split into blocks that share a second moment: the leaf viewed
    (row-major reshape) as ``shape``, one second moment per index of the axes not in
    ``axes`` (the mean of ``|g|^2`` over ``axes``). ``axes=()`` is Adam (one per element);
    every axis is one for the whole tensor."""

    shape: tuple[int, ...]
    axes: tuple[int, ...]


Partition = Callable[[str, Any], Union[MiniBlocks, str, None]]


class ScaleByAdamMiniState(NamedTuple):
    """State of :func:`scale_by_adam_mini`: step ``count``, first moment ``mu`` (one per
    element) and second moment ``nu`` (one per block: each leaf's ``MiniBlocks.shape`` with
    the averaged axes kept as size 1)."""

    count: StepCount
    mu: Any
    nu: Any


def path_name(path: tuple) -> str:
    """A key path as a dotted name, as PyTorch names parameters (``params.block_0.mlp.kernel``)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


# The authors' name sets (adam-mini 1.1.1), matched as substrings of the lower-cased name.
_EMBED = ("embed", "embd", "wte")
_OUTPUT = ("lm_head", "output", "final_layer")
_QK = ("k_proj", "q_proj", "wq", "wk", "query", "key")
_V = ("v_proj", "wv", "value")
_PROJ = ("o_proj", "wo", "attn.proj")
_MLP = ("feed_forward", "linear", "mlp")
# pytorch_optimizer 4.1.0's AdamMini (case-sensitive substrings).
_PO_ELEMENT = ("embed", "embd", "wte", "lm_head.weight", "output.weight")
_PO_QK = ("k_proj.weight", "q_proj.weight", "wq.weight", "wk.weight")
_PO_QKV = ("attn.attn.weight", "attn.qkv.weight")


def _has(name: str, words: tuple[str, ...]) -> bool:
    return any(w in name for w in words)


def rule_kind(name: str, rules: str = "adam_mini") -> str:
    """The block kind that ``rules`` give the parameter named ``name``: ``"element"``,
    ``"tensor"``, ``"rows"`` (embedding rows), ``"columns"`` (output neurons), ``"heads"``
    or ``"qkv"`` (pytorch_optimizer's fused attention)."""
    if rules == "pytorch_optimizer":
        if _has(name, _PO_ELEMENT):
            return "element"
        if _has(name, _PO_QK):
            return "heads"
        if _has(name, _PO_QKV):
            return "qkv"
        return "tensor"
    low = name.lower()
    if "bias" in low:
        return "element"
    if _has(low, _QK):
        return "heads"
    if _has(low, _EMBED):
        return "rows"
    if _has(low, _OUTPUT + _V + _MLP + _PROJ):
        return "columns"
    return "tensor"


def decays(name: str, rules: str = "adam_mini") -> bool:
    """Whether ``rules`` apply weight decay to the parameter named ``name``: the authors
    exempt names holding ``norm``, ``ln`` or ``bias`` (lower-cased), pytorch_optimizer
    those holding ``norm`` or ``ln_f``."""
    if rules == "pytorch_optimizer":
        return not ("norm" in name or "ln_f" in name)
    low = name.lower()
    return not ("norm" in low or "ln" in low or "bias" in low)


def _blocks_of(
    kind: str, shape: tuple[int, ...], layout: str, dim: int, n_heads: int, n_kv_heads: int, name
) -> MiniBlocks:
    ndim = len(shape)
    size = math.prod(shape)
    every = tuple(range(ndim))
    if kind == "element" or size == 0:  # an empty leaf has no mean: nothing to share
        return MiniBlocks(shape, ())
    if kind == "tensor" or ndim < 2:  # (a scalar is one element and one tensor)
        return MiniBlocks(shape, every)
    torch_like = layout == "torch"
    if kind == "rows" or (kind == "columns" and torch_like):
        # One per index of axis 0: a token, or a PyTorch (out, in, ...) output neuron.
        return MiniBlocks(shape, every[1:])
    if kind == "columns":
        return MiniBlocks(shape, every[:-1])
    if kind == "heads":
        if torch_like:
            numel = dim * dim // n_heads
            if size % numel:
                raise ValueError(
                    f"adam_mini: {name!r} of shape {shape} does not split into heads of "
                    f"dim * dim // n_heads = {numel} elements; pass the model's dim and "
                    "n_heads, or a partition"
                )
            return MiniBlocks((size // numel, numel), (1,))
        head_dim = dim // n_heads
        if (size // shape[0]) % head_dim:
            raise ValueError(
                f"adam_mini: {name!r} of shape {shape} does not split into heads of "
                f"dim // n_heads = {head_dim} output features; pass the model's dim and "
                "n_heads, or a partition"
            )
        return MiniBlocks((shape[0], size // shape[0] // head_dim, head_dim), (0, 2))
    if kind == "qkv":
        groups = n_kv_heads
        per = n_heads // n_kv_heads + 2
        if torch_like:
            return MiniBlocks((groups, per, size // (groups * per)), (2,))
        return MiniBlocks((shape[0], groups, per, size // (shape[0] * groups * per)), (0, 3))
    raise ValueError(f"adam_mini: unknown block kind {kind!r} for {name!r}; expected {KINDS}")


def mini_partition(
    params: Any,
    *,
    dim: int = 2048,
    n_heads: int = 32,
    n_kv_heads: Optional[int] = None,
    layout: str = "flax",
    rules: str = "adam_mini",
    partition: Optional[Partition] = None,
) -> Any:
    """Each leaf's :class:`MiniBlocks` (a tree like ``params``) by the rules of
    :func:`adam_mini`; shapes alone are read, so ``params`` may be ``ShapeDtypeStruct``s."""
    kv = n_heads if n_kv_heads is None else n_kv_heads

    def one(path, leaf):
        name = path_name(path)
        shape = tuple(leaf.shape)
        got = partition(name, leaf) if partition is not None else None
        if isinstance(got, MiniBlocks):
            if math.prod(got.shape) != math.prod(shape) or any(
                not 0 <= a < len(got.shape) for a in got.axes
            ):
                raise ValueError(
                    f"adam_mini: partition gave {got} for {name!r} of shape {shape}; expected "
                    "a view with as many elements and axes within it"
                )
            return MiniBlocks(tuple(got.shape), tuple(sorted(set(got.axes))))
        kind = rule_kind(name, rules) if got is None else got
        if kind not in KINDS + ("qkv",):
            raise ValueError(
                f"adam_mini: partition gave {got!r} for {name!r}; expected a MiniBlocks, "
                f"None or one of {KINDS}"
            )
        return _blocks_of(kind, shape, layout, dim, n_heads, kv, name)

    return jax.tree_util.tree_map_with_path(one, params)


def _check_options(dim, n_heads, n_kv_heads, layout, rules, partition) -> None:
    check_int("dim", dim, low=1)
    check_int("n_heads", n_heads, low=1)
    if n_kv_heads is not None:
        check_int("n_kv_heads", n_kv_heads, low=1)
        if n_heads % n_kv_heads:
            raise ValueError(
                f"Invalid n_kv_heads: {n_kv_heads}. Expected a divisor of n_heads={n_heads}."
            )
    if dim % n_heads:
        raise ValueError(f"Invalid dim: {dim}. Expected a multiple of n_heads={n_heads}.")
    if layout not in LAYOUTS:
        raise ValueError(f"Invalid layout: {layout!r}. Expected one of {LAYOUTS}.")
    if rules not in RULES:
        raise ValueError(f"Invalid rules: {rules!r}. Expected one of {RULES}.")
    if partition is not None and not callable(partition):
        raise TypeError(
            f"Invalid partition: {partition!r}. Expected a function (path, leaf) -> "
            "MiniBlocks, a block kind or None."
        )


def scale_by_adam_mini(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    dim: int = 2048,
    n_heads: int = 32,
    n_kv_heads: Optional[int] = None,
    layout: str = "flax",
    rules: str = "adam_mini",
    partition: Optional[Partition] = None,
) -> GradientTransformation:
    """``m_hat / (sqrt(v_hat) + eps)`` with ``v`` shared within each block.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the block second moments, in [0, 1).
      eps: added to ``sqrt(v_hat)``.
      dim, n_heads, n_kv_heads, layout, rules, partition: the blocks, as in
        :func:`adam_mini`.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.scale_by_adam_mini(), jz.scale_by_learning_rate(1e-3))
      >>> params = {"mlp": {"kernel": jnp.ones((3, 4))}}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    check_betas(b1, b2, eps)
    _check_options(dim, n_heads, n_kv_heads, layout, rules, partition)
    split = functools.partial(
        mini_partition, dim=dim, n_heads=n_heads, n_kv_heads=n_kv_heads, layout=layout,
        rules=rules, partition=partition,
    )  # fmt: skip

    def init_fn(params):
        blocks = split(params)
        mu = jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params)
        nu = jax.tree.map(
            lambda p, b: jnp.zeros(
                tuple(1 if i in b.axes else n for i, n in enumerate(b.shape)), stat_dtype(p.dtype)
            ),
            params,
            blocks,
        )
        return ScaleByAdamMiniState(count=zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_adam_mini")
        blocks = split(updates)
        mu = ema_update(updates, state.mu, b1)

        def second(g, v, b):
            sq = abs_sq_in(g, v.dtype).reshape(b.shape)
            if b.axes:
                sq = jnp.mean(sq, axis=b.axes, keepdims=True)
            return (b2 * v + (1 - b2) * sq).astype(v.dtype)

        nu = jax.tree.map(second, updates, state.nu, blocks)
        count = increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)

        def out(m, v, b, g):
            den = jnp.sqrt(v) + eps
            return (m.reshape(b.shape) / den).reshape(g.shape).astype(g.dtype)

        new = jax.tree.map(out, mu_hat, nu_hat, blocks, updates)
        return new, ScaleByAdamMiniState(count=count, mu=mu, nu=nu)

    return describe(GradientTransformation(init_fn, update_fn), BlockSpec("scale_by_adam_mini"))


def mini_decay_mask(rules: str = "adam_mini") -> Callable[[Any], Any]:
    """The weight-decay mask of ``rules`` as a function of the params (see :func:`decays`)."""

    def mask(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: decays(path_name(p), rules), params)

    return mask


def adam_mini(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    *,
    dim: int = 2048,
    n_heads: int = 32,
    n_kv_heads: Optional[int] = None,
    layout: str = "flax",
    rules: str = "adam_mini",
    partition: Optional[Partition] = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    """Adam-mini (Zhang et al. 2024): Adam with one second moment per parameter block.

    ::

        v_B,t = b2 * v_B,t-1 + (1 - b2) * mean_{i in B} g_i^2      (one per block B)
        m_t   = b1 * m_t-1 + (1 - b1) * g_t                        (one per element)
        p_t   = p_t-1 - lr * (m_t / (1 - b1^t) / (sqrt(v_B,t / (1 - b2^t)) + eps)
                              + weight_decay * p_t-1)

    The blocks come from each leaf's dotted key path (``params.block_0.mlp.kernel``) by the
    authors' rules (``adam-mini`` 1.1.1, lower-cased substrings, first match wins): ``bias``:
    one per element; ``q_proj``/``k_proj``/``wq``/``wk``/``query``/``key``: one per attention
    head (``dim // n_heads`` output features); ``embed``/``embd``/``wte``: one per embedding
    row (token); ``lm_head``/``output``/``final_layer``, values (``v_proj``/``wv``/``value``),
    ``o_proj``/``wo``/``attn.proj`` and MLPs (``feed_forward``/``linear``/``mlp``): one per
    output neuron; everything else (norms, unnamed leaves): one for the whole tensor. Weight
    decay skips names holding ``norm``, ``ln`` or ``bias``.

    ``layout="flax"`` reads a matrix as ``(in, out)`` (Flax's ``Dense`` kernel: a neuron is
    a column); ``layout="torch"`` as PyTorch's ``(out, in)`` (a neuron is a row). The authors'
    code fails on a matched name with other than two axes: here a vector gets one second
    moment for the whole tensor, and a conv kernel one per output channel (the last axis of
    Flax's ``(kh, kw, in, out)``, the first of PyTorch's ``(out, in, kh, kw)``).

    ``rules="pytorch_optimizer"`` reproduces ``pytorch_optimizer.AdamMini`` (4.1.0), which
    follows an earlier version of the authors' code: per element for ``embed``/``embd``/
    ``wte``/``lm_head.weight``/``output.weight``; per head only for ``{q,k}_proj.weight``/
    ``wq.weight``/``wk.weight``; per (query group, q/k/v) for fused ``attn.qkv.weight``/
    ``attn.attn.weight``; one per tensor for everything else (values, MLPs, biases); decay
    skipped for ``norm`` and ``ln_f`` (case-sensitive). It also keeps float32 state for any
    parameter dtype. Bias correction and ``eps`` (outside the root) are the same in both.

    Args:
      learning_rate: a number or a schedule of the step count.
      b1, b2, eps: as in Adam.
      weight_decay: decoupled decay rate (multiplied by the learning rate); the authors'
        default 0.
      dim: the model width (``head_numel = dim * dim // n_heads`` in PyTorch layout).
      n_heads: attention heads (``dim // n_heads`` features per head).
      n_kv_heads: key/value heads (query groups); used by pytorch_optimizer's fused qkv.
      layout: ``"flax"`` (``(in, out)`` kernels) or ``"torch"`` (``(out, in)`` weights).
      rules: ``"adam_mini"`` (the authors') or ``"pytorch_optimizer"``.
      partition: ``partition(name, leaf)`` returning a :class:`MiniBlocks`, a kind
        (``"element"``, ``"tensor"``, ``"rows"``, ``"columns"``, ``"heads"``) or None (the
        rules decide); ``name`` is the dotted key path.
      mask: which parameters decay (default: the rules' names).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.adam_mini(1e-3, dim=4, n_heads=2)
      >>> params = {"attn": {"query": {"kernel": jnp.ones((4, 4))}}}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> state[0].nu["attn"]["query"]["kernel"].shape  # one per head
      (1, 2, 1)
    """
    scaler = scale_by_adam_mini(
        b1, b2, eps, dim=dim, n_heads=n_heads, n_kv_heads=n_kv_heads, layout=layout,
        rules=rules, partition=partition,
    )  # fmt: skip
    return scaled_with_decay(
        scaler, learning_rate, weight_decay, mini_decay_mask(rules) if mask is None else mask
    )
