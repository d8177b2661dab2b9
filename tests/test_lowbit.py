"""Block-wise quantized optimizer state (``jaxopt_zoo.quant``) against bitsandbytes 0.50.2 and
torchao 0.18.0, on the CPU.

- Maps: equal bit for bit to ``bitsandbytes.functional.create_dynamic_map`` (signed and
  unsigned) and torchao's 8-bit, 4-bit signed and 4-bit unsigned (no zero) maps.
- Quantizers: torchao's 8-bit, 4-bit (packed) and FP8 codes and scales reproduced exactly on
  the same inputs. bitsandbytes' compiled CPU kernel (``quantize_blockwise``) does not always
  pick the nearest map value, unlike the rule in its C source (``csrc/common.cpp``): on
  inputs spanning several decades 1.4% of signed and 36% of unsigned codes differ, at
  normalized values where the map is dense, up to 7 codes away; ours is the exact nearest, so
  never farther from the input (``test_bnb_quantizer``). This, not the update arithmetic, is
  why our 8-bit trajectories agree with bitsandbytes' on most but not all codes.
- torchao runs its step through ``torch.compile``; here it runs eagerly (``torch.compile``
  patched to the identity, the same operations without the compile time). torchao computes
  ``1 - b^t`` in float32 and its moments with ``lerp``; bitsandbytes in float64 scalars with
  ``b * m + (1 - b) * g``, as we do: rounding-level differences that can flip a code at a
  rounding boundary.
- torchao's ``AdamW8bit`` vs bitsandbytes' ``AdamW8bit``: the same maps and update; the
  quantizers differ (torchao divides by ``max(absmax, 1e-12)`` and sends halfway values up;
  bitsandbytes' kernel as above) and torchao keeps leaves whose size the block size does not
  divide in float32. ``scheme="torchao"`` reproduces torchao.
"""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo.quant import blockwise, code_map
from jaxopt_zoo.quant.state import quantize_state, quantized_leaves
from jaxopt_zoo.registry.memory import state_bytes_per_param
from tests.helpers import checkpoint_round_trip

torch = pytest.importorskip("torch")

STEPS = 100
SHAPES = {"matrix": (64, 64), "conv": (4, 4, 16, 16), "vector": (300,), "scalar": ()}


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _bnb():
    with _quiet():
        return pytest.importorskip("bitsandbytes")


def _torchao_optim():
    with _quiet():
        pytest.importorskip("torchao")
        import torchao.optim as ao

    return ao


def _params(shapes=("matrix", "conv")):
    """The reference runs use the two quantized leaves (a vector and a scalar are below
    ``min_size`` and stay float32: plain AdamW, covered by the AdamW parity tests)."""
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=SHAPES[k]).astype(np.float32) for k in shapes}


def _grads():
    """Gradients with a per-element scale spread over 1.3 decades (2.6 for the second
    moment), stacked over the steps. A wider spread drives second moments below the
    smallest non-zero code of the unsigned 8-bit map; they round to zero and the step
    divides by ``eps`` alone (torchao's and our 8-bit paths then blow up alike; docs)."""
    rng = np.random.default_rng(1)
    out = {}
    for k in ("matrix", "conv"):
        s = SHAPES[k]
        scale = np.exp(rng.uniform(-1.5, 1.5, size=s)).astype(np.float32)
        out[k] = (rng.normal(size=(STEPS,) + s) * scale).astype(np.float32)
    return out


def _ours(tx, params, grads):
    """Parameters and states after each step (one jit + scan)."""

    @jax.jit
    def run(p, g):
        def body(carry, gt):
            p, s = carry
            u, s = tx.update(gt, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, s)

        return jax.lax.scan(body, (p, tx.init(p)), g)[1]

    return run(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads))


def _torch_run(make, params, grads, read_codes):
    """A torch optimizer over the same gradients: parameters and the codes of each quantized
    moment after each step."""
    ps = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt = make(list(ps.values()))
    traj = {k: [] for k in ps}
    codes = []
    for t in range(STEPS):
        for k, p in ps.items():
            p.grad = torch.from_numpy(np.array(grads[k][t]))
        opt.step()
        for k, p in ps.items():
            traj[k].append(p.detach().numpy().copy())
        codes.append({k: read_codes(opt.state[p]) for k, p in ps.items()})
    return {k: np.stack(v) for k, v in traj.items()}, codes


def _path_err(ours, ref):
    return max(
        float(np.max(np.abs(np.asarray(ours[k]) - ref[k])) / np.max(np.abs(ref[k]))) for k in ref
    )


