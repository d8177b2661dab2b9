"""The ``jaxopt-zoo`` command: list optimizers, train one model, compare optimizers on MNIST.

    jaxopt-zoo list
    jaxopt-zoo train --optimizer adam --model cnn --epochs 3 --output runs/adam
    jaxopt-zoo compare --optimizers adadelta,adagrad,adam,rmsprop,sgd --preset keras
    jaxopt-zoo train --optimizer adamw --model charlm --steps 2000 --checkpoint-dir ck
    jaxopt-zoo sample --checkpoint-dir ck --prompt "ROMEO:"

Bad flags and unknown optimizer names exit with status 2 and a one-line message; data and
other runtime errors exit with status 1 and a message, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from jaxopt_zoo.cli.args import EXIT_FAILURE, EXIT_USAGE, UsageError
from jaxopt_zoo.cli.commands import cmd_compare, cmd_list, cmd_train
from jaxopt_zoo.cli.devices import setup_devices
from jaxopt_zoo.cli.parser import build_parser
from jaxopt_zoo.cli.sample import cmd_sample
from jaxopt_zoo.cli.sweep import cmd_sweep

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

COMMANDS = {
    "list": cmd_list,
    "train": cmd_train,
    "compare": cmd_compare,
    "sweep": cmd_sweep,
    "sample": cmd_sample,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        import jaxopt_zoo._train_extra  # noqa: F401  (flax, orbax, tqdm: the [train] extra)
    except ModuleNotFoundError as e:
        print(f"jaxopt-zoo: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        setup_devices(args)  # before anything runs JAX: --devices, jax.distributed
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"jaxopt-zoo: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxopt-zoo: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        # data errors (missing, corrupt files), unwritable output folders, bad values found
        # late: a message, not a traceback
        msg = str(e).strip().replace("\n", "\n  ")
        print(f"jaxopt-zoo: {type(e).__name__}: {msg}", file=sys.stderr)
        return EXIT_FAILURE
