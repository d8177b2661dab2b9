"""One-pass optimizer steps on CPU: a small C++ kernel called from XLA (FFI custom call).

XLA:CPU writes every stored elementwise result in its own loop, so an Adam step reads the
new moments back from memory to update the parameters: 40 bytes per float32 parameter
where 28 must move (see BENCHMARKS.md). ``fused_apply(fuse(tx))`` on float32
:class:`~jaxopt_zoo.FlatParams` hands the whole step to ``csrc/step_kernel.cc`` instead when
every block of ``tx`` carries a :class:`~jaxopt_zoo.fast.spec.BlockSpec` naming a kernel
stage (``jaxopt_zoo.fast.stages``): it reads every buffer once and writes it once, on all
of XLA's CPU threads.

Blocks with a stage (as built by jaxopt_zoo's constructors, alone or in ``chain``):
``scale_by_adam`` (Adam, NAdam or AMSGrad; no ``mu_dtype``), ``scale_by_adamax``, ``trace``
(momentum, Nesterov, dampening), ``ema``, ``scale_by_lion``, ``scale_by_sign``,
``scale_by_rms`` (not centered or bias-corrected), ``scale_by_rss`` (AdaGrad),
``scale_by_belief`` (AdaBelief), ``scale_by_acprop``, ``scale_by_adan``,
``scale_by_optimistic_gradient``, ``scale_by_simplified_ademamix``, ``scale_by_rprop``,
``scale_by_madgrad``, ``scale_by_cocob``, ``add_decayed_weights`` and ``proximal_decay``
(unmasked), ``scale``, ``scale_by_schedule`` and ``scale_by_learning_rate``. So ``sgd``,
``momentum``, ``nesterov``, ``adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``,
``adamax``, ``lion``, ``rmsprop``, ``adagrad``, ``adabelief``, ``acprop``, ``adan``,
``sign_sgd``, ``signum``, ``optimistic_gradient_descent``, ``optimistic_adam(_v2)``,
``simplified_ademamix``, ``rprop``, ``madgrad``, ``cocob`` and chains of these blocks
qualify; anything else (optax blocks, ``masked``, ``clip_by_global_norm``,
``inject_hyperparams``, state or parameters other than float32, GPU/TPU) runs the ordinary
XLA path with the same results (:func:`explain` says which part kept it there).
Hyperparameters may be arrays or schedules: the kernel gets their current values.

The kernel is compiled with the system C++ compiler (``$CXX``, else ``c++``) on first use and
cached (``$JAXOPT_ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxopt_zoo`` or
``~/.cache/jaxopt_zoo``). Without a compiler, or with ``JAXOPT_ZOO_NATIVE=0``, everything
runs through XLA; :func:`status` says which and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.fast.layout import FlatParams
from jaxopt_zoo.fast.spec import BlockSpec, leaf_specs, restack, spec_of
from jaxopt_zoo.fast.stages import HEADER as STAGES_HEADER
from jaxopt_zoo.fast.stages import STAGES

__all__ = ["TARGET", "available", "explain", "fused_step", "status"]

TARGET = "jaxopt_zoo_step"
QUANT_TARGET = "jaxopt_zoo_quant_step"  # the same stages over 8-bit block-wise state
SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "step_kernel.cc"


def explain(tx: Any) -> Optional[str]:
    """Why ``tx`` cannot run as kernel stages, or None if it can (dtypes and platform
    permitting): names the first part that carries no ``BlockSpec`` or has no stage.

    Only the structure of ``tx`` is read: nothing is built, compiled or run, and the
    answer does not depend on whether the kernel is :func:`available`.

    Args:
      tx: a transformation, typically the one passed to ``jaxopt_zoo.fuse``.

    Returns:
      None when every block of ``tx`` (chains opened) has a kernel stage; otherwise a
      one-line reason, prefixed by the names of the chains that lead to the part.

    Example:
      >>> import jax.numpy as jnp, optax, jaxopt_zoo as jz
      >>> explain(jz.adam(1e-3)) is None
      True
      >>> explain(jz.adam(1e-3, mu_dtype=jnp.bfloat16))
      'chain: scale_by_adam in this configuration has no kernel stage'
      >>> explain(optax.adam(1e-3))
      "GradientTransformationExtraArgs made outside jaxopt_zoo's blocks and chain ..."
    """
    spec = spec_of(tx)
    if spec is None:
        return (
            f"{type(tx).__name__} made outside jaxopt_zoo's blocks and chain (e.g. by "
            "optax.chain, inject_hyperparams or masked) carries no BlockSpec"
        )
    for part in spec.parts:
        why = explain(part)
        if why is not None:
            return f"{spec.name}: {why}"
    if not spec.parts and spec.stage is None:
        return f"{spec.name} in this configuration has no kernel stage"
    return None


def _stages(tx: Any, state: Any) -> Optional[List[Tuple[BlockSpec, Any]]]:
    blocks = leaf_specs(tx, state)
    if blocks is None or any(spec.stage is None for spec, _ in blocks):
        return None
    return blocks


def _next_count(count: jax.Array) -> jax.Array:
    """count + 1, saturating at int32 max: ``jaxopt_zoo.core.increment`` (a test checks)."""
    limit = jnp.iinfo(jnp.int32).max
    return jnp.where(count < limit, count + 1, limit).astype(jnp.int32)


def _rebuild(state: Any, spec: BlockSpec, new: Sequence[Any]) -> Any:
    fields = dict(zip(spec.buffers, new))
    if spec.counter in getattr(state, "_fields", ()):
        fields[spec.counter] = _next_count(getattr(state, spec.counter))
    return state._replace(**fields)


# --------------------------------------------------------------------------- #
# Building and registering the kernel
# --------------------------------------------------------------------------- #

_lock = threading.Lock()
_status: dict = {}


def _cache_dir() -> Path:
    if os.environ.get("JAXOPT_ZOO_CACHE_DIR"):
        return Path(os.environ["JAXOPT_ZOO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxopt_zoo"


def _library_path(compiler: str) -> Path:
    import jaxlib

    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        STAGES_HEADER.read_bytes(),
        jaxlib.__version__.encode(),
        compiler.encode(),
        platform.machine().encode(),
        platform.python_version().encode(),
    ):
        key.update(part)
    return _cache_dir() / f"step_kernel-{key.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [
        compiler,
        "-O3",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-fno-math-errno",
        "-isystem",
        jax.ffi.include_dir(),
        str(SOURCE),
        "-o",
        tmp,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: a half-written library is never loaded
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def status() -> dict:
    """Whether the one-pass CPU kernel can be used, and why (not).

    The first call builds the kernel with the system C++ compiler (``$CXX``, else ``c++``)
    unless a cached library exists (see the module docstring), loads it and registers it
    with XLA; later calls return the recorded answer. Nothing raises: a missing compiler or
    a failed build is reported in ``reason`` and the fast path then uses XLA.

    Returns:
      A new dict ``{"available": bool, "reason": str, "library": path or None}``:
      ``reason`` is ``"one-pass kernel loaded"``, ``"disabled by JAXOPT_ZOO_NATIVE=0"`` or
      the error that made the kernel unavailable; ``library`` is the loaded shared
      library's path.

    Example:
      >>> info = status()
      >>> sorted(info)
      ['available', 'library', 'reason']
      >>> info["available"] == (info["library"] is not None)
      True
    """
    with _lock:
        if _status:
            return dict(_status)
        flag = os.environ.get("JAXOPT_ZOO_NATIVE", "1").strip().lower()
        if flag in ("0", "false", "no", "off"):
            _status.update(available=False, library=None, reason="disabled by JAXOPT_ZOO_NATIVE=0")
            return dict(_status)
        compiler = os.environ.get("CXX") or "c++"
        try:
            if shutil.which(compiler) is None:
                raise RuntimeError(f"no C++ compiler found (looked for `{compiler}`; set CXX)")
            lib_path = _library_path(compiler)
            if not lib_path.exists():
                _compile(compiler, lib_path)
            try:
                lib = ctypes.cdll.LoadLibrary(str(lib_path))
            except OSError:  # a damaged cached library: build it again, once
                _compile(compiler, lib_path)
                lib = ctypes.cdll.LoadLibrary(str(lib_path))
            jax.ffi.register_ffi_target(
                TARGET, jax.ffi.pycapsule(lib.JaxoptZooStep), platform="cpu"
            )
            jax.ffi.register_ffi_target(
                QUANT_TARGET, jax.ffi.pycapsule(lib.JaxoptZooQuantStep), platform="cpu"
            )
            _status.update(available=True, library=str(lib_path), reason="one-pass kernel loaded")
        except Exception as e:  # noqa: BLE001 -- any failure means: use XLA
            _status.update(
                available=False, library=None, reason=f"native kernel unavailable, using XLA: {e}"
            )
        return dict(_status)


def available() -> bool:
    """Whether the one-pass CPU kernel is built and registered: ``status()["available"]``.

    Builds the kernel on the first call (see :func:`status`, which also says why not).

    Returns:
      True when ``fused_apply`` can run float32 ``FlatParams`` steps through the kernel on
      CPU; False when everything runs through XLA.

    Example:
      >>> available() == status()["available"]
      True
    """
    return status()["available"]


# --------------------------------------------------------------------------- #
# The step
# --------------------------------------------------------------------------- #


def _call(
    ops: Sequence[int], scalars: jax.Array, p: jax.Array, g: jax.Array, bufs: Sequence[jax.Array]
) -> List[jax.Array]:
    n = len(bufs)
    out_types = [jax.ShapeDtypeStruct(p.shape, p.dtype)] * (1 + n)
    aliases = {1: 0, **{3 + i: 1 + i for i in range(n)}}
    call = jax.ffi.ffi_call(
        TARGET, out_types, input_output_aliases=aliases, vmap_method="sequential"
    )
    return list(call(scalars, p, g, *bufs, ops=np.asarray(ops, np.int64)))


# 8-bit state (jaxopt_zoo.quant): the kernel's state kinds and its code-map tables.
KIND_F32, KIND_SIGNED8, KIND_UNSIGNED8 = 0, 1, 2
CELL_SHIFT = 16  # csrc/step_kernel.cc: kCellShift


def cell_counts(table: np.ndarray) -> Optional[np.ndarray]:
    """Per float cell (a float32's sign, exponent and top 7 mantissa bits: its bits >> 16),
    the number of values of the ascending float32 ``table`` below the cell's smallest float
    (0 for the cells of NaNs), or None when some cell holds more than one table value. Then
    the number of values below a float ``q`` is this count for ``q``'s cell plus one
    comparison with the next value: how the kernel and ``jaxopt_zoo.quant``'s XLA quantizer
    find a code."""
    table = np.asarray(table, np.float32)
    cells = np.arange(1 << (32 - CELL_SHIFT), dtype=np.uint32) << np.uint32(CELL_SHIFT)
    fill = np.uint32((1 << CELL_SHIFT) - 1)
    negative = (cells >> np.uint32(31)) == 1
    low = np.where(negative, cells | fill, cells).view(np.float32)
    high = np.where(negative, cells, cells | fill).view(np.float32)
    base = np.where(np.isnan(low), 0, np.searchsorted(table, low, side="left"))
    inside = np.searchsorted(table, high, side="right") - base
    if np.any(inside[~(np.isnan(low) | np.isnan(high))] > 1):
        return None
    return base


@functools.lru_cache(maxsize=16)
def _map_tables(value_bytes: bytes) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    value = np.frombuffer(value_bytes, np.float32)
    if value.shape != (256,) or np.any(np.diff(value) < 0):
        raise ValueError("map_tables: expected an ascending map of 256 float32 values.")
    mid = ((value[:-1] + value[1:]) / np.float32(2)).astype(np.float32)
    start = cell_counts(mid)
    if start is None:
        raise ValueError("map_tables: the map is too dense for the kernel's float cells.")
    return value, np.append(mid, np.float32(np.inf)), start.astype(np.uint8)


def map_tables(value: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's tables for an ascending 256-entry code map: the values, the midpoints
    ``(value[j] + value[j + 1]) / 2`` in float32 (padded with +inf) and the count of
    midpoints below each float cell (:func:`cell_counts`), where the kernel starts counting
    the midpoints below ``q``; built once per map."""
    return _map_tables(np.ascontiguousarray(value, np.float32).tobytes())


def quant_call(
    ops: Sequence[int],
    kinds: Sequence[int],
    block_size: int,
    scalars: jax.Array,
    p: jax.Array,
    g: jax.Array,
    signed_map: np.ndarray,
    unsigned_map: np.ndarray,
    bufs: Sequence[Any],
) -> List[Any]:
    """One call of the 8-bit kernel on a flat float32 buffer ``p``: ``bufs`` holds, per
    state buffer of the ``ops`` stages, a float32 array (``KIND_F32``) or a ``(codes,
    absmax)`` pair (``KIND_SIGNED8`` / ``KIND_UNSIGNED8``: uint8 codes like ``p``, float32
    absmax per ``block_size`` elements). Returns the new ``p`` and the new ``bufs`` in the same
    form (aliased to the inputs, so a donated step updates in place)."""
    if not available():
        raise RuntimeError(f"quant_call: {status()['reason']}")
    tables = [jnp.asarray(t) for m in (signed_map, unsigned_map) for t in map_tables(m)]
    flat: List[jax.Array] = []
    for k, b in zip(kinds, bufs):
        flat.extend([b] if k == KIND_F32 else list(b))
    out_types = [jax.ShapeDtypeStruct(p.shape, p.dtype)] + [
        jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flat
    ]
    aliases = {1: 0, **{9 + i: 1 + i for i in range(len(flat))}}
    call = jax.ffi.ffi_call(
        QUANT_TARGET, out_types, input_output_aliases=aliases, vmap_method="sequential"
    )
    outs = list(
        call(
            scalars,
            p,
            g,
            *tables,
            *flat,
            ops=np.asarray(ops, np.int64),
            kinds=np.asarray(kinds, np.int64),
            block_size=np.int64(block_size),
        )
    )
    new_p, rest = outs[0], outs[1:]
    new_bufs: List[Any] = []
    for k in kinds:
        if k == KIND_F32:
            new_bufs.append(rest.pop(0))
        else:
            new_bufs.append((rest.pop(0), rest.pop(0)))
    return [new_p, *new_bufs]


def staged_step(
    tx: Any, state: Any, params: FlatParams, grads: FlatParams, call: Callable
) -> Tuple[FlatParams, Any]:
    """The frame of a kernel step (traced inside the CPU branch): the stages of ``tx`` over
    ``state``, their scalars for this step, ``call(key, scalars, params_k, grads_k,
    buffers_k) -> (new params_k, new buffers_k)`` for each flat buffer ``key``, and the state
    rebuilt around the new buffers with its counters advanced."""
    blocks = _stages(tx, state)
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
    for k in sorted(params.buffers):
        p_k, bufs_k = call(
            k, scalars, params.buffers[k], grads.buffers[k], [b.buffers[k] for b in buffers]
        )
        new_p[k] = p_k
        for d, o in zip(new_b, bufs_k):
            d[k] = o
    flat_b = [FlatParams(d, b.layout) for d, b in zip(new_b, buffers)]
    new_states, i = [], 0
    for spec, s in blocks:
        new_states.append(_rebuild(s, spec, flat_b[i : i + len(spec.buffers)]))
        i += len(spec.buffers)
    return FlatParams(new_p, params.layout), restack(tx, state, new_states)


def fused_step(
    tx: Any, params: Any, state: Any, grads: Any, fallback: Callable
) -> Optional[Tuple[Any, Any]]:
    """One step of ``tx`` (update and apply) through the kernel, or None when it cannot.

    The building block of ``jaxopt_zoo.fused_apply``, which most code should call instead.
    The step is built for whichever platform the computation runs on: on CPU the kernel,
    elsewhere ``fallback``. It is pure and traceable (call it inside ``jax.jit``).

    Args:
      tx: the optimizer (not fused), a chain of blocks with kernel stages (see
        :func:`explain`).
      params: the parameters, a float32 :class:`~jaxopt_zoo.fast.FlatParams`.
      state: ``tx``'s state over ``params`` (``tx.init(params)``); its buffers must be
        float32 ``FlatParams`` of the same buffers.
      grads: the gradients, a float32 ``FlatParams`` of ``params``' layout.
      fallback: ``fallback(params, state, grads) -> (new params, new state)``, the same
        step in XLA, run on platforms other than CPU.

    Returns:
      ``(new params, new state)``, or None when ``tx`` has a block without a stage, an
      argument is not a float32 ``FlatParams`` of one layout, or the kernel is not
      :func:`available`; then the caller runs the step in XLA.

    Example:
      >>> import jax.numpy as jnp, optax, jaxopt_zoo as jz, numpy as np
      >>> tx = jz.adam(0.1)
      >>> params = jz.FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
      >>> grads = jz.FlatParams.from_tree({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
      >>> def xla(p, s, g):
      ...     u, s = tx.update(g, s, p)
      ...     return optax.apply_updates(p, u), s
      >>> out = fused_step(tx, params, tx.init(params), grads, fallback=xla)
      >>> new_params, new_state = out if out is not None else xla(params, tx.init(params), grads)
      >>> print(np.asarray(new_params.tree()["b"]).round(3))
      [-0.1 -0.1 -0.1]
    """
    if not (isinstance(params, FlatParams) and isinstance(grads, FlatParams)):
        return None
    hook = getattr(tx, "native_fused_step", None)
    if hook is not None:  # quantize_state(...): jaxopt_zoo.quant.native
        return hook(params, state, grads, fallback)
    keys = sorted(params.buffers)
    if not keys or sorted(grads.buffers) != keys or params.layout != grads.layout:
        return None
    blocks = _stages(tx, state)
    if blocks is None:
        return None
    buffers = [getattr(s, f) for spec, s in blocks for f in spec.buffers]
    for x in [params, grads] + buffers:
        if not (
            isinstance(x, FlatParams)
            and sorted(x.buffers) == keys
            and all(jnp.result_type(v) == jnp.float32 for v in x.buffers.values())
        ):
            return None
    if not available():
        return None

    ops = [STAGES[spec.stage].opcode for spec, _ in blocks if spec.stage is not None]

    def kernel(params, state, grads):
        def call(key, scalars, p, g, bufs):
            outs = _call(ops, scalars, p, g, bufs)
            return outs[0], outs[1:]

        return staged_step(tx, state, params, grads, call)

    return jax.lax.platform_dependent(params, state, grads, cpu=kernel, default=fallback)
