"""What every part of the ``jaxopt-zoo`` command shares: exit statuses, the one-line usage
error, the parser class and the flags' value types. It imports nothing of the command's own,
so that every subcommand can import it."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A bad command line: reported on one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with an error that is one line (a :class:`UsageError`), not a usage dump."""

    def error(self, message: str):  # argparse's multi-line usage dump -> one line
        raise UsageError(f"{message} (see '{self.prog} --help')")


def int_at_least(low: int, what: str):
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


positive_int = int_at_least(1, "a positive integer")
nonneg_int = int_at_least(0, "an integer >= 0")


def float_in(what: str, ok) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v != v or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_float = float_in("a positive finite number", lambda v: 0 < v < float("inf"))
nonneg_float = float_in("a finite number >= 0", lambda v: 0 <= v < float("inf"))
decay = float_in("a decay rate in [0, 1)", lambda v: 0 <= v < 1)


def opt_arg(text: str):
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
