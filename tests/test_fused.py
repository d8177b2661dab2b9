"""fuse / FlatParams: same results as the plain path, clear refusals, no recompilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import max_rel_err

import jaxopt_zoo as jz
from jaxopt_zoo.fast import FlatParams, FusedState, Layout, NotFusableError, check_fusable, fuse
from jaxopt_zoo.models import MLP
from jaxopt_zoo.train import Metrics, make_indexed_train_step

STEPS = 20
# Not elementwise: per-parameter norms (trust ratio), factored / per-block statistics.
NOT_ELEMENTWISE = {"lamb", "lars", "adafactor", "soap", "mars", "muon", "lbfgs", "galore"}
NOT_ELEMENTWISE |= {"shampoo"}  # issue 20
NOT_ELEMENTWISE |= {"psgd_kron"}  # Kronecker factors per leaf (matrix products)
NOT_ELEMENTWISE |= {"dpsgd"}  # noise: refused (its draws depend on the leaves' layout)
# per-leaf or global norms, per-dimension accumulators, noise drawn per leaf
NOT_ELEMENTWISE |= {"fromage", "novograd", "polyak_sgd", "sm3", "noisy_sgd"}
NOT_ELEMENTWISE |= {"adam_mini"}  # issue 19: a second moment shared within each block
# fuse probes `update` without the extra arguments (value, obj_fn) that some need
ELEMENTWISE = [
    n for n in jz.available() if n not in NOT_ELEMENTWISE and not jz.entry(n).extra_args
] + [
    "torch.adam",
    "keras.lion",
]  # the compat ones are written with the same blocks


def mixed_params(seed=0):
    """Matrices, a vector, a scalar, a bfloat16 leaf and an empty leaf, nested."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return {
        "dense": {"w": f32(4, 3), "b": f32(3)},
        "scale": f32(),
        "emb": jnp.asarray(rng.normal(size=(2, 5)), jnp.bfloat16),
        "empty": jnp.zeros((0, 2), jnp.float32),
        "out": [f32(3, 2), f32(2)],
    }


PARAMS = mixed_params()
GRADS = jax.tree.map(
    lambda p: jnp.asarray(np.random.default_rng(1).normal(size=(STEPS,) + p.shape), p.dtype), PARAMS
)


@jax.jit(static_argnums=(0, 1, 4))
def plain_fused_flat(tx, fused, params, grads, with_flat=True):
    """Trajectories of tx on the tree, fuse(tx) on the tree and (if with_flat) fuse(tx) on
    FlatParams split in two chunks per dtype. One compile for all of them."""

    def run(t, p0, as_flat):
        def body(carry, g):
            p, s = carry
            if as_flat:
                g = FlatParams(p.layout.flatten(g), p.layout)
            u, s = t.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p.tree() if as_flat else p)

        return jax.lax.scan(body, (p0, t.init(p0)), grads)[1]

    flat = run(fused, FlatParams.from_tree(params, chunks=2), True) if with_flat else None
    return run(tx, params, False), run(fused, params, False), flat


def split_bf16(tree):
    f32 = jax.tree.map(lambda x: x if x.dtype != jnp.bfloat16 else jnp.zeros(()), tree)
    bf16 = [x for x in jax.tree.leaves(tree) if x.dtype == jnp.bfloat16]
    return f32, bf16


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fused_equals_plain(name):
    tx = jz.get(name, learning_rate=0.05)
    with_flat = name in ("adam", "momentum", "lion")  # FlatParams too (compile time)
    plain, tree_path, flat_path = plain_fused_flat(tx, fuse(tx), PARAMS, GRADS, with_flat)
    ref32, ref16 = split_bf16(plain)
    for got in (tree_path, flat_path)[: 1 + with_flat]:
        assert jax.tree.structure(got) == jax.tree.structure(plain)
        g32, g16 = split_bf16(got)
        assert max_rel_err(g32, ref32) < 1e-5
        assert max_rel_err(g16, ref16) < 2e-2  # one bf16 rounding step at most


