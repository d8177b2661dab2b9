"""optax.contrib's ACProp, COCOB, D-Adapt AdamW, DoG, DoWG, DP-SGD, Mechanic, Simplified
AdEMAMix and the ``normalize`` / ``split_real_and_imaginary`` /
``differentially_private_aggregate`` transforms against optax.contrib 0.2.8, and D-Adapt
AdamW against its authors' ``dadaptation.DAdaptAdam`` 3.2, step for step.

Every case runs 120 steps of a noisy quadratic, ``g_t = h * (p - p_star) + 0.3 * xi_t`` per
element (curvatures ``h`` in [0.5, 2], so the gradient depends on where the optimizer is), on
a matrix, a 4-D conv kernel, a vector and a scalar, and compares the whole parameter
trajectory: relative error ``max|ours - ref| / max|ref|`` per leaf below 1e-6 in float64 and
1e-5 in float32. Every reference must move. Ours and optax's run in one ``jit`` per case;
to keep compiles few, each optimizer runs one setting in float32 and another in float64.
``mechanize(adam)`` is compared in float64 only: Mechanic amplifies rounding, and optax's own
float32 and float64 paths are 4% apart there (Adam's rounding, fed to the coin betting); with
SGD inside, float32 agrees to the bit.
DP-SGD gets per-example gradients (a batch of 4, each with its own noise ``xi``) and matches
optax's noise bit for bit: the key is in the state and split as optax splits it.

Where the references disagree (each reproduced by a documented option; the sizes are
asserted in ``test_references_disagree``):

- D-Adapt AdamW (``dadaptation.DAdaptAdam`` 3.2 vs ``optax.contrib.dadapt_adamw``): optax
  always applies Adam's bias correction to ``d * lr``, the authors' default is
  ``use_bias_correction=False`` (``bias_correction=False``); optax's weight decay is
  decoupled, the authors' default is L2 added to the gradient (``decouple=False``); only the
  authors have ``growth_rate``; where ``lr_t = 0`` (the end of a decay-to-0 schedule) the
  authors' step returns early and changes nothing, optax updates the moments with
  ``dlr = 0`` and still applies ``m / (sqrt(v) + eps)`` (``skip_zero_lr=True`` for the
  authors'). Where every gradient so far is 0 the authors skip the step; optax divides 0 by
  0 and ``d`` becomes NaN: ours skips (no option keeps the NaN).
- ``normalize``: optax returns NaN for an all-zero gradient; ours returns zeros.
- DP-SGD (``dpsgd``) takes per-example gradients; ``per_example=False`` (the registry entry)
  treats a plain gradient as a batch of one, which is optax's result on ``g[None]``.
- ``pytorch_optimizer.SimplifiedAdEMAMix`` is another formula (an averaged momentum and its
  own bias correction), not compared.
"""

from __future__ import annotations

import warnings

import dadaptation
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_zoo as jz
from tests.helpers import max_rel_err
from tests.helpers import torch_precision as precision

C = optax.contrib
SHAPES = {"matrix": (4, 3), "conv": (3, 2, 2, 2), "vector": (5,), "scalar": ()}
STEPS = 120
BATCH = 4  # DP-SGD's per-example gradients
TOL = {"float64": 1e-6, "float32": 1e-5}
_rng = np.random.default_rng(0)
P0 = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
H = {k: _rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
PSTAR = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}
NOISE_PE = {k: 0.3 * _rng.normal(size=(STEPS, BATCH) + s) for k, s in SHAPES.items()}
NOISE_IM = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}


