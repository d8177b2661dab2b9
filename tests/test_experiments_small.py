"""Fast checks of the quadratic race and the 2-D trajectories experiments (no GIFs)."""

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxopt_zoo as jz

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _rows(path, reader=csv.reader):
    with path.open(newline="") as f:
        return list(reader(f))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_exp_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def race():
    return _load("quadratic_race")


@pytest.fixture(scope="module")
def traj():
    return _load("trajectories")


@pytest.fixture(scope="module")
def race_100(race):
    return race.run(steps=100, output=None)


def test_race_starts_at_the_pages_loss_of_9(race_100):
    for label in ("SGD", "Momentum", "Adam"):
        assert race_100["losses"][label][0] == pytest.approx(9.0, abs=1e-6)
        assert len(race_100["losses"][label]) == 101


def test_race_numbers_with_the_pages_hyperparameters(race_100):
    res = race_100["results"]
    # SGD contracts theta by exactly (1 - 2 lr) = 0.98 per step: loss 9 * 0.98^200.
    assert res["SGD"]["final_loss"] == pytest.approx(9 * 0.98**200, rel=1e-4)
    assert res["SGD"]["loss_monotone_nonincreasing"]
    assert res["SGD"]["first_step_below"]["1"] == 55
    assert res["SGD"]["first_step_below"]["0.01"] is None
    # Momentum first dips below 1e-2 at step 14 and ends near 1.6e-4.
    assert res["Momentum"]["first_step_below"]["0.01"] == 14
    assert res["Momentum"]["final_loss"] == pytest.approx(1.609e-4, rel=1e-2)
    # Adam at lr 1e-3 moves theta by ~1e-3 per step: 3 -> ~2.90, loss ~8.41.
    assert res["Adam"]["final_theta"] == pytest.approx(2.9006, abs=2e-3)
    assert res["Momentum"]["final_loss"] < res["SGD"]["final_loss"] < res["Adam"]["final_loss"]
    # With a learning rate that fits the problem, Adam beats SGD.
    assert race_100["adam_other_learning_rates"]["0.1"]["final_loss"] < 1e-3


def test_race_memory_is_counted_from_the_real_state(race_100):
    floats = [race_100["results"][k]["state_floats_per_param"] for k in ("SGD", "Momentum", "Adam")]
    assert floats == [0, 1, 2]
    assert race_100["results"]["Adam"]["state_other_elements"] == 1  # the step count


def test_race_comparison_with_the_page(race_100):
    verdict = {c["claim"]: c["agrees"] for c in race_100["comparison"]}
    assert verdict["Loss is 9.0 at step 0 for all three"]
    assert verdict["jaxopt_zoo implements the page's update formulas"]
    assert verdict["Momentum converges faster than SGD"]
    assert not verdict["Adam is fast (at least faster than plain SGD) with the page's lr = 1e-3"]
    assert race_100["all_agree"] is False
    assert max(race_100["page_reference_max_abs_theta_diff"].values()) < 3e-5


