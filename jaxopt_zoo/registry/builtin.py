"""The built-in optimizers, one ``register`` call each, and the compat modules' tables."""

from __future__ import annotations

from jaxopt_zoo import optim as _o
from jaxopt_zoo.compat import keras as _keras
from jaxopt_zoo.compat import torch as _torch
from jaxopt_zoo.registry.base import register

_OPTAX = ("optax",)
register(
    "sgd",
    _o.sgd,
    default_lr=0.01,
    paper="Robbins & Monro 1951",
    blocks="scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "momentum",
    _o.sgd,
    default_lr=0.01,
    paper="Polyak 1964",
    blocks="trace -> scale_by_learning_rate",
    verified=_OPTAX,
    momentum=0.9,
)
register(
    "nesterov",
    _o.sgd,
    default_lr=0.01,
    paper="Nesterov 1983; Sutskever et al. 2013",
    blocks="trace(nesterov) -> scale_by_learning_rate",
    verified=_OPTAX,
    momentum=0.9,
    nesterov=True,
)
register(
    "adagrad",
    _o.adagrad,
    default_lr=0.01,
    paper="Duchi et al. 2011",
    blocks="scale_by_rss -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "rmsprop",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Hinton 2012 (Lecture 6e)",
    blocks="scale_by_rms -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "rmsprop_centered",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Graves 2013",
    blocks="scale_by_rms(centered) -> scale_by_learning_rate",
    verified=_OPTAX,
    centered=True,
)
register(
    "rmsprop_nesterov",
    _o.rmsprop,
    default_lr=1e-3,
    paper="Goodfellow et al. 2016, Alg. 8.6",
    blocks="scale_by_rms -> scale_by_learning_rate -> trace(nesterov)",
    verified=_OPTAX,
    momentum=0.9,
    nesterov=True,
)
register(
    "adadelta",
    _o.adadelta,
    default_lr=1.0,
    paper="Zeiler 2012",
    blocks="scale_by_adadelta -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adam",
    _o.adam,
    default_lr=1e-3,
    paper="Kingma & Ba 2015",
    blocks="scale_by_adam -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adamw",
    _o.adamw,
    default_lr=1e-3,
    paper="Loshchilov & Hutter 2019",
    blocks="scale_by_adam -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "amsgrad",
    _o.amsgrad,
    default_lr=1e-3,
    paper="Reddi et al. 2018",
    blocks="scale_by_adam(amsgrad) -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adamax",
    _o.adamax,
    default_lr=2e-3,
    paper="Kingma & Ba 2015, sec. 7.1",
    blocks="scale_by_adamax -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "nadam",
    _o.nadam,
    default_lr=2e-3,
    paper="Dozat 2016",
    blocks="scale_by_adam(nesterov) -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "nadamw",
    _o.nadamw,
    default_lr=1e-3,
    paper="Dozat 2016; Loshchilov & Hutter 2019",
    blocks="scale_by_adam(nesterov) -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "radam",
    _o.radam,
    default_lr=1e-3,
    paper="Liu et al. 2020",
    blocks="scale_by_radam -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "adabelief",
    _o.adabelief,
    default_lr=1e-3,
    paper="Zhuang et al. 2020",
    blocks="scale_by_belief -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "yogi",
    _o.yogi,
    default_lr=1e-2,
    paper="Zaheer et al. 2018",
    blocks="scale_by_yogi -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lion",
    _o.lion,
    default_lr=1e-4,
    paper="Chen et al. 2023",
    blocks="scale_by_lion -> add_decayed_weights -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lamb",
    _o.lamb,
    default_lr=1e-3,
    paper="You et al. 2020",
    blocks="scale_by_adam -> add_decayed_weights -> scale_by_trust_ratio -> scale_by_learning_rate",
    verified=_OPTAX,
)
register(
    "lars",
    _o.lars,
    default_lr=0.1,
    paper="You et al. 2017",
    blocks="add_decayed_weights -> masked(scale_by_trust_ratio) -> scale_by_learning_rate -> trace",
    verified=_OPTAX,
)
register(
    "muon",
    _o.muon,
    default_lr=0.02,
    paper="Jordan et al. 2024; Liu et al. 2025",
    blocks="partition(scale_by_muon -> scale_by_muon_shape -> add_decayed_weights -> "
    "scale_by_learning_rate | adamw)",
    verified=_OPTAX,
)
register(
    "adafactor",
    _o.adafactor,
    default_lr=1e-2,
    paper="Shazeer & Stern 2018",
    blocks="scale_by_factored_rms -> clip_by_block_rms -> scale_by_learning_rate -> "
    "scale_by_param_block_rms",
    verified=_OPTAX,
)
register(
    "soap",
    _o.soap,
    default_lr=3e-3,
    paper="Vyas et al. 2024",
    blocks="scale_by_soap -> scale_by_learning_rate -> decay_after_step",
    verified=("pytorch_optimizer",),
)
register(  # issue 20
    "shampoo",
    _o.shampoo,
    default_lr=1e-3,
    paper="Gupta et al. 2018; Anil et al. 2020",
    blocks="scale_by_shampoo -> add_decayed_weights -> scale_by_learning_rate",
    verified=("pytorch_optimizer",),
)