def both(tx_a, tx_b, dtype, kind="plain"):
    """Trajectories of ``tx_a`` and ``tx_b`` on the noisy quadratic, in one jit.

    kind: "plain" (one gradient per step), "per_example" (a batch axis of BATCH, noise per
    example) or "complex" (complex parameters; the noise has an imaginary part)."""
    real = jnp.dtype(dtype)
    dt = jnp.result_type(real, jnp.complex64) if kind == "complex" else real
    h = {k: jnp.asarray(v, real) for k, v in H.items()}
    ps = {k: jnp.asarray(v, dt) for k, v in PSTAR.items()}
    if kind == "per_example":
        noise = {k: jnp.asarray(v, dt) for k, v in NOISE_PE.items()}
    elif kind == "complex":
        noise = {k: jnp.asarray(NOISE[k] + 1j * NOISE_IM[k], dt) for k in SHAPES}
    else:
        noise = {k: jnp.asarray(v, dt) for k, v in NOISE.items()}
    p0 = {k: jnp.asarray(v, dt) for k, v in P0.items()}
    if kind == "complex":
        p0 = {k: (v * (1 - 0.5j)).astype(dt) for k, v in p0.items()}

    def grad(p, xi):
        if kind == "per_example":  # example i: h (p - p*) + xi_i
            return jax.tree.map(lambda p_, h_, s_, x_: (h_ * (p_ - s_))[None] + x_, p, h, ps, xi)
        return jax.tree.map(lambda p_, h_, s_, x_: h_ * (p_ - s_) + x_, p, h, ps, xi)

    def run(tx):
        def body(carry, xi):
            p, s = carry
            u, s = tx.update(grad(p, xi), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p0, tx.init(p0)), noise)[1]

    return jax.jit(lambda: (run(tx_a), run(tx_b)))()


def check(got, want, dtype, name, p0=None):
    start = P0 if p0 is None else p0
    moved = max_rel_err(jax.tree.map(lambda t: t[-1], want), start)
    assert moved > 1e-2, f"{name}: the reference barely moved ({moved})"
    err = max_rel_err(got, want)
    assert err < TOL[dtype], f"{name} ({dtype}): max relative error {err:.3g}"


