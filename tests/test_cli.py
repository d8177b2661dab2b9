"""The ``jaxopt-zoo`` command, run as a user would: in a subprocess, on real MNIST."""

import csv
import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "jaxopt_zoo.cli"]
QUICK = ["--train-limit", "640", "--val-limit", "500", "--epochs", "2", "--batch-size", "64"]


def jz(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        CLI + list(args), capture_output=True, text=True, timeout=timeout, env=env
    )


def test_list_shows_every_optimizer_with_references():
    import jaxopt_zoo

    r = jz("list")
    assert r.returncode == 0, r.stderr
    for name in jaxopt_zoo.available() + jaxopt_zoo.available("keras."):
        assert f"  {name} " in r.stdout
    assert "Kingma & Ba 2015" in r.stdout and "keras.optimizers.Adadelta" in r.stdout


@pytest.mark.needs_data("mnist")
def test_train_writes_metrics_and_a_plot(tmp_path):
    out = tmp_path / "run"
    r = jz("train", "--optimizer", "adam", "--model", "mlp", "--output", str(out), *QUICK)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["optimizer"] == "adam" and m["config"]["model"] == "mlp"
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    for h in m["history"]:
        assert set(h) >= {"val_accuracy", "val_loss", "train_loss", "seconds"}
    # 640 images, 2 epochs of Adam: clearly better than chance (0.1)
    assert m["history"][-1]["val_accuracy"] > 0.6
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert "val_acc" in r.stdout  # the epoch table

    # The same --output again: refused before training, the earlier results untouched.
    before = {f: (out / f).read_bytes() for f in ("metrics.json", "learning_curve.png")}
    r = jz("train", "--optimizer", "sgd", "--model", "mlp", "--output", str(out), *QUICK)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "already holds metrics.json, learning_curve.png" in r.stderr
    assert "--overwrite" in r.stderr
    assert {f: (out / f).read_bytes() for f in before} == before
    r = jz(
        "train",
        "--optimizer",
        "sgd",
        "--model",
        "mlp",
        "--output",
        str(out),
        "--overwrite",
        "--train-limit",
        "64",
        "--val-limit",
        "64",
        "--epochs",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["config"]["optimizer"] == "sgd"


@pytest.mark.needs_data("mnist")
def test_compare_writes_results_table_csv_and_plot(tmp_path):
    out = tmp_path / "cmp"
    r = jz(
        "compare",
        "--optimizers",
        "adam,sgd",
        "--preset",
        "keras",
        "--seeds",
        "2",
        "--model",
        "mlp",
        "--output",
        str(out),
        *QUICK,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["optimizers_resolved"] == ["keras.adam", "keras.sgd"]
    assert set(res["histories"]) == {"adam", "sgd"}
    assert all(len(h) == 2 for h in res["histories"]["adam"])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r_["optimizer"] for r_ in rows] == ["adam", "sgd"]
    by = {r_["optimizer"]: float(r_["final_val_accuracy"]) for r_ in rows}
    assert by["adam"] > by["sgd"]  # Keras SGD at lr 0.01 is slower than Adam after 2 epochs
    assert (out / "accuracy.png").stat().st_size > 10_000
    assert "final val acc" in r.stdout and "±" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--optimizer", "adma"], r"Unknown optimizer 'adma'. Did you mean"),
        (["train", "--optimizer", "adam", "--epochs", "-3"], r"--epochs: expected an integer >= 0"),
        (["train", "--optimizer", "adam", "--lr", "fast"], r"--lr: expected a number"),
        (["train", "--optimizer", "adam", "--lr", "-1"], r"expected a positive finite number"),
        (["train", "--optimizer", "adam", "--model", "resnet"], r"invalid choice: 'resnet'"),
        (["train", "--optimizer", "adam", "--opt-arg", "b1=2"], r"Invalid b1: 2"),
        (["train", "--optimizer", "adam", "--opt-arg", "betas=1"], r"unknown argument"),
        (["train", "--optimizer", "lbfgs"], r"needs grad, value_fn .* use jaxopt_zoo.minimize"),
        (["sweep", "--optimizer", "torch.lbfgs"], r"needs value_fn .* use jaxopt_zoo.minimize"),
        (["compare", "--optimizers", "adam,,sgd"], r"empty optimizer name"),
        (["compare", "--optimizers", "adam,adam"], r"lists a name twice"),
        (["train"], r"required: --optimizer"),
        (["fly"], r"invalid choice: 'fly'"),
        # issue 19: bfloat16 parameters
        (["train", "--optimizer", "adam", "--bf16-rounding", "kahan"], r"needs --bf16-params"),
        (["sweep", "--optimizer", "adam", "--bf16-params", "--bf16-rounding", "up"], "'up'"),
        # issue 19: quantized optimizer state
        (["train", "--optimizer", "adam", "--state-bits", "3"], r"invalid choice: '3'"),
        (["train", "--optimizer", "adam", "--state-block-size", "64"], r"needs --state-bits"),
        (
            ["compare", "--optimizers", "adam", "--state-bits", "8", "--state-block-size", "96"],
            r"Invalid state_block_size: 96",
        ),  # fmt: skip
    ],
)
def test_bad_flags_exit_2_with_one_line(args, message, capsys):
    # In-process (main() is what the console script calls): a subprocess per case would cost
    # ~3 s of JAX start-up each; test_a_bad_flag_exits_2_from_the_console_command runs one
    # case as a real process.
    import re

    from jaxopt_zoo.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]