# Optimizers of 2024, each verified against its authors' code and the other references.
_SF = ("schedulefree", "optax.contrib")
register(
    "schedule_free_sgd",
    _o.schedule_free_sgd,
    default_lr=None,
    paper="Defazio et al. 2024",
    blocks="schedule_free(add_decayed_weights -> scale_by_learning_rate)",
    verified=_SF,
)
register(
    "schedule_free_adamw",
    _o.schedule_free_adamw,
    default_lr=None,
    paper="Defazio et al. 2024",
    blocks="schedule_free(scale_by_rms -> add_decayed_weights -> scale_by_learning_rate)",
    verified=_SF + ("keras",),
)
register(
    "prodigy",
    _o.prodigy,
    default_lr=None,
    paper="Mishchenko & Defazio 2024",
    blocks="prodigy (one block: d*lr enters the estimate of d)",
    verified=("prodigyopt", "optax.contrib"),
)
register(
    "adopt",
    _o.adopt,
    default_lr=1e-3,
    paper="Taniguchi et al. 2024",
    blocks="scale_by_adopt -> add_decayed_weights -> scale_by_learning_rate",
    verified=("pytorch_optimizer", "optax.contrib"),
)
register(
    "mars",
    _o.mars,
    default_lr=None,
    paper="Yuan et al. 2024",
    blocks="scale_by_mars -> partition(add_decayed_weights -> scale_by_learning_rate)",
    verified=("pytorch_optimizer",),
)
register(
    "ademamix",
    _o.ademamix,
    default_lr=1e-3,
    paper="Pagliardini et al. 2024",
    blocks="scale_by_ademamix -> add_decayed_weights -> scale_by_learning_rate",
    verified=("pytorch_optimizer", "optax.contrib"),
)

# L-BFGS: update(grads, state, params, value=, grad=, value_fn=) (its line search needs the loss)
register(
    "lbfgs",
    _o.lbfgs,
    default_lr=None,
    paper="Liu & Nocedal 1989; Nocedal & Wright 2006 (Alg. 3.5, 3.6, 7.4)",
    blocks="scale_by_lbfgs -> scale(-1) -> scale_by_zoom_linesearch",
    verified=("optax", "jaxopt.LBFGS (iterations)", "scipy L-BFGS-B (iterations)"),
    extra_args=("value", "grad", "value_fn"),
)
# optax 0.2.8's remaining optimizers (issue 18, optax-core); tests/test_parity_optax_more.py.
_PO = ("optax", "pytorch_optimizer")
for _name, _lr, _paper, _blocks, _verified, _extra in (
    (
        "adamaxw",
        2e-3,
        "Kingma & Ba 2015; Loshchilov & Hutter 2019",
        "scale_by_adamax -> add_decayed_weights -> scale_by_learning_rate",
        _OPTAX,
        (),
    ),
    (
        "adan",
        1e-3,
        "Xie et al. 2022",
        "scale_by_adan(then add_decayed_weights if weight_decay > 0) -> scale_by_learning_rate",
        _PO,
        (),
    ),
    (
        "fromage",
        1e-2,
        "Bernstein et al. 2020",
        "scale_by_trust_ratio -> scale_by_learning_rate -> add_scaled_params",
        _PO,
        (),
    ),
    (
        "noisy_sgd",
        1e-2,
        "Neelakantan et al. 2015",
        "add_noise -> scale_by_learning_rate",
        _OPTAX,
        (),
    ),
    (
        "novograd",
        1e-2,
        "Ginsburg et al. 2019",
        "scale_by_novograd -> scale_by_learning_rate",
        _PO,
        (),
    ),
    (
        "optimistic_gradient_descent",
        1e-2,
        "Popov 1980; Daskalakis et al. 2018",
        "scale_by_optimistic_gradient -> scale_by_learning_rate",
        _OPTAX,
        (),
    ),
    (
        "optimistic_adam",
        1e-3,
        "Daskalakis et al. 2018",
        "scale_by_adam(nesterov) -> scale_by_optimistic_gradient(lr, optimism) -> "
        "scale_by_learning_rate(1)",
        _OPTAX,
        (),
    ),
    (
        "optimistic_adam_v2",
        1e-3,
        "Daskalakis et al. 2018",
        "scale_by_adam(nesterov) -> scale_by_optimistic_gradient -> scale_by_learning_rate",
        _OPTAX,
        (),
    ),
    (
        "polyak_sgd",
        None,
        "Polyak 1987; Loizou et al. 2021",
        "scale_by_learning_rate(scaling) -> scale_by_polyak",
        _OPTAX,
        ("value",),
    ),
    (
        "rprop",
        1e-3,
        "Riedmiller & Braun 1993",
        "scale_by_rprop -> scale(-1)",
        ("optax", "torch"),
        (),
    ),
    (
        "sign_sgd",
        1e-3,
        "Bernstein et al. 2018",
        "scale_by_sign(then add_decayed_weights if weight_decay > 0) -> scale_by_learning_rate",
        _PO,
        (),
    ),
    (
        "signum",
        1e-3,
        "Bernstein et al. 2018",
        "ema(debias=False) -> scale_by_sign(then add_decayed_weights if weight_decay > 0) -> "
        "scale_by_learning_rate",
        _PO,
        (),
    ),
    ("sm3", 1e-1, "Anil et al. 2019", "scale_by_sm3 -> scale_by_learning_rate", _PO, ()),
):
    register(
        _name,
        getattr(_o, _name),
        default_lr=_lr,
        paper=_paper,
        blocks=_blocks,
        verified=_verified,
        extra_args=_extra,
    )

