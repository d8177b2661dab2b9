"""benchmarks/gpu_check.py --smoke: the GPU check runs its checks on the CPU at tiny sizes (no
GPU here), says so in its JSON, and every check passes with the structure the GPU run writes.

Run in this process (JAX and torch imported once). The parity-test check is exercised on its
own: its runner (a pytest subprocess whose counts it parses) against two one-line test files,
one passing and one failing; the parity tests themselves are part of this suite anyway, and a
subprocess importing JAX would double this file's time."""

from __future__ import annotations

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_gpu_check():
    spec = importlib.util.spec_from_file_location(
        "gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_one_json_and_every_check_passes(tmp_path):
    gpu_check = load_gpu_check()
    out = tmp_path / "smoke.json"
    rc = gpu_check.main(["--smoke", "--skip", "parity_tests", "--json", str(out)])
    record = json.loads(out.read_text())
    checks = record["checks"]
    failed = {k: v.get("error") or v.get("tail") for k, v in checks.items() if not v["ok"]}
    assert rc == 0 and record["ok"], failed
    # where it ran, said plainly
    assert record["smoke"] is True and record["gpu"] is False
    assert "no GPU" in record["note"] and record["devices"]["jax_backend"] == "cpu"
    assert {"cpu", "isa_flags", "cores", "load_before", "load_after", "quiet"} <= set(
        record["machine"]
    )
    assert set(checks) == {
        "parity_tests",
        "adam_vs_torch_fused",
        "muon_vs_torch",
        "sweep_vs_sequential",
    }
    assert checks["parity_tests"] == {"ok": True, "skipped": True, "seconds": 0.0}
    adam = checks["adam_vs_torch_fused"]
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-6)):
        assert adam["parity"][dtype]["max_rel_err"] < tol == adam["parity"][dtype]["tol"]
    assert set(adam["speed"]["ms_per_update"]) == {
        "ours",
        "ours fused_apply (FlatParams)",
        "optax",
        "torch fused",
        "torch foreach",
    }
    assert "torch fused / best ours" in adam["speed"]["ratios"] and "busy" in adam["speed"]
    muon = checks["muon_vs_torch"]
    assert muon["parity"]["max_rel_err"] < 1e-3 and muon["parity"]["moved"] > 0.05
    assert set(muon["speed"]["ratios"]) == {"optax f32 / ours f32", "torch bf16 / ours bf16"}
    sweep = checks["sweep_vs_sequential"]
    assert sweep["parity"]["max_rel_err"] < 1e-5 and sweep["parity"]["configs_differ_by"] > 0
    assert "sequential / sweep" in sweep["speed"]["ratios"]


def test_the_parity_runner_counts_and_fails(tmp_path):
    gpu_check = load_gpu_check()
    good, bad = tmp_path / "test_good.py", tmp_path / "test_bad.py"
    good.write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
    bad.write_text("def test_a():\n    pass\n\n\ndef test_b():\n    assert 0\n")
    r = gpu_check.check_parity_tests([str(good)], workers=1, timeout=60)
    assert r["ok"] and r["returncode"] == 0 and r["counts"] == {"passed": 2}, r["tail"]
    r = gpu_check.check_parity_tests([str(good), str(bad)], workers=1, timeout=60)
    assert not r["ok"] and r["counts"] == {"passed": 3, "failed": 1}, r["tail"]
    assert "test_bad.py::test_b" in r["tail"]
