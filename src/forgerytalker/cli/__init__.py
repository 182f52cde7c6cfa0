"""The `forgerytalker` command line: one sub-command module per job.

Each module in `COMMAND_MODULES` exposes `add_parser(subparsers)`, which registers its sub-command and sets
`func` on the parser to a callable taking the parsed arguments and returning an exit code. Heavy imports
(torch, transformers, datasets, OpenCV) belong inside those callables: building the parser imports none of
them, so `forgerytalker --help` and `--version` answer at once (tests/test_cli.py checks that torch is not
imported).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from .. import __version__

COMMAND_MODULES = ("analyze", "convert_checkpoint", "data", "demo", "evaluate", "push")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgerytalker",
        description="Interpretable face-forgery localization: masks, facial regions and written reports.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line `argv` (default: the process's arguments) and returns its exit code."""
    return _run(build_parser().parse_args(argv))


def console_main() -> NoReturn:
    """The `forgerytalker` script and `python -m forgerytalker.cli`: runs the command and ends the process, without
    the interpreter's teardown for a command whose parser sets `fast_exit` (`analyze` and `evaluate`;
    `forgerytalker.process_exit` says why)."""
    args = build_parser().parse_args()
    code = _run(args)
    if getattr(args, "fast_exit", False):
        from ..process_exit import exit_without_teardown

        exit_without_teardown(code)
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from ._progress import library_progress_bars

    with library_progress_bars(shown=not getattr(args, "no_progress", False)):
        return int(args.func(args) or 0)

