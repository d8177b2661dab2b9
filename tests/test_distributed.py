"""The trainer on several devices and processes (jaxopt_zoo.train.distributed).

Every multi-device run happens in a subprocess (tests/distributed_worker.py): this pytest
process has started JAX with one device. The library runs use 8 virtual CPU devices in one
process; the command runs use ``--devices`` and real ``jax.distributed`` processes
coordinated over localhost, with gloo CPU collectives.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxopt_zoo.train import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
# 256 MNIST images, batch 32: 8 steps per epoch, 2 epochs; a checkpoint every 4 steps.
RUN = (
    "train --optimizer adam --model mlp --epochs 2 --batch-size 32 --train-limit 256 "
    "--val-limit 100 --no-progress --checkpoint-every 4 --keep-checkpoints 10"
).split()
HEARTBEAT = 5  # --distributed-timeout: seconds before a silent peer counts as dead
# compare: two optimizers, one short epoch (4 steps of 32).
COMPARE = (
    "compare --optimizers sgd,adam --model mlp --epochs 1 --batch-size 32 --train-limit 128 "
    "--val-limit 100 --no-progress"
).split()


def _env(**extra):
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cli(tmp, *args, env=None, run=RUN):
    return subprocess.Popen(
        [sys.executable, str(WORKER), *run, *args],
        cwd=tmp,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pair(tmp, name, *args, kill_at=None, kill0_at=None, resume=False, run=RUN):
    """Two processes x 2 CPU devices, ZeRO-1, checkpoints in tmp/ck_name (train); process 1
    (``kill_at``) or process 0, the coordinator (``kill0_at``), SIGKILLs itself after that
    step."""
    port = _free_port()
    common = [
        "--devices", "2", "--shard-optimizer-state", "--num-processes", "2",
        "--coordinator", f"localhost:{port}", "--distributed-timeout", str(HEARTBEAT),
        "--output", name, *(["--resume"] if resume else []), *args,
    ]  # fmt: skip
    if run is RUN:
        common += ["--checkpoint-dir", f"ck_{name}"]
    env0 = _env(JAXOPT_ZOO_TEST_KILL_AT=str(kill0_at)) if kill0_at else None
    p0 = _cli(tmp, *common, "--process-id", "0", env=env0, run=run)
    env1 = _env(JAXOPT_ZOO_TEST_KILL_AT=str(kill_at)) if kill_at else None
    p1 = _cli(tmp, *common, "--process-id", "1", env=env1, run=run)
    return p0, p1


def _finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _state(ckpt_dir: pathlib.Path, number=None):
    """The arrays of checkpoint ``number`` (the newest by default) as NumPy, by key path."""
    n = number or max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    path = ckpt_dir / str(n) / "state"
    ck = ocp.StandardCheckpointer()
    meta = ck.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
    tree = ck.restore(path, template)
    return {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _history(tmp, name):
    h = json.loads((tmp / name / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in h]


def _max_diff(a, b, prefix="['params']"):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys and sorted(keys) == sorted(k for k in b if k.startswith(prefix))
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in keys)


# --------------------------------------------------------------------------- #
# The library on 8 virtual devices
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def library():
    run = subprocess.run(
        [sys.executable, str(WORKER), "library"],
        capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["devices"] == 8
    return out


@pytest.mark.parametrize("name", ["dp8", "zero8"])
def test_eight_devices_match_one_to_rounding(library, name):
    # 14 Adam steps: parameters within 1e-5 of the 1-device run's (measured 1.0e-6 on
    # parameters up to 0.45: the per-device partial sums and the all-reduce round differently).
    one, run = library["one"], library[name]
    assert run["steps"] == one["steps"] == 14
    assert 0 < run["max_param_diff"] < 1e-5
    np.testing.assert_allclose(run["history"], one["history"], rtol=1e-5)
    assert run["param_specs"] == ["P()"]  # parameters replicated


def test_zero1_splits_the_state_one_eighth(library):
    # Adam's moments of the 784x32 and 32x10 kernels and the 32 bias split 1/8; the 10-wide
    # bias (8 does not divide 10) and the step count stay replicated: just above 1/8.
    assert 1 / 8 <= library["zero8"]["state_fraction_per_device"] < 1 / 8 + 0.002
    assert "P('data', None)" in library["zero8"]["state_specs"]
    assert library["dp8"]["state_fraction_per_device"] == 1.0  # replicated


def test_no_recompilation_after_the_first_step(library):
    # The only compile after step 1 is the evaluation's first call (none when the same
    # layout's evaluation was compiled by an earlier run): not one per step or epoch.
    for name in ("one", "dp8", "zero8"):
        assert library[name]["compiles_after_first_step"] <= 1, name
    assert library["zero8"]["compiles_after_first_step"] == 0


def test_same_layout_twice_is_bit_identical(library):
    assert library["dp8"]["repeat_identical"] is True


def test_config_checks_devices():
    with pytest.raises(ValueError, match="multiple of 4"):
        TrainConfig(batch_size=30, devices=4)
    with pytest.raises(ValueError, match="set devices=N too"):
        TrainConfig(shard_optimizer_state=True)


# --------------------------------------------------------------------------- #
# The command: several processes, a killed process, checkpoints across device counts
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    out = {"tmp": tmp}
    # One process, 4 devices, ZeRO-1; and 2 processes x 2 devices.
    ref = _cli(tmp, "--devices", "4", "--shard-optimizer-state", "--output", "ref4",
               "--checkpoint-dir", "ck_ref4")  # fmt: skip
    out["ref4"] = _finish(ref)
    out["mp"] = [_finish(p) for p in _pair(tmp, "mp")]
    # Process 1 SIGKILLs itself after step 6 (the checkpoint of step 4 is complete).
    p0, p1 = _pair(tmp, "killed", kill_at=6)
    out["killed1"] = _finish(p1)
    died = time.monotonic()
    out["killed0"] = _finish(p0)
    out["killed0_seconds"] = time.monotonic() - died
    out["killed_numbers"] = sorted(p.name for p in (tmp / "ck_killed").iterdir())
    out["resumed"] = [_finish(p) for p in _pair(tmp, "killed", resume=True)]
    # Process 0, which hosts the coordination service's address, SIGKILLs itself after step 6.
    p0, p1 = _pair(tmp, "coord", kill0_at=6)
    out["coord0"] = _finish(p0)
    died = time.monotonic()
    out["coord1"] = _finish(p1)
    out["coord1_seconds"] = time.monotonic() - died
    out["coord_resumed"] = [_finish(p) for p in _pair(tmp, "coord", resume=True)]
    # compare: on one device, and on 2 processes x 2 devices (ZeRO-1) at the same time
    cmp1 = _cli(tmp, "--output", "cmp1", run=COMPARE)
    cmp4 = _pair(tmp, "cmp4", run=COMPARE)
    out["cmp1"] = _finish(cmp1)
    out["cmp4"] = [_finish(p) for p in cmp4]
    # The 4-device checkpoint of step 12 (epoch 2, batch 4), restored onto 2 devices.
    ck = tmp / "ck_on2"
    shutil.copytree(tmp / "ck_ref4", ck)
    for p in ck.iterdir():
        if p.name.isdigit() and int(p.name) > 13:
            shutil.rmtree(p)
    out["on2"] = _finish(
        _cli(
            tmp,
            "--devices",
            "2",
            "--shard-optimizer-state",
            "--output",
            "on2",
            "--checkpoint-dir",
            "ck_on2",
            "--resume",
        )  # fmt: skip
    )
    return out


@pytest.mark.needs_data("mnist")
def test_two_processes_match_one_process_on_four_devices(runs):
    tmp = runs["tmp"]
    assert runs["ref4"][0] == 0, runs["ref4"][2][-3000:]
    for rc, _, err in runs["mp"]:
        assert rc == 0, err[-3000:]
    # Process 0 alone prints the table and writes the results (gloo's C++ log lines still
    # reach every process's standard output).
    assert "wrote" in runs["mp"][0][1] and "val_loss" in runs["mp"][0][1]
    assert "wrote" not in runs["mp"][1][1] and "val_loss" not in runs["mp"][1][1]
    # Same data, same order, same keys: the cross-process all-reduce (gloo) sums in another
    # order than the in-process one; measured 1.5e-8 on parameters up to ~0.5.
    assert _max_diff(_state(tmp / "ck_mp"), _state(tmp / "ck_ref4")) < 1e-6
    a, b = _history(tmp, "mp"), _history(tmp, "ref4")
    assert [r["epoch"] for r in a] == [1, 2]
    np.testing.assert_allclose(
        [[r["train_loss"], r["val_loss"]] for r in a],
        [[r["train_loss"], r["val_loss"]] for r in b],
        rtol=1e-6,
    )


@pytest.mark.needs_data("mnist")
def test_a_killed_process_stops_the_other_with_a_clear_error(runs):
    rc1, _, err1 = runs["killed1"]
    assert rc1 == -signal.SIGKILL, err1[-2000:]
    rc0, _, err0 = runs["killed0"]
    assert rc0 == 1, err0[-3000:]
    # Process 0's PeerMonitor sees process 1's counter stop within --distributed-timeout
    # and says so as the last line, before JAX's own heartbeat verdict (at twice that:
    # SIGABRT and a C++ trace) could come; nothing of JAX's comes after it.
    last = err0.strip().splitlines()[-1]
    assert re.fullmatch(
        r"jaxopt-zoo: error: process 1 of 2 stopped responding at step \d+; the newest "
        r"complete checkpoint is step 4 \(checkpoint 4\) in \S*ck_killed: restart every "
        r"process with --resume",
        last,
    ), err0[-3000:]
    assert "another task died" not in err0 and "Check failure" not in err0
    assert runs["killed0_seconds"] < 2 * HEARTBEAT + 10  # bounded: no hang
    # The step-4 checkpoint is complete; nothing half-written is numbered.
    assert "4" in runs["killed_numbers"], runs["killed_numbers"]
    assert all(n.isdigit() or n == "jaxopt_zoo_run.json" or ".orbax-checkpoint-tmp" in n
               for n in runs["killed_numbers"])  # fmt: skip


@pytest.mark.needs_data("mnist")
def test_resume_after_the_kill_is_bit_identical(runs):
    tmp = runs["tmp"]
    for rc, _, err in runs["resumed"]:
        assert rc == 0, err[-3000:]
    assert "Resumed from checkpoint 4" in runs["resumed"][0][1]
    a, b = _state(tmp / "ck_killed"), _state(tmp / "ck_mp")
    assert sorted(a) == sorted(b)
    for k in a:  # parameters, optimizer state, metrics, key and counters
        assert np.array_equal(a[k], b[k]), k
    assert _history(tmp, "killed") == _history(tmp, "mp")


@pytest.mark.needs_data("mnist")
def test_a_killed_coordinator_stops_the_others_with_a_clear_error(runs):
    rc0, _, err0 = runs["coord0"]
    assert rc0 == -signal.SIGKILL, err0[-2000:]
    rc1, _, err1 = runs["coord1"]
    assert rc1 == 1, err1[-3000:]
    # Without the service in a process of its own (train/distributed/service.py), JAX's
    # client in process 1 aborted 0.3 s after process 0 died ("the JAX distributed service
    # detected fatal errors", SIGABRT, a C++ trace); now process 1's PeerMonitor names it.
    last = err1.strip().splitlines()[-1]
    assert re.fullmatch(
        r"jaxopt-zoo: error: process 0 of 2 \(the coordinator\) stopped responding at step "
        r"\d+; the newest complete checkpoint is step 4 \(checkpoint 4\) in \S*ck_coord: "
        r"restart every process with --resume",
        last,
    ), err1[-3000:]
    assert "fatal errors" not in err1 and "Check failure" not in err1
    assert runs["coord1_seconds"] < 2 * HEARTBEAT + 10  # within the timeout, no hang


@pytest.mark.needs_data("mnist")
def test_resume_after_the_coordinator_was_killed_is_bit_identical(runs):
    tmp = runs["tmp"]
    for rc, _, err in runs["coord_resumed"]:
        assert rc == 0, err[-3000:]
    assert "Resumed from checkpoint 4" in runs["coord_resumed"][0][1]
    a, b = _state(tmp / "ck_coord"), _state(tmp / "ck_mp")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert _history(tmp, "coord") == _history(tmp, "mp")


@pytest.mark.needs_data("mnist")
def test_four_device_checkpoint_continues_on_two(runs):
    tmp = runs["tmp"]
    rc, out, err = runs["on2"]
    assert rc == 0, err[-3000:]
    assert "Resumed from checkpoint 13" in out and "step 12" in out
    # The restored state is the saved one (its sha256 is checked on restore); the last 4
    # steps on 2 devices round like 2 devices: within 1e-6 of the 4-device run.
    assert _max_diff(_state(tmp / "ck_on2"), _state(tmp / "ck_ref4")) < 1e-6
    a, b = _history(tmp, "on2"), _history(tmp, "ref4")
    assert a[0] == b[0]  # epoch 1 was done on 4 devices: restored as it was
    np.testing.assert_allclose(a[1]["val_loss"], b[1]["val_loss"], rtol=1e-6)


@pytest.mark.needs_data("mnist")
def test_compare_on_two_processes_writes_once_and_matches_one_device(runs):
    tmp = runs["tmp"]
    assert runs["cmp1"][0] == 0, runs["cmp1"][2][-3000:]
    (rc0, out0, err0), (rc1, out1, err1) = runs["cmp4"]
    assert rc0 == 0 and rc1 == 0, (err0 + err1)[-3000:]
    # Process 0 alone reports and writes (both were given the same --output).
    assert out0.count("wrote") == 1 and "wrote" not in out1
    assert sorted(p.name for p in (tmp / "cmp4").iterdir()) == [
        "accuracy.png", "results.csv", "results.json"
    ]  # fmt: skip
    one = json.loads((tmp / "cmp1" / "results.json").read_text())
    four = json.loads((tmp / "cmp4" / "results.json").read_text())
    assert four["config"]["total_devices"] == 4 and list(four["histories"]) == ["sgd", "adam"]
    for name in ("sgd", "adam"):
        (h1,), (h4,) = one["histories"][name], four["histories"][name]
        for key in ("train_loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(h4[-1][key], h1[-1][key], rtol=1e-5, err_msg=name)
