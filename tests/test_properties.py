"""Property-based tests: every registered optimizer over random pytrees (hypothesis).

Trees nest dicts, lists and tuples around scalars, zero-size arrays and odd shapes, with a
dtype drawn per leaf among float32, bfloat16, float16 and (where the algorithm is defined
for it) complex64. Values are finite and moderate, sometimes with exact zeros (a dead
unit's gradient); hyperparameters are the registry's defaults. For each tree:

- ``init`` and ``update`` keep the structure: updates have the gradients' structure, shapes
  and dtypes; the state keeps its structure, shapes and dtypes from step to step;
- finite parameters and gradients give finite updates, states and new parameters, in every
  dtype (float16 included: second moments are kept in float32 for float16 parameters);
- the fused path, ``jaxopt_zoo.fuse(tx)``, gives the plain path's updates and parameters to
  within rounding (a scalar and a long buffer may take different code paths: last-bit
  differences) for every elementwise optimizer (all but LAMB, LARS and Adafactor, which
  ``fuse`` refuses), or refuses the tree with NotFusableError (see RELIABILITY.md for the
  refusals it makes where it need not), but never crashes or differs.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxopt_zoo as jz
from jaxopt_zoo import registry
from tests.helpers import stand_in_extra_args

NAMES = jz.available() + jz.available("torch.") + jz.available("keras.")
NOT_ELEMENTWISE = {
    "lamb",
    "lars",
    "adafactor",
    "soap",
    "shampoo",
    "mars",  # per-parameter norms / factored statistics
    "muon",
    "galore",  # an SVD per matrix
    "torch.muon",
    "keras.muon",
    "torch.adafactor",  # factored statistics, per-leaf RMS
    "torch.sparse_adam",  # a row is active when any of its elements is
    "torch.lbfgs",  # the whole flattened parameter vector
    "lbfgs",  # inner products over the whole tree (two-loop recursion, line search)
    # per-leaf norms (fromage, novograd), a global norm (polyak_sgd), per-dimension
    # accumulators (sm3), noise drawn per leaf (noisy_sgd)
    "fromage",
    "novograd",
    "polyak_sgd",
    "sm3",
    "noisy_sgd",
}  # matrix products
NOT_ELEMENTWISE |= {"dpsgd"}  # noise drawn per leaf: fuse refuses it
NOT_ELEMENTWISE |= {"psgd_kron"}  # Kronecker factors per leaf (matrix products)
# torch.optim.Muon refuses non-matrix (and complex) parameters; so does torch.muon: matrices only.
MATRIX_ONLY = {"torch.muon"}
# Algorithms built on a sign or a maximum of the gradient, and their framework versions: drawn
# on real dtypes only here (the native ones' complex path is checked in test_optimizers).
REAL_ONLY = {"lion", "adamax", "yogi", "keras.lion", "keras.adamax", "torch.adamax", "torch.muon"}
# Keras' own formulas for these are real-only (squares, clips, norms of real tensors)
REAL_ONLY |= {"keras.adafactor", "keras.ftrl", "keras.lamb", "keras.schedule_free_adamw"}
REAL_ONLY |= {"torch.adafactor"}  # torch.optim.Adafactor refuses complex parameters
FLOATS = ("float32", "bfloat16", "float16")


class Leaf(NamedTuple):
    shape: tuple
    dtype: str
    seed: int


# Scalars, zero-size arrays and odd shapes. A fixed menu rather than any shape: eager JAX
# compiles each primitive once per shape and dtype, so a small menu keeps this file fast
# while the trees around the leaves still vary freely.
SHAPES = [(), (1,), (3,), (0,), (2, 0), (0, 3, 1), (1, 5), (2, 3, 1), (4, 4)]


def leaves(dtypes, shapes=SHAPES):
    return st.builds(
        Leaf, st.sampled_from(shapes), st.sampled_from(dtypes), st.integers(0, 2**31 - 1)
    )


def trees(dtypes, shapes=SHAPES):
    keys = st.text(alphabet="abcxyz_", min_size=1, max_size=3)
    return st.recursive(
        leaves(dtypes, shapes),
        lambda children: st.one_of(
            st.dictionaries(keys, children, max_size=3),
            st.lists(children, max_size=3),
            st.tuples(children, children),
        ),
        max_leaves=5,
    )


@st.composite
def cases(draw, name):
    dtypes = FLOATS if name in REAL_ONLY else FLOATS + ("complex64",)
    shapes = [s for s in SHAPES if len(s) == 2] if name in MATRIX_ONLY else SHAPES
    return (
        draw(trees(dtypes, shapes)),
        draw(st.sampled_from([1e-3, 1.0, 10.0])),
        draw(st.booleans()),
    )


def materialize(spec, offset, scale, zeros=False):
    """Arrays for a tree of Leaf specs: normal values times ``scale`` (complex: two parts),
    about a third of them exactly 0 when ``zeros``."""

    def make(leaf):
        rng = np.random.default_rng(leaf.seed + offset)
        x = rng.normal(size=leaf.shape) * scale
        if leaf.dtype == "complex64":
            x = x + 1j * rng.normal(size=leaf.shape) * scale
        if zeros:
            x = np.where(rng.uniform(size=leaf.shape) < 0.35, 0, x)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree.map(make, spec, is_leaf=lambda x: isinstance(x, Leaf))


def signature(tree):
    return jax.tree.structure(tree), [
        (jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)
    ]


TOL = {"float32": 1e-5, "complex64": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}


def assert_close(got, want):
    """Leaf by leaf, to the leaf dtype's rounding relative to the leaf's largest finite
    value; infinities and nans must match."""
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        tol = TOL[jnp.dtype(y.dtype).name]
        wide = jnp.complex64 if jnp.iscomplexobj(y) else jnp.float32
        x, y = np.asarray(x.astype(wide)), np.asarray(y.astype(wide))
        scale = np.max(np.abs(y[np.isfinite(y)]), initial=0.0)
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * scale)


def all_finite(tree):
    return all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    )


# Optimizers whose step is unbounded by their formula: ACProp divides g_t by the statistic of
# steps < t, ~sqrt(eps_root) after exactly-zero gradients, so a float16 update passes 65504
# before the learning rate (optax.contrib.acprop's too; see jz.acprop). Such an update may be
# inf, but only in a float16 leaf and only where the same case in float32 has that block's
# output (the registry's defaults, before the learning rate) beyond 65504.
F16_FORMULA_OVERFLOW = {"acprop": jz.scale_by_acprop}
F16_MAX = float(jnp.finfo(jnp.float16).max)


def assert_float16_formula_overflow(name, spec, scale, zeros, steps):
    """The non-finite updates of ``steps`` steps of ``name`` on ``spec`` are float16
    elements where its unbounded block, run on the float32 twin (float16 leaves made
    float32), passes float16's range."""

    def run(sp, tx):
        params = materialize(sp, 0, 1.0)
        state = tx.init(params)
        for k in range(1, steps + 1):
            updates, state = tx.update(materialize(sp, k, scale, zeros), state, params)
            params = optax.apply_updates(params, updates)
        return updates

    is_leaf = lambda x: isinstance(x, Leaf)  # noqa: E731
    twin = jax.tree.map(
        lambda leaf: leaf._replace(dtype="float32") if leaf.dtype == "float16" else leaf,
        spec,
        is_leaf=is_leaf,
    )
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(spec, is_leaf=is_leaf)]
    overflowed = 0
    got = jax.tree.leaves(run(spec, jz.get(name)))
    block32 = jax.tree.leaves(run(twin, F16_FORMULA_OVERFLOW[name]()))
    for dtype, u, u32 in zip(dtypes, got, block32):
        bad = ~np.isfinite(np.asarray(u))
        assert not bad.any() or dtype == "float16", (name, dtype, u)
        assert np.all(np.abs(np.asarray(u32)[bad]) > F16_MAX), (name, u, u32)
        overflowed += int(bad.sum())
    assert overflowed > 0, name


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_init_and_update_keep_structure_and_stay_finite(name, data):
    spec, scale, zeros = data.draw(cases(name))
    tx = jz.get(name)
    params = materialize(spec, 0, 1.0)
    grads = [materialize(spec, k, scale, zeros) for k in (1, 2)]
    # fuse probes `update` without the extra arguments (value, obj_fn) some need
    fused = None if name in NOT_ELEMENTWISE or jz.entry(name).extra_args else jz.fuse(tx)
    fused_params, fused_state = params, None
    if fused is not None:
        try:
            fused_state = fused.init(params)
        except jz.NotFusableError:  # a clear refusal is allowed; a crash or a wrong result not
            fused = None

    state = tx.init(params)
    state_sig = signature(state)
    for step, g in enumerate(grads, 1):
        updates, state = tx.update(g, state, params, **stand_in_extra_args(name, params, g))
        assert signature(updates) == signature(g), name
        assert signature(state) == state_sig, name
        if name in F16_FORMULA_OVERFLOW and not all_finite(updates):
            assert_float16_formula_overflow(name, spec, scale, zeros, step)
            break  # the parameters are now inf, as the formula's float16 result says
        params = optax.apply_updates(params, updates)
        assert all_finite(updates) and all_finite(state) and all_finite(params), (
            name,
            updates,
            state,
        )
        if fused is not None:
            fused_updates, fused_state = fused.update(g, fused_state, fused_params)
            fused_params = optax.apply_updates(fused_params, fused_updates)
            assert signature(fused_updates) == signature(updates), name
            assert_close(fused_updates, updates)
            assert_close(fused_params, params)


