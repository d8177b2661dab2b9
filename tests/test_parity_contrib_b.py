"""GaLore, MADGRAD, MoMo, MoMo-Adam and Sophia against optax.contrib 0.2.8, the authors'
``madgrad`` package and pytorch_optimizer 4.1.0, step for step.

Every case runs 120 steps on a noisy, coupled quadratic,
``f_t(x) = sum 0.5 h (x - x*)^2 + xi_t . (x - x*) + 0.5 c (sum (x - x*))^2 + 2`` over all
elements (curvatures ``h`` in [0.5, 2], ``c = 0.05``, so the Hessian is not diagonal and
Hutchinson's estimate depends on its probes), on a tall and a wide matrix, a 4-D conv
kernel, a vector and a scalar, and compares the whole parameter trajectory: relative error
``max|ours - ref| / max|ref|`` per leaf below 1e-6 in float64 and 1e-5 in float32. Torch
references run in the same dtype. Every reference must move. MoMo gets ``value = f_t(x)``,
Sophia ``obj_fn = f_t``.

Where the references disagree (each reproduced by a documented option; the size of each
disagreement is asserted in ``test_references_disagree``):

- MADGRAD (optax.contrib, the authors' ``madgrad`` 1.3, pytorch_optimizer): the same
  trajectory. Edge cases only: the authors skip ``+ eps`` on ``lr == 0``; with ``eps = 0``
  an untouched coordinate is ``0 / 0 = nan`` in optax and no step in the authors' code and
  here (``test_madgrad_eps_zero_takes_no_step_where_optax_gives_nan``); with ``momentum =
  0`` the authors re-derive ``x0`` from the parameters each step (the same point; with their
  decoupled decay, ``decouple_decay=True``, it moves, as here). optax computes ``sqrt(k +
  1)`` in float32 even in float64 runs (a 6e-8 difference).
- MoMo, MoMo-Adam: only optax.contrib implements them.
- Sophia (optax.contrib vs pytorch_optimizer's ``SophiaH``): optax (after Levanter)
  bias-corrects the momentum and steps with the previous Hessian EMA (so its first step is
  ``clip(m / eps)``, a sign step); ``SophiaH``, like the paper, does neither
  (``bias_correction=False, hessian_first=True``). ``SophiaH`` clips ``m / max(h, eps)`` at
  ``p`` where optax clips ``m / max(gamma h, eps)`` at 1: the same step with ``gamma = p``,
  ``lr = lr_SophiaH * p``, ``eps = eps_SophiaH * p``, ``weight_decay = wd / p``. Its probes
  are Gaussian by default, optax's Rademacher; they come from torch's global generator, so
  ``SophiaH`` is fed our estimates through ``step(hessian=...)`` at the estimation steps.
  With optax the probes themselves agree: the estimator keeps optax's key schedule
  (``hutchinson_probes``), and both draw the same signs from the same seed.
- GaLore (optax.contrib vs pytorch_optimizer's ``GaLore``, which follows the authors'
  code): optax projects a tall matrix from the left (``U_r^T G``), the authors from the
  right (``G V_r``; ``projection_type="std"``); pytorch_optimizer refreshes the projector at
  1-based steps ``1, gap, 2 gap`` where optax and the authors refresh at 0-based ``0, gap,
  ...`` (``proj_step_offset=1``); their Adam adds ``eps`` outside the bias correction
  (``scale_by_keras_adam`` as the base) and decays the parameters after the step
  (``decay_after_update=True``). Both take the SVD in float32 (pytorch_optimizer casts
  float64 matrices to float32 too), but torch's LAPACK and jax's give different signs and
  last bits: the trajectory depends on the signs only through the base optimizer's state
  carried across a refresh. So the comparison with refreshes feeds ``torch.linalg.svd``
  jax's SVD of the same float32 matrix; without that, with a single SVD (a sign-invariant
  trajectory), the two agree to float32 rounding (``test_galore_without_the_injected_svd``),
  and the projected subspaces ``P P^T`` of the two SVDs agree to 1e-5 while the signs of
  their vectors do not (``test_svd_signs_differ_but_subspaces_agree``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import madgrad as madgrad_authors
import numpy as np
import optax
import pytest
import pytorch_optimizer as po
import torch

import jaxopt_zoo as jz
from jaxopt_zoo.compat.keras import scale_by_keras_adam
from tests.helpers import max_rel_err
from tests.helpers import torch_precision as precision

SHAPES = {"tall": (6, 4), "wide": (3, 5), "conv": (3, 2, 2, 2), "vector": (5,), "scalar": ()}
STEPS = 120
TOL = {"float64": 1e-6, "float32": 1e-5}
COUPLING = 0.05
_rng = np.random.default_rng(0)
P0 = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
H = {k: _rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
PSTAR = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}


def loss_jax(p, h, ps, xi):
    e = jax.tree.map(jnp.subtract, p, ps)
    total = sum(jnp.sum(x) for x in jax.tree.leaves(e))
    quad = sum(
        jnp.sum(0.5 * h_ * x * x + xi_ * x)
        for x, h_, xi_ in zip(jax.tree.leaves(e), jax.tree.leaves(h), jax.tree.leaves(xi))
    )
    return quad + 0.5 * COUPLING * total * total + 2.0


def grad_np(p: dict, t: int) -> dict:
    total = sum(np.sum(p[k] - PSTAR[k]) for k in SHAPES)
    return {k: H[k] * (p[k] - PSTAR[k]) + NOISE[k][t] + COUPLING * total for k in SHAPES}


def hvp_np(z: dict) -> dict:
    total = sum(np.sum(z[k]) for k in SHAPES)
    return {k: H[k] * z[k] + COUPLING * total for k in SHAPES}


# ----------------------------------------------------------------------------- runs


def run(tx, dtype: str, extra: frozenset = frozenset()):
    """The parameter trajectory of ``tx`` (ours or optax's: the same loop), with ``value``
    and ``obj_fn`` passed where ``extra`` names them."""
    dt = jnp.dtype(dtype)
    h = {k: jnp.asarray(v, dt) for k, v in H.items()}
    ps = {k: jnp.asarray(v, dt) for k, v in PSTAR.items()}
    noise = {k: jnp.asarray(v, dt) for k, v in NOISE.items()}

    @jax.jit
    def go(p0):
        def body(carry, xi):
            p, s = carry
            f = lambda q: loss_jax(q, h, ps, xi)  # noqa: E731
            value, g = jax.value_and_grad(f)(p)
            kw: dict[str, Any] = {}
            if "value" in extra:
                kw["value"] = value
            if "obj_fn" in extra:
                kw["obj_fn"] = f
            u, s = tx.update(g, s, p, **kw)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p0, tx.init(p0)), noise)[1]

    return go({k: jnp.asarray(v, dt) for k, v in P0.items()})


def torch_run(make: Callable[[list], Any], step_kwargs: Callable | None = None):
    params = [
        torch.tensor(P0[k], dtype=torch.get_default_dtype(), requires_grad=True) for k in SHAPES
    ]
    opt = make(params)
    out = []
    for t in range(STEPS):
        g = grad_np({k: p.detach().numpy().astype(np.float64) for k, p in zip(SHAPES, params)}, t)
        for k, p in zip(SHAPES, params):
            p.grad = torch.tensor(g[k], dtype=p.dtype)
        opt.step(**(step_kwargs(t) if step_kwargs else {}))
        out.append([p.detach().numpy().copy() for p in params])
    return {k: np.stack([r[i] for r in out]) for i, k in enumerate(SHAPES)}


def check(got, want, dtype, name):
    moved = max_rel_err(jax.tree.map(lambda t: t[-1], want), P0)
    assert moved > 1e-2, f"{name}: the reference barely moved ({moved})"
    err = max_rel_err(got, want)
    assert err < TOL[dtype], f"{name} ({dtype}): max relative error {err:.3g}"


# ----------------------------------------------------------------------------- references

MATRICES = ("tall", "wide")


def po_galore(lr, rank, gap, projection_type, scale=1.0, **kw):
    def make(params):
        mats = [p for k, p in zip(SHAPES, params) if k in MATRICES]
        rest = [p for k, p in zip(SHAPES, params) if k not in MATRICES]
        proj = {"rank": rank, "update_proj_gap": gap, "projection_type": projection_type}
        groups = [{"params": mats, "scale": scale, **proj}, {"params": rest}]
        return po.GaLore(groups, lr=lr, **kw)

    return make


def jz_galore_authors(lr, rank, gap, projection_type, *, b=(0.9, 0.999), eps=1e-6, **kw):
    return jz.galore(
        lr,
        rank,
        gap,
        base_optimizer=scale_by_keras_adam(b[0], b[1], eps),
        projection_type=projection_type,
        proj_step_offset=1,
        decay_after_update=True,
        **kw,
    )


def estimates(period: int, seed: int = 5) -> dict:
    """Hutchinson estimates ``z * (H z)`` with Gaussian probes (``SophiaH``'s default), one
    per estimation step, stacked: fed to both sides where the probes cannot be shared."""
    rng = np.random.default_rng(seed)
    n = -(-STEPS // period)
    out: dict = {k: [] for k in SHAPES}
    for _ in range(n):
        z = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        hz = hvp_np(z)
        for k in SHAPES:
            out[k].append(z[k] * hz[k])
    return {k: np.stack(v) for k, v in out.items()}


def fed_estimator(table: dict):
    """A ``hessian_diagonal_fn`` returning the next row of ``table``."""

    def init_fn(params):
        del params
        return jnp.zeros([], jnp.int32)

    def update_fn(updates, state, params=None, **extra):
        del extra
        row = {k: jnp.asarray(table[k], params[k].dtype)[state] for k in SHAPES}
        return row, state + 1

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fed_sophiah(period: int):
    """``step(hessian=...)`` for SophiaH at its estimation steps, from :func:`estimates`."""
    table = estimates(period)
    dt = torch.get_default_dtype()

    def kwargs(t):
        if t % period:
            return {}
        return {"hessian": [torch.tensor(table[k][t // period], dtype=dt) for k in SHAPES]}

    return kwargs


P_CLIP = 0.05  # SophiaH's p


def jz_sophiah(lr, p=P_CLIP, eps=1e-12, weight_decay=0.0, b1=0.96, **kw):
    return jz.sophia(
        lr * p,
        b1=b1,
        eps=eps * p,
        gamma=p,
        weight_decay=weight_decay / p,
        bias_correction=False,
        hessian_first=True,
        **kw,
    )


# (id, ours, references, extra update args, float32 too, options). A reference is
# ("optax", make the optax transformation) or ("torch", make the optimizer from the params).
# Options: "svd" (torch gets jax's SVD), "hessian": k (SophiaH gets the estimates fed to ours
# every k steps). float32 runs once or twice per family.
V, OBJ, NONE = frozenset({"value"}), frozenset({"obj_fn"}), frozenset()
GDN = jz.GaLoreDimensionNumbers(reduction_axis=(0, 1), output_axis=(2, 3))
ODN = optax.contrib.GaLoreDimensionNumbers(reduction_axis=(0, 1), output_axis=(2, 3))
GDT, ODT = jz.GaLoreDimensionNumbers(1, 0), optax.contrib.GaLoreDimensionNumbers(1, 0)
MG = madgrad_authors.MADGRAD


def _dims(m, t):
    return {"tall": t, "wide": None, "conv": m, "vector": None, "scalar": None}


CASES = [
    # MADGRAD: optax.contrib, the authors' package, pytorch_optimizer
    (
        "madgrad",
        lambda: jz.madgrad(0.01),
        [
            ("optax", lambda: optax.contrib.madgrad(0.01)),
            ("torch", lambda ps: MG(ps, lr=0.01)),
            ("torch", lambda ps: po.MADGRAD(ps, lr=0.01)),
        ],
        NONE,
        True,
        {},
    ),
    (
        "madgrad-options",
        lambda: jz.madgrad(0.02, momentum=0.5, weight_decay=0.1, eps=1e-4),
        [
            ("optax", lambda: optax.contrib.madgrad(0.02, 0.5, weight_decay=0.1, eps=1e-4)),
            ("torch", lambda ps: MG(ps, lr=0.02, momentum=0.5, weight_decay=0.1, eps=1e-4)),
            ("torch", lambda ps: po.MADGRAD(ps, 0.02, 0.5, weight_decay=0.1, eps=1e-4)),
        ],
        NONE,
        False,
        {},
    ),
    (
        "madgrad-m0",
        lambda: jz.madgrad(0.05, momentum=0.0, weight_decay=0.05),
        [
            ("optax", lambda: optax.contrib.madgrad(0.05, momentum=0.0, weight_decay=0.05)),
            ("torch", lambda ps: MG(ps, lr=0.05, momentum=0.0, weight_decay=0.05)),
        ],
        NONE,
        False,
        {},
    ),
    (
        "madgrad-decoupled",
        lambda: jz.madgrad(0.02, momentum=0.8, weight_decay=0.1, decouple_decay=True),
        [
            ("torch", lambda ps: MG(ps, 0.02, 0.8, weight_decay=0.1, decouple_decay=True)),
            ("torch", lambda ps: po.MADGRAD(ps, 0.02, 0.8, weight_decay=0.1, weight_decouple=True)),
        ],
        NONE,
        False,
        {},
    ),
    (
        "madgrad-decoupled-m0",
        lambda: jz.madgrad(0.05, momentum=0.0, weight_decay=0.2, decouple_decay=True),
        [
            ("torch", lambda ps: MG(ps, 0.05, 0.0, weight_decay=0.2, decouple_decay=True)),
            ("torch", lambda ps: po.MADGRAD(ps, 0.05, 0.0, weight_decay=0.2, weight_decouple=True)),
        ],
        NONE,
        False,
        {},
    ),
    # MoMo and MoMo-Adam: optax.contrib
    ("momo", lambda: jz.momo(), [("optax", lambda: optax.contrib.momo())], V, False, {}),
    (
        "momo-options",
        lambda: jz.momo(0.5, beta=0.8, lower_bound=0.5, weight_decay=0.05, adapt_lower_bound=True),
        [("optax", lambda: optax.contrib.momo(0.5, 0.8, 0.5, 0.05, adapt_lower_bound=True))],
        V,
        False,
        {},
    ),
    (
        "momo-adam",
        lambda: jz.momo_adam(),
        [("optax", lambda: optax.contrib.momo_adam())],
        V,
        False,
        {},
    ),
    (
        "momo-adam-options",
        lambda: jz.momo_adam(0.3, 0.8, 0.99, 1e-6, 0.5, 0.05, adapt_lower_bound=True),
        [("optax", lambda: optax.contrib.momo_adam(0.3, 0.8, 0.99, 1e-6, 0.5, 0.05, True))],
        V,
        True,
        {},
    ),
    # Sophia: optax.contrib (the same probes; then the same fed estimates) and
    # pytorch_optimizer's SophiaH (the same fed estimates)
    (
        "sophia",
        lambda: jz.sophia(0.05),
        [("optax", lambda: optax.contrib.sophia(0.05))],
        OBJ,
        False,
        {},
    ),
    (
        "sophia-options",
        lambda: jz.sophia(
            0.1,
            b1=0.9,
            b2=0.95,
            gamma=0.05,
            weight_decay=0.01,
            update_interval=3,
            clip_threshold=0.5,
            hessian_diagonal_fn=fed_estimator(estimates(3)),
        ),
        [
            (
                "optax",
                lambda: optax.contrib.sophia(
                    0.1,
                    b1=0.9,
                    b2=0.95,
                    gamma=0.05,
                    weight_decay=0.01,
                    update_interval=3,
                    clip_threshold=0.5,
                    hessian_diagonal_fn=fed_estimator(estimates(3)),
                ),
            )
        ],
        OBJ,
        True,
        {},
    ),
    (
        "sophiah",
        lambda: jz_sophiah(0.5, hessian_diagonal_fn=fed_estimator(estimates(10))),
        [("torch", lambda ps: po.SophiaH(ps, lr=0.5, p=P_CLIP, update_period=10))],
        OBJ,
        False,
        {"hessian": 10},
    ),
    (
        "sophiah-options",
        lambda: jz_sophiah(
            0.3,
            b1=0.9,
            b2=0.95,
            weight_decay=0.1,
            update_interval=4,
            hessian_diagonal_fn=fed_estimator(estimates(4)),
        ),
        [
            (
                "torch",
                lambda ps: po.SophiaH(
                    ps, lr=0.3, betas=(0.9, 0.95), weight_decay=0.1, p=P_CLIP, update_period=4
                ),
            )
        ],
        OBJ,
        False,
        {"hessian": 4},
    ),
    # GaLore: optax.contrib and pytorch_optimizer (the authors' algorithm)
    (
        "galore",
        lambda: jz.galore(0.01, rank=2, update_proj_gap=25),
        [("optax", lambda: optax.contrib.galore(0.01, rank=2, update_proj_gap=25))],
        NONE,
        True,
        {},
    ),
    (
        "galore-options",
        lambda: jz.galore(
            0.02,
            3,
            10,
            0.5,
            jz.scale_by_adam(b1=0.8, b2=0.99),
            0.1,
            weight_dimension_numbers=_dims(GDN, GDT),
        ),
        [
            (
                "optax",
                lambda: optax.contrib.galore(
                    0.02,
                    3,
                    10,
                    0.5,
                    optax.scale_by_adam(b1=0.8, b2=0.99),
                    0.1,
                    weight_dimension_numbers=_dims(ODN, ODT),
                ),
            )
        ],
        NONE,
        False,
        {},
    ),
    (
        "galore-authors-std",
        lambda: jz_galore_authors(0.01, 2, 25, "std", weight_decay=0.1),
        [("torch", po_galore(0.01, 2, 25, "std", weight_decay=0.1))],
        NONE,
        False,
        {"svd": True},
    ),
    (
        "galore-authors-reverse-std",
        lambda: jz_galore_authors(0.02, 3, 10, "reverse_std", b=(0.8, 0.99), eps=1e-8, scale=0.5),
        [("torch", po_galore(0.02, 3, 10, "reverse_std", betas=(0.8, 0.99), eps=1e-8, scale=0.5))],
        NONE,
        False,
        {"svd": True},
    ),
]


def jax_svd_for_torch(a, full_matrices=True):
    """``torch.linalg.svd`` computed by jax on the same float32 matrix (the SVD ours takes)."""
    u, s, vh = jnp.linalg.svd(jnp.asarray(a.detach().numpy()), full_matrices=full_matrices)
    return tuple(torch.from_numpy(np.array(x)) for x in (u, s, vh))


_OURS: dict = {}


def ours(case_id: str, dtype: str):
    """Our trajectory for a case, computed once (the disagreement tests reuse it)."""
    if (case_id, dtype) not in _OURS:
        case = next(c for c in CASES if c[0] == case_id)
        with precision(dtype):
            _OURS[case_id, dtype] = run(case[1](), dtype, case[3])
    return _OURS[case_id, dtype]


def reference(ref, dtype: str, extra, opts, monkeypatch):
    kind, make = ref
    with precision(dtype):
        if kind == "optax":
            return run(make(), dtype, extra)
        if "svd" in opts:
            monkeypatch.setattr(torch.linalg, "svd", jax_svd_for_torch)
        return torch_run(make, fed_sophiah(opts["hessian"]) if "hessian" in opts else None)


PARAMS = [pytest.param(c, "float64", id=f"{c[0]}-float64") for c in CASES] + [
    pytest.param(c, "float32", id=f"{c[0]}-float32") for c in CASES if c[4]
]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_trajectory_matches_reference(case, dtype, monkeypatch):
    name, _, refs, extra, _, opts = case
    got = ours(name, dtype)
    for i, ref in enumerate(refs):
        want = reference(ref, dtype, extra, opts, monkeypatch)
        check(got, want, dtype, f"{name} vs reference {i} ({ref[0]})")


# ----------------------------------------------------------------------------- disagreements


def test_references_disagree(monkeypatch):
    """The options are not no-ops: each reference's behaviour is measurably its own (so the
    parity cases above tell them apart). float64, 120 steps."""
    monkeypatch.setattr(torch.linalg, "svd", jax_svd_for_torch)
    with precision("float64"):
        # GaLore: the side projected (pytorch_optimizer's own two types)
        std = torch_run(po_galore(0.01, 2, 25, "std", weight_decay=0.1))
        rev = torch_run(po_galore(0.01, 2, 25, "reverse_std", weight_decay=0.1))
        assert max_rel_err(std, rev) > 1e-2
        # Sophia: optax's order and bias correction vs SophiaH's, on the same estimates
        optax_form = run(
            jz.sophia(
                0.5 * P_CLIP,
                b1=0.96,
                eps=1e-12 * P_CLIP,
                gamma=P_CLIP,
                weight_decay=0.0,
                hessian_diagonal_fn=fed_estimator(estimates(10)),
            ),
            "float64",
            OBJ,
        )
        assert max_rel_err(optax_form, ours("sophiah", "float64")) > 1e-2


def test_madgrad_eps_zero_takes_no_step_where_optax_gives_nan():
    p = {"w": jnp.array([1.0, 2.0])}
    g = {"w": jnp.array([0.5, 0.0])}  # the second coordinate never sees a gradient
    mine, ref = jz.madgrad(0.1, eps=0.0), optax.contrib.madgrad(0.1, eps=0.0)
    u, _ = mine.update(g, mine.init(p), p)
    v, _ = ref.update(g, ref.init(p), p)
    assert np.isnan(float(v["w"][1])) and float(u["w"][1]) == 0.0
    np.testing.assert_allclose(u["w"][0], v["w"][0], rtol=1e-5)  # float32


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jz.madgrad(0.01, momentum=1.0), "Invalid momentum"),
        (lambda: jz.madgrad(-0.01), "Invalid learning_rate"),
        (lambda: jz.momo(beta=1.5), "Invalid beta"),
        (lambda: jz.momo_adam(b2=1.0), "Invalid b2"),
        (lambda: jz.sophia(1e-3, gamma=-1.0), "Invalid gamma"),
        (lambda: jz.sophia(1e-3, update_interval=0), "Invalid update_interval"),
        (lambda: jz.sophia(1e-3, clip_threshold=0.0), "Invalid clip_threshold"),
        (lambda: jz.hutchinson_estimator_diag_hessian(distribution="uniform"), "distribution"),
        (lambda: jz.galore(1e-3, rank=0), "Invalid rank"),
        (lambda: jz.galore(1e-3, update_proj_gap=0), "Invalid update_proj_gap"),
        (lambda: jz.galore(1e-3, projection_type="left"), "Invalid projection_type"),
    ],
)
def test_invalid_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_updates_need_their_extra_arguments():
    p = {"w": jnp.ones(2)}
    for tx, match in ((jz.momo(), "value="), (jz.sophia(1e-3), "obj_fn=")):
        with pytest.raises(ValueError, match=match):
            tx.update(p, tx.init(p), p)