def _codes(states, field, leaf):
    """Our codes of moment ``field`` for ``leaf`` at every step, as uint8."""
    q = getattr(states.inner[0], field)[leaf]
    c = np.asarray(q.codes)
    return c.view(np.uint8) if c.dtype != np.uint8 else c


def _ref_codes(st, field):
    x = st[field]
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        return x.numpy().copy()
    codes = getattr(x, "codes", None)
    if codes is None:
        return None
    return (codes if codes.dtype == torch.uint8 else codes.view(torch.uint8)).numpy().copy()


def _min_agreement(states, ref_codes, fields):
    """Per (moment, leaf): the smallest fraction of equal codes over the steps."""
    worst = {}
    for ours_f, ref_f in fields:
        for leaf in ref_codes[0]:
            ours = _codes(states, ours_f, leaf)
            for t in range(STEPS):
                r = ref_codes[t][leaf][ref_f]
                frac = float(np.mean(ours[t].reshape(-1) == r.reshape(-1)))
                worst[(ours_f, leaf)] = min(worst.get((ours_f, leaf), 1.0), frac)
    return worst


HP = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-2)


def _read(*fields):
    return lambda st: {f: _ref_codes(st, f) for f in fields}


@pytest.fixture(scope="module")
def torchao_eager():
    ao = _torchao_optim()
    original = torch.compile
    torch.compile = lambda fn=None, **kw: fn
    try:
        yield ao
    finally:
        torch.compile = original


# ---------------------------------------------------------------------------------------- #
# Maps and quantizers
# ---------------------------------------------------------------------------------------- #


def test_maps_equal_references_bit_for_bit(torchao_eager):
    bnb = _bnb()
    from torchao.optim import subclass_4bit, subclass_8bit

    for signed in (True, False):
        ref = bnb.functional.create_dynamic_map(signed=signed).numpy()
        assert np.array_equal(ref.view(np.uint32), code_map(8, signed).view(np.uint32))
        ao8 = subclass_8bit.get_qmap_signed() if signed else subclass_8bit.get_qmap_unsigned()
        assert np.array_equal(np.array(ao8, np.float32).view(np.uint32), ref.view(np.uint32))
        ao4 = subclass_4bit.get_qmap_signed() if signed else subclass_4bit.get_qmap_unsigned()
        ours4 = code_map(4, signed)
        assert np.array_equal(np.array(ao4, np.float32).view(np.uint32), ours4.view(np.uint32))
    assert code_map(4, False).min() > 0  # no zero in the unsigned 4-bit map


def _inputs(signed):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=256 * 32) * np.exp(rng.uniform(-3, 3, size=256 * 32))).astype(np.float32)
    x = x if signed else x * x
    x[:256] = 0.0  # an all-zero block
    return x


@pytest.mark.parametrize("signed", [True, False])
def test_torchao_quantizers_exact(signed, torchao_eager):
    from torchao.optim import quant_utils, subclass_4bit, subclass_fp8

    x = _inputs(signed)
    xt = torch.from_numpy(x)
    qmap8 = torch.from_numpy(code_map(8, signed))
    scaled, scale = quant_utils.scale_tensor(xt, 256)
    ref = quant_utils.quantize_8bit_with_qmap(scaled, qmap8).numpy()
    codes, ours_scale = blockwise.quantize(jnp.asarray(x), 8, signed, 256, "torchao")
    assert np.array_equal(np.asarray(codes), ref)
    assert np.array_equal(np.asarray(ours_scale), scale.numpy())
    deq = blockwise.dequantize(codes, ours_scale, 8, signed, x.shape, 256)
    ref_deq = quant_utils.dequant_with_qmap(torch.from_numpy(ref), qmap8, scale).numpy()
    assert np.array_equal(np.asarray(deq), ref_deq)

    qmap4 = torch.tensor(
        subclass_4bit.get_qmap_signed() if signed else subclass_4bit.get_qmap_unsigned()
    )
    scaled, scale = quant_utils.scale_tensor(xt, 128)
    c4 = quant_utils.quantize_4bit_with_qmap(scaled, qmap4)
    packed = ((c4[::2] << 4) | c4[1::2]).numpy()
    codes, ours_scale = blockwise.quantize(jnp.asarray(x), 4, signed, 128, "torchao")
    assert np.array_equal(np.asarray(codes), packed)
    assert np.array_equal(np.asarray(ours_scale), scale.numpy())

    c8, s8 = subclass_fp8.quantize_fp8(xt, 256)
    codes, ours_scale = blockwise.quantize(jnp.asarray(x), "fp8", signed, 256)
    assert np.array_equal(np.asarray(codes).view(np.uint8), c8.view(torch.uint8).numpy())
    assert np.array_equal(np.asarray(ours_scale), s8.numpy())


