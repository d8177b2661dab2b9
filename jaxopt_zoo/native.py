"""One-pass optimizer steps on CPU: a small C++ kernel called from XLA (FFI custom call).

XLA:CPU writes every stored elementwise result in its own loop, so an Adam step reads the
new moments back from memory to update the parameters: 40 bytes per float32 parameter
where 28 must move (see BENCHMARKS.md). ``fused_apply(fuse(tx))`` on float32
:class:`~jaxopt_zoo.FlatParams` hands the whole step to ``csrc/step_kernel.cc`` instead when
``tx`` is a chain of the blocks listed below: it reads every buffer once and writes it once,
on all of XLA's CPU threads.

Blocks with a one-pass kernel (as built by jaxopt_zoo's constructors and ``chain``):
``scale_by_adam`` (Adam, NAdam or AMSGrad; no ``mu_dtype``), ``scale_by_adamax``,
``trace`` (momentum, Nesterov,
dampening), ``scale_by_lion``, ``scale_by_rms`` (not centered or bias-corrected),
``scale_by_rss`` (AdaGrad), ``add_decayed_weights`` (unmasked), ``scale``,
``scale_by_schedule`` and ``scale_by_learning_rate``. So ``sgd``, ``momentum``,
``nesterov``, ``adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``, ``adamax``, ``lion``,
``rmsprop``, ``adagrad`` and chains of these blocks qualify; anything else (optax blocks, ``masked``, ``clip_by_global_norm``,
``inject_hyperparams``, other dtypes, GPU/TPU) runs the ordinary XLA path with the same
results. Hyperparameters may be arrays or schedules: the kernel gets their current values.

The kernel is compiled with the system C++ compiler (``$CXX``, else ``c++``) on first use and
cached (``$JAXOPT_ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxopt_zoo`` or
``~/.cache/jaxopt_zoo``). Without a compiler, or with ``JAXOPT_ZOO_NATIVE=0``, everything
runs through XLA; :func:`status` says which and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "jaxopt_zoo_step"
SOURCE = Path(__file__).with_name("csrc") / "step_kernel.cc"

# Opcodes of csrc/step_kernel.cc, with the number of scalars and state buffers each takes.
ADAM, TRACE, LION, RMS, RSS, DECAY, SCALE, NADAM, AMSGRAD, ADAMAX = range(1, 11)
ARITY = {ADAM: (8, 2), TRACE: (4, 1), LION: (4, 1), RMS: (4, 1), RSS: (2, 1),
         DECAY: (1, 0), SCALE: (1, 0), NADAM: (9, 2), AMSGRAD: (8, 3), ADAMAX: (5, 2)}


class Stage(NamedTuple):
    """One block of a chain as a kernel stage.

    ``scalars`` are the stage's scalar inputs this step (numbers or traced values),
    ``buffers`` its state entries shaped like the parameters (read, then rewritten), and
    ``rebuild(new_buffers)`` the block's next state.
    """

    op: int
    scalars: Tuple[Any, ...]
    buffers: Tuple[Any, ...]
    rebuild: Callable[[Sequence[Any]], Any]


def with_kernel(tx: Any, describe: Callable[[Any], Optional[Stage]]) -> Any:
    """Mark ``tx`` as a kernel stage: ``describe(state)`` gives the :class:`Stage` of a step
    (or None when this configuration has no kernel). Returns ``tx``."""
    tx.update.kernel_stage = describe
    return tx


def f32(x: Any) -> jax.Array:
    """``x`` as a float32 array: the kernel's scalars are computed in float32."""
    return jnp.asarray(x, jnp.float32)


def stages_of(tx: Any, state: Any) -> Optional[List[Stage]]:
    """The stages of ``tx`` for this state, or None if some block has no kernel."""
    parts = getattr(tx.update, "chain_parts", None)
    if parts is not None:
        if not isinstance(state, tuple) or len(state) != len(parts):
            return None
        out: List[Stage] = []
        for sub, s in zip(parts, state):
            got = stages_of(sub, s)
            if got is None:
                return None
            out += got
        return out
    describe = getattr(tx.update, "kernel_stage", None)
    if describe is None:
        return None
    stage = describe(state)
    return None if stage is None else [stage]


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
    for part in (SOURCE.read_bytes(), jaxlib.__version__.encode(), compiler.encode(),
                 platform.machine().encode(), platform.python_version().encode()):
        key.update(part)
    return _cache_dir() / f"step_kernel-{key.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno",
           "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: a half-written library is never loaded
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def status() -> dict:
    """``{"available": bool, "reason": str, "library": path or None}``; builds and registers
    the kernel on the first call."""
    with _lock:
        if _status:
            return dict(_status)
        flag = os.environ.get("JAXOPT_ZOO_NATIVE", "1").strip().lower()
        if flag in ("0", "false", "no", "off"):
            _status.update(available=False, library=None,
                           reason="disabled by JAXOPT_ZOO_NATIVE=0")
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
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JaxoptZooStep),
                                        platform="cpu")
            _status.update(available=True, library=str(lib_path),
                           reason="one-pass kernel loaded")
        except Exception as e:  # noqa: BLE001 -- any failure means: use XLA
            _status.update(available=False, library=None,
                           reason=f"native kernel unavailable, using XLA: {e}")
        return dict(_status)


