"""``shampoo`` against pytorch_optimizer's ``ScalableShampoo`` and ``Shampoo`` (4.1.0).

Both are fed the same random gradient stream for 100 steps over a matrix split into blocks, a
conv kernel (merged to a 3-factor tensor), a vector and a scalar, and the whole parameter
trajectories are compared. The statistics start at ``epsilon * I`` and gain a full-rank term
every step, so they are well conditioned and their roots unique.

Where the references differ from each other and from the default here, and the option that
reproduces each:

- Epsilon. Both start the statistics at ``epsilon * I``. ``ScalableShampoo``'s default root
  (coupled Newton) also adds ``epsilon * lambda_max`` before the root, as Anil et al.'s
  ``distributed_shampoo`` does: ``epsilon_mode="relative"`` (the default here); its
  ``use_svd=True`` root and the plain ``Shampoo`` add nothing: ``epsilon_mode="init"``
  (~1e-7 apart here, with well-conditioned statistics; 6e-3 measured with 2-row blocks).
- Root method. The default here is ``eigh``, exact; ``root_method="newton"`` is the coupled
  Newton iteration with the reference's stopping rule (``max|M - I| <= 1e-3`` or an error
  growing by 1.2x). That tolerance makes it 3e-5 away from the exact root's path. Its ridge
  needs ``lambda_max``: the reference runs 100 power iterations from a random vector, ours
  from the all-ones vector; both converge (1e-10 apart).
- Grafting. ``ScalableShampoo``'s RMSProp graft has no bias correction: ``graft="rmsprop"``;
  ``graft="adam"`` (the default here, Meta's AdamGrafting) divides ``v`` by ``1 - b2^t``
  (1.2 apart over 100 steps here: the step sizes differ most early on). Its graft epsilon
  (``diagonal_eps``) defaults to 1e-10, ours to 1e-8. Grafting takes the norm per
  parameter (all blocks together) in both.
- Shapes. ``ScalableShampoo`` merges neighbouring dimensions while their product stays
  <= ``block_size`` (so a matrix with ``m n <= block_size`` becomes a vector and gets the
  graft only) and splits larger ones into blocks, exponent ``2 x`` the number of merged
  dimensions. Its merge also puts a size-1 dimension before a first dimension larger than
  ``block_size`` (``(8, 4)`` at 5 is ``(1, 8, 4)``): a ``1 x 1`` factor per block and
  exponent 6 instead of 4: ``merge_dims="keep_ones"`` (used below); the default drops it
  (2.7e-2 apart here); the plain ``Shampoo`` neither merges nor splits and preconditions
  vectors by a full ``(n, n)`` factor (exponent 2): ``merge_dims=False,
  precondition_1d=True``, a large ``block_size``.
- Momentum. ``ScalableShampoo``: ``m = b1 m + S`` (``moving_average_for_momentum``:
  ``momentum_ema=True``), Nesterov ``b1 m + S``, a separate momentum of the graft's direction
  used before ``start_preconditioning_step``: as here. The plain ``Shampoo`` lerps the raw
  gradient toward the previous step's preconditioned update before taking its statistics
  and preconditioning it: ``momentum_on="gradient"`` (compared with ``momentum=0.5``;
  the default ``"update"`` with ``momentum_ema`` is 2e-3 away from it on the matrix, 2e-2
  on the vector).
- Refresh. Both refresh the roots at steps ``t % frequency == 0`` after adding step ``t``'s
  statistic, the roots being ``I`` until then; the plain ``Shampoo`` every step by default.
- Weight decay. ``decoupled_weight_decay=True`` (``p *= 1 - lr wd`` before the step) is
  ``weight_decay`` here; the reference's coupled default is not offered.
- HeavyBall 3.2.1 has no plain Shampoo: its ``KLShampoo`` accumulates KL-corrected factors
  and scales by ``d^(-1/2)`` in a power-iterated eigenbasis, another algorithm; not compared.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_optimizer import ScalableShampoo, Shampoo
from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

import jaxopt_zoo as jz
from jaxopt_zoo.optim.shampoo import plan_leaf
from tests.helpers import max_rel_err, trajectory

STEPS = 100
SHAPES = [(8, 4), (2, 2, 4, 4), (5,), ()]
GRAFT = {"sgd": LayerWiseGrafting.SGD, "adagrad": LayerWiseGrafting.ADAGRAD}
GRAFT.update(rmsprop=LayerWiseGrafting.RMSPROP, none=LayerWiseGrafting.NONE)

# (ours, ScalableShampoo's) keyword arguments for the two settings
CASES = {
    "rmsprop_nesterov": (
        dict(b1=0.9, b2=0.99, start_preconditioning_step=5, precondition_frequency=3),
        dict(betas=(0.9, 0.99), start_preconditioning_step=5, preconditioning_compute_steps=3),
        "rmsprop",
        5,
    ),
    "adagrad_ema_wd": (
        dict(
            b1=0.5,
            b2=0.95,
            start_preconditioning_step=1,
            precondition_frequency=2,
            momentum_ema=True,
            nesterov=False,
            weight_decay=0.1,
        ),
        dict(
            betas=(0.5, 0.95),
            start_preconditioning_step=1,
            preconditioning_compute_steps=2,
            moving_average_for_momentum=True,
            nesterov=False,
            weight_decay=0.1,
            decoupled_weight_decay=True,
        ),
        "adagrad",
        6,
    ),
}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    p0 = [rng.normal(size=s) for s in SHAPES]
    grads = [rng.normal(size=(STEPS,) + s) for s in SHAPES]
    return p0, grads


P0, GRADS = _data()


def run_reference(cls, kwargs, dtype=torch.float64):
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in P0]
    opt = cls(params, **kwargs)
    traj = [np.empty((STEPS,) + p.shape) for p in P0]
    for t in range(STEPS):
        for p, g in zip(params, GRADS):
            p.grad = torch.tensor(np.array(g[t]), dtype=dtype)
        opt.step()
        for k, p in enumerate(params):
            traj[k][t] = p.detach().numpy()
    return traj


def run_ours(tx, dtype=jnp.float64, leaves=len(SHAPES)):
    """Our trajectory of the first ``leaves`` parameters (each leaf's path is its own, so
    those of a full run)."""
    params = {f"p{i}": jnp.asarray(p, dtype) for i, p in enumerate(P0[:leaves])}
    grads = {f"p{i}": jnp.asarray(g, dtype) for i, g in enumerate(GRADS[:leaves])}
    traj = trajectory(tx, params, grads)
    return [np.asarray(traj[f"p{i}"]) for i in range(leaves)]


def scalable(case, *, use_svd=True, graft=None):
    ours, ref, g, block = CASES[case]
    g = graft or g
    ref = dict(ref, lr=1e-2, block_size=block, graft_type=GRAFT[g], use_svd=use_svd)
    ref.update(diagonal_eps=1e-10, matrix_eps=1e-6)
    ours = dict(ours, block_size=block, graft=g, graft_eps=1e-10, epsilon=1e-6)
    ours.update(merge_dims="keep_ones")
    return ours, ref


_CACHE: dict = {}


def reference(case, use_svd=True):
    key = (case, use_svd)
    if key not in _CACHE:
        _CACHE[key] = run_reference(ScalableShampoo, scalable(case, use_svd=use_svd)[1])
    return _CACHE[key]


def ours_traj(case, dtype=jnp.float64, leaves=len(SHAPES), **over):
    kw = dict(scalable(case)[0], epsilon_mode="init")
    kw.update(over)
    key = (case, jnp.dtype(dtype).name, leaves, tuple(sorted(over.items())))
    if key not in _CACHE:
        _CACHE[key] = run_ours(jz.shampoo(1e-2, **kw), dtype, leaves)
    return _CACHE[key]


def test_the_shapes_are_the_references():
    # the matrix is split into blocks of 5 and 3 rows, the kernel merged into (4, 4, 4)
    assert plan_leaf((8, 4), 5, True, False) == ((8, 4), (((0, 5), (0, 4)), ((5, 3), (0, 4))))
    # the references' merge puts a size-1 dimension first: a 1x1 factor, exponent 6
    assert plan_leaf((8, 4), 5, "keep_ones", False)[0] == (1, 8, 4)
    assert plan_leaf((2, 2, 4, 4), 5, True, False)[0] == (4, 4, 4)
    assert plan_leaf((5,), 4, True, False)[1] == ()
    # a small matrix merges into a vector and is not preconditioned, as the reference's
    assert plan_leaf((4, 8), 512, True, False) == ((32,), ())


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_scalable_shampoo_svd_float64(case):
    with jax.enable_x64(True):
        ours = ours_traj(case)
    ref = reference(case)
    assert max_rel_err(ours, ref) < 1e-9
    assert all(np.abs(r[-1] - p).max() > 1e-2 for r, p in zip(ref, P0))  # the reference moved


def test_float32_matches_the_float64_reference():
    ours = ours_traj("rmsprop_nesterov", jnp.float32)
    assert max_rel_err(ours, reference("rmsprop_nesterov")) < 1e-5


def test_newton_root_matches_the_reference_default():
    with jax.enable_x64(True):
        ours = ours_traj("rmsprop_nesterov", root_method="newton", epsilon_mode="relative")
        exact = ours_traj("rmsprop_nesterov", epsilon_mode="relative")
    ref = reference("rmsprop_nesterov", use_svd=False)
    assert max_rel_err(ours, ref) < 1e-8
    # the Newton iteration's 1e-3 tolerance against the exact (eigh) root
    assert 1e-6 < max_rel_err(exact, ref) < 1e-3
    # epsilon added relative to lambda_max or only at the start
    init = ours_traj("rmsprop_nesterov")
    assert 1e-8 < max_rel_err(exact, init) < 1e-5


def test_the_references_size_1_dimension_changes_the_path():
    with jax.enable_x64(True):
        dropped = ours_traj("rmsprop_nesterov", leaves=1, merge_dims=True)  # the matrix
    assert 1e-3 < max_rel_err(dropped, reference("rmsprop_nesterov")[:1]) < 1.0


def test_adam_graft_is_the_bias_corrected_rmsprop_graft():
    with jax.enable_x64(True):
        adam = ours_traj("rmsprop_nesterov", leaves=1, graft="adam")
        rms = ours_traj("rmsprop_nesterov")[:1]
    assert 1e-2 < max_rel_err(adam, rms) < 2.0


PLAIN = dict(
    b2=1.0, epsilon=1e-6, block_size=10**6, precondition_frequency=1,
    start_preconditioning_step=1, graft=None, nesterov=False, merge_dims=False,
    precondition_1d=True, epsilon_mode="init",
)  # fmt: skip


def test_matches_plain_shampoo_float64():
    ref = run_reference(Shampoo, dict(lr=1e-2, momentum=0.5, matrix_eps=1e-6))
    with jax.enable_x64(True):
        ours = run_ours(jz.shampoo(1e-2, b1=0.5, momentum_on="gradient", **PLAIN))
        # a momentum of the update instead, on the matrix
        other = run_ours(jz.shampoo(1e-2, b1=0.5, momentum_ema=True, **PLAIN), leaves=1)
    assert max_rel_err(ours, ref) < 1e-9
    assert 1e-3 < max_rel_err(other, ref[:1]) < 1.0


def test_without_momentum_the_scalar_takes_sgd_steps():
    # b1 = 0 keeps no momentum (a scalar is not preconditioned; with graft=None: SGD)
    p, g = jnp.asarray(P0[3], jnp.float32), jnp.asarray(GRADS[3][:3], jnp.float32)
    tx = jz.shampoo(1e-2, b1=0.0, **PLAIN)
    state = tx.init(p)
    assert state[0].mu is None and state[0].graft_mu is None
    for k in range(3):
        u, state = tx.update(g[k], state, p)
        p = p + u
    assert abs(float(p) - (P0[3] - 1e-2 * float(np.sum(GRADS[3][:3])))) < 1e-5


def test_heavyball_has_no_plain_shampoo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import heavyball
    assert not hasattr(heavyball, "Shampoo") and hasattr(heavyball, "KLShampoo")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(block_size=0), "block_size"),
        (dict(exponent_override=0), "exponent_override"),
        (dict(precondition_frequency=0), "precondition_frequency"),
        (dict(start_preconditioning_step=0), "start_preconditioning_step"),
        (dict(b1=1.0), "b1"),
        (dict(b2=1.5), "b2"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(graft="lion"), "graft"),
        (dict(root_method="svd"), "root_method"),
        (dict(epsilon_mode="absolute"), "epsilon_mode"),
        (dict(merge_dims="yes"), "merge_dims"),
        (dict(momentum_on="params"), "momentum_on"),
    ],
)
def test_bad_hyperparameters_raise(kw, match):
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        jz.shampoo(**kw)


def test_low_precision_leaves_keep_float32_statistics():
    p = {"w": jnp.ones((2, 2), jnp.bfloat16), "b": jnp.ones((3,), jnp.bfloat16)}
    tx = jz.shampoo(block_size=2, graft="adagrad")
    state = tx.init(p)
    u, state = jax.jit(tx.update)(p, state, p)
    inner = state[0]
    dts = {x.dtype for x in jax.tree.leaves((inner.stats, inner.roots, inner.graft_nu))}
    assert dts == {jnp.dtype(jnp.float32)}
    assert u["w"].dtype == jnp.bfloat16
