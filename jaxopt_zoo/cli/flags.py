"""Command-line flags of ``jaxopt-zoo``: the parser, its value types and one-line usage errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_USAGE, EXIT_FAILURE = 2, 1
DESCRIPTION = (
    "The jaxopt-zoo command: list optimizers, train one model, compare optimizers on MNIST."
)


class UsageError(Exception):
    """A bad command line: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's multi-line usage dump -> one line
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``, with a message naming what was expected."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float_in(what: str, ok) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v != v or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_float = _float_in("a positive finite number", lambda v: 0 < v < float("inf"))
_nonneg_float = _float_in("a finite number >= 0", lambda v: 0 <= v < float("inf"))
_decay = _float_in("a decay rate in [0, 1)", lambda v: 0 <= v < 1)


def _opt_arg(text: str):
    """KEY=VALUE with VALUE parsed as JSON when it can be (0.9, true, [0.9, 0.99])."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def _add_training_flags(p: argparse.ArgumentParser) -> None:
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
        type=_positive_float,
        default=None,
        help="learning rate (default: the optimizer's own default)",
    )
    p.add_argument(
        "--opt-arg",
        type=_opt_arg,
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
    p.add_argument("--epochs", type=_nonneg_int, default=10)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument(
        "--patience",
        type=_nonneg_int,
        default=None,
        help="early stopping on validation loss after N epochs without improvement",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the IDX files (default: $JAXOPT_ZOO_DATA, the cache, or download)",
    )
    p.add_argument(
        "--train-limit", type=_positive_int, default=None, help="train on the first N examples only"
    )
    p.add_argument(
        "--val-limit",
        type=_positive_int,
        default=None,
        help="validate on the first N examples only",
    )
    p.add_argument(
        "--val-size",
        type=_nonneg_int,
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
    _add_budget_flags(p)
    _add_technique_flags(p)
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show progress bars (default: only on a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def _add_technique_flags(p: argparse.ArgumentParser) -> None:
    """--sam-rho, --sam-adaptive, the --swa-* flags and --ema (train, compare, sweep): what
    :class:`~jaxopt_zoo.train.techniques.Techniques` wraps around any optimizer."""
    tq = p.add_argument_group("SAM and weight averaging (any optimizer)")
    tq.add_argument(
        "--sam-rho",
        type=_positive_float,
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
        type=_positive_int,
        default=None,
        metavar="EPOCH",
        help="Stochastic Weight Averaging: average the weights at the end of every "
        "epoch from EPOCH (1-based) on",
    )
    tq.add_argument(
        "--swa-lr",
        type=_nonneg_float,
        default=None,
        metavar="X",
        help="with --swa-start: anneal the learning rate to X from the start of "
        "EPOCH (torch's SWALR, cosine)",
    )
    tq.add_argument(
        "--swa-anneal-epochs",
        type=_nonneg_int,
        default=1,
        metavar="N",
        help="epochs of the --swa-lr annealing (default 1; 0 jumps)",
    )
    tq.add_argument(
        "--swa-every",
        type=_positive_int,
        default=None,
        metavar="STEPS",
        help="with --swa-start: average every STEPS steps instead of once per epoch",
    )
    tq.add_argument(
        "--ema",
        type=_decay,
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999)",
    )


def _add_budget_flags(p: argparse.ArgumentParser) -> None:
    """--steps/--eval-every (any model), the char-LM's size, the LM training recipe."""
    from jaxopt_zoo.train.lm import LM_DEFAULTS
    from jaxopt_zoo.train.techniques import SCHEDULES

    b = p.add_argument_group("step budget and evaluation (any model)")
    b.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train for N optimizer steps in place of --epochs (stops mid-epoch if need be)",
    )
    b.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        metavar="K",
        help="evaluate every K steps and at the end (default: every epoch; for charlm, "
        "every tenth of --steps)",
    )
    lm = p.add_argument_group("the char-LM (--model charlm)")
    lm.add_argument(
        "--eval-windows",
        type=_positive_int,
        default=None,
        metavar="N",
        help="validation windows, spread evenly over the held-out last 10%% (default 256)",
    )
    for flag, key in (("--context", "context"), ("--width", "width"), ("--layers", "depth")):
        lm.add_argument(
            flag,
            dest=key,
            type=_positive_int,
            default=None,
            help=f"default {LM_DEFAULTS[key]}",
        )
    lm.add_argument(
        "--heads", type=_positive_int, default=None, help=f"default {LM_DEFAULTS['heads']}"
    )
    r = p.add_argument_group("language-model training recipe (any model)")
    r.add_argument(
        "--clip-norm",
        type=_positive_float,
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
    r.add_argument("--warmup-steps", type=_nonneg_int, default=None, metavar="N")
    r.add_argument(
        "--decay-fraction",
        type=_float_in("a fraction in (0, 1]", lambda v: 0 < v <= 1),
        default=None,
        metavar="F",
        help="wsd: the share of the steps it decays over (default 0.2)",
    )
    r.add_argument(
        "--decay-mask",
        action="store_true",
        help="no weight decay on biases, norms and embeddings (only kernels decay)",
    )


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    from jaxopt_zoo.cli.devices import add_device_flags

    add_device_flags(p, _positive_int, _nonneg_int)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxopt-zoo", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p_list = sub.add_parser("list", help="the optimizers, their defaults and references")
    p_list.add_argument("--preset", choices=("native", "keras", "torch", "all"), default="all")

    p_train = sub.add_parser("train", help="train one model and write metrics.json + a plot")
    p_train.add_argument("--optimizer", required=True)
    p_train.add_argument("--seed", type=_nonneg_int, default=0)
    _add_training_flags(p_train)
    _add_device_flags(p_train)
    p_train.add_argument(
        "--on-nonfinite",
        choices=("ignore", "skip", "stop"),
        default="ignore",
        help="a step with a non-finite loss, gradient or update: apply it "
        "(ignore), skip it, or stop with a message naming it",
    )
    ck = p_train.add_argument_group("checkpoints")
    ck.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="save checkpoints in DIR (at the end, on Ctrl-C, and every "
        "--checkpoint-every steps); a folder of another run is refused",
    )
    ck.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="STEPS",
        help="also save every STEPS optimizer steps",
    )
    ck.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        default=None,
        metavar="N",
        help="keep the newest N checkpoints (default 3)",
    )
    ck.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest good checkpoint in --checkpoint-dir "
        "(from scratch when it holds none)",
    )

    p_cmp = sub.add_parser("compare", help="train with several optimizers and compare")
    p_cmp.add_argument(
        "--optimizers", required=True, help="comma-separated names, e.g. adam,sgd,rmsprop"
    )
    p_cmp.add_argument(
        "--seeds", type=_positive_int, default=1, help="number of seeds per optimizer (0 .. K-1)"
    )
    _add_training_flags(p_cmp)
    from jaxopt_zoo.cli.sample import add_sample_parser
    from jaxopt_zoo.cli.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_sample_parser(sub)
    _add_device_flags(p_cmp)
    return parser
