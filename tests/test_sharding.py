"""jaxopt_zoo.sharding: state placed like the parameters, ZeRO-1, one home device per matrix.

The multi-device checks run once, in a subprocess with 8 virtual CPU devices
(tests/sharding_worker.py prints JSON; this process has already started JAX with one device);
the tests below assert on its numbers. The rest runs here on one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxopt_zoo as jz
from jaxopt_zoo import sharding as sh
from jaxopt_zoo.fast.spec import is_elementwise

ROOT = pathlib.Path(__file__).resolve().parents[1]
F32_EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def worker():
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharding_worker.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout)
    assert out["devices"] == 8
    return out


def _runs(worker):
    return {k: worker[k] for k in ("tp2_zero4", "dp8_zero8", "dp8_replicated", "f64_tp2_zero4")}


def _param_axes(worker):
    ps = worker["params"]
    return {k: v["axes"] for k, v in ps.items()}, {k: v["shape"] for k, v in ps.items()}


# --------------------------------------------------------------------------- #
# 8 devices (subprocess)
# --------------------------------------------------------------------------- #


def test_every_registered_optimizer_is_checked(worker):
    names = jz.available() + jz.available("torch.") + jz.available("keras.")
    names = [n for n in names if n != "torch.lbfgs"]  # see sharding_worker.NOT_SHARDED
    assert set(names) <= set(worker["placement"])
    updated = set(worker["tp2_zero4"]["per_optimizer"])
    layout = set(worker["tp2_zero4_layout"]["per_optimizer"])
    assert set(names) <= updated | layout and not updated & layout
    # Sharded updates for every optimizer that is not element-wise, and for a sample of the
    # element-wise ones (sharding_worker.ELEMENTWISE_UPDATED says why that suffices); the
    # others' state layout only.
    for n in names:
        if not is_elementwise(jz.get(n)):
            assert n in updated, n
    assert {"adam", "lion", "adan", "torch.adam", "keras.adam"} <= updated
    assert len(layout) >= 30  # the element-wise rest: not a vacuous split


KERAS_VARIABLE_STEP = ("keras.adafactor", "keras.ftrl", "keras.lamb", "keras.schedule_free_adamw")
# No state shaped like a parameter (a key, a count, or nothing): nothing to place.
STATELESS = ("fromage", "noisy_sgd", "polyak_sgd", "sign_sgd")


def test_state_is_placed_like_the_parameters(worker):
    axes, shapes = _param_axes(worker)
    for name, leaves in worker["placement"].items():
        placed = [x for x in leaves if x["shard_over"] is None]
        for leaf in placed:
            used = {a for dim in leaf["axes"] for a in dim}
            assert "data" not in used, (name, leaf)  # parameters use only "model"
            if leaf["param"] is None or not leaf["shape"]:
                assert not used, (name, leaf)  # counts, scalars: replicated
            elif leaf["shape"] == shapes[leaf["param"]]:
                assert leaf["axes"] == axes[leaf["param"]], (name, leaf)
            else:  # factored moments: a parameter's shape less a dimension
                assert used <= {a for d in axes[leaf["param"]] for a in d}, (name, leaf)
        # Keras' Adafactor, Ftrl, Lamb and ScheduleFreeAdamW keep their statistics in
        # KerasVariableStep's own tuple, whose paths do not end in the parameters': they are
        # replicated (correct, not placed).
        # dpsgd keeps only its PRNG key
        if name not in ("sgd", "torch.sgd", "keras.sgd", "dpsgd") + KERAS_VARIABLE_STEP + STATELESS:
            # not vacuous: some leaf follows "w"
            assert any(x["param"] == "w" and x["axes"][0] == ["model"] for x in placed), name


def test_zero1_splits_each_leaf_over_data_along_its_largest_free_dimension(worker):
    for name, leaves in worker["placement"].items():
        plain = {x["path"]: x for x in leaves if x["shard_over"] is None}
        for leaf in (x for x in leaves if x["shard_over"] == "data"):
            base = plain[leaf["path"]]["axes"]
            without = [[a for a in dim if a != "data"] for dim in leaf["axes"]]
            assert without == base, (name, leaf)  # the parameters' placement, plus "data"
            free = [d for d, s in enumerate(leaf["shape"]) if not base[d] and s % 4 == 0]
            data_dims = [d for d, dim in enumerate(leaf["axes"]) if "data" in dim]
            if free:
                best = max(free, key=lambda d: (leaf["shape"][d], -d))
                assert data_dims == [best], (name, leaf)
            else:
                assert data_dims == [], (name, leaf)


def test_state_bytes_per_device_are_one_nth(worker):
    for run in ("tp2_zero4", "tp2_zero4_layout", "dp8_zero8", "f64_tp2_zero4"):
        for name, r in worker[run]["per_optimizer"].items():
            total, unsplit = r["total_bytes"], r["unsplit_bytes"]
            assert r["min_device_bytes"] == r["max_device_bytes"], (run, name)  # even
            assert r["max_device_bytes"] == r["layout_bytes"], (run, name)  # as documented
            assert total / 8 <= r["max_device_bytes"] <= (total - unsplit) / 8 + unsplit
            # element-wise state: all but the tiny leaves split (not Adafactor's factored
            # moments, nor SOAP's preconditioners and eigenbases, square matrices per dimension)
            # (nor dpsgd's or noisy_sgd's PRNG key, their whole state, nor sm3's per-dimension
            # accumulators)
            # (nor GaLore's projectors, a matrix per parameter as SOAP's bases). L-BFGS's
            # (memory, ...) history is placed like the parameters on its trailing dimensions
            # and split by ZeRO-1 (87% of its state stayed whole before that).
            not_elementwise = ("soap", "galore", "dpsgd", "noisy_sgd", "sm3", "shampoo")
            not_elementwise += ("psgd_kron",)  # a factor per dimension, and its PRNG key
            not_elementwise += KERAS_VARIABLE_STEP
            if "adafactor" not in name and name not in not_elementwise:
                assert unsplit <= 0.02 * total, (run, name, r)
                # + 64 B: the replicated scalars (counts, schedule-free's weight sum, ...)
                assert r["max_device_bytes"] <= 1.05 * total / 8 + 64, (run, name, r)
    # Plain data parallelism keeps a whole copy on every device.
    adam = worker["dp8_replicated"]["per_optimizer"]["adam"]
    assert adam["max_device_bytes"] == adam["total_bytes"] > 0
    assert (
        worker["dp8_zero8"]["per_optimizer"]["adam"]["max_device_bytes"] < adam["total_bytes"] / 7
    )


def test_updates_keep_the_shardings_and_compile_once(worker):
    assert worker["tp2_zero4_layout"]["init_shardings_ok"]
    for run, out in _runs(worker).items():
        assert out["init_shardings_ok"], run
        assert out["compiles"] == 1, run  # the same program for steps 1, 2, 3
        for name, r in out["per_optimizer"].items():
            assert r["params_keep_sharding"] and r["state_keeps_sharding"], (run, name)


def test_sharded_updates_equal_the_single_device_ones(worker):
    for run in ("tp2_zero4", "dp8_zero8", "dp8_replicated"):
        for name, r in worker[run]["per_optimizer"].items():
            if name == "soap":
                # SOAP's trajectory here is ill-conditioned, not its sharding wrong: 3 steps of
                # rank-1 statistics leave degenerate eigenspaces whose basis eigh chooses
                # arbitrarily, so any rounding change moves the parameters by ~2e-3 (on one
                # device, gradients scaled by 1 + 1e-7 do the same); GSPMD's partitioned
                # products round differently. Bounded, not exact:
                assert r["param_err"] <= 1e-2, (run, name, r)
                continue
            assert r["moved"] > 0, (run, name)
            assert r["param_err"] <= 4 * F32_EPS, (run, name, r)  # a few float32 roundings
            if name == "lbfgs":
                # Its state keeps the line search's last step size and decrease / curvature
                # errors, differences of nearly equal losses here (random gradients against
                # the stand-in loss 0.5 |p|^2): relative rounding of the partitioned sums
                # shows in them (measured 5.9e-3). The parameters above are exact.
                assert r["state_err"] <= 2e-2, (run, name, r)
                continue
            assert r["state_err"] <= 1e-5, (run, name, r)


def test_non_elementwise_optimizers_are_exact_in_float64(worker):
    out = worker["f64_tp2_zero4"]["per_optimizer"]
    assert set(out) == {"lamb", "lars", "adafactor"}
    for name, r in out.items():
        assert r["moved"] > 1e-4, name
        assert r["param_err_move"] < 1e-10, (name, r)  # relative to how far the params moved
        assert r["state_err"] < 1e-12, (name, r)


def test_home_devices_compute_each_matrix_once_and_exactly(worker):
    home = worker["home"]
    assert home["calls_per_matrix"] == [1] * len(home["calls_per_matrix"])
    assert home["exact"] and home["max_abs_diff"] == 0.0
    assert home["replicated"]
    # With the mesh from jax.set_mesh instead of an argument: the same.
    assert home["context_exact"]
    assert home["context_calls_per_matrix"] == home["calls_per_matrix"]
    assert len(set(home["assignment"])) == len(home["assignment"])  # 7 matrices, 8 devices


def test_home_devices_take_and_return_the_zero1_layout(worker):
    split = worker["home"]["split"]
    # inputs split over the 8 devices, moved only to their home devices: still once, exact
    assert split["exact"]
    assert split["calls_per_matrix"] == [1] * len(split["calls_per_matrix"])
    # results split back the same way; (20, 12), which 8 divides in no dimension, whole
    assert all(split["split_zero1"])
    assert split["replicated"] == [False] * 7 + [True, False]
    assert "Invalid in_split" in split["bad_split_error"]


def test_zero1_dim_is_zero1_shardings_rule():
    from jaxopt_zoo.sharding.placement import _add_axis

    class Mesh8:
        shape = {"data": 8}

    for shape in [(384, 1536), (1536, 384), (16, 16), (20, 20), (8, 24), (3, 3, 8, 16), (7,), ()]:
        entries = _add_axis((None,) * len(shape), shape, Mesh8(), "data")  # type: ignore[arg-type]
        expected = entries.index("data") if "data" in entries else None
        assert sh.zero1_dim(shape, 8) == expected, shape


def test_muon_with_home_devices_follows_the_plain_muon(worker):
    runs = worker["muon_home"]
    assert set(runs) == {"float32_None", "float32_data", "float64_data", "float64_data+zero1"}
    for name, r in runs.items():
        assert r["moved"] > 1e-2, name
        assert r["compiles"] == 1, name
        # one all-gather shares the results (ZeRO-1 adds the parameters' gather)
        assert r["collectives"].get("all-gather", 0) > 0, (name, r)
        if name.startswith("float32"):
            # Newton-Schulz amplifies rounding: the plain Muon compiled twice (eager vs jit)
            # differs by as much; a few float32 roundings of the parameters
            assert r["param_err"] <= 4 * F32_EPS, (name, r)
            assert r["state_err"] <= 1e-6, (name, r)  # the momentum: element-wise
        else:  # the same arithmetic: float64 leaves only the order of sums
            assert r["param_err_move"] < 1e-12, (name, r)
            assert r["state_err"] < 1e-13, (name, r)
    # Each device iterates only its own matrices: per-device FLOPs of the compiled step far
    # below the plain Muon's, which iterates all 6 matrices on every device.
    rep = runs["float32_None"]
    assert rep["flops"] < 0.4 * rep["plain_flops"], rep


def test_muon_with_zero1_moves_each_momentum_only_to_its_home_device(worker):
    # 20 float64 steps, ZeRO-1 state, home_zero1=True: the one-device trajectory
    r = worker["muon_home"]["float64_data+zero1"]
    assert r["moved"] > 1e-2 and r["compiles"] == 1, r
    assert r["param_err_move"] < 1e-12, r
    assert r["state_err"] < 1e-13, r
    assert r["collectives"].get("all-to-all", 0) > 0, r
    # The 4-layer width-384 transformer's 16 matrices (27 MiB of float32) on 8 devices.
    b = worker["muon_zero1_bytes"]
    old, new, total = b["zero1_gather"], b["zero1_home"], b["matrix_bytes"]
    # One all-to-all brings each home device its matrices' pieces from the 7 others (and its
    # own): the busiest home device's matrices, ~1/8 of them (the spread balances FLOPs)
    assert "all-to-all" not in old, old
    assert new["all-to-all"] == b["busiest_home_bytes"] <= 1.25 * total / 8, b
    # instead of every momentum all-gathered to every device. The results' all-gather stays:
    # replicated parameters need every update on every device (padded to the busiest share).
    assert old["all-gather"] - new["all-gather"] == total, b
    assert new["all-gather"] <= 1.2 * total, b


def test_soap_with_home_devices_follows_the_plain_soap(worker):
    r = worker["soap_home"]
    assert r["moved"] > 1e-2, r
    assert r["compiles"] == 1, r
    assert r["collectives"].get("all-gather", 0) > 0, r  # the bases, shared
    # float64, well-separated eigenvalues: the same bases, so the same path
    assert r["param_err_move"] < 1e-12, r
    assert r["state_err"] < 1e-12, r
    # Each device runs only its own statistics' refresh. XLA counts no FLOPs for LAPACK's
    # eigh / QR (custom calls), and Adam's rotations run on every device either way: the
    # drop is the power iteration's products of the other devices' matrices.
    assert r["flops"] < 0.9 * r["plain_flops"], r


def test_shampoo_with_home_devices_follows_the_plain_shampoo(worker):
    r = worker["shampoo_home"]
    assert r["moved"] > 1e-2, r
    assert r["compiles"] == 1, r
    assert r["collectives"].get("all-gather", 0) > 0, r  # the roots, shared
    # float64: each root computed by the same code on one device, so the same path
    assert r["param_err_move"] < 1e-12, r
    assert r["state_err"] < 1e-12, r
    # each device forms only its own statistics' roots (V diag(w^(-1/p)) V^T products;
    # XLA counts no FLOPs for LAPACK's eigh)
    assert r["flops"] < r["plain_flops"], r


def test_psgd_kron_with_home_devices_follows_the_plain_psgd_kron(worker):
    r = worker["kron_home"]
    assert r["moved"] > 1e-2, r
    assert r["compiles"] == 1, r
    assert r["collectives"].get("all-gather", 0) > 0, r  # the new factors, shared
    # the same arithmetic per leaf on its home device: the one-device path
    assert r["param_err_move"] < 1e-12, r
    assert r["state_err"] < 1e-12, r
    # each device fits only its own leaves' factors (the products and triangular solves)
    assert r["flops"] < 0.9 * r["plain_flops"], r


def test_soap_with_zero1_moves_statistics_only_to_their_home_device(worker):
    r = worker["soap_home"]
    z, g = r["zero1_home"], r["zero1_gather"]
    assert z["compiles"] == 1, z
    # float64, ZeRO-1 state, home_zero1=True: the one-device path (GSPMD's partitioned sums
    # in Adam's rotations leave the order of sums)
    assert z["param_err_move"] < 1e-12, z
    assert z["state_err"] < 1e-12, z
    # the new bases are back where the ZeRO-1 state keeps them: split by rows where 8
    # divides d (16, 16, 8), whole where not (20, 20)
    assert z["bases_split"] == [["data"], ["data"], [], [], ["data"]], z
    # the all-to-alls of the home part move exactly the busiest home devices' pieces ...
    home_a2a = z["collectives"]["all-to-all"] - g["collectives"].get("all-to-all", 0)
    assert home_a2a == r["home_all_to_all_bytes"], r
    # ... and the split statistics and bases are no longer all-gathered (eigh: gg; refresh:
    # gg and q); GSPMD gathers the split orders (d values each) for the second moments
    assert z["collectives"]["all-gather"] <= (
        g["collectives"]["all-gather"] - 3 * r["split_stat_bytes"] + r["split_order_bytes"]
    ), r


def test_data_parallel_training_matches_one_device(worker):
    train = worker["train"]
    for mode in ("None", "data"):
        run = train[mode]
        assert run["batch_split"] == [[8, 20], [8, 20]]  # 64 rows over 8 devices
        assert run["compiles"] == 1
        np.testing.assert_allclose(run["losses"], train["ref_losses"], rtol=1e-6)
        assert run["param_err"] < 1e-5  # the gradient mean is summed in another order
        assert train["ref_losses"][-1] < train["ref_losses"][0]
    plain, zero = train["None"], train["data"]
    # ZeRO-1: 1/8 of the state per device, parameters gathered; plain: gradients all-reduced.
    assert zero["state_bytes_per_device"] <= 1.05 * zero["state_bytes"] / 8 + 64
    assert plain["state_bytes_per_device"] == plain["state_bytes"]
    assert zero["stats"]["argument_bytes"] < plain["stats"]["argument_bytes"]
    assert plain["stats"]["collectives"].get("all-reduce", 0) > 0
    assert "all-gather" not in plain["stats"]["collectives"]
    assert zero["stats"]["collectives"].get("all-gather", 0) > 0


# --------------------------------------------------------------------------- #
# One device (this process)
# --------------------------------------------------------------------------- #


def _gpt2_small_shapes():
    per_layer = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]
    return per_layer * 12


def _llama7b_shapes():
    per_layer = [(4096, 4096)] * 4 + [(4096, 11008)] * 2 + [(11008, 4096)]
    return per_layer * 32


@pytest.mark.parametrize(
    "shapes,devices",
    [
        (_gpt2_small_shapes(), 8),
        (_gpt2_small_shapes(), 4),
        (_llama7b_shapes(), 8),
        (_llama7b_shapes(), 16),
        (_llama7b_shapes(), 32),
    ],
)
def test_home_device_assignment_is_within_ten_percent_of_even(shapes, devices):
    home = sh.home_device_assignment(shapes, devices)
    assert sorted(set(home)) == list(range(devices))
    loads = sh.assignment_loads(shapes, home, devices)
    assert sum(loads) == pytest.approx(sum(sh.newton_schulz_flops(s) for s in shapes))
    assert max(loads) / np.mean(loads) <= 1.10
    assert home == sh.home_device_assignment(shapes, devices)  # deterministic
    one = sh.assignment_loads(shapes, [0] * len(shapes), devices)  # the spread measure works
    assert max(one) / np.mean(one) == pytest.approx(devices)


def test_newton_schulz_flops():
    assert sh.newton_schulz_flops((7,)) == 0.0 == sh.newton_schulz_flops(())
    assert sh.newton_schulz_flops((64, 32)) == sh.newton_schulz_flops((32, 64))
    m, n = 32, 64
    assert sh.newton_schulz_flops((m, n), steps=1) == 4 * m * m * n + 2 * m**3
    assert sh.matrix_view((3, 3, 8, 16)) == (72, 16)
    with pytest.raises(ValueError, match="num_devices"):
        sh.home_device_assignment([(4, 4)], 0)


def _mesh11():
    return Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))


def test_state_sharding_derives_specs_from_the_state_structure():
    mesh = _mesh11()
    params = {
        "w": jax.ShapeDtypeStruct(
            (32, 16), jnp.float32, sharding=NamedSharding(mesh, P(None, "model"))
        ),
        "s": jax.ShapeDtypeStruct((), jnp.float32),
    }
    tx = jz.adafactor(min_dim_size_to_factor=8)
    st = sh.state_sharding(tx, params, mesh)[0]
    shapes = jax.eval_shape(tx.init, params)[0]
    assert st.count.spec == P()
    # Factored moments: w's shape less one dimension, that dimension's spec dropped.
    for factor, shape in ((st.v_row["w"], shapes.v_row["w"]), (st.v_col["w"], shapes.v_col["w"])):
        assert factor.spec == (P("model") if shape.shape == (16,) else P(None))
    assert {shapes.v_row["w"].shape, shapes.v_col["w"].shape} == {(16,), (32,)}
    assert st.v["s"].spec == P()
    st = sh.state_sharding(optax.adam(1e-3), params, mesh, shard_over="data")[0]
    assert st.mu["w"].spec == P("data", "model")  # "model" kept, "data" on the free dim


def test_sharding_errors():
    mesh = _mesh11()
    with pytest.raises(TypeError, match="home_devices"):
        jz.muon(0.02, home_devices="data")
    with pytest.raises(ValueError, match="home_axis"):
        jz.muon(0.02, home_devices=mesh, home_axis="batch")
    with pytest.raises(ValueError, match="shard_over"):
        sh.state_sharding(jz.adam(1e-3), {"w": jnp.zeros(4)}, mesh, shard_over="batch")
    with pytest.raises(ValueError, match="No mesh"):
        sh.state_sharding(jz.adam(1e-3), {"w": jnp.zeros(4)})
    with pytest.raises(ValueError, match="Invalid number of devices"):
        sh.data_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="leading dimension"):
        sh.shard_batch({"x": jnp.zeros(())}, sh.data_mesh(1))
    sh.use_cpu_devices(jax.device_count())  # already there: a no-op
    with pytest.raises(RuntimeError, match="already started"):
        sh.use_cpu_devices(jax.device_count() + 1)


def test_one_device_round_trip():
    mesh = sh.data_mesh(1)
    params = sh.replicate({"w": jnp.arange(6.0).reshape(2, 3)}, mesh)
    tx = jz.lamb(1e-2)
    state = sh.init_sharded(tx, params, shard_over="data")
    new, _ = sh.sharded_update(tx, params, donate=False)(params, state, params)
    u, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(new["w"], optax.apply_updates(params, u)["w"])
    out = sh.run_on_home_devices(lambda m: m @ m.T, [params["w"]], mesh)
    np.testing.assert_array_equal(out[0], params["w"] @ params["w"].T)


def test_collective_bytes_reads_hlo_text():
    hlo = """
  %all-reduce.5 = (f32[128]{0}, f32[128,784]{1,0}, f32[]) all-reduce(%a, %b, %c), channel_id=1
  %all-gather.1 = bf16[784,128]{1,0} all-gather(%d), channel_id=7, dimensions={0}
  %ags = ((f32[8]{0}), f32[64]{0}) all-gather-start(%e), channel_id=8
  %agd = f32[64]{0} all-gather-done(%ags)
  %rs = f32[16]{0} reduce-scatter(%f), channel_id=9
  %add = f32[16]{0} add(%rs, %rs)
"""
    assert sh.collective_bytes(hlo) == {
        "all-reduce": 4 * (128 + 128 * 784 + 1),
        "all-gather": 2 * 784 * 128 + 4 * 64,
        "reduce-scatter": 4 * 16,
    }
    stats = sh.compiled_stats(jax.jit(lambda x: x * 2).lower(jnp.ones(8)).compile())
    assert stats["collectives"] == {} and stats["argument_bytes"] in (None, 32)