def optax_dpsgd(*args, **kw):
    """optax.contrib.dpsgd, which passes its own deprecated ``seed=`` on (a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return C.dpsgd(*args, **kw)


def linear_to_zero(count):
    return 1.0 - count / STEPS


# (id, ours, optax.contrib, kind, dtypes): per optimizer, one setting in float32 and
# another in float64 (compile time: one jit per case)
CASES = [
    ("acprop", lambda: jz.acprop(1e-2), lambda: C.acprop(1e-2), "plain", ("float32",)),
    (
        "acprop-options",
        lambda: jz.acprop(
            optax.cosine_decay_schedule(2e-2, STEPS),
            b1=0.8,
            b2=0.99,
            eps=1e-8,
            eps_root=1e-12,
            weight_decay=0.1,
        ),
        lambda: C.acprop(
            optax.cosine_decay_schedule(2e-2, STEPS),
            b1=0.8,
            b2=0.99,
            eps=1e-8,
            eps_root=1e-12,
            weight_decay=0.1,
        ),
        "plain",
        ("float64",),
    ),
    (
        "simplified_ademamix",
        lambda: jz.simplified_ademamix(1e-3, alpha=2.0),
        lambda: C.simplified_ademamix(1e-3, alpha=2.0),
        "plain",
        ("float32",),
    ),
    (
        "simplified_ademamix-options",
        lambda: jz.simplified_ademamix(
            3e-3,
            b1=0.9,
            b2=0.99,
            alpha=lambda c: 1.0 + c / 50,
            eps=1e-6,
            eps_root=1e-10,
            weight_decay=0.05,
        ),
        lambda: C.simplified_ademamix(
            3e-3,
            b1=0.9,
            b2=0.99,
            alpha=lambda c: 1.0 + c / 50,
            eps=1e-6,
            eps_root=1e-10,
            weight_decay=0.05,
        ),
        "plain",
        ("float64",),
    ),
    ("cocob", lambda: jz.cocob(), lambda: C.cocob(), "plain", ("float32",)),
    (
        "cocob-options",
        lambda: jz.cocob(0.5, alpha=50.0, eps=1e-6, weight_decay=0.01),
        lambda: C.cocob(0.5, alpha=50.0, eps=1e-6, weight_decay=0.01),
        "plain",
        ("float64",),
    ),
    (
        "dog",
        lambda: jz.dog(init_step=("heuristic", 1e-4)),
        lambda: C.dog(init_step=("heuristic", 1e-4)),
        "plain",
        ("float32",),
    ),
    (
        "dog-learning-rate-decay",
        lambda: jz.dog(linear_to_zero, init_step=("learning_rate", 1e-2), weight_decay=0.01),
        lambda: C.dog(linear_to_zero, init_step=("learning_rate", 1e-2), weight_decay=0.01),
        "plain",
        ("float64",),
    ),
    ("dowg", lambda: jz.dowg(), lambda: C.dowg(), "plain", ("float32",)),
    (
        "dowg-options",
        lambda: jz.dowg(0.5, init_estim_sq_dist=1e-2, eps=1e-6, weight_decay=0.01),
        lambda: C.dowg(0.5, init_estim_sq_dist=1e-2, eps=1e-6, weight_decay=0.01),
        "plain",
        ("float64",),
    ),
    (
        "dadapt_adamw",
        lambda: jz.dadapt_adamw(estim_lr0=1e-3),
        lambda: C.dadapt_adamw(estim_lr0=1e-3),
        "plain",
        ("float32",),
    ),
    (
        "dadapt_adamw-options",
        lambda: jz.dadapt_adamw(
            linear_to_zero, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.1
        ),
        lambda: C.dadapt_adamw(
            linear_to_zero, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.1
        ),
        "plain",
        ("float64",),
    ),
    (
        "mechanize-adam",
        lambda: jz.mechanize(jz.adam(1.0)),
        lambda: C.mechanize(optax.adam(1.0)),
        "plain",
        ("float64",),
    ),
    (
        "mechanize-momentum-options",
        lambda: jz.mechanize(
            jz.sgd(1.0, momentum=0.9), weight_decay=0.1, eps=1e-6, s_init=1e-4, num_betas=3
        ),
        lambda: C.mechanize(
            optax.sgd(1.0, momentum=0.9), weight_decay=0.1, eps=1e-6, s_init=1e-4, num_betas=3
        ),
        "plain",
        ("float32",),
    ),
    (
        "normalize",
        lambda: jz.chain(jz.normalize(), jz.sgd(0.05)),
        lambda: optax.chain(C.normalize(), optax.sgd(0.05)),
        "plain",
        ("float64", "float32"),
    ),
    (
        "split_real_and_imaginary-adam",
        lambda: jz.split_real_and_imaginary(jz.adam(1e-2)),
        lambda: C.split_real_and_imaginary(optax.adam(1e-2)),
        "complex",
        ("float64", "float32"),
    ),
    (
        "dpsgd",
        lambda: jz.dpsgd(0.05, l2_norm_clip=1.0, noise_multiplier=1.1, seed=3),
        lambda: optax_dpsgd(0.05, l2_norm_clip=1.0, noise_multiplier=1.1, seed=3),
        "per_example",
        ("float32",),
    ),
    (
        "dpsgd-nesterov",
        lambda: jz.dpsgd(
            0.01, l2_norm_clip=0.5, noise_multiplier=0.3, seed=1, momentum=0.9, nesterov=True
        ),
        lambda: optax_dpsgd(
            0.01, l2_norm_clip=0.5, noise_multiplier=0.3, seed=1, momentum=0.9, nesterov=True
        ),
        "per_example",
        ("float64",),
    ),
]
PARAMS = [
    pytest.param(make, ref, kind, dtype, id=f"{name}-{dtype}")
    for name, make, ref, kind, dtypes in CASES
    for dtype in dtypes
]


@pytest.mark.parametrize("make, ref, kind, dtype", PARAMS)
def test_matches_optax_contrib(make, ref, kind, dtype):
    with precision(dtype):
        got, want = both(make(), ref(), dtype, kind)
        p0 = None
        if kind == "complex":  # compare both parts (max_rel_err is real)
            got, want = (
                jax.tree.map(lambda x: jnp.stack([x.real, x.imag]), t) for t in (got, want)
            )
            p0 = {k: np.stack([v, -0.5 * v]) for k, v in P0.items()}
            want = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), want)  # steps first
            got = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), got)
        check(got, want, dtype, kind, p0)


# ----------------------------------------------------------------------------- the authors'


def dadapt_torch(dtype, lr_lambda=None, **kw):
    """``dadaptation.DAdaptAdam`` on the same noisy quadratic (``LambdaLR`` for schedules)."""
    with precision(dtype):
        params = [torch.tensor(P0[k], requires_grad=True) for k in SHAPES]
        opt = dadaptation.DAdaptAdam(params, **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
        out = {k: [] for k in SHAPES}
        for t in range(STEPS):
            for k, p in zip(SHAPES, params):
                g = H[k] * (p.detach().numpy() - PSTAR[k]) + NOISE[k][t]
                p.grad = torch.tensor(g, dtype=p.dtype)
            opt.step()
            if sched is not None:
                sched.step()
            for k, p in zip(SHAPES, params):
                out[k].append(p.detach().numpy().copy())
        return {k: np.stack(v) for k, v in out.items()}


def off_in_the_middle(count):
    """1, except 0 for steps 40 to 59 (0-based): steps the authors' code skips."""
    return jnp.where((count >= 40) & (count < 60), 0.0, 1.0)