def test_a_bad_flag_exits_2_from_the_console_command():
    r = jz("train", "--optimizer", "adma")
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Did you mean" in lines[0], r.stderr


def test_missing_data_is_a_message_not_a_traceback(tmp_path):
    r = jz("train", "--optimizer", "adam", "--data-dir", str(tmp_path), *QUICK)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and str(tmp_path) in r.stderr


# issue 19: bfloat16 parameters through train and sweep (in-process, as the bad-flag cases)
@pytest.mark.needs_data("mnist")
def test_cli_train_and_sweep_take_bf16_params(tmp_path, capsys):
    from jaxopt_zoo.cli import main

    quick = ["--model", "mlp", "--train-limit", "256", "--val-limit", "200", "--epochs", "2"]
    quick += ["--batch-size", "32"]
    out = tmp_path / "train"
    argv = ["train", "--optimizer", "adam", "--bf16-params", "--output", str(out), *quick]
    assert main(argv) == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["techniques"] == {"bf16_params": True, "bf16_rounding": "stochastic"}
    assert m["history"][-1]["val_accuracy"] > 0.4, m["history"]  # 16 steps; chance is 0.1
    out = tmp_path / "sweep"
    argv = ["sweep", "--optimizer", "adam", "--lr", "1e-3", "--seeds", "1", "--bf16-params"]
    argv += ["--bf16-rounding", "nearest", "--output", str(out), *quick]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "sweep.json").read_text())
    assert record["config"]["techniques"] == {"bf16_params": True, "bf16_rounding": "nearest"}


# issue 19: quantized optimizer state through train and sweep
@pytest.mark.needs_data("mnist")
def test_cli_train_and_sweep_take_state_bits(tmp_path, capsys):
    from jaxopt_zoo.cli import main

    quick = ["--model", "mlp", "--train-limit", "256", "--val-limit", "200", "--epochs", "1"]
    quick += ["--batch-size", "16"]
    out = tmp_path / "train"
    argv = ["train", "--optimizer", "adamw", "--state-bits", "8", "--output", str(out), *quick]
    assert main(argv) == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["techniques"] == {"state_bits": "8"}
    assert m["history"][-1]["val_accuracy"] > 0.4, m["history"]  # 16 steps; chance is 0.1
    out = tmp_path / "sweep"
    argv = ["sweep", "--optimizer", "adam", "--lr", "1e-3,3e-3", "--seeds", "1"]
    argv += ["--state-bits", "4", "--state-block-size", "64", "--output", str(out), *quick]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "sweep.json").read_text())
    assert record["config"]["techniques"] == {"state_bits": "4", "state_block_size": 64}
