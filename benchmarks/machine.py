"""What a benchmark number needs next to it: the machine, its load, and interleaved timing.

Every script in ``benchmarks/`` that compares variants uses this module to

- record the machine block: the CPU model, vendor, family/model, logical CPUs and the ISA
  flags that decide vectorized speed (AVX2, AVX-512, AVX-512 BF16, AMX...), read from
  ``/proc/cpuinfo`` (``platform`` fallbacks elsewhere), and ``/proc/loadavg`` (or
  ``os.getloadavg``) before and after the measurement, with a timestamp;
- judge whether the machine was quiet: the 1-minute load average at the start *and* at the
  end must be at most ``0.75 x cores`` (1.5 on 2 cores; ``--busy-load`` overrides);
- time the compared variants interleaved (:func:`interleave`: round-robin, the order rotated
  each round, A B C / B C A / C A B ...), so that a change in load hits every variant alike,
  and report per variant the median, min, max and spread;
- mark every headline ratio measured on a busy machine (:meth:`Machine.headline`:
  ``"1.55x  [not a result: load 3.2 > 1.5 on 2 cores]"``), and with ``--require-quiet``
  refuse to start, or to write results, on a busy machine (exit code 3, the reason printed).

Scripts call :func:`add_arguments` on their parser, :func:`start` before measuring,
``m.headline(...)`` around each printed ratio and :meth:`Machine.finish` (which applies
``--require-quiet``) before writing a result file, whose ``"machine"`` entry is
:meth:`Machine.block`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

#: Busy when the 1-minute load average exceeds this many runnable tasks per logical CPU.
BUSY_PER_CORE = 0.75
#: Exit code of a run refused by ``--require-quiet``.
REFUSED = 3
#: The ISA flags (as /proc/cpuinfo spells them) that matter for these benchmarks.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    # aarch64 ("Features"): NEON/ASIMD, SVE, bf16
    "asimd",
    "sve",
    "sve2",
    "bf16",
)
LoadAvg = Tuple[float, float, float]


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """The CPU block from ``/proc/cpuinfo``-formatted text (x86 or aarch64)."""
    first: Dict[str, str] = {}
    processors = 0
    flags: set = set()
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key == "processor" and value.isdigit():
            processors += 1
        if key in ("flags", "Features"):
            flags.update(value.split())
        first.setdefault(key, value)
    model = first.get("model name") or first.get("Hardware") or first.get("Processor")
    if model is None and "CPU implementer" in first:
        model = f"ARM implementer {first['CPU implementer']} part {first.get('CPU part', '?')}"
    return {
        "model": model or "unknown",
        "vendor": first.get("vendor_id"),
        "family": first.get("cpu family"),
        "model_number": first.get("model"),
        "mhz": float(first["cpu MHz"]) if "cpu MHz" in first else None,
        "cache": first.get("cache size"),
        "cores": processors or None,
        "flags": sorted(f for f in ISA_FLAGS if f in flags),
        "flags_checked": list(ISA_FLAGS) if flags else [],
        "source": "/proc/cpuinfo",
    }


def cpu_info(path: str = "/proc/cpuinfo", text: Optional[str] = None) -> Dict[str, Any]:
    """:func:`parse_cpuinfo` of ``path``; off Linux, what ``platform`` and ``os`` know (no
    ISA flags: ``flags_checked`` is then empty, meaning "not known", not "absent")."""
    if text is None and os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if text:
        info = parse_cpuinfo(text)
        info["cores"] = info["cores"] or os.cpu_count()
        return info
    return {
        "model": platform.processor() or platform.machine() or "unknown",
        "vendor": None,
        "family": None,
        "model_number": None,
        "mhz": None,
        "cache": None,
        "cores": os.cpu_count(),
        "flags": [],
        "flags_checked": [],
        "source": f"platform ({platform.system()} {platform.machine()})",
    }


def read_loadavg(path: str = "/proc/loadavg") -> Optional[LoadAvg]:
    """The 1-, 5- and 15-minute load averages, or None where the system has none."""
    try:
        with open(path) as f:
            a, b, c = (float(x) for x in f.read().split()[:3])
        return (a, b, c)
    except (OSError, ValueError):
        pass
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) and its waited-for children have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def busy_threshold(cores: Optional[int], per_core: float = BUSY_PER_CORE) -> float:
    return per_core * (cores or 1)


def verdict(load: Optional[LoadAvg], cores: Optional[int], threshold: float) -> Optional[str]:
    """None when quiet, else why not (the marker text)."""
    if load is None:
        return "not a result: load average unknown on this system"
    if load[0] > threshold:
        return f"not a result: load {load[0]:.1f} > {threshold:g} on {cores} cores"
    return None


class Machine:
    """The machine block of one benchmark run; ``loadavg`` and ``cpuinfo_text`` are for tests."""

    def __init__(
        self,
        threshold: Optional[float] = None,
        require_quiet: bool = False,
        loadavg: Callable[[], Optional[LoadAvg]] = read_loadavg,
        cpuinfo_text: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        own_cpu: Callable[[], float] = own_cpu_seconds,
    ) -> None:
        self.cpu = cpu_info(text=cpuinfo_text)
        self.cores = self.cpu["cores"]
        self.threshold = busy_threshold(self.cores) if threshold is None else threshold
        self.require_quiet = require_quiet
        self._loadavg, self._clock, self._own_cpu = loadavg, clock, own_cpu
        self.started = clock()
        self._own_start = own_cpu()
        self.load_before = loadavg()
        self.load_after: Optional[LoadAvg] = None
        self.own_load = 0.0  # the cores this run kept busy on average (see busy_reason)
        self.ended: Optional[float] = None

    # -- the verdict ------------------------------------------------------------------
    def busy_reason(self, now: bool = True) -> Optional[str]:
        """Why the numbers are not a result (load too high at the start, or at the end once
        this run's own share is taken out: with ``now``, the end is read now), or None when
        the machine was quiet throughout.

        The load average counts this run's own busy threads: a benchmark that keeps both
        cores of this machine busy for a few minutes ends near 2 with nothing else
        running, and used to mark itself "not a result" (plain_bench: 0.62 before, 2.27
        after). The end's load is therefore judged less ``own_load``: the cores this
        process kept busy on average (its CPU seconds / the wall time) times
        ``1 - exp(-wall / 60 s)``, the share of the 1-minute average (an exponential one)
        that a run of that length has filled; what remains is other processes' load."""
        if now:
            self.load_after, self.ended = self._loadavg(), self._clock()
            wall = max(self.ended - self.started, 1e-9)
            rate = max(self._own_cpu() - self._own_start, 0.0) / wall
            self.own_load = rate * (1.0 - math.exp(-wall / 60.0))
        reason = verdict(self.load_before, self.cores, self.threshold)
        if reason:
            return reason
        if self.load_after is None:
            return verdict(None, self.cores, self.threshold)
        others = tuple(max(x - self.own_load, 0.0) for x in self.load_after)
        reason = verdict(others, self.cores, self.threshold)  # type: ignore[arg-type]
        if reason:
            return reason.replace("not a result: load", "not a result: others' load", 1)
        return None

    def quiet(self) -> bool:
        return self.busy_reason() is None

    def headline(self, text: str) -> str:
        """``text``, marked when the machine was busy at the start or is now."""
        reason = self.busy_reason()
        return text if reason is None else f"{text}  [{reason}]"

    def finish(self) -> Dict[str, Any]:
        """Read the end load and return the block; with ``require_quiet``, exit with
        :data:`REFUSED` (and say why) instead of letting a busy run write its results."""
        block = self.block()
        if self.require_quiet and not block["quiet"]:
            refuse(f"not writing results: {block['busy']} (--require-quiet)")
        return block

    # -- the record -------------------------------------------------------------------
    def block(self) -> Dict[str, Any]:
        reason = self.busy_reason()
        stamp = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(  # noqa: E731
            timespec="seconds"
        )
        return {
            "cpu": self.cpu["model"],
            "vendor": self.cpu["vendor"],
            "family": self.cpu["family"],
            "model_number": self.cpu["model_number"],
            "mhz": self.cpu["mhz"],
            "cache": self.cpu["cache"],
            "cores": self.cores,
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "isa_flags": self.cpu["flags"],
            "isa_flags_checked": self.cpu["flags_checked"],
            "cpu_source": self.cpu["source"],
            "load_before": self.load_before,
            "load_after": self.load_after,
            "own_load": round(self.own_load, 2),
            "busy_threshold": self.threshold,
            "quiet": reason is None,
            "busy": reason,
            "started": stamp(self.started),
            "ended": stamp(self.ended or self._clock()),
            "python": platform.python_version(),
        }

    def summary(self) -> str:
        c = self.cpu
        arch = ""
        if c["vendor"]:
            arch = f" ({c['vendor']} family {c['family']} model {c['model_number']})"
        if c["flags_checked"]:
            absent = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f not in c["flags"]]
            isa = " ".join(c["flags"]) or "none of those checked"
            isa += f" (no {', '.join(absent)})" if absent else ""
        else:
            isa = "unknown (no /proc/cpuinfo)"
        load = "unknown" if self.load_before is None else f"{self.load_before[0]:.2f}"
        state = verdict(self.load_before, self.cores, self.threshold) or (
            f"quiet: <= {self.threshold:g} on {self.cores} cores"
        )
        return f"# machine: {c['model']}{arch}, {self.cores} cores, ISA {isa}; load {load} " + (
            f"[{state}]"
        )