# The other frameworks' semantics: "torch.<name>" and "keras.<name>" with their defaults.
for _fw, _mod, _where in (("torch", _torch, "torch.optim"), ("keras", _keras, "keras.optimizers")):
    for _n, _cls in _mod.CLASS_NAMES.items():
        register(
            f"{_fw}.{_n}",
            getattr(_mod, _n),
            default_lr=None,
            paper=f"{_where}.{_cls}",
            blocks=f"compat.{_fw}",
            verified=(_fw,),
            extra_args=getattr(_mod, "EXTRA_ARGS", {}).get(_n, ()),
        )

# optax.contrib's optimizers (issue 18, part contrib-a), each verified against optax.contrib.
_CONTRIB = ("optax.contrib",)
register(
    "acprop",
    _o.acprop,
    default_lr=1e-3,
    paper="Zhuang et al. 2021",
    blocks="scale_by_acprop(then add_decayed_weights if weight_decay > 0) -> "
    "scale_by_learning_rate",
    verified=_CONTRIB,
)
register(
    "cocob",
    _o.cocob,
    default_lr=None,
    paper="Orabona & Tommasi 2017",
    blocks="scale_by_cocob(after add_decayed_weights and an unflipped scale_by_learning_rate "
    "when weight_decay > 0 or learning_rate != 1)",
    verified=_CONTRIB,
)
register(
    "dadapt_adamw",
    _o.dadapt_adamw,
    default_lr=None,
    paper="Defazio & Mishchenko 2023",
    blocks="dadapt_adamw (one block: d enters the moments)",
    verified=("optax.contrib", "dadaptation"),
)
register(
    "dog",
    _o.dog,
    default_lr=None,
    paper="Ivgi et al. 2023",
    blocks="add_decayed_weights -> scale_by_dog -> scale_by_learning_rate",
    verified=_CONTRIB,
)
register(
    "dowg",
    _o.dowg,
    default_lr=None,
    paper="Khaled et al. 2023",
    blocks="add_decayed_weights -> scale_by_dowg -> scale_by_learning_rate",
    verified=_CONTRIB,
)
# DP-SGD takes per-example gradients; registered on plain gradients as a batch of one
# (per_example=False), with a clip of 1, a noise multiplier of 0.1 and seed 0.
register(
    "dpsgd",
    _o.dpsgd,
    default_lr=0.01,
    paper="Abadi et al. 2016",
    blocks="differentially_private_aggregate(per_example=False) -> scale_by_learning_rate",
    verified=_CONTRIB,
    l2_norm_clip=1.0,
    noise_multiplier=0.1,
    seed=0,
    per_example=False,
)
register(
    "simplified_ademamix",
    _o.simplified_ademamix,
    default_lr=1e-4,
    paper="Morwani et al. 2025",
    blocks="scale_by_simplified_ademamix(then add_decayed_weights if weight_decay > 0) -> "
    "scale_by_learning_rate",
    verified=_CONTRIB,
)
# optax.contrib's GaLore, MADGRAD, MoMo and Sophia, each verified against optax.contrib and,
# where one installs, the authors' code or pytorch_optimizer (tests/test_parity_contrib_b.py).
register(
    "galore",
    _o.galore,
    default_lr=1e-3,
    paper="Zhao et al. 2024",
    blocks="scale_by_galore(scale_by_adam on P^T G) -> add_decayed_weights -> "
    "scale_by_learning_rate",
    verified=("optax.contrib", "pytorch_optimizer"),
)
register(
    "madgrad",
    _o.madgrad,
    default_lr=1e-2,
    paper="Defazio & Jelassi 2021",
    blocks="scale_by_madgrad(the learning rate inside; after add_decayed_weights if "
    "weight_decay > 0)",
    verified=("optax.contrib", "madgrad", "pytorch_optimizer"),
)
register(
    "momo",
    _o.momo,
    default_lr=1.0,
    paper="Schaipp et al. 2023",
    blocks="momo (one block: the step size comes from the loss value)",
    verified=("optax.contrib",),
    extra_args=("value",),
)
register(
    "momo_adam",
    _o.momo_adam,
    default_lr=1e-2,
    paper="Schaipp et al. 2023",
    blocks="momo_adam (one block: the step size comes from the loss value)",
    verified=("optax.contrib",),
    extra_args=("value",),
)
register(
    "sophia",
    _o.sophia,
    default_lr=1e-3,
    paper="Liu et al. 2023",
    blocks="scale_by_sophia(hutchinson_estimator_diag_hessian) -> add_decayed_weights -> "
    "scale_by_learning_rate",
    verified=("optax.contrib", "pytorch_optimizer"),
    extra_args=("obj_fn",),
)
# Low-bit state (issue 19): quantize_state around adamw / lion (tests/test_lowbit.py).
_LOWBIT = "quantize_state(8-bit dynamic maps, 256 per block: {}) "
register(
    "adam_8bit",
    _o.adam_8bit,
    default_lr=1e-3,
    paper="Dettmers et al. 2022",
    blocks=_LOWBIT.format("scale_by_adam -> scale_by_learning_rate"),
    verified=("bitsandbytes", "torchao"),
)
register(
    "adamw_8bit",
    _o.adamw_8bit,
    default_lr=1e-3,
    paper="Dettmers et al. 2022",
    blocks=_LOWBIT.format("scale_by_adam -> add_decayed_weights -> scale_by_learning_rate"),
    verified=("bitsandbytes", "torchao"),
)
register(
    "adamw_4bit",
    _o.adamw_4bit,
    default_lr=1e-3,
    paper="Li et al. 2023 (torchao's AdamW4bit)",
    blocks="quantize_state(4-bit torchao maps, 128 per block: scale_by_adam -> "
    "add_decayed_weights -> scale_by_learning_rate)",
    verified=("torchao",),
)
register(
    "adamw_fp8",
    _o.adamw_fp8,
    default_lr=1e-3,
    paper="torchao's AdamWFp8",
    blocks="quantize_state(float8_e4m3fn, 256 per block: scale_by_adam -> "
    "add_decayed_weights -> scale_by_learning_rate)",
    verified=("torchao",),
)
register(
    "lion_8bit",
    _o.lion_8bit,
    default_lr=1e-4,
    paper="Chen et al. 2023; Dettmers et al. 2022",
    blocks=_LOWBIT.format("scale_by_lion -> add_decayed_weights -> scale_by_learning_rate"),
    verified=("bitsandbytes",),
)
# Issue 19: Adam-mini (tests/test_adam_mini.py).
register(
    "adam_mini",
    _o.adam_mini,
    default_lr=1e-3,
    paper="Zhang et al. 2024",
    blocks="scale_by_adam_mini(one v per head / neuron / embedding row / tensor, from the key "
    "path) -> scale_by_learning_rate(with weight_decay > 0: add_decayed_weights, masked by "
    "name, before it)",
    verified=("adam-mini (Adam_mini)", "pytorch_optimizer (rules='pytorch_optimizer')"),
)

# PSGD Kron (issue 20), verified against the author's PyTorch port and pytorch_optimizer.
register(
    "psgd_kron",
    _o.psgd_kron,
    default_lr=3e-4,
    paper="Li 2018",
    blocks="scale_by_kron -> add_decayed_weights(rank >= 2) -> scale_by_learning_rate",
    verified=("kron_torch", "pytorch_optimizer"),
)
