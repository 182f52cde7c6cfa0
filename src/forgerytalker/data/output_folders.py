"""Checks of an output folder before a data job writes anything, and errors for writes that fail later.

`check_output_folder` refuses, up front and naming the argument, an output path that is a file, lies under a
file, or whose folder cannot be written to (the shared check, `output_folder.check_writable`).
`output_write_error` turns a failed write (full disk, quota, read-only) into a `DataInputError` that names
the argument and says what was kept.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..output_folder import OutputFolderError, check_writable, nearest_existing
from .errors import DataInputError, option

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
"""errno values of a write that fails because of where it writes, not because of what it writes."""


def check_output_folder(path: str | os.PathLike, parameter: str, *, writes_beside: bool = False) -> Path:
    """Refuses an output folder that cannot be made or written to (`output_folder.check_writable`), naming the
    argument; returns it as an absolute `Path`.

    Args:
        path: the output folder (it may not exist yet).
        parameter: the argument that named it, for the messages.
        writes_beside: the job also writes next to the folder (in its parent), as the converter's
            staging folder does: the parent must then be writable too.

    Raises:
        DataInputError: the path is a file, lies under a file, or its folder cannot be written to.
    """
    try:
        return check_writable(path, beside=writes_beside)
    except OutputFolderError as error:
        raise DataInputError(f"{option(parameter)}: {error}") from None


def check_free_space(folder: Path, needed_bytes: int, parameter: str) -> None:
    """Refuses to start when the file system of `folder` (or its nearest existing parent) has less room than needed."""
    free = shutil.disk_usage(nearest_existing(folder)).free
    if free < needed_bytes:
        raise DataInputError(
            f"{option(parameter)}: {folder} needs about {needed_bytes / 1e9:.2f} GB but its disk has "
            f"{free / 1e9:.2f} GB free"
        )


def output_write_error(error: OSError, parameter: str, kept: str) -> DataInputError | None:
    """A `DataInputError` for a write that failed because of the output location, or None for other errors.

    Args:
        error: the failed write.
        parameter: the argument that named the output folder.
        kept: what the user keeps and how to go on ("finished shards are kept in X; re-run to resume").
    """
    if error.errno not in WRITE_ERRNOS:
        return None
    where = f" {error.filename}" if error.filename else ""
    return DataInputError(f"{option(parameter)}: cannot write{where}: {error.strerror}; {kept}")
