"""JSON files of the data jobs: read with errors that name the file and line, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import DataInputError


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def read_json(path: str | os.PathLike, hint: str = ""):
    """The content of a UTF-8 JSON file (a leading byte-order mark is allowed).

    Raises:
        DataInputError: the file is not UTF-8 or not JSON; the message names the file, line and column,
            followed by `hint` (what the user can do).
        FileNotFoundError, OSError: the file cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    suffix = f"; {hint}" if hint else ""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, column = _line_and_column(data, error.start)
        byte = data[error.start : error.start + 1].hex()
        raise DataInputError(f"{path}: line {line}, column {column}: not UTF-8 text (byte 0x{byte}){suffix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataInputError(f"{path}: line {error.lineno}, column {error.colno}: {error.msg}{suffix}") from None


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    """Writes `data` as UTF-8 JSON through a temporary sibling renamed into place (no partial file is ever seen)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
