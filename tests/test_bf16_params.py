"""bfloat16 parameters without a float32 master copy (``jz.bf16_params``).

- ``stochastic_round_bf16`` equals torchao 0.18's ``_fp32_to_bf16_sr`` bit for bit given the
  same random bits (its ``torch.randint`` replaced by ours), and is unbiased.
- Updates below half an ulp: lost with ``"nearest"``, kept in expectation by
  ``"stochastic"``, accumulated by ``"kahan"`` (Zamirai et al. 2020's compensated sum).
- ``optax.apply_updates`` lands exactly on the rounded value (float32 updates ``r - p``),
  unless a parameter shrinks by more than 2^15 in one step.
- jit, vmap, mixed float32/bfloat16 trees, extra arguments, bad arguments; the trainer
  casts the parameters (``--bf16-params`` end to end: ``tests/test_cli.py``).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_zoo as jz

with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")  # torchao's import warns about its CUDA kernels
    from torchao.optim import quant_utils as torchao_quant


def _bits(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x, jnp.bfloat16)).view(np.uint16)


def test_stochastic_round_matches_torchao_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(size=3000) * np.exp(rng.uniform(-30, 30, size=3000)),
            np.asarray(jnp.asarray(rng.normal(size=200), jnp.bfloat16), np.float32),  # exact
            [0.0, -0.0, 1.0, -1.0, 3.0e38, -3.0e38, np.inf, -np.inf, 1e-40, -1e-40],
        ]
    ).astype(np.float32)
    rand = rng.integers(0, 1 << 16, size=x.shape).astype(np.int32)
    rand[:20] = 0  # the edges: never up, and up whenever the fraction is non-zero
    rand[20:40] = (1 << 16) - 1
    monkeypatch.setattr(
        torchao_quant.torch, "randint", lambda *a, **k: torch.from_numpy(rand.copy())
    )
    want = torchao_quant._fp32_to_bf16_sr(torch.from_numpy(x)).view(torch.int16).numpy()
    got = _bits(jax.jit(jz.stochastic_round_bf16)(x, rand.astype(np.uint32)))
    np.testing.assert_array_equal(got, want.view(np.uint16))
    # Neither is plain truncation or nearest: both directions occur.
    trunc = _bits(jax.lax.bitcast_convert_type(
        jax.lax.bitcast_convert_type(jnp.asarray(x), jnp.uint32) & jnp.uint32(0xFFFF0000),
        jnp.float32,
    ))  # fmt: skip
    assert 0.2 < np.mean(got != trunc) < 0.8


def test_stochastic_rounding_is_unbiased():
    x = jnp.asarray(np.random.default_rng(1).normal(size=64), jnp.float32)
    n = 8192
    bits = jax.random.bits(jax.random.PRNGKey(3), (n, 64), jnp.uint32) >> 16
    rounded = jax.vmap(jz.stochastic_round_bf16, in_axes=(None, 0))(x, bits)
    mean = np.asarray(rounded, np.float64).mean(0)
    rel = np.abs(mean - np.asarray(x, np.float64)) / np.abs(np.asarray(x, np.float64))
    assert rel.max() < 1e-3, rel.max()
    # and genuinely random: nearest rounding is ~1e-3 off for some of these
    nearest = np.asarray(x.astype(jnp.bfloat16), np.float64)
    assert (np.abs(nearest - np.asarray(x, np.float64)) / np.abs(np.asarray(x))).max() > 1e-3


STEPS = 200


@pytest.fixture(scope="module")
def small_update_runs():
    """200 SGD steps of -1e-4 (a 40th of an ulp at 1.0) on 4096 bfloat16 ones, each rounding,
    in one jit + scan per rounding; float32 leaves alongside."""
    out = {}
    for rounding in ("stochastic", "kahan", "nearest"):
        tx = jz.bf16_params(jz.sgd(1e-4), rounding=rounding, seed=1)
        p0 = {"w": jnp.ones(4096, jnp.bfloat16), "f32": jnp.ones(3, jnp.float32)}

        @jax.jit
        def run(p0, tx=tx):
            def body(carry, _):
                p, s = carry
                u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(body, (p0, tx.init(p0)), None, length=STEPS)[0]

        out[rounding] = run(p0)
    return out


def test_small_updates_lost_only_by_nearest(small_update_runs):
    want = 1.0 - STEPS * 1e-4  # 0.98
    w = {r: np.asarray(p["w"], np.float64) for r, (p, _) in small_update_runs.items()}
    assert np.all(w["nearest"] == 1.0)  # lost
    # stochastic: moves in expectation (per element sd about 0.0016; mean of 4096)
    assert abs(w["stochastic"].mean() - want) < 2e-4, w["stochastic"].mean()
    assert w["stochastic"].std() > 1e-3  # by random amounts
    # kahan: every element within half an ulp of the exact sum (deterministically)
    assert np.all(np.abs(w["kahan"] - want) <= 2.0**-9), np.abs(w["kahan"] - want).max()
    for p, _ in small_update_runs.values():
        assert p["w"].dtype == jnp.bfloat16
        np.testing.assert_allclose(p["f32"], want, rtol=2e-5)  # float32 leaf: inner's update
    comp = small_update_runs["kahan"][1].compensation
    assert comp["w"].dtype == jnp.bfloat16 and comp["f32"] is None


def test_apply_updates_lands_exactly_on_the_rounded_value():
    rng = np.random.default_rng(2)
    p = jnp.asarray(rng.normal(size=20000) * np.exp(rng.uniform(-20, 20, size=20000)), jnp.bfloat16)
    ratio = rng.choice([-1, 1], size=20000) * 2.0 ** rng.uniform(-15, 30, size=20000)
    target = jnp.asarray(np.asarray(p, np.float64) * ratio, jnp.float32)
    tx = jz.bf16_params(optax.GradientTransformation(
        lambda _: optax.EmptyState(), lambda g, s, q=None: (g, s)), rounding="nearest")  # fmt: skip
    step = jax.jit(lambda p, u: tx.update(u, tx.init(p), p)[0])
    u = step({"w": p}, {"w": (target - p.astype(jnp.float32)).astype(jnp.float32)})
    landed = optax.apply_updates({"w": p}, u)["w"]
    want = (p.astype(jnp.float32) + (target - p.astype(jnp.float32))).astype(jnp.bfloat16)
    np.testing.assert_array_equal(_bits(landed), _bits(want))
    # The limit: shrinking by 2^20 in one step is not representable as p + float32 u.
    p1 = jnp.asarray([1.0], jnp.bfloat16)
    r = (1 + 2.0**-7) * 2.0**-20  # a bfloat16 whose difference from 1 needs 28 bits
    u1 = step({"w": p1}, {"w": jnp.asarray([r - 1.0], jnp.float32)})
    landed = float(optax.apply_updates({"w": p1}, u1)["w"][0])
    assert landed != r and abs(landed - r) <= 2.0**-24


def test_jit_vmap_extra_args_and_keys():
    inner = jz.sgd(1e-2, momentum=0.9)
    tx = jz.bf16_params(inner, seed=5)
    p = {"w": jnp.asarray(np.random.default_rng(3).normal(size=(4, 6)), jnp.bfloat16)}
    g = jax.tree.map(lambda x: jnp.cos(x.astype(jnp.float32)).astype(jnp.bfloat16), p)

    def step(p, g):
        u, s = tx.update(g, tx.init(p), p)
        return optax.apply_updates(p, u), s

    jstep = jax.jit(step)
    batched, s = jax.jit(jax.vmap(step))(p, g)  # 4 independent problems of 6
    for i in range(4):
        row, _ = jstep({"w": p["w"][i]}, {"w": g["w"][i]})
        np.testing.assert_array_equal(_bits(batched["w"][i]), _bits(row["w"]))
    jitted, s1 = jstep(p, g)
    assert np.any(_bits(jitted["w"]) != _bits(p["w"]))  # (other bits than the rows': own key)
    assert not np.array_equal(s1.key, tx.init(p).key)  # the key advances
    # A different seed rounds differently; the inner state is float32.
    other = jz.bf16_params(inner, seed=6)
    u_other, _ = jax.jit(other.update)(g, other.init(p), p)
    assert not np.array_equal(_bits(optax.apply_updates(p, u_other)["w"]), _bits(jitted["w"]))
    assert jnp.dtype(jnp.bfloat16) not in {x.dtype for x in jax.tree.leaves(s1.inner)}
    # Extra update arguments reach the inner optimizer.
    seen = {}

    def needs_value(g, s, params=None, value=None):
        seen["value"] = value
        return g, s

    ex = jz.bf16_params(optax.GradientTransformationExtraArgs(lambda _: (), needs_value))
    ex.update(g, ex.init(p), p, value=3.0)
    assert seen["value"] == 3.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid rounding: 'up'"):
        jz.bf16_params(jz.sgd(0.1), rounding="up")
    with pytest.raises(ValueError, match="Invalid seed"):
        jz.bf16_params(jz.sgd(0.1), seed=-1)
    with pytest.raises(TypeError, match="GradientTransformation"):
        jz.bf16_params("adam")
    tx = jz.bf16_params(jz.sgd(0.1))
    p = {"w": jnp.ones(2, jnp.bfloat16)}
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(p, tx.init(p))


def test_cast_params_bf16():
    p = {"w": jnp.ones(2), "i": jnp.arange(3), "h": jnp.ones(1, jnp.float16)}
    c = jz.cast_params_bf16(p)
    assert c["w"].dtype == jnp.bfloat16 and c["h"].dtype == jnp.bfloat16
    assert c["i"].dtype == p["i"].dtype


# ----------------------------------------------------------------------------- the trainer


def _fake_images(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    images = rng.uniform(0.0, 0.5, size=(n, 28, 28, 1)).astype(np.float32)
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 2] += 0.5  # a learnable stripe per label
    return images, labels


def test_trainer_casts_the_params():
    from jaxopt_zoo.train import init_loop_state
    from jaxopt_zoo.train.runner import RunSpec
    from jaxopt_zoo.train.techniques import Techniques

    with pytest.raises(ValueError, match="Invalid bf16_rounding: 'up'"):
        Techniques(bf16_params=True, bf16_rounding="up")
    t = Techniques(bf16_params=True, bf16_rounding="kahan")
    assert t.record() == {"bf16_params": True, "bf16_rounding": "kahan"}
    assert Techniques().record() == {}  # off: absent from metrics and checkpoint identities
    spec = RunSpec("adam", lr=3e-3, techniques=t)
    # The trainer casts the model's parameters (the CLI test below trains them).
    state = init_loop_state(_mlp(), spec.build(), _fake_images(1, 0)[0])
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    assert state.opt_state.compensation is not None
    assert {x.dtype for x in jax.tree.leaves(state.opt_state.inner)} >= {jnp.dtype(jnp.float32)}


def _mlp():
    from jaxopt_zoo.models import get_model

    return get_model("mlp")
