"""Sweeps in one program (jaxopt_zoo.train.sweep): each vmapped configuration equals its own
``train`` run, chunking changes nothing, the char-LM path follows the randomness contract, and
the ``sweep`` command writes its files and refuses bad flags."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.cli import main
from jaxopt_zoo.models import CharTransformer, get_model
from jaxopt_zoo.models.transformer import lm_loss
from jaxopt_zoo.train import TrainConfig, step_dropout_key, train_and_evaluate, train_step
from jaxopt_zoo.train.runner import RunSpec, load_data, run
from jaxopt_zoo.train.sweep import SweepConfig, grid_points, sweep
from jaxopt_zoo.train.sweep.plan import Chunking, _equal_chunks
from jaxopt_zoo.train.techniques import Techniques

LRS = [1e-3, 3e-3]
MNIST = dict(train_limit=256, val_limit=200)


# train's LM recipe, SAM and EMA on the MLP: built by RunSpec.build, as `train` builds them
# (the schedule's peak is the traced learning rate in the sweep, a float in train)
TECHNIQUES = Techniques(
    clip_norm=1.0, schedule="warmup-cosine", warmup_steps=4, sam_rho=0.05, ema=0.9
)
TECHNIQUE_FLAGS = ["--clip-norm", "1", "--schedule", "warmup-cosine", "--warmup-steps", "4"]
TECHNIQUE_FLAGS += ["--sam-rho", "0.05", "--ema", "0.9"]
MLP_STEPS = 16  # 256 examples, batch 32, 2 epochs


def adam_spec(learning_rate):
    return RunSpec("adam", lr=learning_rate, techniques=TECHNIQUES)


def adam(learning_rate):
    return adam_spec(learning_rate).build(8, MLP_STEPS)


@pytest.fixture(scope="module")
def mnist():
    return load_data("mnist", **MNIST)


@pytest.fixture(scope="module")
def mlp_sweep(mnist):
    train, val = mnist
    config = SweepConfig(batch_size=32, epochs=2)
    return sweep(get_model("mlp"), adam, {"learning_rate": LRS}, [0, 1], train, val, config)


def max_abs_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


@pytest.fixture(scope="module")
def train_runs(mnist):
    """The 4 configurations as separate runs on the path of ``jaxopt-zoo train``
    (runner.run: RunSpec.build, then train_and_evaluate): ``[(params, history)]``."""
    train, val = mnist
    txs = {lr: adam(lr) for lr in LRS}  # one object per lr: both seeds share its compile
    out = []
    for lr in LRS:
        for seed in (0, 1):
            config = TrainConfig(batch_size=32, epochs=2, seed=seed, progress=False)
            state, history = run(adam_spec(lr), train, val, model="mlp", config=config, tx=txs[lr])
            out.append((jax.device_get(state.params), history))
    return out


HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
AVG_KEYS = ("val_loss_avg", "val_accuracy_avg")  # the EMA's weights


@pytest.mark.needs_data("mnist")
def test_each_configuration_equals_its_own_train_run(mlp_sweep, train_runs):
    assert [(r["hparams"]["learning_rate"], r["seed"]) for r in mlp_sweep.records] == [
        (lr, s) for lr in LRS for s in (0, 1)
    ]
    for i, (rec, (params, history)) in enumerate(zip(mlp_sweep.records, train_runs)):
        mine = jax.tree.map(lambda x, i=i: x[i], mlp_sweep.params)
        # Measured on CPU: the parameters are bit-identical, the losses within 2.4e-7
        # (the vmapped loss sums reduce in another order). Allow float32 rounding.
        diff = max_abs_diff(params, mine)
        assert diff <= 1e-6, (i, diff)
        assert [r["step"] for r in rec["history"]] == [8, 16]
        assert len(history) == len(rec["history"]) == 2
        for theirs, ours in zip(history, rec["history"]):
            assert set(theirs) | {"step"} == set(ours)
            for key in HISTORY_KEYS + AVG_KEYS:
                assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    # the configurations really differ (not one run copied four times)
    p = mlp_sweep.params["Dense_0"]["kernel"]
    assert all(float(np.abs(p[0] - p[j]).max()) > 1e-3 for j in (1, 2, 3))


@pytest.mark.needs_data("mnist")
def test_exact_sweep_is_bit_identical_to_train_runs(mnist, train_runs):
    train, val = mnist
    config = SweepConfig(batch_size=32, epochs=2, exact=True)
    lines = []
    result = sweep(
        get_model("mlp"), adam, {"learning_rate": LRS}, [0, 1], train, val, config,
        log=lines.append,
    )  # fmt: skip
    assert lines[0] == "4 configs, one at a time (exact)"
    assert result.compile_seconds == 0.0 and result.chunking.chunks == 4
    for i, (rec, (params, history)) in enumerate(zip(result.records, train_runs)):
        mine = jax.tree.map(lambda x, i=i: x[i], result.params)
        assert max_abs_diff(params, mine) == 0.0, i  # bit for bit
        assert len(rec["history"]) == len(history) == 2
        for theirs, ours in zip(history, rec["history"]):
            for key in HISTORY_KEYS + AVG_KEYS:
                assert ours[key] == theirs[key], (i, key)


@pytest.mark.needs_data("mnist")
def test_cli_chunked_sweep_writes_the_same_results(tmp_path, mlp_sweep, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--optimizer", "adam", "--model", "mlp", "--lr", "1e-3,3e-3"]
    argv += ["--seeds", "2", "--epochs", "2", "--batch-size", "32", "--chunk-size", "3"]
    argv += ["--train-limit", "256", "--val-limit", "200", "--output", str(out)]
    argv += TECHNIQUE_FLAGS  # train's flags: the configurations equal the fixture's
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 configs in 2 chunks of 2 (chunk size set)" in printed
    assert "0.6650 ± 0.0000" in printed  # the per-setting table
    record = json.loads((out / "sweep.json").read_text())
    assert record["metric"] == "val_accuracy"
    assert record["chunking"] == {"adam": "4 configs in 2 chunks of 2 (chunk size set)"}
    assert record["config"]["techniques"] == TECHNIQUES.record()
    assert len(record["records"]) == 4
    for ours, unchunked in zip(record["records"], mlp_sweep.records):
        assert (ours["optimizer"], ours["hparams"], ours["seed"]) == (
            "adam",
            unchunked["hparams"],
            unchunked["seed"],
        )
        for a, b in zip(ours["history"], unchunked["history"]):
            assert (
                set(a)
                == set(b)
                == {
                    "epoch",
                    "step",
                    "train_loss",
                    "train_accuracy",
                    "val_loss",
                    "val_accuracy",
                    "seconds",
                    "val_loss_avg",
                    "val_accuracy_avg",
                }
            )
            for key in ("train_loss", "val_loss", "val_accuracy"):
                # chunks of 2 vs one of 4: the batched evaluation sums round differently
                assert a[key] == pytest.approx(b[key], rel=1e-6), key
    lines = (out / "sweep.csv").read_text().splitlines()
    assert lines[0] == "optimizer,learning_rate,seed,final_val_accuracy,best_val_accuracy"
    assert len(lines) == 5
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.needs_data("mnist")
def test_cli_exact_sweep_equals_train_runs_bit_for_bit(tmp_path, train_runs, capsys):
    out = tmp_path / "exact"
    argv = ["sweep", "--optimizer", "adam", "--model", "mlp", "--lr", "1e-3,3e-3", "--exact"]
    argv += ["--seeds", "2", "--epochs", "2", "--batch-size", "32"]
    argv += ["--train-limit", "256", "--val-limit", "200", "--output", str(out)]
    argv += TECHNIQUE_FLAGS
    assert main(argv) == 0
    assert "4 configs, one at a time (exact)" in capsys.readouterr().out
    records = json.loads((out / "sweep.json").read_text())["records"]
    assert len(records) == 4
    for rec, (_, history) in zip(records, train_runs):
        for theirs, ours in zip(history, rec["history"], strict=True):
            for key in HISTORY_KEYS + AVG_KEYS:
                assert ours[key] == theirs[key], key


# --------------------------------------------------------------------------- #
# The char-LM path
# --------------------------------------------------------------------------- #

TOKENS = np.random.RandomState(0).randint(0, 12, 3000).astype(np.int32)
LM = CharTransformer(vocab_size=12, context=16, width=16, depth=1, heads=2, dropout=0.1)
LM_CONFIG = dict(batch_size=8, steps=20, eval_every=10, eval_windows=16)
LM_LRS = [0.1, 0.3]


def sgd(learning_rate):
    # SGD with momentum: Adam divides by sqrt(v) and so amplifies rounding on parameters
    # whose gradient is zero in theory (a transformer's key biases) to O(lr) differences
    return jz.sgd(learning_rate, momentum=0.9)


@pytest.fixture(scope="module")
def lm_sweep():
    config = SweepConfig(**LM_CONFIG)
    return sweep(LM, sgd, {"learning_rate": LM_LRS}, [0, 1], TOKENS[:2500], TOKENS[2500:], config)


def test_lm_sweep_configurations_equal_their_own_train_runs(lm_sweep):
    """The promise of ``sweep`` for the char-LM: each configuration = ``train_and_evaluate`` on
    ``TokenWindows`` with the same seed and learning rate (same windows, dropout, eval set)."""
    from jaxopt_zoo.data.text import eval_windows
    from jaxopt_zoo.train.lm import TokenWindows

    train = TokenWindows(TOKENS[:2500], 16)
    val = eval_windows(TOKENS[2500:], 16, LM_CONFIG["eval_windows"])
    txs = {lr: sgd(lr) for lr in LM_LRS}  # one object per lr: both seeds share its compile
    for i, rec in enumerate(lm_sweep.records):
        config = TrainConfig(
            batch_size=8, steps=20, eval_every=10, seed=rec["seed"], progress=False
        )
        state, history = train_and_evaluate(
            LM, txs[rec["hparams"]["learning_rate"]], train, val, config
        )
        # Measured on CPU (20 steps, 4 configs): parameters within 3.8e-7, val_loss within
        # 4.8e-7 and val_bits_per_char within 6.9e-7 (batched matrix products round in
        # another order); the accuracies are equal. Not bit-identical: see sweep.py.
        diff = max_abs_diff(
            jax.device_get(state.params), jax.tree.map(lambda x, i=i: x[i], lm_sweep.params)
        )
        assert diff <= 2e-6, (i, diff)
        assert [(r["epoch"], r["step"]) for r in history] == [(1, 10), (2, 20)]
        assert [(r["epoch"], r["step"]) for r in rec["history"]] == [(1, 10), (2, 20)]
        for theirs, ours in zip(history, rec["history"]):
            assert set(theirs) == set(ours)
            for key in ("train_loss", "val_loss", "val_bits_per_char", "val_accuracy"):
                assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    finals = [r["history"][-1]["val_loss"] for r in lm_sweep.records]
    assert len(set(finals)) == 4  # four different runs, not one copied


def test_lm_sweep_follows_the_contract(lm_sweep):
    """Config (lr 0.3, seed 1) against a plain loop: init fold_in(rng, 0), the batch of step s
    from fold_in(fold_in(rng, 1), s), dropout fold_in(fold_in(rng, 2), s), the fixed windows."""
    from jaxopt_zoo.data.text import eval_windows, sample_windows

    rng = jax.random.PRNGKey(1)
    tx = sgd(0.3)
    init = jnp.zeros((1, 16), jnp.int32)
    params = jax.jit(LM.init)({"params": jax.random.fold_in(rng, 0)}, init)["params"]
    train = jnp.asarray(TOKENS[:2500])

    @jax.jit
    def step(params, opt_state, s):
        x, y = sample_windows(train, jax.random.fold_in(jax.random.fold_in(rng, 1), s), 8, 16)
        r = train_step(LM, tx, params, opt_state, x, y, None, step_dropout_key(rng, s))
        return r.params, r.opt_state

    opt_state = tx.init(params)
    for s in range(20):
        params, opt_state = step(params, opt_state, s)
    assert (
        max_abs_diff(jax.device_get(params), jax.tree.map(lambda v: v[3], lm_sweep.params)) < 2e-6
    )
    vx, vy = eval_windows(TOKENS[2500:], 16, 16)
    val_loss = float(jax.jit(lambda p: lm_loss(LM.apply({"params": p}, vx), vy))(params))
    last = lm_sweep.records[3]["history"][-1]
    assert (last["epoch"], last["step"]) == (2, 20)
    assert last["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    assert last["val_bits_per_char"] == pytest.approx(val_loss / math.log(2), rel=1e-5)
    assert last["train_bits_per_char"] == pytest.approx(last["train_loss"] / math.log(2))
    assert 0 <= last["val_accuracy"] <= 1 and math.isfinite(last["train_loss"])


def test_a_small_memory_budget_chunks_the_grid_and_changes_nothing(lm_sweep):
    config = SweepConfig(**LM_CONFIG, memory_budget=1)
    # lr 0.3 x seeds 0, 1: configurations 2 and 3 of lm_sweep
    small = sweep(LM, sgd, {"learning_rate": [0.3]}, [0, 1], TOKENS[:2500], TOKENS[2500:], config)
    assert (small.chunking.chunks, small.chunking.size, small.chunking.forced) == (2, 1, False)
    assert small.chunking.describe().startswith("2 configs in 2 chunks of 1 (about ")
    # vmapped over 4 vs one at a time: equal to rounding (batched vs plain matrix products)
    assert max_abs_diff(small.params, jax.tree.map(lambda x: x[2:], lm_sweep.params)) < 1e-5
    for a, b in zip(small.records, lm_sweep.records[2:]):
        assert a["seed"] == b["seed"]
        for ra, rb in zip(a["history"], b["history"]):
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-5)


def test_equal_chunks_pad_the_last():
    assert _equal_chunks(10, 4) == (3, 4)
    assert _equal_chunks(8, 8) == (1, 8)
    assert Chunking(10, 3, 4, None, 1, True).describe() == (
        "10 configs in 3 chunks of 4 (the last padded with 2; chunk size set)"
    )


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--opt-arg", "nesterov=true,false"], "only numeric hyperparameters can be swept"),
        (["--lr", "1e-3,fast"], "expected comma-separated positive numbers"),
        (["--lr", "1e-3,-1"], "expected positive finite numbers"),
        (["--opt-arg", "learning_rate=0.1,0.2"], "give learning rates with --lr"),
        (["--model", "charlm"], "give it a step budget, --steps N"),
        (["--warmup-steps", "5"], "--warmup-steps needs --schedule"),
        (["--model", "charlm", "--steps", "9", "--swa-start", "1"], "use --ema"),
        (["--dropout", "0.1"], "--dropout is for --model charlm"),
        (["--schedule", "wsd", "--warmup-steps", "100", "--steps", "50"], "leaves nothing"),
        pytest.param(  # 2 steps in all: known once the data is loaded, before any writing
            ["--schedule", "warmup-cosine", "--warmup-steps", "3", "--epochs", "1"]
            + ["--train-limit", "64", "--batch-size", "32"],
            "the run's 2 steps leave nothing after 3 warm-up steps",
            marks=pytest.mark.needs_data("mnist"),
        ),
        (["--optimizer", "adma"], "adma"),
        (["--optimizer", "adam,adam"], "repeated name"),
        (["--opt-arg", "b1=0.9,0.95", "--optimizer", "sgd"], "unknown argument"),
    ],
)
def test_bad_flags_are_usage_errors(flags, message, capsys, tmp_path):
    argv = ["sweep", "--optimizer", "adam", "--output", str(tmp_path / "x")]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing written


def test_bad_grids_and_seeds_are_refused():
    with pytest.raises(TypeError, match="only numeric hyperparameters can be swept"):
        grid_points({"learning_rate": [0.1, "high"]})
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"learning_rate": []})
    with pytest.raises(ValueError, match="at least one seed"):
        sweep(LM, sgd, {"learning_rate": [0.1]}, [], TOKENS, TOKENS, SweepConfig(steps=1))
    with pytest.raises(ValueError, match="step budget"):
        sweep(LM, sgd, {"learning_rate": [0.1]}, [0], TOKENS, TOKENS, SweepConfig())
