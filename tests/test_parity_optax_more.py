"""optax 0.2.8's remaining optimizers (adamaxw, adan, fromage, noisy_sgd, novograd,
optimistic gradient descent, both optimistic Adams, polyak_sgd, rprop, sign_sgd, signum,
sm3) against optax and, where the algorithm is the same, ``pytorch_optimizer`` 4.1.0 and
``torch.optim``, step for step.

Every case runs 120 steps of a noisy quadratic, ``g_t = h * (p - p_star) + 0.3 * xi_t`` per
element (curvatures ``h`` in [0.5, 2]), on a matrix, a 4-D conv kernel, a vector and a
scalar, and compares the whole parameter trajectory: relative error
``max|ours - ref| / max|ref|`` per leaf below 1e-6 in float64 and 1e-5 in float32 (each
family runs in float32 at least once). Torch references run with the same dtype. Every
reference must move. ``polyak_sgd`` gets ``value = 0.5 * sum(h * (p - p_star)^2) + 1``.

Where the references disagree (each is reproduced by a documented option; the size of each
disagreement is asserted in ``test_references_disagree``):

- Adan: optax weights the gradient difference by ``1 - b2`` (0.08) in ``n`` and in the
  update; the paper (which writes ``beta = 1 - b``), the authors' code and
  ``pytorch_optimizer.Adan`` by ``b2`` (0.92): ``paper_weights=True``. optax decays
  decoupled (``pytorch_optimizer``'s ``weight_decouple=True``); the paper and
  ``pytorch_optimizer``'s default decay proximally, ``p = (p - lr u) / (1 + lr wd)``:
  ``proximal=True``. ``pytorch_optimizer`` has no ``eps_root`` (optax's ``adan`` defaults
  it to 1e-8): compared with ``eps_root=0``.
- NovoGrad: optax and ``pytorch_optimizer`` agree (no ``1 - b1`` on the new term; the
  decay coupled after the normalization). ``pytorch_optimizer``'s ``grad_averaging=True``
  scales the new term by ``1 - b1`` after the first step: ``grad_averaging=True``.
- SM3: optax and ``pytorch_optimizer`` agree on tensors and vectors (``eps`` 1e-8 vs
  1e-30: ``eps=`` here); optax fails on a scalar parameter (``IndexError``), so the optax
  comparison leaves the scalar out, and ``pytorch_optimizer`` keeps a scalar accumulator as
  this does. (``pytorch_optimizer``'s ``beta > 0`` keeps running maxima of the
  accumulators; optax's ``b2 < 1`` replaces them: not offered.)
- Fromage: optax floors both norms at ``min_norm`` (1e-6); ``pytorch_optimizer`` does not
  (same trajectory here, norms are far above it); its ``p_bound`` has no optax counterpart.
- SignSGD / Signum: optax and ``pytorch_optimizer.SignSGD`` agree (its momentum is the
  undebiased moving average); its decoupled ``weight_decay`` is an extra argument here
  (0 in optax).
- Rprop: optax applies each step one step late (it outputs the stored previous update
  ``u_{t-1}``, zeroed where the sign flipped; its first update is 0); the paper and
  ``torch.optim.Rprop`` apply ``u_t``: ``current_step=True``. optax leaves a step size
  unchanged, unclipped, where ``g_t * g_{t-1} == 0``;
  ``torch.optim.Rprop`` clips it there too (``clamp_unchanged=True``). They differ only for
  an initial step size outside ``[min_step_size, max_step_size]``.
- optimistic_adam: optax's first version (``lr`` and ``optimism`` as the optimistic
  weights, no schedules, a final ``scale(-1)``) and ``optimistic_adam_v2`` (``alpha``,
  ``beta`` and a learning rate outside) are both here; ``optimistic_adam(lr, opt)`` equals
  ``optimistic_adam_v2(1.0, alpha=lr, beta=opt)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_optimizer as po
import torch

import jaxopt_zoo as jz
from tests.helpers import max_rel_err
from tests.helpers import torch_precision as precision

SHAPES = {"matrix": (4, 3), "conv": (3, 2, 2, 2), "vector": (5,), "scalar": ()}
STEPS = 120
TOL = {"float64": 1e-6, "float32": 1e-5}
_rng = np.random.default_rng(0)
P0 = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
H = {k: _rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
PSTAR = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}


def grad_np(p: dict, t: int) -> dict:
    return {k: H[k] * (p[k] - PSTAR[k]) + NOISE[k][t] for k in p}


def run_many(pairs, dtype: str, keys_list, values):
    """Trajectories of several transformations in one compile: ``pairs`` is a list of
    transformations, each run on the leaves ``keys_list[i]`` (``values[i]``: pass the
    loss as ``value=``)."""
    dt = jnp.dtype(dtype)
    cast = lambda d, keys: {k: jnp.asarray(d[k], dt) for k in keys}  # noqa: E731

    def traj(tx, keys, value):
        h, ps, noise = cast(H, keys), cast(PSTAR, keys), cast(NOISE, keys)

        def grad(p, xi):
            return jax.tree.map(lambda p_, h_, s_, x_: h_ * (p_ - s_) + x_, p, h, ps, xi)

        def loss(p):
            terms = jax.tree.map(lambda p_, h_, s_: jnp.sum(0.5 * h_ * (p_ - s_) ** 2), p, h, ps)
            return sum(jax.tree.leaves(terms)) + 1.0

        def body(carry, xi):
            p, s = carry
            extra = {"value": loss(p)} if value else {}
            u, s = tx.update(grad(p, xi), s, p, **extra)
            p = optax.apply_updates(p, u)
            return (p, s), p

        p0 = cast(P0, keys)
        return jax.lax.scan(body, (p0, tx.init(p0)), noise)[1]

    return jax.jit(lambda: [traj(tx, k, v) for tx, k, v in zip(pairs, keys_list, values)])()


def torch_run(make: Callable[[list], Any]):
    params = [
        torch.tensor(P0[k], dtype=torch.get_default_dtype(), requires_grad=True) for k in SHAPES
    ]
    opt = make(params)
    rows = []
    for t in range(STEPS):
        cur = {k: p.detach().numpy().copy() for k, p in zip(SHAPES, params)}
        g = grad_np(cur, t)
        for k, p in zip(SHAPES, params):
            p.grad = torch.tensor(g[k], dtype=p.dtype)
        opt.step()
        rows.append([p.detach().numpy().copy() for p in params])
    return {k: np.stack([r[i] for r in rows]) for i, k in enumerate(SHAPES)}


def ours_only(txs, dtype):
    return run_many(txs, dtype, [tuple(SHAPES)] * len(txs), [False] * len(txs))


def check(got, want, dtype, name):
    moved = max_rel_err(jax.tree.map(lambda t: t[-1], want), {k: P0[k] for k in want})
    assert moved > 1e-2, f"{name}: the reference barely moved ({moved})"
    err = max_rel_err(got, want)
    assert err < TOL[dtype], f"{name} ({dtype}): max relative error {err:.3g}"


def _v1(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.optimistic_adam(*a, **kw)


NO_SCALAR = ("matrix", "conv", "vector")
# (id, ours, optax's, run in float32 too, options: "value" (polyak), "no-scalar" (optax sm3))
OPTAX_CASES = [
    ("adamaxw", lambda: jz.adamaxw(0.05), lambda: optax.adamaxw(0.05), True),
    (
        "adamaxw-options",
        lambda: jz.adamaxw(0.02, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1),
        lambda: optax.adamaxw(0.02, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1),
        False,
    ),
    ("adan", lambda: jz.adan(0.05), lambda: optax.adan(0.05), True),
    (
        "adan-options",
        lambda: jz.adan(0.02, b1=0.9, b2=0.8, b3=0.95, eps=1e-6, eps_root=0.0, weight_decay=0.1),
        lambda: optax.adan(0.02, b1=0.9, b2=0.8, b3=0.95, eps=1e-6, eps_root=0.0, weight_decay=0.1),
        False,
    ),
    ("fromage", lambda: jz.fromage(0.05), lambda: optax.fromage(0.05), True),
    (
        "fromage-schedule",
        lambda: jz.fromage(optax.linear_schedule(0.1, 0.01, 100), min_norm=0.5),
        lambda: optax.fromage(optax.linear_schedule(0.1, 0.01, 100), min_norm=0.5),
        False,
    ),
    (
        "noisy_sgd",
        lambda: jz.noisy_sgd(0.05, key=jax.random.key(3)),
        lambda: optax.noisy_sgd(0.05, key=jax.random.key(3)),
        True,
    ),
    (
        "noisy_sgd-options",
        lambda: jz.noisy_sgd(0.02, eta=0.1, gamma=0.3, key=7),
        lambda: optax.noisy_sgd(0.02, eta=0.1, gamma=0.3, key=7),
        False,
    ),
    ("novograd", lambda: jz.novograd(0.05), lambda: optax.novograd(0.05), True),
    (
        "novograd-options",
        lambda: jz.novograd(0.02, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-3, weight_decay=0.1),
        lambda: optax.novograd(0.02, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-3, weight_decay=0.1),
        False,
    ),
    (
        "optimistic_gd",
        lambda: jz.optimistic_gradient_descent(0.05),
        lambda: optax.optimistic_gradient_descent(0.05),
        True,
    ),
    (
        "optimistic_gd-options",
        lambda: jz.optimistic_gradient_descent(0.05, alpha=0.7, beta=0.4),
        lambda: optax.optimistic_gradient_descent(0.05, alpha=0.7, beta=0.4),
        False,
    ),
    ("optimistic_adam", lambda: jz.optimistic_adam(0.02), lambda: _v1(0.02), True),
    (
        "optimistic_adam-options",
        lambda: jz.optimistic_adam(0.02, 0.05, b1=0.8, b2=0.99, eps=1e-6, nesterov=False),
        lambda: _v1(0.02, 0.05, b1=0.8, b2=0.99, eps=1e-6, nesterov=False),
        False,
    ),
    (
        "optimistic_adam_v2",
        lambda: jz.optimistic_adam_v2(0.02),
        lambda: optax.optimistic_adam_v2(0.02),
        True,
    ),
    (
        "optimistic_adam_v2-options",
        lambda: jz.optimistic_adam_v2(
            optax.cosine_decay_schedule(0.05, 120), alpha=0.5, beta=2.0, b1=0.8, eps_root=1e-8
        ),
        lambda: optax.optimistic_adam_v2(
            optax.cosine_decay_schedule(0.05, 120), alpha=0.5, beta=2.0, b1=0.8, eps_root=1e-8
        ),
        False,
    ),
    ("polyak_sgd", lambda: jz.polyak_sgd(0.5), lambda: optax.polyak_sgd(0.5), True, "value"),
    (
        "polyak_sgd-options",
        lambda: jz.polyak_sgd(0.8, scaling=0.5, f_min=1.2, eps=0.1, variant="sps+"),
        lambda: optax.polyak_sgd(0.8, scaling=0.5, f_min=1.2, eps=0.1, variant="sps+"),
        False,
        "value",
    ),
    ("rprop", lambda: jz.rprop(0.01), lambda: optax.rprop(0.01), True),
    (
        "rprop-options",
        lambda: jz.rprop(0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.2),
        lambda: optax.rprop(
            0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.2
        ),
        False,
    ),
    ("sign_sgd", lambda: jz.sign_sgd(0.01), lambda: optax.sign_sgd(0.01), True),
    (
        "sign_sgd-schedule",
        lambda: jz.sign_sgd(optax.exponential_decay(0.02, 10, 0.9)),
        lambda: optax.sign_sgd(optax.exponential_decay(0.02, 10, 0.9)),
        False,
    ),
    ("signum", lambda: jz.signum(0.01), lambda: optax.signum(0.01), True),
    ("signum-options", lambda: jz.signum(0.02, beta=0.5), lambda: optax.signum(0.02, 0.5), False),
    ("sm3", lambda: jz.sm3(0.1), lambda: optax.sm3(0.1), True, "no-scalar"),
    (
        "sm3-options",
        lambda: jz.chain(jz.scale_by_sm3(0.5, 0.9, 1e-6), jz.scale(-0.05)),
        lambda: optax.chain(optax.scale_by_sm3(0.5, 0.9, 1e-6), optax.scale(-0.05)),
        False,
        "no-scalar",
    ),
]
FAMILIES = sorted({c[0].split("-")[0] for c in OPTAX_CASES})


def family_cases(cases, family, dtype):
    """A family's cases: all of them in float64, those marked for float32 in float32."""
    return [c for c in cases if c[0].split("-")[0] == family and (dtype == "float64" or c[3])]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_optax(family, dtype):
    """Each family's settings against optax, ours and optax's in one compile."""
    cases = family_cases(OPTAX_CASES, family, dtype)
    txs, keys, values = [], [], []
    with precision(dtype):
        for _name, make_ours, make_ref, _f32, *opts in cases:
            k = NO_SCALAR if "no-scalar" in opts else tuple(SHAPES)
            txs += [make_ours(), make_ref()]
            keys += [k, k]
            values += ["value" in opts] * 2
        out = run_many(txs, dtype, keys, values)
    for i, case in enumerate(cases):
        check(out[2 * i], out[2 * i + 1], dtype, case[0])