# Gradient elements from 1e-4 (whose square underflows in float16) to 3, and exact zeros.
HALF_GRADS = np.random.default_rng(0).normal(size=(5, 8)) * np.array(
    [1e-4, 1e-3, 1.0, 1.0, 0.0, 3.0, 1e-2, 1.0]
)
# L-BFGS (float32 inside for half parameters) takes discrete decisions -- the curvature test
# y.s > 1e-10, the descent test, its stopping tests -- on values computed at the rounded
# parameters; with the stand-in's random gradients they flip, so the half-precision iterates
# are checked finite and of the right dtype only.
HALF_UNTRACKED = {"torch.lbfgs"}
HALF_TOL = {"float16": 2e-2, "bfloat16": 4e-2}  # ~10 and ~5 units of the dtype's rounding


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_updates_track_float32(name):
    # Five steps on the same gradients in float32, float16 and bfloat16: the half-precision
    # updates are finite and within a few units of their rounding of the float32 ones, relative
    # to the largest update. Before second moments were kept in float32 for float16, 18
    # optimizers gave inf or nan here, and Keras' Adam and Nadam lost every bfloat16 update
    # (0.999 rounds to 1 in bfloat16, so 1 - b2^t was 0).
    p0 = np.random.default_rng(1).normal(size=8)
    shape = (2, 4) if name in MATRIX_ONLY else (8,)
    # torch.muon runs Newton-Schulz in bfloat16 whatever the parameters' dtype (as torch):
    # that rounding, chaotic over five iterations, is not the parameters' precision.
    kw = {"ns_dtype": None} if name == "torch.muon" else {}
    # Sophia divides m by gamma * h, here 0.01 * 0.01 after one estimate of the stand-in
    # Hessian (I): a 1e4 gain on m, whose second step cancels to 4e-6, so bfloat16's rounding
    # of the gradients themselves moves that step by 25%. gamma = 10 keeps the gain at 10.
    kw = {"gamma": 10.0} if name == "sophia" else kw

    def updates(dtype):
        tx = jz.get(name, **kw)
        p = jnp.asarray(p0, dtype).reshape(shape)
        state, out = tx.init(p), []
        for g in HALF_GRADS:
            g = jnp.asarray(g, dtype).reshape(shape)
            u, state = tx.update(g, state, p, **stand_in_extra_args(name, p, g))
            assert u.dtype == jnp.dtype(dtype) and all_finite(state), (name, dtype, state)
            out.append(np.asarray(u.astype(jnp.float32)))
        return np.array(out)

    want = updates("float32")
    assert np.max(np.abs(want)) > 0, name
    for dtype, tol in HALF_TOL.items():
        got = updates(dtype)
        assert np.all(np.isfinite(got)), (name, dtype, got)
        if name in HALF_UNTRACKED:
            continue
        # float16 holds updates below its normal range (6e-5) only to its subnormal step,
        # 6e-8: D-Adaptation's first updates are ~1e-6 (d_0 = 1e-6)
        floor = float(jnp.finfo(jnp.float16).smallest_subnormal) if dtype == "float16" else 0
        np.testing.assert_allclose(
            got,
            want,
            rtol=0,
            atol=max(tol * np.max(np.abs(want)), floor),
            err_msg=f"{name} in {dtype}",
        )


