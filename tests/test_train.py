"""Models and the training loop, on tiny fake data (no MNIST needed)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_zoo import models
from jaxopt_zoo.models import CNN, MLP, get_model, max_pool_2x2
from jaxopt_zoo.train import (
    HISTORY_KEYS,
    LoopState,
    TrainConfig,
    epoch_order,
    evaluate,
    init_loop_state,
    make_indexed_train_step,
    make_train_step,
    should_stop,
    train_and_evaluate,
    weighted_cross_entropy,
)
from jaxopt_zoo.train import loop as loop_module


def fake_data(n: int, seed: int = 0):
    """Random images; the label's horizontal stripe (rows 2k, 2k+1) is brightened, so the label
    is a learnable (linear) function of the pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    images = rng.uniform(0.0, 0.5, size=(n, 28, 28, 1)).astype(np.float32)
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 2, :, :] += 0.5
    return images, labels


TRAIN = fake_data(256, seed=0)
VAL = fake_data(64, seed=1)
TRAIN100 = (TRAIN[0][:100], TRAIN[1][:100])  # 100 = 3 * 32 + 4: a partial last batch
# One optimizer object for the CNN runs: the loop reuses a compiled step for the same
# (model, tx, batch size, data shape), which keeps this file fast.
ADAM = optax.adam(1e-3)


