"""`forgerytalker data ...`: dataset conversion and synthesis (sub-commands in their own modules)."""

from __future__ import annotations

import importlib

DATA_COMMAND_MODULES = ("convert", "synthesize")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="convert the released MMTT dataset or synthesize MMTT-style data")
    data_subparsers = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(data_subparsers)
