"""Flag groups that several subcommands share: the training flags (``train``, ``compare``), the
step budget and LM recipe, SAM and weight averaging (those and ``sweep``)."""

from __future__ import annotations

import argparse

from jaxopt_zoo.cli.args import (
    decay,
    float_in,
    nonneg_float,
    nonneg_int,
    opt_arg,
    positive_float,
    positive_int,
)


def add_training_flags(p: argparse.ArgumentParser) -> None:
    from jaxopt_zoo.train.runner import PRESETS

    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="native",
        help="optimizer semantics and model init: native (ours, Flax init), keras "
        "(Keras formulas and defaults, Keras init), torch (torch.optim's)",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default: the optimizer's own default)",
    )
    p.add_argument(
        "--opt-arg",
        type=opt_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra optimizer argument, repeatable (e.g. momentum=0.9)",
    )
    p.add_argument(
        "--model",
        choices=("cnn", "mlp", "charlm"),
        default="cnn",
        help="cnn or mlp on MNIST-like images, or charlm: the character transformer on "
        "Shakespeare (needs --steps)",
    )
    p.add_argument(
        "--init",
        choices=("flax", "keras"),
        default=None,
        help="layer initializers (default: keras for --preset keras, else flax)",
    )
    p.add_argument(
        "--dataset",
        choices=("mnist", "fashion_mnist", "shakespeare"),
        default=None,
        help="default: shakespeare for --model charlm, else mnist",
    )
    p.add_argument("--epochs", type=nonneg_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--patience",
        type=nonneg_int,
        default=None,
        help="early stopping on validation loss after N epochs without improvement",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the IDX files (default: $JAXOPT_ZOO_DATA, the cache, or download)",
    )
    p.add_argument(
        "--train-limit", type=positive_int, default=None, help="train on the first N examples only"
    )
    p.add_argument(
        "--val-limit",
        type=positive_int,
        default=None,
        help="validate on the first N examples only",
    )
    p.add_argument(
        "--val-size",
        type=nonneg_int,
        default=0,
        help="hold out N training examples for validation (default 0: validate on "
        "the test set, as the background chapter does)",
    )
    p.add_argument("--output", default=None, help="folder for the results (created)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results already in --output (default: refuse)",
    )
    add_budget_flags(p)
    add_technique_flags(p)
    add_precision_flags(p)
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show progress bars (default: only on a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def add_technique_flags(p: argparse.ArgumentParser) -> None:
    """--sam-rho, --sam-adaptive, the --swa-* flags and --ema (train, compare, sweep): what
    :class:`~jaxopt_zoo.train.techniques.Techniques` wraps around any optimizer."""
    tq = p.add_argument_group("SAM and weight averaging (any optimizer)")
    tq.add_argument(
        "--sam-rho",
        type=positive_float,
        default=None,
        metavar="R",
        help="Sharpness-Aware Minimization with radius R (each step computes two gradients)",
    )
    tq.add_argument(
        "--sam-adaptive",
        action="store_true",
        help="ASAM: SAM's perturbation scaled by |w| (needs --sam-rho)",
    )
    tq.add_argument(
        "--swa-start",
        type=positive_int,
        default=None,
        metavar="EPOCH",
        help="Stochastic Weight Averaging: average the weights at the end of every "
        "epoch from EPOCH (1-based) on",
    )
    tq.add_argument(
        "--swa-lr",
        type=nonneg_float,
        default=None,
        metavar="X",
        help="with --swa-start: anneal the learning rate to X from the start of "
        "EPOCH (torch's SWALR, cosine)",
    )
    tq.add_argument(
        "--swa-anneal-epochs",
        type=nonneg_int,
        default=1,
        metavar="N",
        help="epochs of the --swa-lr annealing (default 1; 0 jumps)",
    )
    tq.add_argument(
        "--swa-every",
        type=positive_int,
        default=None,
        metavar="STEPS",
        help="with --swa-start: average every STEPS steps instead of once per epoch",
    )
    tq.add_argument(
        "--ema",
        type=decay,
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999)",
    )


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """--bf16-params and --bf16-rounding (train, compare, sweep): the precision of the
    parameters (and, beside them, of the optimizer state)."""
    from jaxopt_zoo.train.techniques import STATE_BITS
    from jaxopt_zoo.transforms.bf16_params import ROUNDINGS

    pr = p.add_argument_group("parameter and optimizer-state precision (any optimizer)")
    pr.add_argument(
        "--bf16-params",
        action="store_true",
        help="train bfloat16 parameters without a float32 master copy (the optimizer runs "
        "in float32 and its new values are rounded: jaxopt_zoo.bf16_params)",
    )
    pr.add_argument(
        "--bf16-rounding",
        choices=ROUNDINGS,
        default=None,
        help="with --bf16-params: stochastic (default; unbiased), kahan (a bfloat16 "
        "compensation buffer) or nearest (small updates are lost)",
    )
    pr.add_argument(
        "--state-bits",
        choices=STATE_BITS,
        default=None,
        help="keep the optimizer's moments block-wise quantized: 8 (bitsandbytes' dynamic "
        "map, ~2 bytes per parameter for Adam), 4 (torchao's, ~1) or fp8 (e4m3): "
        "jaxopt_zoo.quantize_state, docs/low-bit.md",
    )
    pr.add_argument(
        "--state-block-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --state-bits: elements per scale, a power of two (default 256; 128 for 4)",
    )


def add_budget_flags(p: argparse.ArgumentParser) -> None:
    """--steps/--eval-every (any model), the char-LM's size, the LM training recipe."""
    from jaxopt_zoo.train.lm import LM_DEFAULTS
    from jaxopt_zoo.train.techniques import SCHEDULES

    b = p.add_argument_group("step budget and evaluation (any model)")
    b.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="train for N optimizer steps in place of --epochs (stops mid-epoch if need be)",
    )
    b.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        metavar="K",
        help="evaluate every K steps and at the end (default: every epoch; for charlm, "
        "every tenth of --steps)",
    )
    lm = p.add_argument_group("the char-LM (--model charlm)")
    lm.add_argument(
        "--eval-windows",
        type=positive_int,
        default=None,
        metavar="N",
        help="validation windows, spread evenly over the held-out last 10%% (default 256)",
    )
    for flag, key in (("--context", "context"), ("--width", "width"), ("--layers", "depth")):
        lm.add_argument(
            flag,
            dest=key,
            type=positive_int,
            default=None,
            help=f"default {LM_DEFAULTS[key]}",
        )
    lm.add_argument(
        "--heads", type=positive_int, default=None, help=f"default {LM_DEFAULTS['heads']}"
    )
    r = p.add_argument_group("language-model training recipe (any model)")
    r.add_argument(
        "--clip-norm",
        type=positive_float,
        default=None,
        metavar="X",
        help="clip the gradients to global norm X before the optimizer",
    )
    r.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="constant",
        help="the learning rate over the run (--lr is the peak): warmup-cosine decays to "
        "0 at the last step; wsd holds, then decays (1-sqrt) over --decay-fraction",
    )
    r.add_argument("--warmup-steps", type=nonneg_int, default=None, metavar="N")
    r.add_argument(
        "--decay-fraction",
        type=float_in("a fraction in (0, 1]", lambda v: 0 < v <= 1),
        default=None,
        metavar="F",
        help="wsd: the share of the steps it decays over (default 0.2)",
    )
    r.add_argument(
        "--decay-mask",
        action="store_true",
        help="no weight decay on biases, norms and embeddings (only kernels decay)",
    )