@pytest.mark.parametrize("signed", [True, False])
def test_bnb_quantizer(signed):
    """Same absmax and dequantization; codes equal where bitsandbytes' kernel picks the nearest
    map value, and ours never farther from the input where it does not."""
    bnb = _bnb()
    x = _inputs(signed)[256:]
    qmap = bnb.functional.create_dynamic_map(signed=signed)
    ref, absmax = torch.ops.bitsandbytes.quantize_blockwise(torch.from_numpy(x), qmap, 256)
    codes, ours_absmax = blockwise.quantize(jnp.asarray(x), 8, signed, 256, "bnb")
    assert np.array_equal(np.asarray(ours_absmax), absmax.numpy())
    codes, ref = np.asarray(codes), ref.numpy()
    m = qmap.numpy()
    normed = (x.reshape(-1, 256) / absmax.numpy()[:, None]).reshape(-1)
    assert np.all(np.abs(m[codes] - normed) <= np.abs(m[ref] - normed))
    differ = float(np.mean(codes != ref))
    assert 0.0 < differ < (0.03 if signed else 0.5), differ  # measured 0.014 and 0.36
    deq = blockwise.dequantize(jnp.asarray(ref), absmax.numpy(), 8, signed, x.shape, 256)
    ref_deq = torch.ops.bitsandbytes.dequantize_blockwise(
        torch.from_numpy(ref), absmax, qmap, 256, torch.float32
    )
    assert np.array_equal(np.asarray(deq), ref_deq.numpy())


def test_stochastic_rounding_unbiased():
    """The mean of many stochastic roundings of one block: within 1e-3 (relative to the
    block's absmax) of the input for 8 bits and FP8, and for every format within 5 standard
    errors of it (the spread of a two-point rounding, from the gap around each value)."""
    x = _inputs(True)[256:320]  # one block of 64
    x = x * np.sign(x[np.argmax(np.abs(x))])  # absmax positive: -1 is outside the signed map
    absmax = float(np.max(np.abs(x)))
    n = 12000  # FP8's widest gap is 32/448 of absmax: 3 sigma of the mean below 1e-3
    tiled = jnp.asarray(np.tile(x, n))
    for fmt in (8, 4, "fp8"):
        bs = 64
        c, sc = blockwise.quantize(tiled, fmt, True, bs, "torchao", key=jax.random.PRNGKey(1))
        draws = np.asarray(blockwise.dequantize(c, sc, fmt, True, tiled.shape, bs)).reshape(n, -1)
        mean = draws.mean(axis=0)
        lo, hi = draws.min(axis=0), draws.max(axis=0)  # the two neighbours
        p = np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), 0)
        stderr = (hi - lo) * np.sqrt(p * (1 - p) / n)
        # + slack for a neighbour drawn too rarely to be seen (p < 5 / n: off by < 5 gap / n)
        assert np.all(np.abs(mean - x) <= 5 * stderr + 2e-4 * absmax), fmt
        if fmt != 4:
            assert float(np.max(np.abs(mean - x))) / absmax < 1e-3, fmt
        nearest = blockwise.dequantize(
            *blockwise.quantize(jnp.asarray(x), fmt, True, bs, "torchao"), fmt, True, x.shape, bs
        )
        assert float(np.max(np.abs(np.asarray(nearest) - x))) / absmax > 1e-3


# ---------------------------------------------------------------------------------------- #
# Trajectories
# ---------------------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "name,ours,ref,fields,min_codes,max_path",
    [
        # torchao: the same codes but for a handful of entries at a rounding boundary (float32
        # bias corrections and lerp in torchao); one flipped code moves the path by ~1e-4
        ("AdamW8bit", dict(scheme="torchao"), "AdamW8bit", "adam", 0.999, 2e-3),
        ("AdamW4bit", {}, "AdamW4bit", "adam", 0.999, 2e-3),
        ("AdamWFp8", {}, "AdamWFp8", "adam", 0.999, 2e-3),
    ],
)
def test_against_torchao(name, ours, ref, fields, min_codes, max_path, torchao_eager):
    factory = {"AdamW8bit": jz.adamw_8bit, "AdamW4bit": jz.adamw_4bit, "AdamWFp8": jz.adamw_fp8}
    tx = factory[name](1e-2, 0.9, 0.99, weight_decay=1e-2, **ours)
    # 8 bits on the matrix and the conv kernel; 4 bits and FP8 (quantizers checked exactly
    # above) on the matrix alone, to keep the file's time down
    leaves = ("matrix", "conv") if name == "AdamW8bit" else ("matrix",)
    params, grads = _params(leaves), {k: v for k, v in _grads().items() if k in leaves}
    traj, states = _ours(tx, params, grads)
    ref_traj, ref_codes = _torch_run(
        lambda ps: getattr(torchao_eager, ref)(ps, **HP),
        params,
        grads,
        _read("exp_avg", "exp_avg_sq"),
    )
    agree = _min_agreement(states, ref_codes, [("mu", "exp_avg"), ("nu", "exp_avg_sq")])
    assert min(agree.values()) >= min_codes, agree
    err = _path_err(traj, ref_traj)
    assert err < max_path, err
    moved = max(float(np.max(np.abs(ref_traj[k][-1] - params[k]))) for k in params)
    assert moved > 0.1