def test_race_writes_csv_and_json_without_media(race, tmp_path):
    race.run(steps=20, output=tmp_path, write_media=False)
    rows = _rows(tmp_path / "losses.csv")
    assert rows[0] == ["step", "loss_sgd", "loss_momentum", "loss_adam"]
    assert len(rows) == 22 and float(rows[1][1]) == pytest.approx(9.0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["setup"]["steps"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.csv", "summary.json"]


def test_trajectories_lower_the_rosenbrock_loss_for_every_optimizer(traj):
    res = traj.run(output=None, functions=["rosenbrock"])  # the default 1000 steps
    rb = res["rosenbrock"]
    assert rb["steps"] == 1000 and rb["start_loss"] == pytest.approx(12.5)
    assert set(rb["optimizers"]) == set(jz.available())
    for name, r in rb["optimizers"].items():
        assert r["path"].shape == (1001, 2) and r["losses"].shape == (1001,), name
        np.testing.assert_allclose(r["path"][0], [-1.5, 2.0])
        assert np.all(np.isfinite(r["losses"])), name
        assert r["final_loss"] < rb["start_loss"], (name, r["final_loss"])
    # With its chosen lr, Adam gets to the minimum (1, 1); plain SGD is still far away.
    np.testing.assert_allclose(rb["optimizers"]["adam"]["final_point"], [1.0, 1.0], atol=5e-3)
    assert rb["optimizers"]["sgd"]["final_loss"] > 1.0


def test_trajectories_write_numbers_with_the_right_shapes(traj, tmp_path):
    steps, names = 30, ["sgd", "adam", "lion"]
    traj.run(steps=steps, output=tmp_path, write_media=False, optimizers=names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{f}_{k}" for f in traj.PROBLEMS for k in ("final.csv", "paths.json")
    )
    for fname in traj.PROBLEMS:
        rows = _rows(tmp_path / f"{fname}_final.csv", csv.DictReader)
        assert [r["optimizer"] for r in rows] == names
        assert all(int(r["steps"]) == steps for r in rows)
        doc = json.loads((tmp_path / f"{fname}_paths.json").read_text())
        assert doc["path_steps"] == list(range(steps + 1))
        for name in names:
            assert np.asarray(doc["optimizers"][name]["path"]).shape == (steps + 1, 2)


def test_every_registered_optimizer_has_a_learning_rate_for_every_function(traj):
    for fname in traj.PROBLEMS:
        assert set(traj.LEARNING_RATES[fname]) == set(jz.available()), fname


def test_saddle_adaptive_methods_escape_where_sgd_crawls(traj):
    prob = traj.PROBLEMS["saddle"]
    _, sgd = traj.simulate("sgd", 0.01, prob, 100)
    _, adam = traj.simulate("adam", 0.01, prob, 100)
    # Same lr: SGD's y grows like 1.02^t from 1e-3 (~7e-3), Adam's by ~lr per step.
    assert sgd[-1] > 0 and adam[-1] < -1.0


@pytest.mark.needs_data("mnist")
def test_explainer_quick_run_writes_its_tables(tmp_path):
    # The explainer experiment's smoke mode: SGD-m, SAM and SWA rows on 1,000 MNIST images for
    # two epochs; every row reports test accuracy, gap and sharpness, SWA its averaged weights.
    explainer = _load("explainer")
    assert explainer.main(["--quick", "--datasets", "mnist", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {r["optimizer"]: r for r in report["mnist"]["summary"]}
    assert set(rows) == {"SGD-m", "SAM(SGD-m) rho 0.05", "SWA(SGD-m), last third"}
    assert rows["SWA(SGD-m), last third"]["weights"] == "averaged"
    assert rows["SGD-m"]["weights"] == "live"
    for r in rows.values():
        assert 0.3 < r["test_accuracy"] <= 1.0
        assert np.isfinite(r["hessian_top_eigenvalue"]) and r["hessian_top_eigenvalue"] > 0
        assert r["time_vs_base"] > 0
    assert (tmp_path / "table.md").read_text().count("|") > 20


@pytest.mark.needs_data("mnist", "shakespeare")
def test_optimizer_benchmark_quick_run_writes_its_report(tmp_path):
    # The time-to-result benchmark's smoke mode: two workloads (MLP on 512 MNIST images, a tiny
    # char-LM), AdamW and Muon, two learning rates each with seed 0, 30 steps.
    bench = _load("optimizer_benchmark")
    args = ["--quick", "--workloads", "mnist_mlp,charlm", "--optimizers", "adamw,muon"]
    assert bench.main([*args, "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["workload"], r["optimizer"]): r for r in report["rows"]}
    assert set(rows) == {(w, o) for w in ("mnist_mlp", "charlm") for o in ("adamw", "muon")}
    for (_, name), r in rows.items():
        grid = bench.OPTIMIZERS[name].lrs[1:]
        assert r["best_lr"] in grid and sorted(map(float, r["sensitivity"])) == list(grid)
        assert np.isfinite(r["final_mean"]) and r["ms_per_step"] > 0
    # the char-LM's metric is bits per character: below the 6.4 of a uniform guess over 84
    assert all(rows[("charlm", o)]["final_mean"] < 6.4 for o in ("adamw", "muon"))
    assert {c["workload"] for c in report["claims"]} == {"mnist_mlp", "charlm"}
    assert (tmp_path / "table.md").read_text().count("| adamw |") == 2
    for png in ("profile.png", "sensitivity.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    # cached: a second call trains nothing and reports the same rows
    assert bench.main([*args, "--output", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["final_mean"] for r in again] == [r["final_mean"] for r in report["rows"]]


@pytest.mark.needs_data("mnist", "shakespeare")
def test_lowbit_quality_quick_run_reports_every_variant(tmp_path):
    # Issue 19's quality experiment in smoke mode on the CNN (512 MNIST images, one epoch, one
    # seed): every variant trains and is reported against f32. Each variant compiles its own
    # step (seconds each on two cores), so the char-LM is checked without training: every
    # variant's optimizer builds on the transformer (Adam-mini's blocks from its key paths)
    # and its state bytes per parameter are measured.
    lq = _load("lowbit_quality")
    args = ["--quick", "--workloads", "cnn", "--output", str(tmp_path)]
    assert lq.main(args) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {r["variant"]: r for r in report["workloads"]["cnn"]["rows"]}
    assert list(rows) == list(lq.VARIANTS)
    for name, r in rows.items():
        assert np.isfinite(r["final_mean"]) and 0 < r["final_mean"] < 2.3, name  # < ln 10
        assert np.isfinite(r["seconds_per_run"]) and r["seconds_per_run"] > 0, name
        curve = report["workloads"]["cnn"]["curves"][name]
        assert len(curve["step"]) == len(curve["mean"]) == 4 and np.all(np.isfinite(curve["mean"]))
        if name != "f32":
            assert np.isfinite(r["rel_diff_mean"]), name
    assert rows["f32"]["state_bytes_per_param"] == pytest.approx(8.0, abs=0.01)
    assert rows["8bit"]["state_bytes_per_param"] == pytest.approx(2.04, abs=0.05)
    assert rows["4bit"]["state_bytes_per_param"] == pytest.approx(1.07, abs=0.05)
    assert rows["bf16-sr"]["param_bytes_per_param"] == 2.0
    assert [rows[v]["met"] for v in ("f32", "adam-mini")] == ["baseline", "compare"]
    assert {rows[v]["met"] for v in ("8bit", "fp8", "4bit", "bf16-sr")} <= {"yes", "no", "lower"}
    assert (tmp_path / "table.md").read_text().count("| 8bit |") == 1
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert len(list((tmp_path / "runs").glob("cnn-*-seed0.json"))) == len(lq.VARIANTS)

    # the char-LM workload: every variant's optimizer on the full-size transformer, shapes only
    from jaxopt_zoo.train.lm import TokenWindows

    ns = argparse.Namespace(quick=False, lm_steps=800, cnn_epochs=2, data_dir=None)
    lm = lq.make_workloads(ns)["charlm"]
    tokens = TokenWindows(np.zeros(200, np.int32), lm.model_options["context"])
    for v in lq.VARIANTS.values():
        spec = lq.spec_for(v, lm)
        mem = lq.memory(spec, lm, spec.build(*lq.run_lengths_of(tokens, lm.config)), tokens)
        assert mem["num_params"] > 800_000
        assert 1.0 < mem["state_bytes_per_param"] <= 8.01, v.name