@pytest.mark.parametrize(
    "make",
    [dict, lambda: {"w": jnp.zeros((0, 3))}, lambda: [jnp.zeros(0), ()]],
    ids=["empty", "zero-size", "nested-zero-size"],
)
@pytest.mark.parametrize("flat", [False, True], ids=["tree", "FlatParams"])
def test_fuse_accepts_a_tree_without_elements(make, flat):
    # As the plain path does (test_api.py::test_empty_and_zero_size_params): nothing to
    # update, the same structure back, the step count still advances.
    tx = jz.fuse(jz.adam(1e-3))
    params = make()
    x = jz.FlatParams.from_tree(params) if flat else params
    state = tx.init(x)
    for _ in range(2):
        updates, state = tx.update(x, state, x)
    if flat:
        updates = updates.tree()
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert [u.shape for u in jax.tree.leaves(updates)] == [p.shape for p in jax.tree.leaves(params)]
    assert int(state.inner[0].count) == 2
    step = jax.jit(jz.fused_apply(tx), donate_argnums=(0, 1))
    grads = jz.FlatParams.from_tree(make()) if flat else make()
    new, _ = step(x, tx.init(x), grads)
    assert jax.tree.structure(new) == jax.tree.structure(grads)


def test_the_table_covers_every_registered_optimizer():
    assert sorted(NAMES) == sorted(registry._REGISTRY)
    assert REAL_ONLY <= set(NAMES) and NOT_ELEMENTWISE <= set(NAMES)
    for name in NOT_ELEMENTWISE:
        if registry.entry(name).extra_args:
            continue  # fuse's probe cannot call an update that needs a loss (torch.lbfgs)
        tree = (
            {"w": jnp.ones((2, 3))}
            if name in MATRIX_ONLY
            else {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
        )
        # fuse probes an update without its extra arguments (polyak_sgd's value): the
        # update's own ValueError asking for them comes back instead of a NotFusableError
        refusal = ValueError if jz.entry(name).extra_args else jz.NotFusableError
        with pytest.raises(refusal):
            jz.fuse(jz.get(name)).init(tree)


# Wrappers around any optimizer (not registered: they take an optimizer, not hyperparameters).
# SAM's second gradient comes from a fixed grad_fn (the gradient of 0.25 * |p|^2).
WRAPPED = {
    "sam(adam)": lambda: jz.sam(jz.adam(1e-3), rho=0.05),
    "sam(sgd, adaptive)": lambda: jz.sam(jz.sgd(1e-2, momentum=0.9), rho=0.5, adaptive=True),
    "swa(sgd)": lambda: jz.swa(jz.sgd(1e-2, momentum=0.9), start_step=1),
    "ema_weights(adamw)": lambda: jz.ema_weights(jz.adamw(1e-3), 0.9, overwrite_every=2),
}


def _grad_fn(p):
    return jax.tree.map(lambda x: (0.5 * x).astype(x.dtype), p)


@pytest.mark.parametrize("name", sorted(WRAPPED))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wrappers_keep_structure_and_stay_finite(name, data):
    spec, scale, zeros = data.draw(cases(name))
    tx = WRAPPED[name]()
    params = materialize(spec, 0, 1.0)
    state = tx.init(params)
    state_sig = signature(state)
    for k in (1, 2):
        g = materialize(spec, k, scale, zeros)
        updates, state = tx.update(g, state, params, grad_fn=_grad_fn)
        assert signature(updates) == signature(g), name
        assert signature(state) == state_sig, name
        params = optax.apply_updates(params, updates)
        assert all_finite(updates) and all_finite(state) and all_finite(params), name
    if name.startswith(("swa", "ema")):
        avg = jz.averaged_params(state, like=params)
        assert signature(avg) == signature(params), name


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_wrappers_in_half_precision_track_float32(name):
    p0 = np.random.default_rng(1).normal(size=8)

    def run(dtype):
        tx = WRAPPED[name]()
        p = jnp.asarray(p0, dtype)
        state, out = tx.init(p), []
        for g in HALF_GRADS:
            u, state = tx.update(jnp.asarray(g, dtype), state, p, grad_fn=_grad_fn)
            assert u.dtype == jnp.dtype(dtype) and all_finite(state), (name, dtype)
            p = optax.apply_updates(p, u)
            out.append(np.asarray(p.astype(jnp.float32)))
        return np.array(out)

    want = run("float32")
    assert np.max(np.abs(want - p0)) > 0, name
    for dtype, tol in HALF_TOL.items():
        got = run(dtype)
        assert np.all(np.isfinite(got)), (name, dtype)
        np.testing.assert_allclose(
            got, want, rtol=0, atol=tol * np.max(np.abs(want)), err_msg=f"{name} in {dtype}"
        )