def _off_in_the_middle_py(t):
    return 0.0 if 40 <= t < 60 else 1.0


AUTHORS = [
    (
        "defaults",
        dict(bias_correction=False, decouple=False, estim_lr0=1e-3),
        dict(d0=1e-3),
        None,
        ("float64",),
    ),
    (
        "options",
        dict(betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.1, growth_rate=1.05),
        dict(
            betas=(0.8, 0.99),
            eps=1e-6,
            d0=1e-4,
            weight_decay=0.1,
            growth_rate=1.05,
            decouple=True,
            use_bias_correction=True,
        ),
        None,
        ("float64",),
    ),
    (
        "coupled-decay-and-zero-lr-steps",
        dict(
            learning_rate=off_in_the_middle,
            bias_correction=False,
            decouple=False,
            weight_decay=0.05,
            estim_lr0=1e-3,
            skip_zero_lr=True,
        ),
        dict(weight_decay=0.05, d0=1e-3),
        _off_in_the_middle_py,
        ("float64",),
    ),
]


@pytest.mark.parametrize(
    "ours_kw, theirs_kw, lr_lambda, dtype",
    [
        pytest.param(o, t, lam, dt, id=f"{name}-{dt}")
        for name, o, t, lam, dtypes in AUTHORS
        for dt in dtypes
    ],
)
def test_dadapt_adamw_matches_the_authors_dadapt_adam(ours_kw, theirs_kw, lr_lambda, dtype):
    want = dadapt_torch(dtype, lr_lambda, **theirs_kw)
    with precision(dtype):
        got, _ = both(jz.dadapt_adamw(**ours_kw), jz.identity(), dtype)
    check(got, want, dtype, "dadapt_adamw vs dadaptation")


# ----------------------------------------------------------------------------- disagreements


def test_references_disagree():
    """The size of each disagreement, float64 (so that a change in either shows up)."""
    with precision("float64"):
        ours_optax, ours_authors = both(
            jz.dadapt_adamw(estim_lr0=1e-3),
            jz.dadapt_adamw(estim_lr0=1e-3, bias_correction=False, decouple=False),
            "float64",
        )
        skip, no_skip = both(
            jz.dadapt_adamw(off_in_the_middle, estim_lr0=1e-3, skip_zero_lr=True),
            jz.dadapt_adamw(off_in_the_middle, estim_lr0=1e-3),
            "float64",
        )
    # bias correction: the first steps are sqrt(1 - b2) / (1 - b1) = 0.32 times as long
    assert 1.0 < max_rel_err(ours_optax, ours_authors) < 2.0
    # twenty zero-lr steps: optax keeps applying the (decaying) momentum
    assert 0.01 < max_rel_err(no_skip, skip) < 1.0


def test_zero_gradients_give_zero_steps_where_optax_gives_nan():
    params = {"w": jnp.ones(3)}
    zeros = {"w": jnp.zeros(3)}
    u, _ = jz.normalize().update(zeros, jz.normalize().init(params))
    u_ref, _ = C.normalize().update(zeros, C.normalize().init(params))
    assert np.all(np.asarray(u["w"]) == 0) and np.all(np.isnan(np.asarray(u_ref["w"])))
    # D-Adapt: optax's d becomes 0 / 0; ours skips the step (d, r and the bias correction's
    # step stay; the schedule's clock moves), as the authors' code does
    tx, ref = jz.dadapt_adamw(), C.dadapt_adamw()
    u, s = tx.update(zeros, tx.init(params), params)
    _, s_ref = ref.update(zeros, ref.init(params), params)
    assert np.all(np.asarray(u["w"]) == 0) and np.isnan(float(s_ref.estim_lr))
    assert int(s.taken) == 0 and int(s.count) == 1 and float(s.estim_lr) == pytest.approx(1e-6)
    # with decoupled decay too: its term is masked on a skipped step (the m / sqrt(v) term is
    # 0 there by itself, so the parameter loop needs no elementwise mask)
    for decay in (0.1, 0.0):
        tx = jz.dadapt_adamw(weight_decay=decay)
        state = tx.init(params)
        for _ in range(3):
            u, state = tx.update(zeros, state, params)
            assert np.all(np.asarray(u["w"]) == 0), decay
        assert int(state.taken) == 0 and int(state.count) == 3