# (id, ours, the torch reference, run in float32 too)
TORCH_CASES = [
    (
        "adan-po",
        lambda: jz.adan(0.05, eps_root=0.0, paper_weights=True),
        lambda ps: po.Adan(ps, lr=0.05, foreach=False),
        True,
    ),
    (
        "adan-po-decoupled",
        lambda: jz.adan(0.02, 0.9, 0.8, 0.95, 1e-6, 0.0, 0.1, paper_weights=True),
        lambda ps: po.Adan(
            ps, lr=0.02, betas=(0.9, 0.8, 0.95), eps=1e-6, weight_decay=0.1, weight_decouple=True
        ),
        False,
    ),
    (
        "adan-po-proximal",
        lambda: jz.adan(0.02, eps_root=0.0, weight_decay=0.3, paper_weights=True, proximal=True),
        lambda ps: po.Adan(ps, lr=0.02, weight_decay=0.3),
        True,
    ),
    (
        "novograd-po",
        lambda: jz.novograd(0.05, b1=0.95, b2=0.98, eps=1e-8),
        lambda ps: po.NovoGrad(ps, lr=0.05),
        True,
    ),
    (
        "novograd-po-options",
        lambda: jz.novograd(0.05, 0.8, 0.5, 1e-6, weight_decay=0.1, grad_averaging=True),
        lambda ps: po.NovoGrad(
            ps, lr=0.05, betas=(0.8, 0.5), eps=1e-6, weight_decay=0.1, grad_averaging=True
        ),
        False,
    ),
    ("sm3-po", lambda: jz.sm3(0.1, 0.0, eps=1e-30), lambda ps: po.SM3(ps, lr=0.1), True),
    (
        "sm3-po-momentum",
        lambda: jz.sm3(0.05, 0.9, eps=1e-30),
        lambda ps: po.SM3(ps, lr=0.05, momentum=0.9),
        False,
    ),
    ("fromage-po", lambda: jz.fromage(0.05), lambda ps: po.Fromage(ps, lr=0.05), True),
    (
        "sign_sgd-po",
        lambda: jz.sign_sgd(0.01),
        lambda ps: po.SignSGD(ps, lr=0.01, momentum=0.0),
        False,
    ),
    (
        "signum-po-wd",
        lambda: jz.signum(0.01, beta=0.8, weight_decay=0.1),
        lambda ps: po.SignSGD(ps, lr=0.01, momentum=0.8, weight_decay=0.1),
        True,
    ),
    (
        "rprop-torch",
        lambda: jz.rprop(0.01, current_step=True),
        lambda ps: torch.optim.Rprop(ps, lr=0.01),
        True,
    ),
    (
        "rprop-torch-options",
        lambda: jz.rprop(0.05, 0.3, 1.5, 1e-3, 0.2, current_step=True),
        lambda ps: torch.optim.Rprop(ps, lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
        False,
    ),
    (
        "rprop-torch-clamp",
        lambda: jz.rprop(1.0, max_step_size=0.2, current_step=True, clamp_unchanged=True),
        lambda ps: torch.optim.Rprop(ps, lr=1.0, step_sizes=(1e-6, 0.2)),
        False,
    ),
]
TORCH_FAMILIES = sorted({c[0].split("-")[0] for c in TORCH_CASES})


@pytest.mark.parametrize(
    "family,dtype",
    [
        (f, dt)
        for f in TORCH_FAMILIES
        for dt in ("float64", "float32")
        if family_cases(TORCH_CASES, f, dt)
    ],
)
def test_matches_torch(family, dtype):
    """Each family's settings against pytorch_optimizer / torch.optim (ours in one
    compile)."""
    cases = family_cases(TORCH_CASES, family, dtype)
    with precision(dtype):
        wants = [torch_run(make_ref) for _n, _o, make_ref, _f in cases]
        gots = ours_only([make_ours() for _n, make_ours, _r, _f in cases], dtype)
    for case, got, want in zip(cases, gots, wants):
        check(got, want, dtype, case[0])


# ----------------------------------------------------------------------------- disagreements


def test_references_disagree():
    """The size of each disagreement in the module docstring, measured on the same problem
    (float64, one compile): each option moves the trajectory by this much from the default."""
    variants = {
        "adan": jz.adan(0.05, eps_root=0.0),
        "adan-paper": jz.adan(0.05, eps_root=0.0, paper_weights=True),
        "adan-wd": jz.adan(0.05, eps_root=0.0, weight_decay=0.3),
        "adan-wd-proximal": jz.adan(0.05, eps_root=0.0, weight_decay=0.3, proximal=True),
        "novograd": jz.novograd(0.05),
        "novograd-averaging": jz.novograd(0.05, grad_averaging=True),
        "rprop": jz.rprop(0.01),
        "rprop-current": jz.rprop(0.01, current_step=True),
        "rprop-current-clamp": jz.rprop(0.01, current_step=True, clamp_unchanged=True),
        "rprop-big": jz.rprop(1.0, max_step_size=0.2, current_step=True),
        "rprop-big-clamp": jz.rprop(
            1.0, max_step_size=0.2, current_step=True, clamp_unchanged=True
        ),
        "sm3": jz.sm3(0.1),
        "sm3-eps30": jz.sm3(0.1, eps=1e-30),
        "oadam-v1": jz.optimistic_adam(0.02, 0.05),
        "oadam-v2": jz.optimistic_adam_v2(1.0, alpha=0.02, beta=0.05),
    }
    with precision("float64"):
        out = dict(zip(variants, ours_only(list(variants.values()), "float64")))
    err = lambda a, b: max_rel_err(out[a], out[b])  # noqa: E731
    # Adan: the weight of the gradient difference (0.92 vs 0.08); proximal vs decoupled
    # decay (lr * wd = 0.015 a step).
    assert 0.05 < err("adan-paper", "adan") < 0.5  # 0.14
    assert 3e-3 < err("adan-wd-proximal", "adan-wd") < 0.05  # 0.015
    assert 0.3 < err("novograd-averaging", "novograd") < 5.0  # 1.3
    # Rprop: optax's one-step lag; torch's extra clip only bites out of bounds.
    assert 0.1 < err("rprop-current", "rprop") < 1.0  # 0.35
    assert err("rprop-current-clamp", "rprop-current") == 0.0
    assert 0.1 < err("rprop-big-clamp", "rprop-big") < 2.0  # 0.53
    # SM3's eps (optax 1e-8, pytorch_optimizer 1e-30) is invisible here.
    assert err("sm3-eps30", "sm3") < 1e-6  # 1.1e-7
    # optimistic_adam (v1) is v2 with the learning rate moved into alpha.
    assert err("oadam-v1", "oadam-v2") < 1e-12


def test_optax_sm3_fails_on_scalars_where_ours_does_not():
    p = {"s": jnp.ones(()), "v": jnp.ones(3)}
    with pytest.raises(IndexError):
        optax.sm3(0.1).update(p, optax.sm3(0.1).init(p), p)
    tx = jz.sm3(0.1)
    u, s = tx.update(p, tx.init(p), p)
    assert float(u["s"]) == pytest.approx(-0.1 * 0.1)  # (1 - 0.9) * g / |g|, times -lr
    assert s[0].accumulators["s"].shape == ()


def test_sm3_keeps_one_accumulator_per_dimension():
    p = {"w": jnp.ones((6, 5, 4)), "b": jnp.ones(7)}
    s = jz.sm3(0.1).init(p)[0]
    assert s.accumulators["w"].shape == (6 + 5 + 4,)  # the three dimensions' vectors
    assert s.accumulators["b"].shape == (7,)


def test_noisy_sgd_keeps_its_key_and_is_reproducible():
    p = {"w": jnp.zeros(4)}
    g = {"w": jnp.zeros(4)}
    tx = jz.noisy_sgd(1.0, eta=1.0, key=5)
    s0 = tx.init(p)
    u1, s1 = tx.update(g, s0, p)
    u1b, _ = tx.update(g, s0, p)
    u2, _ = tx.update(g, s1, p)
    np.testing.assert_array_equal(u1["w"], u1b["w"])  # same state, same noise
    assert not np.allclose(u1["w"], u2["w"])  # the state moved the key on
    assert np.std(np.asarray(u1["w"])) > 0.1
    with pytest.raises(ValueError, match="either key or seed"):
        jz.noisy_sgd(0.1, key=1, seed=2)


def test_polyak_needs_value():
    tx = jz.polyak_sgd()
    p = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="value=loss"):
        tx.update(p, tx.init(p), p)
    u, _ = tx.update(p, tx.init(p), p, value=jnp.asarray(1.5))  # gap 1.5 / |g|^2 3 = 0.5
    np.testing.assert_allclose(u["w"], -0.5 * np.ones(3))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.adan(1e-3, b3=1.0), "Invalid b3"),
        (lambda: jz.adan(1e-3, b2=-0.1), "Invalid b2"),
        (lambda: jz.adan(1e-3, weight_decay=0.1, proximal=True, eps=-1.0), "Invalid eps"),
        (lambda: jz.adamaxw(1e-3, b1=1.5), "Invalid b1"),
        (lambda: jz.novograd(1e-2, b2=1.0), "Invalid b2"),
        (lambda: jz.novograd(1e-2, weight_decay=-0.1), "Invalid weight_decay"),
        (lambda: jz.sm3(0.1, momentum=1.0), "Invalid b1"),
        (lambda: jz.scale_by_sm3(b2=1.5), "Invalid b2"),
        (lambda: jz.rprop(0.0), "Invalid learning_rate"),
        (lambda: jz.rprop(0.1, eta_minus=1.5), "Invalid eta_minus"),
        (lambda: jz.rprop(0.1, eta_plus=0.5), "Invalid eta_plus"),
        (lambda: jz.rprop(0.1, min_step_size=1.0, max_step_size=0.5), "min_step_size"),
        (lambda: jz.polyak_sgd(max_learning_rate=0.0), "Invalid max_learning_rate"),
        (lambda: jz.polyak_sgd(variant="spsx"), "Invalid variant"),
        (lambda: jz.polyak_sgd(eps=-1.0), "Invalid eps"),
        (lambda: jz.fromage(-0.1), "Invalid learning_rate"),
        (lambda: jz.fromage(0.1, min_norm=-1.0), "Invalid min_norm"),
        (lambda: jz.noisy_sgd(0.1, eta=-1.0), "Invalid eta"),
        (lambda: jz.noisy_sgd(0.1, gamma=-1.0), "Invalid gamma"),
        (lambda: jz.signum(0.1, beta=1.0), "Invalid beta"),
        (lambda: jz.optimistic_gradient_descent(0.1, alpha=-1.0), "Invalid alpha"),
        (lambda: jz.optimistic_adam_v2(0.1, beta=-1.0), "Invalid beta"),
        (lambda: jz.optimistic_adam(lambda c: 0.1), "cannot be a schedule"),
    ],
)
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()
