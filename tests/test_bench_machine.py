"""benchmarks/machine.py, what every benchmark records next to its numbers: the CPU block
parsed from /proc/cpuinfo-like text (and the fallback without one), the quiet verdict at its
threshold, the interleaved (rotated round-robin) timer, and the marker on a headline ratio
measured on a busy machine. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "bench_machine", os.path.join(ROOT, "benchmarks", "machine.py")
)
assert _spec and _spec.loader
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2599.998
cache size\t: 1024 KB
flags\t\t: fpu sse sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
"""
SAPPHIRE = EPYC.replace("AMD EPYC 9B14", "Intel(R) Xeon(R) Platinum 8481C").replace(
    "avx512_vnni", "avx512_vnni amx_bf16 amx_tile amx_int8"
)
ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes sve bf16
CPU implementer\t: 0x41
CPU part\t: 0xd40

processor\t: 1
Features\t: fp asimd evtstrm aes sve bf16
"""


def test_the_cpu_block_comes_from_cpuinfo():
    c = machine.parse_cpuinfo(EPYC)
    assert c["model"] == "AMD EPYC 9B14" and c["vendor"] == "AuthenticAMD"
    assert (c["family"], c["model_number"], c["cores"]) == ("25", "17", 2)
    assert c["mhz"] == pytest.approx(2599.998)
    assert set(c["flags"]) == {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"} | {
        "avx512_bf16",
        "avx512_vnni",
    }
    assert "amx_bf16" not in c["flags"] and "amx_bf16" in c["flags_checked"]
    x = machine.parse_cpuinfo(SAPPHIRE)
    assert {"amx_bf16", "amx_tile", "amx_int8"} <= set(x["flags"]) and "Xeon" in x["model"]
    a = machine.parse_cpuinfo(ARM)
    assert a["model"] == "ARM implementer 0x41 part 0xd40" and a["cores"] == 2
    assert set(a["flags"]) == {"asimd", "sve", "bf16"}


def test_without_cpuinfo_the_block_falls_back_to_platform(monkeypatch, tmp_path):
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    monkeypatch.setattr(machine.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 10)
    c = machine.cpu_info(path=str(tmp_path / "no-such-file"))
    assert c["model"] == "arm" and c["cores"] == 10 and "Darwin" in c["source"]
    assert c["flags"] == [] and c["flags_checked"] == []  # unknown, not "absent"
    m = machine.Machine(loadavg=lambda: (1.0, 1.0, 1.0), cpuinfo_text="")
    assert "unknown (no /proc/cpuinfo)" in m.summary()
    # no load average at all (Windows): never called quiet
    m = machine.Machine(loadavg=lambda: None, cpuinfo_text=EPYC)
    assert not m.quiet() and "unknown" in m.headline("1.5x")


def test_the_loadavg_reader(tmp_path):
    p = tmp_path / "loadavg"
    p.write_text("3.21 2.00 1.50 4/600 1234\n")
    assert machine.read_loadavg(str(p)) == (3.21, 2.0, 1.5)


@pytest.mark.parametrize(
    "before, after, threshold, quiet",
    [
        (1.5, 1.5, None, True),  # 0.75 x 2 cores: at the threshold is still quiet
        (1.51, 0.2, None, False),  # busy at the start
        (0.2, 1.6, None, False),  # busy at the end
        (2.5, 2.5, 3.0, True),  # --busy-load 3
    ],
)
def test_the_quiet_verdict_follows_the_threshold(before, after, threshold, quiet):
    loads = iter([(before, 0.0, 0.0), (after, 0.0, 0.0)])
    last = [None]

    def reading():
        last[0] = next(loads, last[0])
        return last[0]

    m = machine.Machine(threshold=threshold, loadavg=reading, cpuinfo_text=EPYC)
    assert m.threshold == (1.5 if threshold is None else threshold)
    block = m.block()
    assert block["quiet"] is quiet
    assert block["load_before"][0] == before and block["load_after"][0] == after
    assert block["cpu"] == "AMD EPYC 9B14" and block["cores"] == 2
    assert "avx512_bf16" in block["isa_flags"] and "amx_bf16" not in block["isa_flags"]
    json.dumps(block)  # goes into result files as is


def test_a_headline_on_a_busy_machine_is_marked():
    load = [(0.3, 0.3, 0.3)]
    m = machine.Machine(loadavg=lambda: load[0], cpuinfo_text=EPYC)
    assert m.headline("optax / ours = 3.14x") == "optax / ours = 3.14x"
    load[0] = (3.2, 3.0, 2.0)  # the neighbours arrive during the run
    marked = m.headline("optax / ours = 3.14x")
    assert marked == "optax / ours = 3.14x  [not a result: others' load 3.2 > 1.5 on 2 cores]"
    # busy at the start stays marked even if the load has dropped by the end
    load[0] = (3.2, 3.0, 2.0)
    m = machine.Machine(loadavg=lambda: load[0], cpuinfo_text=EPYC)
    load[0] = (0.1, 0.1, 0.1)
    assert "not a result: load 3.2 > 1.5" in m.headline("2x")


def test_the_runs_own_load_is_not_counted_against_it():
    # A 5-minute run that kept both cores busy ends with the load average near 2 and
    # nothing else running: that is its own load, not a neighbour's.
    now, cpu = [0.0], [0.0]
    load = [(0.6, 0.6, 0.6)]
    m = machine.Machine(
        loadavg=lambda: load[0],
        cpuinfo_text=EPYC,
        clock=lambda: now[0],
        own_cpu=lambda: cpu[0],
    )
    now[0], cpu[0], load[0] = 300.0, 600.0, (2.27, 1.8, 1.2)
    assert m.busy_reason() is None
    assert m.block()["own_load"] == pytest.approx(2.0 * (1 - math.exp(-5)), abs=0.01)
    # the same end load from a run that used one core: a neighbour took the other
    load[0] = (0.6, 0.6, 0.6)
    m = machine.Machine(
        loadavg=lambda: load[0], cpuinfo_text=EPYC, clock=lambda: now[0], own_cpu=lambda: cpu[0]
    )
    now[0], cpu[0] = 600.0, 900.0
    load[0] = (2.9, 2.0, 1.5)
    assert "not a result: others' load" in m.busy_reason()
    # a run of a second hardly moves the 1-minute average: its end load counts in full
    load[0] = (0.6, 0.6, 0.6)
    m = machine.Machine(
        loadavg=lambda: load[0], cpuinfo_text=EPYC, clock=lambda: now[0], own_cpu=lambda: cpu[0]
    )
    now[0], cpu[0], load[0] = 601.0, 902.0, (2.0, 1.0, 1.0)
    assert "not a result" in m.busy_reason()


def test_require_quiet_refuses_to_start_and_to_write():
    class Args:
        require_quiet, busy_load = True, None

    busy = lambda: (4.0, 4.0, 4.0)
    with pytest.raises(SystemExit) as e:
        machine.start(Args(), loadavg=busy, cpuinfo_text=EPYC)
    assert e.value.code == machine.REFUSED
    load = [(0.5, 0.5, 0.5)]
    m = machine.start(Args(), loadavg=lambda: load[0], cpuinfo_text=EPYC)
    load[0] = (2.0, 1.0, 1.0)
    with pytest.raises(SystemExit) as e:
        m.finish()
    assert e.value.code == machine.REFUSED
    Args.require_quiet = False
    m = machine.start(Args(), loadavg=busy, cpuinfo_text=EPYC)
    assert m.finish()["quiet"] is False  # without the flag: recorded, not refused


def test_the_interleaver_interleaves_and_rotates():
    calls = []
    ticks = iter(range(10**6))
    variants = {k: (lambda k=k: calls.append(k)) for k in "ABC"}
    out = machine.interleave(variants, rounds=4, clock=lambda: float(next(ticks)))
    # a balanced Latin square's rows: each first in turn, then the rows backwards
    assert "".join(calls) == "ABC" + "BCA" + "CAB" + "CBA"
    assert set(out) == set("ABC")
    for s in out.values():
        assert len(s["times"]) == 4 and s["median"] == 1e3  # 1 tick per call, in ms
        assert s["min"] <= s["median"] <= s["max"] and s["spread"] == 0.0
    per = machine.interleave({"A": lambda: None}, 2, per_call=4, clock=lambda: next(ticks) * 1.0)
    assert per["A"]["median"] == 250.0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_every_variant_follows_every_other_equally_often(n):
    names = list(range(n))
    cycle = 2 * n if n % 2 else n
    rounds = list(machine.rotated_rounds(names, 2 * cycle))
    assert all(sorted(r) == names for r in rounds)  # each round runs each variant once
    assert rounds[:cycle] == rounds[cycle:]  # then the cycle repeats
    firsts = [r[0] for r in rounds[:cycle]]
    assert all(firsts.count(k) == cycle // n for k in names)
    pairs = [(a, b) for r in rounds[:cycle] for a, b in zip(r, r[1:])]
    if n > 1:  # each ordered pair (a just before b) equally often
        want = len(pairs) // (n * (n - 1))
        assert all(pairs.count((a, b)) == want for a in names for b in names if a != b)


def test_a_script_refuses_on_a_busy_machine():
    # the real script and the real flag: a threshold no machine is under
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "adadelta_step_probe.py")]
        + ["--require-quiet", "--busy-load", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == machine.REFUSED, out.stderr[-2000:]
    assert "refused: not starting: not a result: load" in out.stderr
    assert "# machine: " in out.stdout


def test_the_plain_path_benchmark_runs_and_compares_with_optax(capsys):
    # benchmarks/plain_bench.py at a tiny size: every shared name it times is registered
    # here and present in optax or optax.contrib; the table has a row and a ratio per name.
    spec = importlib.util.spec_from_file_location(
        "plain_bench", os.path.join(ROOT, "benchmarks", "plain_bench.py")
    )
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    names, skipped = plain.shared_names()
    assert {"adam", "adabelief", "lion", "lamb", "schedule_free_adamw"} <= set(names)
    assert "lbfgs" in skipped and not set(names) & set(skipped)
    args = ["--size", "100K", "--leaves", "4", "--repeats", "1", "--iters", "1"]
    assert plain.main([*args, "--only", "adam,adabelief"]) == 0
    out = capsys.readouterr().out
    for name in ("adam", "adabelief"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert row.rstrip(" |").split("|")[4].strip().endswith("x")
    assert "geometric mean" in out


def test_the_shampoo_benchmark_runs_and_compares_with_pytorch_optimizer(capsys):
    # benchmarks/shampoo_bench.py at a tiny size, one pair: its table, ratios and state bytes
    # (a matrix merged into a vector and a vector: a momentum and the graft's statistic or
    # momentum each, 8 bytes per parameter, plus our step count)
    spec = importlib.util.spec_from_file_location(
        "shampoo_bench", os.path.join(ROOT, "benchmarks", "shampoo_bench.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--shapes", "6x5,4", "--repeats", "1", "--no-newton"])
    text = capsys.readouterr().out
    assert text.count("| refresh alone (difference), ms |") == 1
    for pair in out["pairs"].values():
        assert pair["state_bytes"]["torch"] == 8.0
        assert pair["state_bytes"]["ours"] == pytest.approx(8.0 + 4 / 34)
        assert all(v > 0 for v in pair["ms"]["ours"].values())


def test_the_lowbit_benchmark_runs(capsys):
    # benchmarks/lowbit_bench.py at a tiny size, the JAX variants and torch's fused AdamW
    # (torchao and bitsandbytes are slow to start): its table, the state bytes of 8-bit
    # AdamW (<= 2.05 per parameter, issue 19) and the ratios it prints.
    spec = importlib.util.spec_from_file_location(
        "lowbit_bench", os.path.join(ROOT, "benchmarks", "lowbit_bench.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--size", "100K", "--leaves", "4", "--repeats", "1", "--skip", "torchao,bnb"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    for name in ("ours 8-bit native", "ours 8-bit XLA", "ours f32 XLA", "torch fused f32"):
        assert any(line.startswith(f"| {name} |") for line in out.splitlines()), name
    bpp = float(out.split("state bytes per parameter: 8-bit ")[1].split(",")[0])
    assert 2.0 < bpp <= 2.05
    assert "torch fused f32 / ours 8-bit native" in out and "ours 8-bit XLA / ours f32 XLA" in out


def test_the_kron_benchmark_runs_and_compares_with_kron_torch(capsys):
    # benchmarks/kron_bench.py at a tiny size (kron_torch eager: no inductor build here):
    # a row per quantity with both sides' numbers and a ratio.
    spec = importlib.util.spec_from_file_location(
        "kron_bench", os.path.join(ROOT, "benchmarks", "kron_bench.py")
    )
    kron = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kron)
    args = ["--shapes", "8x12,8x12", "--repeats", "1", "--inner", "1"]
    assert kron.main([*args, "--torch-eager"]) == 0
    out = capsys.readouterr().out
    for label in ("state bytes per parameter", "step without update", "step with update"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {label}"))
        cells = [c.strip() for c in row.strip(" |").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0, row
    assert "update alone (difference)" in out