def test_per_example_false_is_a_batch_of_one():
    g = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(2.0)}
    a = jz.differentially_private_aggregate(1.0, 0.7, key=5, per_example=False)
    b = jz.differentially_private_aggregate(1.0, 0.7, key=5)
    ua, sa = a.update(g, a.init(g))
    ub, sb = b.update(jax.tree.map(lambda x: x[None], g), b.init(g))
    assert jax.tree.map(lambda x, y: bool(jnp.all(x == y)), ua, ub) == {"w": True, "b": True}
    np.testing.assert_array_equal(sa.rng_key, sb.rng_key)
    with pytest.raises(ValueError, match="batch axis"):
        b.update(g, b.init(g))


def test_dpsgd_is_reproducible_and_its_key_is_plain_data():
    tx = jz.dpsgd(0.1, 1.0, 1.0, seed=0)
    params = {"w": jnp.ones(3)}
    g = {"w": jnp.ones((2, 3))}
    s1, s2 = tx.init(params), tx.init(params)
    key = s1[0].rng_key
    assert key.dtype == jnp.uint32 and key is not s2[0].rng_key
    u1, s1 = tx.update(g, s1, params)
    u2, _ = tx.update(g, s2, params)
    np.testing.assert_array_equal(u1["w"], u2["w"])
    u3, _ = tx.update(g, s1, params)  # the next step draws new noise
    assert not np.allclose(u1["w"], u3["w"])


def test_state_holds_copies_of_the_parameters():
    params = {"w": jnp.ones(3)}
    for tx, field in (
        (jz.scale_by_cocob(), "init_particles"),
        (jz.scale_by_dog(), "init_params"),
        (jz.scale_by_dowg(), "init_params"),
        (jz.mechanize(jz.sgd(1.0)), "x0"),
    ):
        assert getattr(tx.init(params), field)["w"] is not params["w"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jz.acprop(1e-3, b1=1.0), "Invalid b1: 1.0"),
        (lambda: jz.acprop(-1e-3), "Invalid learning_rate"),
        (lambda: jz.simplified_ademamix(1e-3, b2=1.5), "Invalid b2: 1.5"),
        (lambda: jz.simplified_ademamix(1e-3, alpha=-1.0), "Invalid alpha"),
        (lambda: jz.cocob(alpha=0.0), "Invalid alpha: 0.0"),
        (lambda: jz.cocob(eps=0.0), "Invalid eps: 0.0"),
        (lambda: jz.dog(init_step=("guess", 1.0)), "Invalid init_step"),
        (lambda: jz.dog(init_step=("distance", -1.0)), r"Invalid init_step value \(distance\)"),
        (lambda: jz.dog(eps=-1.0), "Invalid eps"),
        (lambda: jz.dowg(init_estim_sq_dist=-1.0), "Invalid init_estim_sq_dist"),
        (lambda: jz.dadapt_adamw(estim_lr0=0.0), "Invalid estim_lr0: 0.0"),
        (lambda: jz.dadapt_adamw(betas=(0.9, 1.0)), "Invalid b2: 1.0"),
        (lambda: jz.dadapt_adamw(growth_rate=0.5), "Invalid growth_rate: 0.5"),
        (lambda: jz.mechanize(jz.sgd(1.0), num_betas=0), "Invalid num_betas: 0"),
        (lambda: jz.mechanize(jz.sgd(1.0), s_init=-1.0), "Invalid s_init"),
        (lambda: jz.differentially_private_aggregate(-1.0, 1.0), "Invalid l2_norm_clip"),
        (lambda: jz.dpsgd(0.1, 1.0, -0.5, seed=0), "Invalid noise_multiplier"),
        (lambda: jz.differentially_private_aggregate(1.0, 1.0, key=0, seed=0), "only one"),
    ],
)
def test_invalid_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