def init_params(model, seed=0):
    return init_loop_state(model, ADAM, TRAIN[0][:1], seed=seed).params


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def quiet(**kw) -> TrainConfig:
    return TrainConfig(progress=False, **kw)


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("hw", [26, 27])
def test_reshape_max_pool_matches_valid_max_pool(hw):
    x = np.random.default_rng(0).normal(size=(2, hw, hw, 3)).astype(np.float32)
    expected = jax.jit(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"))(x)
    got = jax.jit(max_pool_2x2)(x)
    assert got.shape == (2, 13, 13, 3)
    np.testing.assert_array_equal(got, expected)


def test_model_shapes_and_parameter_counts():
    x = jnp.zeros((3, 28, 28, 1))
    for name, n_params in [("cnn", 1_387_594), ("mlp", 101_770)]:
        model = get_model(name)
        params = init_params(model)
        assert jax.jit(model.apply)({"params": params}, x).shape == (3, 10)
        assert jax.jit(model.apply)({"params": params}, x[..., 0]).shape == (3, 10)
        assert sum(p.size for p in jax.tree.leaves(params)) == n_params
    with pytest.raises(ValueError, match="Unknown model: 'resnet'"):
        get_model("resnet")
    with pytest.raises(ValueError, match="Invalid init_style: 'torch'"):
        get_model("cnn", init_style="torch")


def test_init_styles_differ_and_have_the_right_variance():
    keras = init_params(CNN(init_style="keras"))
    flax_ = init_params(CNN(init_style="flax"))
    assert not leaves_equal(keras, flax_)
    for p in (keras, flax_):  # biases start at zero in both styles
        for layer in p.values():
            assert not np.any(layer["bias"])

    # glorot_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), variance a^2 / 3.
    # The conv kernel (3, 3, 1, 32) has Keras' fans 3*3*1 = 9 and 3*3*32 = 288.
    conv = np.asarray(keras["Conv_0"]["kernel"])
    a = np.sqrt(6.0 / (9 + 288))
    assert np.abs(conv).max() <= a and np.abs(conv).max() > 0.9 * a
    dense = np.asarray(keras["Dense_0"]["kernel"])  # (5408, 256)
    a = np.sqrt(6.0 / (5408 + 256))
    assert np.abs(dense).max() <= a
    np.testing.assert_allclose(dense.var(), a * a / 3, rtol=0.02)
    # lecun_normal: variance 1 / fan_in.
    np.testing.assert_allclose(np.asarray(flax_["Dense_0"]["kernel"]).var(), 1 / 5408, rtol=0.02)
    mlp = init_params(MLP(init_style="keras"))
    np.testing.assert_allclose(
        np.asarray(mlp["Dense_0"]["kernel"]).var(), 2.0 / (784 + 128), rtol=0.03
    )


# --------------------------------------------------------------------------- #
# Steps
# --------------------------------------------------------------------------- #


def test_padded_batch_has_the_gradients_of_the_true_batch():
    model = CNN()
    images, labels = TRAIN
    params = init_params(model)
    x, y = jnp.asarray(images[:5]), jnp.asarray(labels[:5])
    # Padding rows hold garbage (huge values): weight 0 must remove them entirely.
    xp = jnp.concatenate([x, jnp.full((3, 28, 28, 1), 1e4)])
    yp = jnp.concatenate([y, jnp.array([1, 2, 3], jnp.int32)])
    w = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)

    def true_loss(p):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def padded_loss(p):
        return weighted_cross_entropy(model.apply({"params": p}, xp), yp, w)

    l_true, g_true = jax.jit(jax.value_and_grad(true_loss))(params)
    l_pad, g_pad = jax.jit(jax.value_and_grad(padded_loss))(params)
    np.testing.assert_allclose(l_pad, l_true, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_true)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_loop_step_on_the_partial_last_batch_equals_a_small_batch_step():
    model, tx = MLP(), optax.sgd(0.1)
    images, labels = jnp.asarray(TRAIN[0][:37]), jnp.asarray(TRAIN[1][:37])
    params = init_params(model)
    key = jax.random.key(1)
    # The loop's step: batch 2 of size 16 over 37 examples holds only examples 32..36.
    indexed = make_indexed_train_step(model, tx, 16)
    p1, _, totals = indexed(
        jax.tree.map(jnp.copy, params),
        tx.init(params),
        loop_module.zero_metrics(),
        images,
        labels,
        jnp.arange(37, dtype=jnp.int32),
        2,
        0,
        key,
    )
    # A direct step on exactly those 5 examples.
    step = make_train_step(model, tx)
    p2, _, loss, _ = step(
        jax.tree.map(jnp.copy, params), tx.init(params), images[32:], labels[32:], jnp.ones(5), key
    )
    assert float(totals.count) == 5.0
    np.testing.assert_allclose(float(totals.loss) / 5, float(loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- #
# Loop
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_one_epoch_lowers_the_loss(name):
    model = get_model(name)
    cfg = quiet(batch_size=32, epochs=1, seed=0)
    loss0, _ = evaluate(model, init_params(model, seed=0), *TRAIN)
    state, history = train_and_evaluate(model, ADAM, TRAIN, VAL, cfg)
    loss1, _ = evaluate(model, state.params, *TRAIN)
    assert loss0 > 2.0 and loss1 < 0.9 * loss0
    assert len(history) == 1 and set(history[0]) == set(HISTORY_KEYS)
    assert history[0]["epoch"] == 1 and history[0]["seconds"] > 0
    assert np.isfinite(history[0]["val_loss"]) and 0 <= history[0]["val_accuracy"] <= 1
    assert (state.step, state.epoch, state.batch) == (8, 1, 0)


def test_history_keys_without_validation_data():
    _, history = train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN, None, quiet(epochs=2))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(tuple(h) == HISTORY_KEYS for h in history)
    assert history[0]["val_loss"] is None and history[0]["val_accuracy"] is None


def test_exactly_one_compile_across_epochs_with_a_partial_last_batch(monkeypatch):
    made = []

    def spy(*args, **kw):
        made.append(make_indexed_train_step(*args, **kw))
        return made[-1]

    monkeypatch.setattr(loop_module, "make_indexed_train_step", spy)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=optax.cosine_decay_schedule(1e-3, 30))
    data = TRAIN100
    counts = []  # examples counted in each epoch, read when its last batch is done

    def count_examples(s):
        if s.batch == 4:
            counts.append(float(s.totals.count))

    state, history = train_and_evaluate(
        CNN(), tx, data, VAL, quiet(batch_size=32, epochs=3), callbacks=[count_examples]
    )
    assert len(made) == 1 and made[0]._cache_size() == 1
    assert state.step == 12 and len(history) == 3
    assert counts == [100.0, 100.0, 100.0]
    # The schedule ran on the step count: the 12th update used lr = schedule(11).
    np.testing.assert_allclose(
        state.opt_state.hyperparams["learning_rate"],
        optax.cosine_decay_schedule(1e-3, 30)(11),
        rtol=1e-6,
    )


def test_drop_last_skips_the_partial_batch():
    state, _ = train_and_evaluate(
        MLP(), optax.sgd(0.1), TRAIN100, None, quiet(batch_size=32, epochs=2, drop_last=True)
    )
    assert state.step == 6


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    rng = jax.random.PRNGKey(3)
    o0, o0b, o1 = epoch_order(rng, 0, 50), epoch_order(rng, 0, 50), epoch_order(rng, 1, 50)
    assert sorted(np.asarray(o0).tolist()) == list(range(50))
    np.testing.assert_array_equal(o0, o0b)
    assert not np.array_equal(o0, o1)


def test_early_stopping_triggers_after_patience_epochs():
    # lr = 0: the validation loss never improves after the first epoch.
    _, history = train_and_evaluate(MLP(), optax.sgd(0.0), TRAIN, VAL, quiet(epochs=10, patience=2))
    assert len(history) == 3
    assert history[0]["val_loss"] == history[2]["val_loss"]
    _, history = train_and_evaluate(MLP(), optax.sgd(0.0), TRAIN, VAL, quiet(epochs=4))
    assert len(history) == 4  # patience=None: no early stopping
    with pytest.raises(ValueError, match="pass val_ds"):
        train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN, None, quiet(patience=1))