def add_arguments(ap: Any) -> None:
    """``--require-quiet`` and ``--busy-load`` on an argparse parser."""
    ap.add_argument(
        "--require-quiet",
        action="store_true",
        help="refuse to run or write results when the 1-minute load average is above "
        "--busy-load at the start or the end",
    )
    ap.add_argument(
        "--busy-load",
        type=float,
        default=None,
        help=f"load average above which the machine is busy (default {BUSY_PER_CORE} x cores)",
    )


def refuse(message: str) -> None:
    print(f"refused: {message}", file=sys.stderr)
    raise SystemExit(REFUSED)


def start(args: Any = None, **kw: Any) -> Machine:
    """A :class:`Machine` from the parsed ``--require-quiet`` / ``--busy-load``, its summary
    printed; refuses at once when ``--require-quiet`` and the machine is already busy."""
    m = Machine(
        threshold=getattr(args, "busy_load", None),
        require_quiet=bool(getattr(args, "require_quiet", False)),
        **kw,
    )
    print(m.summary(), flush=True)
    reason = verdict(m.load_before, m.cores, m.threshold)
    if m.require_quiet and reason:
        refuse(f"not starting: {reason} (--require-quiet)")
    return m


# -- interleaved timing -----------------------------------------------------------------
def rotated_rounds(names: Sequence[Any], rounds: int) -> Iterator[List[Any]]:
    """The order of each round: the rows of a balanced Latin square (Williams 1949), cycled.

    Every variant comes first in turn, and over one cycle (n rounds for an even number n of
    variants, 2n for an odd one) every variant runs right after every other one equally
    often. Plain rotation (A B C, B C A, C A B) gives every variant the same predecessor in
    every round, so one slowed by what ran just before it was slowed every time: measured,
    every JAX run right after scipy's L-BFGS-B (its Python loop) took 160-170 ms against
    130-140 ms after anything else, and the variant rotated behind scipy lost 25% in every
    round.
    """
    n = len(names)
    if n == 0:
        for _ in range(rounds):
            yield []
        return
    first = [0]
    for j in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        first.append((j + 1) // 2 if j % 2 else n - j // 2)
    rows = [[names[(i + r) % n] for i in first] for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    for r in range(rounds):
        yield list(rows[r % len(rows)])


def stats(times: Sequence[float]) -> Dict[str, Any]:
    med = statistics.median(times)
    return {
        "median": med,
        "min": min(times),
        "max": max(times),
        "spread": (max(times) - min(times)) / med if med else float("nan"),
        "times": list(times),
    }


def interleave(
    variants: Mapping[str, Callable[[], Any]],
    rounds: int,
    per_call: int = 1,
    pause: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Dict[str, Dict[str, Any]]:
    """Time each variant ``rounds`` times, round-robin in the orders of :func:`rotated_rounds`.

    ``variants[name]()`` runs ``per_call`` units of work (and waits for them); the result is,
    per name, :func:`stats` of the milliseconds per unit. ``pause`` seconds of sleep before
    each call let another framework's spinning worker threads go idle.
    """
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for order in rotated_rounds(list(variants), rounds):
        for name in order:
            if pause:
                time.sleep(pause)
            t0 = clock()
            variants[name]()
            times[name].append((clock() - t0) / per_call * 1e3)
    return {k: stats(v) for k, v in times.items()}


def interleave_repeated(
    variants: Mapping[str, Callable[[], Any]], rounds: int, inner: int = 1, pause: float = 0.0
) -> Dict[str, Dict[str, Any]]:
    """:func:`interleave` of ``variants[name]()`` run ``inner`` times per call: per name,
    :func:`stats` of the milliseconds per run."""

    def repeated(f: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(inner):
                f()

        return run

    return interleave(
        {k: repeated(f) for k, f in variants.items()}, rounds, per_call=inner, pause=pause
    )