@pytest.mark.parametrize(
    "label, tx",
    [
        ("clip_by_global_norm", optax.chain(jz.clip_by_global_norm(0.5), jz.adam(0.05))),
        ("skip_not_finite", jz.skip_not_finite(jz.sgd(0.05, momentum=0.9))),
        ("inject_hyperparams", optax.inject_hyperparams(jz.adamw)(learning_rate=0.05)),
        ("schedule", jz.lion(optax.cosine_decay_schedule(0.05, STEPS))),
    ],
)
def test_fused_equals_plain_for_chains_with_global_reductions(label, tx):
    plain, tree_path, _ = plain_fused_flat(tx, fuse(tx), PARAMS, GRADS, False)
    # A global norm sums in another order, and the bfloat16 leaves' sum is rounded to
    # bfloat16 once per buffer instead of once per leaf: agreement to ~1e-4, not bitwise.
    assert max_rel_err(split_bf16(tree_path)[0], split_bf16(plain)[0]) < 1e-3


@pytest.mark.parametrize(
    "label, tx, reason",
    [
        ("lamb", jz.lamb(1e-3), "reduces over single parameters"),
        ("lars", jz.lars(0.1), "reduces over single parameters"),
        ("adafactor", jz.adafactor(1e-2), "reduces over single parameters"),
        (
            "clip_by_block_rms",
            optax.chain(jz.clip_by_block_rms(1.0), jz.sgd(0.1)),
            "reduces over single parameters",
        ),
        (
            "masked weight decay",
            jz.adamw(1e-3, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            "different formula",
        ),
        (
            "masked state",
            jz.masked(jz.adam(1e-3), {"w": True, "b": False}),
            "not shaped like the parameters",
        ),
        ("noise", optax.add_noise(0.1, 0.55, 0), "not derived from the parameters"),
    ],
)
def test_refuses_transformations_that_are_not_elementwise(label, tx, reason):
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    with pytest.raises(NotFusableError, match=f"not exact on flat buffers: .*{reason}"):
        fuse(tx).init(params)
    with pytest.raises(NotFusableError, match=reason):
        check_fusable(tx, params)


def test_factored_adafactor_is_refused_on_big_matrices():
    # Adafactor factors matrices whose dimensions reach 128: a partial reduction.
    params = {"w": jax.ShapeDtypeStruct((256, 128), jnp.float32)}
    tx = optax.chain(jz.scale_by_factored_rms(), jz.scale(-1e-2))
    with pytest.raises(NotFusableError, match="some axes of a parameter"):
        check_fusable(tx, params)


def test_check_false_skips_the_check():
    tx = fuse(jz.lamb(1e-3), check=False)
    assert isinstance(tx.init({"w": jnp.ones(3)}), FusedState)


def test_layout_round_trip_with_chunks():
    params = mixed_params()
    for chunks in (1, 2, 3, 7):
        fp = FlatParams.from_tree(params, chunks=chunks)
        back = fp.tree()
        assert jax.tree.structure(back) == jax.tree.structure(params)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    fp = FlatParams.from_tree(params, chunks=2)
    n32 = sum(x.size for x in jax.tree.leaves(params) if x.dtype == jnp.float32)
    assert sorted(fp.buffers) == ["bfloat16.0", "bfloat16.1", "float32.0", "float32.1"]
    assert fp.buffers["float32.0"].size + fp.buffers["float32.1"].size == n32
    with pytest.raises(ValueError, match="Invalid chunks: 0"):
        Layout.of(params, chunks=0)


def test_grad_of_flat_params_is_flat_params():
    fp = FlatParams.from_tree({"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)})
    g = jax.grad(lambda p: jnp.sum(p.tree()["w"] ** 2) + jnp.sum(p.tree()["b"]))(fp)
    assert isinstance(g, FlatParams) and g.layout == fp.layout
    np.testing.assert_array_equal(g.tree()["w"], 2 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(g.tree()["b"], np.ones(3))


def test_mismatched_layouts_are_an_error():
    tx = fuse(jz.adam(1e-3))
    fp = FlatParams.from_tree({"w": jnp.ones(3)})
    other = FlatParams.from_tree({"w": jnp.ones(4)})
    with pytest.raises(ValueError, match="different layouts"):
        tx.update(fp, tx.init(fp), other)


@pytest.mark.parametrize("as_flat", [False, True])
def test_fused_step_compiles_once_and_keeps_state_structure(as_flat):
    tx = fuse(jz.adamw(1e-3))
    params = {"w": jnp.ones((8, 4)), "b": jnp.zeros(4), "h": jnp.ones(3, jnp.bfloat16)}
    if as_flat:
        params = FlatParams.from_tree(params)
    state = tx.init(params)
    structure = jax.tree.structure(state)
    dtypes = [x.dtype for x in jax.tree.leaves(state)]

    @jax.jit(donate_argnums=(0, 1))
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for i in range(4):
        grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1 * (i + 1)), params)
        params, state = step(params, state, grads)
        assert jax.tree.structure(state) == structure
        assert [x.dtype for x in jax.tree.leaves(state)] == dtypes
    assert step._cache_size() == 1


@pytest.mark.parametrize("tx", [jz.adam(1e-3), fuse(jz.adam(1e-3))], ids=["plain", "fused"])
def test_trainer_step_compiles_once(tx):
    model, batch = MLP(hidden=(8,)), 16
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(40, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, size=40), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    state, totals = tx.init(params), Metrics(*(jnp.zeros(()) for _ in range(3)))
    step = make_indexed_train_step(model, tx, batch)
    order, key = jnp.arange(40, dtype=jnp.int32), jax.random.PRNGKey(1)
    for s in range(6):  # two epochs of 3 batches, the last one padded
        params, state, totals = step(params, state, totals, images, labels, order, s % 3, s, key)
    assert step._cache_size() == 1
    assert float(totals.count) == 80.0


@pytest.mark.parametrize(
    "label, tx, chunked",
    [
        ("adam", jz.adam(0.05), True),
        ("lion", jz.lion(0.05), True),
        ("clipped adam", optax.chain(jz.clip_by_global_norm(0.5), jz.adam(0.05)), False),
    ],
)
def test_fused_apply_equals_plain(label, tx, chunked):
    fused = fuse(tx)
    step = jax.jit(jz.fused_apply(fused), donate_argnums=(0, 1))
    flat = FlatParams.from_tree(PARAMS, chunks=3)
    state, ref, ref_state = fused.init(flat), PARAMS, tx.init(PARAMS)

    @jax.jit
    def ref_step(g, s, p):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for i in range(5):
        g = jax.tree.map(lambda x: x[i], GRADS)
        flat, state = step(flat, state, FlatParams(flat.layout.flatten(g), flat.layout))
        ref, ref_state = ref_step(g, ref_state, ref)
    assert max_rel_err(split_bf16(flat.tree())[0], split_bf16(ref)[0]) < 1e-3
    assert step._cache_size() == 1
    # Chunk after chunk (ordered by optimization barriers) only without a global reduction,
    # which would need every chunk at once.
    grads = jax.tree.map(jnp.copy, flat)
    assert ("optimization_barrier" in step.lower(flat, state, grads).as_text()) == chunked


def test_fused_apply_updates_adam_in_place():
    fused = fuse(jz.adam(1e-3))
    flat = FlatParams.from_tree(PARAMS, chunks=3)
    state, grads = fused.init(flat), jax.tree.map(jnp.copy, flat)
    hlo = (
        jax.jit(jz.fused_apply(fused), donate_argnums=(0, 1))
        .lower(flat, state, grads)
        .compile()
        .as_text()
    )
    sizes = {b.shape[0] for b in flat.buffers.values()}
    copies = [
        ln
        for ln in hlo.splitlines()
        if " copy(" in ln and any(f"[{n}]" in ln.split(" copy(")[0] for n in sizes)
    ]
    assert copies == []


def test_fused_apply_needs_a_fused_transformation():
    with pytest.raises(TypeError, match="made by jaxopt_zoo.fuse"):
        jz.fused_apply(jz.adam(1e-3))
