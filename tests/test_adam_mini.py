"""Adam-mini against the authors' ``adam-mini`` 1.1.1 (``Adam_mini``) and
``pytorch_optimizer`` 4.1.0 (``AdamMini``), step for step.

A small transformer-like parameter set whose PyTorch names both references recognise (an
embedding, per-head query and key, value, output projection, fused qkv and MLP matrices, a 4-D conv
kernel, a bias, a norm scale, an unnamed scalar and the LM head) runs 120
steps of a noisy quadratic, ``g_t = h * (p - p_star) + 0.3 * xi_t`` per element, at two
hyperparameter settings; the whole trajectory agrees to 1e-6 relative in float64 and 1e-5
in float32. Every reference must move.

Where the references disagree (``rules="pytorch_optimizer"`` reproduces the second; the size
of the disagreement is asserted in ``test_references_disagree``):

- Blocks. The authors: per element for ``bias``; per head for q/k (``query``/``key`` too);
  per row (token) for embeddings and the LM head; per output neuron for values, ``o_proj``
  and MLPs; one per tensor for the rest. pytorch_optimizer (after an earlier version of the
  authors' code): per element for embeddings and ``lm_head.weight``, per head for
  ``{q,k}_proj.weight`` only, one per tensor for everything else (values, MLPs, biases).
- Weight decay skips ``norm``/``ln``/``bias`` (authors, lower-cased) against
  ``norm``/``ln_f`` (pytorch_optimizer: biases decay).
- pytorch_optimizer keeps float32 moments and computes in float32 for float64 parameters,
  so it is compared in float32 only. Bias correction and eps placement
  (``sqrt(v) / sqrt(1 - b2^t) + eps``) are the same in both, and the same as ours.
- Layout: both references read PyTorch's ``(out, in)`` weights (``layout="torch"``); Flax
  kernels are ``(in, out)`` (``layout="flax"``, the default), checked here on the transposed
  matrices against the same reference.
"""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_optimizer as po
import torch
from adam_mini import Adam_mini

import jaxopt_zoo as jz
from jaxopt_zoo.optim.adam_mini import MiniBlocks, mini_partition
from tests.helpers import max_rel_err
from tests.helpers import torch_precision as precision