def test_against_bitsandbytes():
    """bitsandbytes' kernel rounds some codes away from the nearest value (module docstring):
    most codes agree and the paths stay as close as either is to float32 AdamW."""
    bnb = _bnb()
    params, grads = _params(), _grads()
    tx = jz.adamw_8bit(1e-2, 0.9, 0.99, weight_decay=1e-2)
    traj, states = _ours(tx, params, grads)
    ref_traj, ref_codes = _torch_run(
        lambda ps: bnb.optim.AdamW8bit(ps, **HP), params, grads, _read("state1", "state2")
    )
    agree = _min_agreement(states, ref_codes, [("mu", "state1"), ("nu", "state2")])
    assert agree[("mu", "matrix")] > 0.85 and agree[("nu", "matrix")] > 0.65, agree
    err = _path_err(traj, ref_traj)
    f32 = _ours(optax.adamw(1e-2, 0.9, 0.99, 1e-8, weight_decay=1e-2), params, grads)[0]
    f32_err = _path_err(traj, {k: np.asarray(v) for k, v in f32.items()})
    assert err < 2e-2 and f32_err < 2e-2, (err, f32_err)

    lion_tx = jz.lion_8bit(1e-3, 0.9, 0.99, weight_decay=1e-2)
    traj, states = _ours(lion_tx, params, grads)
    ref_traj, ref_codes = _torch_run(
        lambda ps: bnb.optim.Lion8bit(ps, lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-2),
        params,
        grads,
        _read("state1"),
    )
    agree = _min_agreement(states, ref_codes, [("mu", "state1")])
    assert min(agree.values()) > 0.8, agree
    assert _path_err(traj, ref_traj) < 1e-2


# ---------------------------------------------------------------------------------------- #
# The wrapper: other optimizers, memory, errors, state machinery
# ---------------------------------------------------------------------------------------- #


def test_state_bytes_per_param():
    assert state_bytes_per_param("adamw_8bit") <= 2.05
    assert state_bytes_per_param("adam_8bit") <= 2.05
    assert state_bytes_per_param("adamw_fp8") <= 2.05
    assert state_bytes_per_param("adamw_4bit") <= 1.1
    assert state_bytes_per_param("lion_8bit") <= 1.03


@pytest.mark.parametrize(
    "make,fields",
    [
        (lambda: jz.sgd(0.01, momentum=0.9), {"trace": True}),
        (lambda: jz.rmsprop(1e-3), {"nu": False}),
        (lambda: jz.adagrad(1e-2), {"sum_of_squares": False}),
        (lambda: jz.ademamix(1e-3), None),
        (lambda: jz.lamb(1e-3), {"mu": True, "nu": False}),
        (lambda: jz.adafactor(1e-3), None),
        (lambda: jz.muon(1e-3), None),
        (lambda: jz.soap(1e-3), None),
    ],
)
def test_wraps_other_optimizers(make, fields):
    params = {"w": jnp.ones((64, 64)) * 0.5, "b": jnp.ones(8)}
    inner = make()
    tx = quantize_state(inner, bits=8)
    state = tx.init(params)
    qs = quantized_leaves(state)
    if fields is not None:
        assert len(qs) == len(fields)
        assert sorted(q.signed for q in qs) == sorted(fields.values())
    assert all(q.shape == (64, 64) for q in qs)
    grads = {"w": jnp.full((64, 64), 0.1), "b": jnp.full(8, 0.1)}
    u, state = tx.update(grads, state, params)  # eager: eight compiles cost more
    ref, _ = inner.update(grads, inner.init(params), params)
    assert np.allclose(np.asarray(u["w"]), np.asarray(ref["w"]), rtol=1e-5, atol=1e-7)


def test_adafactor_quantizes_unfactored_leaves_only():
    params = {"w": jnp.ones((128, 256)), "v": jnp.ones(5000)}
    qs = quantized_leaves(quantize_state(jz.adafactor(1e-3), bits=8).init(params))
    assert [q.shape for q in qs] == [(5000,)] and not qs[0].signed