def test_should_stop_follows_keras_early_stopping():
    h = lambda *losses: [{"val_loss": v} for v in losses]  # noqa: E731
    assert not should_stop(h(1.0, 0.9, 0.8), 1)
    assert should_stop(h(1.0, 0.9, 0.95), 1)
    assert not should_stop(h(1.0, 0.9, 0.95), 2)
    assert should_stop(h(1.0, 0.9, 0.95, 0.9), 2)  # equal is not an improvement
    assert should_stop(h(1.0, float("nan")), 1)  # nan is never an improvement
    assert not should_stop(h(1.0, 0.5), 0)  # patience 0 acts like 1, as in Keras
    assert should_stop(h(1.0, 1.5), 0)
    assert not should_stop(h(1.0, 2.0, 3.0), None)


def test_same_seed_is_bit_identical_and_seeds_differ():
    # Parameters, optimizer state and the metrics history (all but wall-clock seconds).
    runs = [train_and_evaluate(CNN(), ADAM, TRAIN, VAL, quiet(epochs=1, seed=s)) for s in (0, 0, 1)]
    (a, ha), (b, hb), (c, hc) = runs
    assert leaves_equal(a.params, b.params) and leaves_equal(a.opt_state, b.opt_state)
    untimed = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert untimed(ha) == untimed(hb)
    assert not leaves_equal(a.params, c.params) and untimed(ha) != untimed(hc)


def test_resume_mid_epoch_is_bit_identical():
    data, tx = TRAIN100, ADAM
    cfg = quiet(batch_size=32, epochs=2, seed=4)
    full, full_history = train_and_evaluate(CNN(), tx, data, VAL, cfg)

    seen = []

    def stop_at_step_6(state: LoopState):
        seen.append(state.step)
        return state.step == 6  # epoch 2, after its batch 2 of 4

    stopped, history = train_and_evaluate(CNN(), tx, data, VAL, cfg, callbacks=stop_at_step_6)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert (stopped.step, stopped.epoch, stopped.batch, len(history)) == (6, 1, 2, 1)
    resumed, resumed_history = train_and_evaluate(CNN(), tx, data, VAL, cfg, state=stopped)
    assert leaves_equal(resumed.params, full.params)
    assert leaves_equal(resumed.opt_state, full.opt_state)
    for a, b in zip(resumed_history, full_history):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    # Resuming does not consume the caller's state.
    assert not any(x.is_deleted() for x in jax.tree.leaves(stopped.params))


def test_progress_bar_only_when_asked(capsys):
    train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN, VAL, TrainConfig(epochs=1, progress=False))
    assert capsys.readouterr().err == ""
    train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN, VAL, TrainConfig(epochs=1, progress=True))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "val_acc" in err
    # progress=None under pytest (stderr captured, not a tty): quiet.
    train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN, VAL, TrainConfig(epochs=1))
    assert capsys.readouterr().err == ""


def test_config_and_input_validation():
    with pytest.raises(ValueError, match="Invalid batch_size: 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="Invalid patience: -1"):
        TrainConfig(patience=-1)
    with pytest.raises(ValueError, match="leaves no batch"):
        train_and_evaluate(
            MLP(),
            optax.sgd(0.1),
            (TRAIN[0][:10], TRAIN[1][:10]),
            None,
            quiet(batch_size=32, drop_last=True),
        )
    with pytest.raises(TypeError, match="Invalid train_ds"):
        train_and_evaluate(MLP(), optax.sgd(0.1), TRAIN[0], None, quiet())
    with pytest.raises(TypeError, match="got dtype uint8. Load with normalize=True"):
        train_and_evaluate(
            MLP(), optax.sgd(0.1), ((TRAIN[0] * 255).astype(np.uint8), TRAIN[1]), None, quiet()
        )
    with pytest.raises(ValueError, match=r"labels \(N,\)"):
        train_and_evaluate(MLP(), optax.sgd(0.1), (TRAIN[0], TRAIN[1][:5]), None, quiet())


def test_models_module_exports_factory():
    assert set(models.MODELS) == {"charlm", "cnn", "mlp"}
    assert get_model("CNN", "keras") == CNN(init_style="keras")


def test_optimizer_state_that_aliases_the_parameters():
    # tx.init returning the params arrays themselves must not break buffer donation.
    def aliasing():
        return optax.GradientTransformation(lambda p: (p, p), lambda g, s, p=None: (g, (p, p)))

    tx = optax.chain(aliasing(), optax.sgd(0.1))
    state, _ = train_and_evaluate(MLP(), tx, TRAIN100, None, quiet(batch_size=32, epochs=2))
    assert state.step == 8
    assert leaves_equal(state.opt_state[0][0], state.opt_state[0][1])  # params before the last step
