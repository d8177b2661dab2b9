"""The ``jaxopt-zoo`` parser, assembled from the subcommands' own parsers (each subcommand's
module adds its parser; this module sits above them all and nothing of the command imports
it back)."""

from __future__ import annotations

import argparse

from jaxopt_zoo.cli.args import Parser
from jaxopt_zoo.cli.commands import add_compare_parser, add_list_parser, add_train_parser
from jaxopt_zoo.cli.sample import add_sample_parser
from jaxopt_zoo.cli.sweep import add_sweep_parser

DESCRIPTION = (
    "The jaxopt-zoo command: list optimizers, train one model, compare optimizers on MNIST."
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``list``, ``train``, ``compare``, ``sweep`` and ``sample``."""
    parser = Parser(prog="jaxopt-zoo", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in (
        add_list_parser,
        add_train_parser,
        add_compare_parser,
        add_sweep_parser,
        add_sample_parser,
    ):
        add(sub)
    return parser