def test_bad_arguments():
    with pytest.raises(ValueError, match="block_size.*power of two"):
        jz.adamw_8bit(1e-3, block_size=100)
    with pytest.raises(ValueError, match="bits"):
        quantize_state(jz.adam(1e-3), bits=16)
    with pytest.raises(ValueError, match="rounding"):
        quantize_state(jz.adam(1e-3), rounding="up")
    with pytest.raises(ValueError, match="scheme"):
        jz.adamw_8bit(1e-3, scheme="cuda")
    with pytest.raises(ValueError, match="non_float"):
        quantize_state(jz.adam(1e-3), non_float="raise")
    int_params = {"w": jnp.ones((64, 64), jnp.int32)}
    with pytest.raises(ValueError, match="floating point.*int32"):
        quantize_state(jz.adamw(1e-3), non_float="error").init(int_params)
    # the default, as every optimizer here: integer leaves are not refused, not quantized
    assert quantized_leaves(jz.adamw_8bit(1e-3).init(int_params)) == []


def test_min_size_and_torchao_divisibility():
    params = {"big": jnp.ones(5000), "small": jnp.ones(4095)}
    bnb_q = quantized_leaves(jz.adamw_8bit(1e-3).init(params))
    ao_q = quantized_leaves(jz.adamw_8bit(1e-3, scheme="torchao").init(params))
    assert [q.shape for q in bnb_q] == [(5000,), (5000,)]  # bitsandbytes: a partial block
    assert ao_q == []  # torchao: 5000 % 256 != 0 stays float32


def test_stochastic_state_vmap_and_checkpoint(tmp_path):
    tx = jz.adamw_8bit(1e-3, rounding="stochastic", min_size=0)
    params = {"w": jnp.ones((16, 32))}
    state = tx.init(params)
    assert state.key is not None
    grads = {"w": jnp.full((16, 32), 0.3)}
    u1, s1 = jax.jit(tx.update)(grads, state, params)
    u2, s2 = jax.jit(tx.update)(grads, s1, params)
    assert not np.array_equal(np.asarray(s1.key), np.asarray(s2.key))

    # vmap over a learning-rate sweep
    def one(lr):
        t = jz.adamw_8bit(lr, min_size=0)
        return t.update(grads, t.init(params), params)[0]["w"]

    out = jax.vmap(one)(jnp.array([1e-3, 2e-3]))
    assert np.allclose(np.asarray(out[1]), 2 * np.asarray(out[0]), rtol=1e-6)

    # skip_not_finite around it, then an orbax checkpoint round trip, bit-identical
    wrapped = jz.skip_not_finite(jz.adamw_fp8(1e-3, min_size=0))
    ws = wrapped.init(params)
    _, ws = jax.jit(wrapped.update)(grads, ws, params)
    _, ws2 = jax.jit(wrapped.update)({"w": jnp.full((16, 32), jnp.nan)}, ws, params)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ws.inner_state, ws2.inner_state)
    assert all(jax.tree.leaves(same))
    checkpoint_round_trip(tmp_path / "ck", params, (s2, ws2), "adamw_8bit")


def test_zero1_places_codes_like_their_moment_and_splits_scales_along_blocks():
    # state_sharding reaches the QuantizedArray's children through the parameter's place:
    # the 8-bit codes (the parameter's shape) get the float32 moment's ZeRO-1 spec, the
    # per-block scales (one dimension, the blocks) are split along it; the 4-bit packed codes
    # (flat) too. A 1-device mesh: the specs, not the device count, are what is checked.
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxopt_zoo.sharding import zero1_sharding

    # the parameter split over a second axis, so that its placement shows in the state's; 64 x
    # 96, whose block counts (24 for 8 bits, 48 for 4) are no dimension of the parameter's
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    w = jax.ShapeDtypeStruct((64, 96), jnp.float32, sharding=NamedSharding(mesh, P("model")))
    params = {"w": w}
    plain = zero1_sharding(jz.adamw(1e-3), params, mesh)[0].mu["w"].spec
    assert plain == P("model", "data")
    for tx in (jz.adamw_8bit(1e-3), jz.adamw_4bit(1e-3)):
        q = quantized_leaves(zero1_sharding(tx, params, mesh).inner[0])
        assert len(q) == 2
        for leaf in q:
            if tx.quant_config.bits == 8:
                assert leaf.codes.spec == plain
            else:
                assert leaf.codes.spec == P("data")
            assert leaf.scale.spec == P("data")
