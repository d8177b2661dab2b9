"""Li et al. (2023)'s rank-1 normalization of 4-bit second moments
(``quantize_state(..., bits=4, normalization="rank1")``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.quant.blockwise import dequantize_rank1, quantize_rank1, rank1_scale
from jaxopt_zoo.quant.maps import code_map
from jaxopt_zoo.quant.state import quantize_state, quantized_leaves
from jaxopt_zoo.registry import state_bytes_per_param
from tests.helpers import checkpoint_round_trip


def _nu_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) ** 2
    x *= (10.0 ** rng.uniform(-6, 0, size=(shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)
    return x


@pytest.mark.parametrize("shape", [(48, 80), (7, 5), (6, 4, 5)])
def test_scale_is_min_of_row_and_column_max(shape):
    x = _nu_like(shape)
    codes, scale = quantize_rank1(jnp.asarray(x), 4)
    m = x.reshape(shape[0], -1)  # rows: the first dimension, columns: the rest flattened
    r, c = m.max(axis=1), m.max(axis=0)
    assert np.array_equal(np.asarray(scale), np.concatenate([r, c]))
    s = np.asarray(rank1_scale(scale, shape))
    assert np.array_equal(s, np.minimum(r[:, None], c[None, :]))
    # error bound: half a map step times the entry's scale (the map k/16, k = 1..16, has
    # steps of 1/16 and its lowest value 1/16: a zero rounds up by at most one step)
    y = np.asarray(dequantize_rank1(codes, scale, 4, shape)).reshape(m.shape)
    step = np.diff(code_map(4, False)).max()
    bound = np.where(m >= code_map(4, False)[0] * s, 0.5 * step * s, code_map(4, False)[0] * s)
    assert np.all(np.abs(y - m) <= bound * (1 + 1e-6) + 1e-30)
    assert codes.shape == (-(-m.size // 2),) and codes.dtype == jnp.uint8


def test_rank1_beats_blockwise_on_rows_of_different_scales():
    x = _nu_like((256, 512), seed=1)
    rank1 = jz.adamw_4bit(1e-3, normalization="rank1")
    block = jz.adamw_4bit(1e-3)
    errs = {}
    for name, tx in (("rank1", rank1), ("block", block)):
        st = tx.init({"w": jnp.zeros(x.shape)})
        q = [q for q in quantized_leaves(st) if not q.signed][0]
        y = np.asarray(q.requantize(jnp.asarray(x)).dequantize())
        errs[name] = float(np.linalg.norm(y - x) / np.linalg.norm(x))
    print("relative second-moment reconstruction error", errs)
    assert errs["rank1"] < errs["block"]


def test_trajectory_tracks_float32_adamw():
    # a noisy quadratic with row scales spanning three decades, 100 steps
    n, d = 64, 128
    rng = np.random.default_rng(0)
    curv = jnp.asarray((10.0 ** rng.uniform(-1.5, 1.5, size=(n, 1))) * np.ones((1, d)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)

    def loss(w):
        return 0.5 * jnp.sum(curv * (w - target) ** 2)

    def run(tx):
        params = {"w": jnp.zeros((n, d))}

        def body(carry, k):
            p, s = carry
            g = jax.grad(lambda q: loss(q["w"]))(p)
            g = {"w": g["w"] + 0.1 * jax.random.normal(k, (n, d))}
            u, s = tx.update(g, s, p)
            p = jax.tree.map(lambda a, b: a + b, p, u)
            return (p, s), loss(p["w"])

        keys = jax.random.split(jax.random.PRNGKey(0), 100)
        _, losses = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), keys))(params)
        return np.asarray(losses)

    ref = run(jz.adamw(3e-2, weight_decay=0.0))
    r1 = run(jz.adamw_4bit(3e-2, weight_decay=0.0, normalization="rank1", min_size=0))
    blk = run(jz.adamw_4bit(3e-2, weight_decay=0.0, min_size=0))
    # 4-bit state (block-wise as much as rank-1) lags float32 on this problem; measured on
    # the CPU after 100 steps: end losses 0.5% (float32), 12.0% (rank-1) and 12.3%
    # (block-wise) of the initial one; the largest gap over the run 0.18 of the initial loss
    gap = float(np.max(np.abs(r1 - ref)) / ref[0])
    print(
        f"loss start {ref[0]:.1f}; end f32 {ref[-1]:.2f}, rank1 {r1[-1]:.2f}, block {blk[-1]:.2f};"
        f" max |rank1 - f32| / start {gap:.3f}"
    )
    assert gap < 0.25
    assert r1[-1] < 0.2 * r1[0]
    assert r1[-1] < 1.1 * blk[-1]


def test_bad_values_and_bytes_per_param():
    with pytest.raises(ValueError, match="normalization"):
        quantize_state(jz.adamw(1e-3), bits=4, normalization="rank2")
    with pytest.raises(ValueError, match="normalization.*bits=4"):
        quantize_state(jz.adamw(1e-3), bits=8, normalization="rank1")
    with pytest.raises(ValueError, match="normalization"):
        jz.adamw_4bit(1e-3, normalization="row")
    params = {"w": jax.ShapeDtypeStruct((1024, 1024), jnp.float32)}
    n = 1024 * 1024
    got = state_bytes_per_param(jz.adamw_4bit(1e-3, normalization="rank1"), params)
    block = state_bytes_per_param(jz.adamw_4bit(1e-3), params)
    mu = 0.5 + 4 / 128
    nu = 0.5 + (1024 + 1024) * 4 / n
    assert abs(got - (mu + nu)) < 64 / n  # + step counters
    assert abs(block - 2 * mu) < 64 / n
    # native kernel: refuses (8 bits only) and the config says why
    tx = jz.adamw_4bit(1e-3, normalization="rank1")
    assert tx.quant_config.normalization == "rank1"


def test_jit_vmap_checkpoint_and_zero1(tmp_path):
    params = {"w": jnp.ones((64, 96)), "b": jnp.ones(4096)}
    grads = {"w": jnp.linspace(-1, 1, 64 * 96).reshape(64, 96), "b": jnp.full(4096, 0.3)}
    tx = jz.adamw_4bit(1e-3, normalization="rank1", rounding="stochastic")
    state = tx.init(params)
    kinds = sorted((q.signed, q.normalization, q.shape) for q in quantized_leaves(state))
    assert kinds == [
        (False, "block", (4096,)),  # 1-D: block-wise, as the paper
        (False, "rank1", (64, 96)),
        (True, "block", (64, 96)),  # first moments stay block-wise
        (True, "block", (4096,)),
    ]
    _, s1 = jax.jit(tx.update)(grads, state, params)
    _, s2 = jax.jit(tx.update)(grads, s1, params)

    def one(lr):
        t = jz.adamw_4bit(lr, normalization="rank1", min_size=0)
        return t.update(grads, t.init(params), params)[0]["w"]

    out = jax.jit(jax.vmap(one))(jnp.array([1e-3, 2e-3]))
    assert np.allclose(np.asarray(out[1]), 2 * np.asarray(out[0]), rtol=1e-5)

    restored = checkpoint_round_trip(tmp_path / "ck", params, s2, "adamw_4bit")
    r_q = [q for q in quantized_leaves(restored) if q.normalization == "rank1"]
    assert len(r_q) == 1 and r_q[0].scale.shape == (64 + 96,)

    # ZeRO-1: as test_lowbit's check; the rank-1 scale vector (rows + cols) is split too
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxopt_zoo.sharding import zero1_sharding

    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    w = jax.ShapeDtypeStruct((64, 96), jnp.float32, sharding=NamedSharding(mesh, P("model")))
    q = quantized_leaves(
        zero1_sharding(jz.adamw_4bit(1e-3, normalization="rank1"), {"w": w}, mesh).inner[0]
    )
    assert len(q) == 2
    for leaf in q:
        assert leaf.codes.spec == P("data") and leaf.scale.spec == P("data")
