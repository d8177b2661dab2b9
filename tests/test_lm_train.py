"""The char-LM workload in the trainer: step budgets, evaluation every K steps, resume,
the LM training recipe (clipping, schedules, decay mask) and the ``sample`` command.

Tiny shapes throughout (1 layer, width 16, context 16, batch 8): the cost is compiling."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo import cli
from jaxopt_zoo.models import MLP
from jaxopt_zoo.train import Checkpointer, LoopState, TrainConfig, train_and_evaluate
from jaxopt_zoo.train.checkpoint import RUN_FILE
from jaxopt_zoo.train.checkpoint.format import FORMAT
from jaxopt_zoo.train.history import BITS_KEYS, HISTORY_KEYS
from jaxopt_zoo.train.runner import RunSpec
from jaxopt_zoo.train.techniques import Techniques

TINY = ["--layers", "1", "--width", "16", "--context", "16", "--heads", "2"]
LM_ARGS = [
    "train",
    "--optimizer",
    "adamw",
    "--model",
    "charlm",
    "--steps",
    "6",
    "--eval-every",
    "4",
    "--batch-size",
    "8",
    "--eval-windows",
    "8",
    "--no-progress",
    *TINY,
]


def leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def restored(ck):
    """The newest checkpoint of a LM_ARGS run, restored (adamw, the tiny charlm)."""
    from jaxopt_zoo.train import init_loop_state
    from jaxopt_zoo.train.lm import lm_model

    model = lm_model(depth=1, width=16, context=16, heads=2)
    template = init_loop_state(model, jz.adamw(1e-3), np.zeros((1, 16), np.int32))
    with Checkpointer(ck) as c:
        state, _ = c.restore_latest(template)
    return state


def no_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """An interrupted-then-resumed charlm run and an uninterrupted one, through cli.main."""
    tmp = tmp_path_factory.mktemp("lm")
    callback = Checkpointer.callback

    def ctrl_c_during_step_3(self, state):
        if state.step == 3 and self.interrupted is None:
            os.kill(os.getpid(), signal.SIGINT)
        return callback(self, state)

    a = ["--checkpoint-dir", str(tmp / "ck_a"), "--output", str(tmp / "out_a")]
    mp = pytest.MonkeyPatch()
    mp.setattr(Checkpointer, "callback", ctrl_c_during_step_3)
    try:
        stopped = cli.main(LM_ARGS + a)
    finally:
        mp.undo()
    resumed = cli.main(LM_ARGS + a + ["--resume"])
    b = ["--checkpoint-dir", str(tmp / "ck_b"), "--output", str(tmp / "out_b")]
    full = cli.main(LM_ARGS + b)
    return tmp, (stopped, resumed, full)


@pytest.mark.needs_data("shakespeare")
def test_cli_charlm_writes_steps_and_bits_and_resumes_bit_identically(lm_runs):
    tmp, codes = lm_runs
    assert codes == (130, 0, 0)
    history = json.loads((tmp / "out_b" / "metrics.json").read_text())["history"]
    assert [(r["epoch"], r["step"]) for r in history] == [(1, 4), (2, 6)]
    for r in history:
        assert tuple(r) == HISTORY_KEYS + BITS_KEYS
        assert r["val_bits_per_char"] == pytest.approx(r["val_loss"] / np.log(2))
        assert r["train_bits_per_char"] == pytest.approx(r["train_loss"] / np.log(2))
        assert 0 < r["val_loss"] < 2 * np.log(84)  # near log(84) after 6 tiny steps
    assert (tmp / "out_b" / "learning_curve.png").stat().st_size > 10_000
    resumed = json.loads((tmp / "out_a" / "metrics.json").read_text())["history"]
    assert no_seconds(resumed) == no_seconds(history)
    a, b = restored(tmp / "ck_a"), restored(tmp / "ck_b")
    assert leaves_equal(a.params, b.params) and leaves_equal(a.opt_state, b.opt_state)
    assert (a.step, a.epoch, a.batch) == (b.step, b.epoch, b.batch) == (6, 2, 0)
    run = json.loads((tmp / "ck_b" / RUN_FILE).read_text())["metadata"]
    assert run["model_options"] == {
        "vocab_size": 84,
        "context": 16,
        "width": 16,
        "depth": 1,
        "heads": 2,
    }
    assert run["eval_every"] == 4 and len(run["vocab"]) == 84


@pytest.mark.needs_data("shakespeare")
def test_sample_prints_length_characters_after_the_prompt(lm_runs, capsys):
    tmp, _ = lm_runs
    ck = str(tmp / "ck_b")
    args = ["sample", "--checkpoint-dir", ck, "--length", "25", "--prompt", "ROMEO:"]
    assert cli.main(args + ["--seed", "1"]) == 0
    out = capsys.readouterr()
    assert "Resumed from checkpoint" in out.err and "step 6" in out.err
    text = out.out[:-1]  # print's newline
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 25
    assert cli.main(args + ["--seed", "1"]) == 0
    assert capsys.readouterr().out[:-1] == text  # a pure function of the seed
    assert cli.main(args + ["--temperature", "0"]) == 0  # greedy
    assert len(capsys.readouterr().out) == len(text) + 1


@pytest.mark.needs_data("shakespeare")
def test_sample_errors_are_clear(lm_runs, tmp_path, capsys):
    lm_dir, _ = lm_runs
    assert cli.main(["sample", "--checkpoint-dir", str(tmp_path / "none")]) == 2
    assert "does not exist: no checkpoint to sample from" in capsys.readouterr().err
    mlp = tmp_path / "mlp"
    mlp.mkdir()
    (mlp / RUN_FILE).write_text(json.dumps({"format": FORMAT, "metadata": {"model": "mlp"}}))
    assert cli.main(["sample", "--checkpoint-dir", str(mlp)]) == 2
    assert "a --model mlp run; sample needs a --model charlm run" in capsys.readouterr().err
    ck = str(lm_dir / "ck_b")
    assert cli.main(["sample", "--checkpoint-dir", ck, "--prompt", "\u00e9"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "charlm"], "--model charlm has no epochs: give it a step budget, --steps N"),
        (["--model", "mlp", "--context", "8"], "--context is for --model charlm"),
        (["--model", "charlm", "--steps", "9", "--train-limit", "5"], "--train-limit is for"),
        (["--model", "cnn", "--dataset", "shakespeare"], "--model charlm trains on"),
        (["--warmup-steps", "3"], "--warmup-steps needs --schedule warmup-cosine or wsd"),
        (["--schedule", "warmup-cosine", "--decay-fraction", "0.1"], "--decay-fraction needs"),
        (["--steps", "5", "--schedule", "wsd", "--warmup-steps", "5"], "leaves nothing of"),
        (["--optimizer", "adam", "--decay-mask"], "no weight_decay; set one"),
        (["--clip-norm", "0"], "expected a positive finite number"),
    ],
)
def test_lm_flag_errors_exit_2(extra, message, capsys, tmp_path):
    args = ["train", "--output", str(tmp_path)] + extra
    if "--optimizer" not in extra:
        args += ["--optimizer", "adamw"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


# --------------------------------------------------------------------------- #
# Step budgets for any model
# --------------------------------------------------------------------------- #

IMAGES = jax.random.uniform(jax.random.PRNGKey(0), (20, 28, 28, 1))
LABELS = jnp.arange(20) % 10
SGD = jz.sgd(0.1)  # one object: the runs below share the compiled step


def test_steps_stop_mid_epoch_on_the_epoch_trajectory():
    cfg = TrainConfig(batch_size=8, epochs=2, progress=False, seed=3)  # 3 steps per epoch
    stop_at_4 = lambda s: s.step == 4  # noqa: E731
    ref, _ = train_and_evaluate(
        MLP(hidden=(8,)), SGD, (IMAGES, LABELS), None, cfg, callbacks=stop_at_4
    )
    cfg = TrainConfig(batch_size=8, steps=4, progress=False, seed=3)
    state, history = train_and_evaluate(
        MLP(hidden=(8,)), SGD, (IMAGES, LABELS), (IMAGES, LABELS), cfg
    )
    assert state.step == 4 and leaves_equal(state.params, ref.params)
    # without eval_every: the end of every epoch, and the end of the budget
    assert [(r["epoch"], r["step"]) for r in history] == [(1, 3), (2, 4)]
    cfg = TrainConfig(batch_size=8, steps=4, eval_every=2, progress=False, seed=3)
    seen = []
    state, history = train_and_evaluate(
        MLP(hidden=(8,)), SGD, (IMAGES, LABELS), None, cfg, callbacks=lambda s: seen.append(s.step)
    )
    assert seen == [1, 2, 3, 4] and leaves_equal(state.params, ref.params)
    assert [r["step"] for r in history] == [2, 4]


def test_resume_between_evaluations_is_bit_identical():
    cfg = TrainConfig(batch_size=8, steps=5, eval_every=2, progress=False, seed=1)
    model, data = MLP(hidden=(8,)), (IMAGES, LABELS)
    full, full_history = train_and_evaluate(model, SGD, data, data, cfg)
    for stop in (2, 3):  # at an evaluation point (evaluation pending), and between two
        stopped, _ = train_and_evaluate(
            model, SGD, data, data, cfg, callbacks=lambda s: s.step == stop
        )
        assert isinstance(stopped, LoopState) and (stopped.step, stopped.epoch) == (
            stop,
            1 if stop == 3 else 0,
        )
        state, history = train_and_evaluate(model, SGD, data, data, cfg, state=stopped)
        assert leaves_equal(state.params, full.params)
        assert no_seconds(history) == no_seconds(full_history)
    assert [r["step"] for r in full_history] == [2, 4, 5]


# --------------------------------------------------------------------------- #
# The LM training recipe, for any optimizer
# --------------------------------------------------------------------------- #

PARAMS = {
    "token_embed": {"embedding": jnp.ones((3, 2))},
    "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    "ln": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
}
ZERO = jax.tree.map(jnp.zeros_like, PARAMS)


def one_update(spec, grads=ZERO, total_steps=10):
    tx = spec.build(total_steps=total_steps)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    return updates


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        ("adamw", {"weight_decay": 0.5}),
        ("sgd", {"weight_decay": 0.5}),
        ("torch.adamw", {"weight_decay": 0.5}),
    ],
)
def test_decay_mask_keeps_decay_off_biases_norms_and_embeddings(optimizer, kwargs):
    masked = one_update(
        RunSpec(optimizer, lr=0.1, kwargs=kwargs, techniques=Techniques(decay_mask=True))
    )
    plain = one_update(RunSpec(optimizer, lr=0.1, kwargs=kwargs))
    for path, u in jax.tree_util.tree_flatten_with_path(masked)[0]:
        decays = jax.tree_util.keystr(path).endswith("['kernel']")
        # zero gradients: the update is the decay alone, -lr * wd * p
        assert np.allclose(u, -0.05 if decays else 0.0), (optimizer, path, u)
    assert all(np.allclose(u, -0.05) for u in jax.tree.leaves(plain))


def test_clip_norm_clips_the_gradient_before_the_optimizer():
    grads = jax.tree.map(lambda p: 100.0 * p, PARAMS)
    u = one_update(RunSpec("sgd", lr=1.0, techniques=Techniques(clip_norm=2.0)), grads)
    norm = float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(u))))
    assert norm == pytest.approx(2.0, rel=1e-5)
    u = one_update(RunSpec("sgd", lr=1.0), grads)
    assert float(jnp.max(jnp.abs(jax.tree.leaves(u)[0]))) == pytest.approx(100.0)


def test_schedules_span_the_run():
    lr = Techniques(schedule="warmup-cosine", warmup_steps=10).learning_rate(0.1, 1, 110)
    assert [round(float(lr(t)), 6) for t in (0, 5, 10, 60, 110)] == [0.0, 0.05, 0.1, 0.05, 0.0]
    lr = Techniques(schedule="wsd", warmup_steps=10, decay_fraction=0.25).learning_rate(0.1, 1, 100)
    assert [round(float(lr(t)), 6) for t in (5, 10, 74, 75, 100)] == [0.05, 0.1, 0.1, 0.1, 0.0]
    # step 0 of warm-up: the first update is zero
    u = one_update(
        RunSpec("sgd", lr=1.0, techniques=Techniques(schedule="wsd", warmup_steps=2)), PARAMS
    )
    assert all(np.allclose(x, 0.0) for x in jax.tree.leaves(u))
    with pytest.raises(ValueError, match="needs the run's total_steps"):
        Techniques(schedule="wsd").learning_rate(0.1, 1)
    assert Techniques(schedule="wsd", warmup_steps=3, clip_norm=1.0, decay_mask=True).record() == {
        "clip_norm": 1.0,
        "schedule": "wsd",
        "warmup_steps": 3,
        "decay_fraction": 0.2,
        "decay_mask": True,
    }
