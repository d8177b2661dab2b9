"""``soap`` against ``pytorch_optimizer.SOAP`` (4.1.0), step for step, in float64.

Both are fed the same random gradient stream for 120 steps over matrices of different
aspect ratios, a 4-D kernel, a vector and a scalar, and the whole parameter trajectories
are compared.

Where the comparison is exact and where it cannot be:

- The first call takes ``Q = eigh(L)`` of a statistic ``L = (1 - sb) G G^T`` of rank
  ``min(m, n)``: for a non-square ``m x n`` matrix (and a preconditioned vector, rank 1)
  its null space is degenerate and every orthonormal basis of it is an answer. torch's
  LAPACK and XLA's pick different ones, and the paths then differ by ~1e-2 (measured:
  4e-3 for 6x4, 1e-2 for 3x7), although both are correct SOAP. Flipping an eigenvector's
  sign changes nothing (``v`` holds squares; the Householder QR gives the same Q for
  columns of either sign).
- The reference runs the QR of the refresh in float32 whatever the parameter dtype (so do
  the authors); the float64 paths then differ by ~2e-7 for full-rank shapes.

So the exact comparison gives the reference the same decompositions as ours: its
``get_orthogonal_matrix`` (the first call's eigh) and ``torch.linalg.qr`` are routed
through ``jnp.linalg`` for the reference run, and ours runs its QR in float32 too
(``qr_dtype=jnp.float32``). Every other operation (moments, projections, order of the
basis refresh and the moment permutation, bias correction, weight decay after the step,
the first call that makes no step) is the reference's own code; they agree to 1e-12. A
second case runs the unmodified reference on full-rank shapes: < 1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_optimizer import SOAP
from pytorch_optimizer.optimizer.utils.shape import merge_small_dims as ref_merge

import jaxopt_zoo as jz
from jaxopt_zoo.optim.soap import merge_small_dims

STEPS = 120
SHAPES = [(6, 4), (3, 7), (5, 5), (4, 3, 2, 2), (5,), ()]
FULL_RANK = [(5, 5), (4, 3, 2, 2), (3, 3, 2), ()]
MERGE_SHAPES = [(2, 3, 4, 5), (20, 3), (4, 4), ()]  # the reference cannot merge vectors


def _qr_like_ours(a):
    with jax.enable_x64(True):
        q, r = jnp.linalg.qr(jnp.asarray(a.numpy()))
    return torch.from_numpy(np.array(q)), torch.from_numpy(np.array(r))


def run_reference(kwargs, p0, grads, first_bases, monkeypatch):
    """The reference's trajectory; with ``first_bases`` (ours, per parameter) its first
    call takes those eigenbases and its QR is ``jnp.linalg.qr``."""
    if first_bases is not None:
        queue = list(first_bases)

        def first_eigh(mat):
            qs = queue.pop(0)
            if not qs and [tuple(m.shape) for m in mat] == [(1, 1)]:
                # with merge_dims the reference preconditions a scalar as a 1x1 (Q = 1)
                return [torch.ones((1, 1), dtype=torch.float64)]
            assert len(qs) == len(mat)
            return [[] if q is None else torch.from_numpy(np.array(q)) for q in qs]

        monkeypatch.setattr(SOAP, "get_orthogonal_matrix", staticmethod(first_eigh))
        monkeypatch.setattr(torch.linalg, "qr", _qr_like_ours)
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in p0]
    opt = SOAP(params, **kwargs)
    traj = [np.empty((STEPS,) + p.shape) for p in p0]
    for t in range(STEPS):
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(np.array(g[t]))
        opt.step()
        for k, p in enumerate(params):
            traj[k][t] = p.detach().numpy()
    monkeypatch.undo()
    return traj


def run_ours(kwargs, p0, grads):
    """Our trajectory, and the eigenbases our first call took (per parameter)."""
    tx = jz.soap(**kwargs)

    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, s[0].q)

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    with jax.enable_x64(True):
        traj, bases = run([jnp.asarray(p) for p in p0], [jnp.asarray(g) for g in grads])
        first = [tuple(None if q is None else np.asarray(q[0]) for q in qs) for qs in bases]
        return [np.asarray(x) for x in traj], first


def ours_kwargs(torch_kwargs):
    kw = dict(torch_kwargs)
    kw["learning_rate"] = kw.pop("lr")
    if "betas" in kw:
        kw["b1"], kw["b2"] = kw.pop("betas")
    if "normalize_gradient" in kw:
        kw["normalize_grads"] = kw.pop("normalize_gradient")
    return kw


def data(shapes, seed):
    rng = np.random.default_rng(seed)
    p0 = [rng.normal(size=s) for s in shapes]
    grads = [rng.normal(size=(STEPS,) + s) * (1 + rng.uniform()) for s in shapes]
    return p0, grads


CASES = [  # (torch kwargs, shapes, same decompositions, tolerance)
    (dict(lr=0.01), SHAPES, True, 1e-12),
    (
        dict(
            lr=0.02,
            betas=(0.9, 0.99),
            shampoo_beta=0.8,
            weight_decay=0.1,
            precondition_frequency=5,
            precondition_1d=True,
            normalize_gradient=True,
        ),
        SHAPES,
        True,
        1e-12,
    ),
    (
        dict(
            lr=0.01,
            precondition_frequency=4,
            max_precondition_dim=12,
            merge_dims=True,
            correct_bias=False,
            eps=1e-3,
        ),
        MERGE_SHAPES,
        True,
        1e-12,
    ),
    (dict(lr=0.01, max_precondition_dim=5, precondition_frequency=7), SHAPES, True, 1e-12),
    (dict(lr=0.01, precondition_frequency=5), FULL_RANK, False, 1e-6),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_soap_matches_pytorch_optimizer(case, monkeypatch):
    kwargs, shapes, same, tol = CASES[case]
    p0, grads = data(shapes, case)
    ours, first = run_ours(dict(ours_kwargs(kwargs), qr_dtype=jnp.float32), p0, grads)
    ref = run_reference(kwargs, p0, grads, first if same else None, monkeypatch)
    for s, a, b, p in zip(shapes, ours, ref, p0):
        assert np.max(np.abs(b - p)) > 0.01, f"the reference did not move {s}"
        # the first call makes no step in either
        np.testing.assert_array_equal(a[0], p)
        err = np.max(np.abs(a - b)) / np.max(np.abs(b))
        assert err < tol, (case, s, err)


def test_default_qr_dtype_is_the_parameters():
    # float64 QR (the default) against the float32 one: same algorithm, rounding apart.
    p0, grads = data(FULL_RANK, 7)
    a = run_ours(dict(learning_rate=0.01, precondition_frequency=2), p0, grads)[0]
    b = run_ours(
        dict(learning_rate=0.01, precondition_frequency=2, qr_dtype=jnp.float32), p0, grads
    )[0]
    errs = [np.max(np.abs(x - y)) / np.max(np.abs(y)) for x, y in zip(a, b)]
    assert 1e-12 < max(errs) < 1e-5, errs


@pytest.mark.parametrize(
    "shape,max_dim",
    [((2, 3, 4, 5), 12), ((20, 3), 12), ((1, 2, 768, 1, 2048), 1024), ((5, 1, 7), 6)],
)
def test_merge_small_dims_matches_the_reference(shape, max_dim):
    assert list(merge_small_dims(shape, max_dim)) == ref_merge(list(shape), max_dim)


def test_merge_small_dims_keeps_a_fully_merged_shape():
    # the reference returns [1] here, and its reshape then fails
    assert ref_merge([2, 3], 100) == [1]
    assert merge_small_dims((2, 3), 100) == (6,)


def test_soap_validates_its_arguments():
    with pytest.raises(ValueError, match="Invalid precondition_frequency: 0"):
        jz.soap(precondition_frequency=0)
    with pytest.raises(ValueError, match="Invalid shampoo_beta: 1.5"):
        jz.soap(shampoo_beta=1.5)
    with pytest.raises(ValueError, match="Invalid learning rate|Invalid learning_rate"):
        jz.soap(-1.0)
