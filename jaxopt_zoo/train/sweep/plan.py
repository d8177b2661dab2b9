"""How a sweep's grid is split into chunks that fit in memory, and the programs compiled for them.

The vmapped step and evaluation are compiled ahead of time for the chunk size and XLA's memory
analysis of the compiled programs (arguments + outputs + temporaries - aliased donations) gives
the bytes they need; the data sets, shared by every configuration, are counted once and the rest
is divided by the chunk size to get the bytes per configuration. When the whole grid does not fit
in the budget, the chunk size becomes the number of configurations that do and the programs are
compiled again for it. Chunks have equal sizes (the last is padded) so that one compile serves
them all.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.train.steps import Metrics

__all__ = ["Chunking", "available_memory", "plan_chunks"]


class Chunking(NamedTuple):
    """How a sweep was split.

    Attributes:
      configs: configurations in the grid.
      chunks: compiled-program runs, one after the other.
      size: configurations per chunk (the last chunk is padded to it).
      bytes_per_config: the estimate that set the size (None when not measured).
      budget: the memory budget in bytes.
      forced: the size came from ``chunk_size``, not from memory.
    """

    configs: int
    chunks: int
    size: int
    bytes_per_config: Optional[float]
    budget: int
    forced: bool

    def describe(self) -> str:
        """One line, e.g. ``"12 configs in 3 chunks of 4 (chunk size set)"``.

        Example:
          >>> Chunking(12, 3, 4, 2.0e6, 2**30, True).describe()
          '12 configs in 3 chunks of 4 (chunk size set)'
          >>> Chunking(8, 1, 8, 1.0e6, 2**30, False).describe()
          '8 configs in 1 chunk'
        """
        if self.chunks == 1:
            return f"{self.configs} configs in 1 chunk"
        s = f"{self.configs} configs in {self.chunks} chunks of {self.size}"
        pad = self.chunks * self.size - self.configs
        notes = []
        if pad:
            notes.append(f"the last padded with {pad}")
        if self.forced:
            notes.append("chunk size set")
        elif self.bytes_per_config is not None:
            notes.append(
                f"about {self.bytes_per_config / 2**20:.0f} MiB per config, "
                f"budget {self.budget / 2**20:.0f} MiB"
            )
        return s + (f" ({'; '.join(notes)})" if notes else "")


def available_memory() -> int:
    """Free bytes of the default device: ``bytes_limit - bytes_in_use`` on an accelerator,
    the host's ``MemAvailable`` on CPU.

    Example:
      >>> available_memory() > 0
      True
    """
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 -- some backends do not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _equal_chunks(configs: int, max_size: int) -> Tuple[int, int]:
    chunks = -(-configs // max(1, max_size))
    return chunks, -(-configs // chunks)


def _nbytes(tree: Any) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _program_bytes(compiled: Any) -> Optional[int]:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 -- not every backend reports it
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


class Compiled(NamedTuple):
    """The programs of one chunk size."""

    init: Any
    step: Any
    evaluate: Any
    bytes: Optional[int]


def _compile(fns: Any, workload: Any, names: Sequence[str], size: int) -> Compiled:
    f32 = jax.ShapeDtypeStruct((size,), jnp.float32)
    hp = {n: f32 for n in names}
    rngs = jax.eval_shape(lambda: jnp.stack([jax.random.PRNGKey(0)] * size))
    params, opt_state = jax.eval_shape(fns.init, rngs, hp)
    aux = jax.eval_shape(lambda r: workload.epoch_aux(r, 0), rngs)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    totals = Metrics(f32, f32, f32)  # type: ignore[arg-type]  # abstract: shapes only
    step = fns.step.lower(
        params, opt_state, totals, hp, rngs, aux, workload.train_data, scalar, scalar
    ).compile()
    evaluate = None
    if fns.evaluate is not None:
        evaluate = fns.evaluate.lower(params, *workload.val_data).compile()
    parts = [_program_bytes(step)] + ([] if evaluate is None else [_program_bytes(evaluate)])
    total: Optional[int] = None
    if all(p is not None for p in parts):
        total = sum(p for p in parts if p is not None)
    if total is None:  # no analysis: the state, twice (gradients, new state), as a floor
        total = 2 * _nbytes((params, opt_state)) + _nbytes(workload.train_data)
    return Compiled(fns.init, step, evaluate, total)  # init: compiled once, at its first call


def plan_chunks(
    fns: Any,
    workload: Any,
    *,
    names: Sequence[str],
    num_configs: int,
    chunk_size: Optional[int],
    budget: int,
) -> Tuple[Chunking, Compiled, float]:
    """Choose the chunk size and compile for it: ``(Chunking, Compiled, compile seconds)``.

    ``chunk_size`` forces the size; otherwise the whole grid is tried first and, when its
    programs need more than ``budget`` bytes, as many configurations as fit. Internal to
    :func:`jaxopt_zoo.train.sweep.sweep`.
    """
    t0 = time.perf_counter()
    chunks, size = _equal_chunks(num_configs, min(chunk_size or num_configs, num_configs))
    compiled = _compile(fns, workload, names, size)
    shared = _nbytes(workload.train_data) + _nbytes(workload.val_data)
    per_config = None if compiled.bytes is None else max(1.0, (compiled.bytes - shared) / size)
    need = compiled.bytes
    fits = need is None or need <= budget or size == 1
    if chunk_size is None and per_config is not None and not fits:
        fit = max(1, math.floor((budget - shared) / per_config))
        chunks, size = _equal_chunks(num_configs, fit)
        compiled = _compile(fns, workload, names, size)
    chunking = Chunking(num_configs, chunks, size, per_config, int(budget), chunk_size is not None)
    return chunking, compiled, time.perf_counter() - t0
