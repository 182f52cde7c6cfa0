"""`forgerytalker data ...`: dataset conversion and synthesis (sub-commands in their own modules).

Both sub-commands validate their arguments in the library (`forgerytalker.data.errors.DataInputError` names
the parameter) and print the error with their own flag names (`render_error`), exit code 2. A lost worker
process or another failure of the job itself is exit code 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

DATA_COMMAND_MODULES = ("convert_data", "synthesize")
USAGE_ERROR = 2
JOB_ERROR = 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="convert the released MMTT dataset or synthesize MMTT-style data")
    data_subparsers = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(data_subparsers)


def render_error(error: Exception, flags: Mapping[str, str]) -> str:
    """An error message with parameters written as the command's flags."""
    from ..data.errors import DataInputError

    return error.render(flags) if isinstance(error, DataInputError) else str(error)

