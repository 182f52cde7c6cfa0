"""Errors of the data jobs (conversion, synthesis) that name the argument or file at fault.

A `DataInputError` names parameters by marker (`option("overwrite")`), so that the same error reads
`overwrite=True` from Python and `--overwrite` on the command line: the CLI renders it with its flag names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MARKER = re.compile(r"\x00([a-z_]+)\x00")

# How a marker reads from Python when the parameter is a switch.
PYTHON_FORMS: dict[str, str] = {
    "overwrite": "overwrite=True",
    "strict": "strict=True",
    "allow_changed_faces": "allow_changed_faces=True",
}


def option(parameter: str) -> str:
    """A marker for `parameter` inside a `DataInputError` message, rendered by `DataInputError.render`."""
    return f"\x00{parameter}\x00"


class DataInputError(ValueError):
    """Bad input to a data job: an argument that cannot be used, or an input file that cannot be read.

    Args:
        message: the text; it starts with `option(name)` when one argument is at fault and may refer to
            other arguments with `option(name)`.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with each marked parameter written as `names[parameter]` (CLI flags) or its Python form."""
        names = names or {}

        def written(match: re.Match) -> str:
            parameter = match.group(1)
            return names.get(parameter) or PYTHON_FORMS.get(parameter, parameter)

        return _MARKER.sub(written, self.message)

    def __str__(self) -> str:
        return self.render()


class WorkerDiedError(RuntimeError):
    """A worker process died (killed, e.g. by the out-of-memory killer, or crashed) while working on a task."""