D, HEADS, V, F = 8, 2, 11, 12
SHAPES = {
    "embed.weight": (V, D),
    "layers.0.attn.q_proj.weight": (D, D),
    "layers.0.attn.q_proj.bias": (D,),
    "layers.0.attn.k_proj.weight": (D, D),
    "layers.0.attn.v_proj.weight": (D, D),
    "layers.0.attn.o_proj.weight": (D, D),
    "layers.1.attn.qkv.weight": (3 * D, D),  # fused: pytorch_optimizer's per (group, q/k/v)
    "layers.0.mlp.up.weight": (F, D),
    "layers.0.conv.weight": (3, 2, 2, 2),
    "layers.0.norm.weight": (D,),
    "layers.0.gate": (),
    "lm_head.weight": (V, D),
}
STEPS = 120
TOL = {"float64": 1e-6, "float32": 1e-5}
_rng = np.random.default_rng(0)
P0 = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
H = {k: _rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
PSTAR = {k: _rng.normal(size=s) for k, s in SHAPES.items()}
NOISE = {k: 0.3 * _rng.normal(size=(STEPS,) + s) for k, s in SHAPES.items()}
SETTINGS = {
    "default": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "decay": dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
}


_RUNS: dict = {}


def ours(dtype: str, setting: str, *, layout="torch", rules="adam_mini", names=tuple(SHAPES)):
    """Our trajectory, in PyTorch's layout whatever ``layout`` is. Both settings run in one
    jit + scan (vmapped over the hyperparameters), so each variant compiles once."""
    key = (dtype, layout, rules, names)
    if key not in _RUNS:
        _RUNS[key] = _both_settings(dtype, layout, rules, names)
    return _RUNS[key][setting]


def _both_settings(dtype, layout, rules, names):
    # Flax kernels are PyTorch's weights transposed; embeddings are (vocab, dim) in both.
    _flip = lambda k, ndim: layout == "flax" and ndim == 2 and "embed" not in k  # noqa: E731
    dt = jnp.dtype(dtype)
    arr = lambda tree, stacked=False: {  # noqa: E731
        k: jnp.asarray(np.swapaxes(tree[k], -1, -2) if _flip(k, tree[k].ndim - stacked)
                       else tree[k], dt)
        for k in names
    }  # fmt: skip
    h, ps, noise = arr(H), arr(PSTAR), arr(NOISE, stacked=True)
    hp = {
        f: jnp.asarray([v[f] for v in SETTINGS.values()], dt) for f in ("lr", "eps", "weight_decay")
    }
    hp["b1"] = jnp.asarray([v["betas"][0] for v in SETTINGS.values()], dt)
    hp["b2"] = jnp.asarray([v["betas"][1] for v in SETTINGS.values()], dt)

    @jax.jit
    @jax.vmap
    def run(hp):
        tx = jz.adam_mini(
            hp["lr"], hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"], dim=D, n_heads=HEADS,
            layout=layout, rules=rules,
        )  # fmt: skip

        def body(carry, xi):
            p, st = carry
            g = jax.tree.map(lambda p_, h_, s_, x_: h_ * (p_ - s_) + x_, p, h, ps, xi)
            u, st = tx.update(g, st, p)
            p = optax.apply_updates(p, u)
            return (p, st), p

        p0 = arr(P0)
        return jax.lax.scan(body, (p0, tx.init(p0)), noise)[1]

    traj = run(hp)
    return {
        name: {k: np.swapaxes(np.asarray(v[i]), -1, -2) if _flip(k, v.ndim - 2)
               else np.asarray(v[i]) for k, v in traj.items()}
        for i, name in enumerate(SETTINGS)
    }  # fmt: skip


def _module(names) -> torch.nn.Module:
    root = torch.nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, torch.nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(
            leaf, torch.nn.Parameter(torch.tensor(P0[name], dtype=torch.get_default_dtype()))
        )
    return root


def reference(which: str, setting: str, names=tuple(SHAPES)) -> dict:
    s = SETTINGS[setting]
    model = _module(names)
    if which == "adam_mini":
        with contextlib.redirect_stdout(io.StringIO()):
            opt = Adam_mini(
                model.named_parameters(), lr=s["lr"], betas=s["betas"], eps=s["eps"],
                weight_decay=s["weight_decay"], dim=D, n_heads=HEADS, verbose=False,
            )  # fmt: skip
    else:
        opt = po.AdamMini(
            model, lr=s["lr"], betas=s["betas"], eps=s["eps"], weight_decay=s["weight_decay"],
            num_embeds=D, num_heads=HEADS, foreach=False,
        )  # fmt: skip
    params = dict(model.named_parameters())
    traj: dict = {k: [] for k in names}
    for t in range(STEPS):
        for k in names:
            p = params[k]
            g = H[k] * (p.detach().numpy() - PSTAR[k]) + NOISE[k][t]
            p.grad = torch.tensor(g, dtype=p.dtype)
        opt.step()
        for k in names:
            traj[k].append(params[k].detach().numpy().copy())
    return {k: np.stack(v) for k, v in traj.items()}


def check(got, want, dtype, what):
    moved = max_rel_err({k: v[-1] for k, v in want.items()}, {k: P0[k] for k in want})
    assert moved > 1e-2, f"{what}: the reference barely moved ({moved})"
    err = max_rel_err(got, want)
    assert err < TOL[dtype], f"{what} ({dtype}): max relative error {err:.3g}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_matches_authors(dtype, setting):
    with precision(dtype):
        want = reference("adam_mini", setting)
        check(ours(dtype, setting), want, dtype, f"adam_mini/{setting}")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_flax_layout_matches_authors_on_transposed_kernels(setting):
    # The matrices (the vectors, the scalar and the conv kernel read the same in both)
    names = tuple(k for k in SHAPES if len(SHAPES[k]) == 2)
    with precision("float64"):
        want = reference("adam_mini", setting, names)
        check(ours("float64", setting, layout="flax", names=names), want, "float64", "flax")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_pytorch_optimizer_rules_match_pytorch_optimizer(setting):
    with precision("float32"):
        want = reference("pytorch_optimizer", setting)
        got = ours("float32", setting, rules="pytorch_optimizer")
        check(got, want, "float32", "pytorch_optimizer")


def test_references_disagree():
    """The two references' block and decay rules move the parameters whose rules differ
    11-21% apart over 120 steps (48% at the default setting); the others agree."""
    with precision("float32"):
        a = ours("float32", "decay")
        b = ours("float32", "decay", rules="pytorch_optimizer")
    # Same rules where they agree: q/k per head, the norm scale per tensor.
    for k in ("layers.0.attn.q_proj.weight", "layers.0.norm.weight", "layers.0.gate"):
        assert max_rel_err({k: a[k]}, {k: b[k]}) < 1e-5, k
    gap = {k: max_rel_err({k: a[k]}, {k: b[k]}) for k in SHAPES}
    for k in ("embed.weight", "layers.0.attn.v_proj.weight", "layers.0.mlp.up.weight",
              "layers.0.attn.q_proj.bias", "lm_head.weight"):  # fmt: skip
        assert 0.05 < gap[k] < 0.5, (k, gap[k])


def test_partition_shapes_and_override():
    params = {
        "tok_embed": {"embedding": jnp.zeros((5, 8))},
        "attn": {"query": {"kernel": jnp.zeros((8, 2, 4)), "bias": jnp.zeros((2, 4))}},
        "mlp": {"kernel": jnp.zeros((8, 16))},
        "ln": {"scale": jnp.zeros(8)},
        "other": jnp.zeros((3, 3)),
    }
    blocks = mini_partition(params, dim=8, n_heads=2)
    assert blocks["tok_embed"]["embedding"] == MiniBlocks((5, 8), (1,))
    assert blocks["attn"]["query"]["kernel"] == MiniBlocks((8, 2, 4), (0, 2))
    assert blocks["attn"]["query"]["bias"] == MiniBlocks((2, 4), ())
    assert blocks["mlp"]["kernel"] == MiniBlocks((8, 16), (0,))
    assert blocks["ln"]["scale"] == MiniBlocks((8,), (0,))
    assert blocks["other"] == MiniBlocks((3, 3), (0, 1))
    torch_blocks = mini_partition(params, dim=8, n_heads=2, layout="torch")
    assert torch_blocks["mlp"]["kernel"] == MiniBlocks((8, 16), (1,))
    tx = jz.adam_mini(
        1e-2, dim=8, n_heads=2,
        partition=lambda name, leaf: "element" if name == "other" else
        (MiniBlocks((2, 4, 16), (1, 2)) if name == "mlp.kernel" else None),
    )  # fmt: skip
    nu = tx.init(params)[0].nu
    assert nu["other"].shape == (3, 3) and nu["mlp"]["kernel"].shape == (2, 1, 1)
    assert nu["attn"]["query"]["kernel"].shape == (1, 2, 1)
    # Per element everywhere is Adam.
    p = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
    g = {"w": jnp.cos(jnp.arange(12.0)).reshape(3, 4)}
    mini = jz.adam_mini(1e-2, partition=lambda n, x: "element")
    adam = optax.adam(1e-2)
    u1, _ = mini.update(g, mini.init(p), p)
    u2, _ = adam.update(g, adam.init(p), p)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_state_is_small():
    params = {"mlp": {"kernel": jnp.zeros((64, 32))}, "embed": {"embedding": jnp.zeros((10, 32))}}
    st = jz.adam_mini(1e-3).init(params)[0]
    assert st.nu["mlp"]["kernel"].size == 32 and st.nu["embed"]["embedding"].size == 10


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(b1=1.0), "b1"),
        (dict(eps=-1.0), "eps"),
        (dict(dim=10, n_heads=4), "Invalid dim: 10"),
        (dict(n_heads=0), "n_heads"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
        (dict(layout="jax"), "layout"),
        (dict(rules="authors"), "rules"),
        (dict(learning_rate=-1.0), "learning_rate"),
    ],
)
def test_bad_hyperparameters(kw, match):
    kw = {"learning_rate": 1e-3, **kw}
    with pytest.raises(ValueError, match=match):
        jz.adam_mini(**kw)


def test_bad_partition():
    params = {"q_proj": {"kernel": jnp.zeros((8, 6))}}
    with pytest.raises(ValueError, match="does not split into heads"):
        jz.adam_mini(1e-3, dim=8, n_heads=2).init(params)
    with pytest.raises(ValueError, match="expected a MiniBlocks"):
        jz.adam_mini(1e-3, partition=lambda n, x: "rowz").init(params)
    with pytest.raises(ValueError, match="as many elements"):
        jz.adam_mini(1e-3, partition=lambda n, x: MiniBlocks((5,), (0,))).init(params)