def available() -> bool:
    """Whether the one-pass CPU kernel is built and registered (see :func:`status`)."""
    return status()["available"]


# --------------------------------------------------------------------------- #
# The step
# --------------------------------------------------------------------------- #

def _call(ops: Sequence[int], scalars: jax.Array, p: jax.Array, g: jax.Array,
          bufs: Sequence[jax.Array]) -> List[jax.Array]:
    n = len(bufs)
    out_types = [jax.ShapeDtypeStruct(p.shape, p.dtype)] * (1 + n)
    aliases = {1: 0, **{3 + i: 1 + i for i in range(n)}}
    call = jax.ffi.ffi_call(TARGET, out_types, input_output_aliases=aliases,
                            vmap_method="sequential")
    return list(call(scalars, p, g, *bufs, ops=np.asarray(ops, np.int64)))


def fused_step(tx: Any, params: Any, state: Any, grads: Any, fallback: Callable
               ) -> Optional[Tuple[Any, Any]]:
    """``(new params, new state)`` of ``tx`` on float32 FlatParams through the kernel (on
    CPU; ``fallback(params, state, grads)`` on other platforms), or None when ``tx``,
    the dtypes or the platform's toolchain do not allow it."""
    from jaxopt_zoo.fused import FlatParams

    if not (isinstance(params, FlatParams) and isinstance(grads, FlatParams)):
        return None
    keys = sorted(params.buffers)
    if not keys or sorted(grads.buffers) != keys or params.layout != grads.layout:
        return None
    stages = stages_of(tx, state)
    if stages is None:
        return None
    buffers = [b for st in stages for b in st.buffers]
    for x in [params, grads] + buffers:
        if not (isinstance(x, FlatParams) and sorted(x.buffers) == keys
                and all(jnp.result_type(v) == jnp.float32 for v in x.buffers.values())):
            return None
    for st in stages:
        n_sc, n_buf = ARITY[st.op]
        if len(st.scalars) != n_sc or len(st.buffers) != n_buf:
            raise AssertionError(f"kernel stage {st.op}: {len(st.scalars)} scalars and "
                                 f"{len(st.buffers)} buffers, expected {n_sc} and {n_buf}")
    if not available():
        return None

    ops = [st.op for st in stages]

    def kernel(params, state, grads):
        stages = stages_of(tx, state)  # this branch's own view of the state
        buffers = [b for st in stages for b in st.buffers]
        scalars = jnp.stack([f32(s).reshape(()) for st in stages for s in st.scalars])
        new_p, new_b = {}, [dict() for _ in buffers]
        for k in keys:
            outs = _call(ops, scalars, params.buffers[k], grads.buffers[k],
                         [b.buffers[k] for b in buffers])
            new_p[k] = outs[0]
            for d, o in zip(new_b, outs[1:]):
                d[k] = o
        flat_b = [FlatParams(d, b.layout) for d, b in zip(new_b, buffers)]
        new_states, i = [], 0
        for st in stages:
            new_states.append(st.rebuild(flat_b[i: i + len(st.buffers)]))
            i += len(st.buffers)
        return FlatParams(new_p, params.layout), _restack(tx, state, new_states)

    return jax.lax.platform_dependent(params, state, grads, cpu=kernel, default=fallback)


def _restack(tx: Any, state: Any, new_states: List[Any]) -> Any:
    """Put the stages' new states back in the nesting of ``tx``'s state."""
    it = iter(new_states)

    def build(t, s):
        parts = getattr(t.update, "chain_parts", None)
        if parts is None:
            return next(it)
        return tuple(build(sub, ss) for sub, ss in zip(parts, s))

    return build(tx, state)
