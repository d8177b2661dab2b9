"""The native CPU kernel over 8-bit block-wise state (``jaxopt_zoo.fast.native.quant_call``,
the path ``fused_apply(fuse(adamw_8bit(...)))`` takes on float32 ``FlatParams``).

- The kernel against a NumPy transcription of the same step (dequantize with the map and
  the block's absmax, Adam with decoupled decay in float32, the new absmax, the code of the
  nearest map value with halfway going down): bit for bit, codes, scales and parameters,
  on a size above the kernel's threshold for both threads and not a multiple of its blocks.
- The fused 8-bit step against the same optimizer in XLA (``native=False``): the first step
  gives the same codes and scales and parameters within an ulp; over 100 steps the two stay
  together as two 8-bit runs do. XLA and the kernel round a few parameter updates
  differently (the float32 kernel does too: tests/test_native.py), and a moment sitting on a
  midpoint between two codes then takes the other code, a jump of up to 1/127 of its block's
  absmax: measured after 100 steps, 0.1% of the codes and parameter paths 8e-4 apart.
- Configurations the kernel does not run (4 bits, FP8, torchao's rounding, stochastic
  rounding) take the XLA path and give its results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.fast import native
from jaxopt_zoo.fast.stages import STAGES
from jaxopt_zoo.quant import code_map
from jaxopt_zoo.quant.state import quantized_leaves

B = 256
SMAP, UMAP = code_map(8, True), code_map(8, False)


def _quantize(x, qmap):
    n = x.size
    nb = -(-n // B)
    xp = np.zeros(nb * B, np.float32)
    xp[:n] = x
    blocks = xp.reshape(nb, B)
    amax = np.max(np.abs(blocks), axis=1)
    safe = np.where(amax > 0, amax, 1).astype(np.float32)
    q = np.where(amax[:, None] > 0, np.clip(blocks / safe[:, None], -1, 1), 0).astype(np.float32)
    mid = ((qmap[:-1] + qmap[1:]) / np.float32(2)).astype(np.float32)
    return np.searchsorted(mid, q.ravel(), side="left").astype(np.uint8)[:n], amax


def _dequantize(codes, amax, qmap):
    return (qmap[codes] * np.repeat(amax, B)[: codes.size]).astype(np.float32)


def test_map_tables_count_the_midpoints_below_every_float():
    rng = np.random.default_rng(0)
    q = np.concatenate(
        [rng.uniform(-1, 1, 20000), 10.0 ** rng.uniform(-9, 0, 20000), [0.0, -0.0, 1.0, -1.0]]
    ).astype(np.float32)
    for qmap in (SMAP, UMAP):
        value, mid, start = native.map_tables(qmap)
        cells = q.view(np.uint32) >> np.uint32(16)
        code = start[cells].astype(int) + (mid[start[cells]] < q)
        assert np.array_equal(code, np.searchsorted(mid[:255], q, side="left"))
    with pytest.raises(ValueError, match="ascending"):
        native.map_tables(SMAP[::-1])


@pytest.mark.parametrize("n", [5_003, 300_007])
def test_kernel_equals_the_numpy_step_bit_for_bit(n):
    rng = np.random.default_rng(n)
    p = rng.normal(size=n).astype(np.float32)
    m0 = (rng.normal(size=n) * 0.1).astype(np.float32)
    v0 = (rng.random(size=n) * 0.01).astype(np.float32)
    v0[:B] = 0  # an all-zero block: absmax 0, every code the map's zero
    (mc, ma), (vc, va) = _quantize(m0, SMAP), _quantize(v0, UMAP)
    b1, b2, eps, wd, lr, t = 0.9, 0.999, 1e-8, 0.01, 1e-3, 3
    sc = np.array(
        [b1, 1 - b1, b2, 1 - b2, eps, 0, 1 / (1 - b1**t), 1 / (1 - b2**t), wd, -lr], np.float32
    )
    ops = [STAGES["adam"].opcode, STAGES["decay"].opcode, STAGES["scale"].opcode]
    for step in range(3):
        g = rng.normal(size=n).astype(np.float32)
        g[B : 2 * B] = 0
        new_p, (nmc, nma), (nvc, nva) = native.quant_call(
            ops, [1, 2], B, jnp.asarray(sc), p, g, SMAP, UMAP, [(mc, ma), (vc, va)]
        )
        m = sc[0] * _dequantize(mc, ma, SMAP) + sc[1] * g
        v = sc[2] * _dequantize(vc, va, UMAP) + sc[3] * (g * g)
        u = (m * sc[6]) / (np.sqrt(v * sc[7] + sc[5]) + sc[4])
        want_p = p + (u + sc[8] * p) * sc[9]
        (mc, ma), (vc, va) = _quantize(m, SMAP), _quantize(v, UMAP)
        for got, want in [(new_p, want_p), (nmc, mc), (nma, ma), (nvc, vc), (nva, va)]:
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"step {step}")
        p = want_p


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(300, 700)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=5_007), jnp.float32),
        "s": jnp.asarray(rng.normal(size=7), jnp.float32),  # below min_size: float32 moments
    }


def _runs(tx, steps):
    fused = jz.fuse(tx)
    params = jz.FlatParams.from_tree(_tree(0))
    nat = jax.jit(jz.fused_apply(fused), donate_argnums=(0, 1))
    xla = jax.jit(jz.fused_apply(fused, native=False))
    a = (jax.tree.map(jnp.copy, params), fused.init(params))
    b = (params, fused.init(params))
    for t in range(steps):
        g = jz.FlatParams.from_tree(_tree(100 + t))
        a, b = nat(*a, g), xla(*b, g)
        yield t, a, b
    assert "jaxopt_zoo_quant_step" in nat.lower(*a, g).as_text()


def test_fused_8bit_step_runs_the_kernel_and_tracks_xla():
    tx = jz.adamw_8bit(1e-3, weight_decay=0.1)
    for t, (pa, sa), (pb, sb) in _runs(tx, 100):
        qa, qb = quantized_leaves(sa), quantized_leaves(sb)
        assert len(qa) == len(qb) == 2  # mu and nu of the float32 buffer
        same = [float(np.mean(np.asarray(x.codes) == np.asarray(y.codes))) for x, y in zip(qa, qb)]
        if t == 0:
            assert same == [1.0, 1.0]
            for x, y in zip(qa, qb):
                np.testing.assert_array_equal(np.asarray(x.scale), np.asarray(y.scale))
            np.testing.assert_allclose(
                pa.buffers["float32"], pb.buffers["float32"], rtol=3e-7, atol=1e-9
            )
        assert min(same) >= 0.998, (t, same)
    np.testing.assert_allclose(pa.buffers["float32"], pb.buffers["float32"], rtol=0, atol=2e-3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: jz.adamw_4bit(1e-3),
        lambda: jz.adamw_8bit(1e-3, scheme="torchao"),
        lambda: jz.adamw_8bit(1e-3, rounding="stochastic"),
    ],
    ids=["4bit", "torchao", "stochastic"],
)
def test_other_formats_take_the_xla_path(make):
    params = jz.FlatParams.from_tree(_tree(0))
    g = jz.FlatParams.from_tree(_tree(1))
    fused = jz.fuse(make())
    assert native.fused_step(fused.inner, params, fused.init(params).inner, g, None) is None
    a = jax.jit(jz.fused_apply(fused))(params, fused.init(params), g)
    b = jax.jit(jz.fused_apply(fused, native=False))(params, fused.init(params), g)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _binary_search(table, q, strict):
    # in XLA, as the search it replaced (XLA on the CPU reads subnormals as zero: NumPy
    # would place -1e-45 below a midpoint at -0.0 that XLA does not)
    table, idx = jnp.asarray(table), jnp.zeros(q.shape, jnp.int32)
    bit = table.shape[0] // 2
    while bit:
        cand = idx + bit
        idx = jnp.where((table[cand] < q) if strict else (table[cand] <= q), cand, idx)
        bit //= 2
    return np.asarray(idx)


def test_xla_quantizer_cell_search_equals_a_binary_search():
    # blockwise._search finds a code with two gathers (the count of map values below the
    # float cell of q, then one comparison): the same index as the binary search it replaced,
    # on every map, for both comparisons, at zeros, infinities, NaN and subnormals.
    from jaxopt_zoo.quant import blockwise

    rng = np.random.default_rng(0)
    mags = 10.0 ** rng.uniform(-12, 0, 20000)
    edges = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, -3e38]
    q = np.concatenate([rng.uniform(-1, 1, 20000), mags, -mags, edges]).astype(np.float32)
    for bits in (8, 4):
        for signed in (True, False):
            m = code_map(bits, signed)
            mids = ((m[:-1] + m[1:]) / np.float32(2)).astype(np.float32)
            for table, strict in ((np.concatenate([[-np.inf], mids]), True), (m, False)):
                table = table.astype(np.float32)
                assert blockwise._cell_base(table.tobytes()) is not None  # the two-gather path
                got = np.asarray(blockwise._search(table, jnp.asarray(q), strict))
                np.testing.assert_array_equal(got, _binary_search(table, jnp.asarray(q), strict))
