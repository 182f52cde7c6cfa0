"""Whether an output folder can be made and written to, checked before a command does any work.

`check_writable` refuses, up front, an output path that is a file, lies under a file, or whose folder cannot be
written to (a read-only file system or missing permission: tested by creating a file, so the check also holds for
root, whom permission bits do not stop). It creates nothing; `make_writable` creates the folder and checks it the
same way. Each command puts the option that named the folder in front of the message (`--out: ...`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .manifest import OutputFolderError


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (what a folder to be created will be made in)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(os.sep)


def _probe(folder: Path) -> None:
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as error:
        raise OutputFolderError(
            f"cannot write in {folder}: {error.strerror or error} (read-only or not writable by this user)"
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def check_writable(path: str | os.PathLike, *, beside: bool = False) -> Path:
    """Refuses an output folder that cannot be made or written to; creates nothing. Returns it as an absolute `Path`.

    Args:
        path: the output folder (it may not exist yet).
        beside: the command also writes next to the folder (its staging folder, its lock): the parent must then be
            writable too.

    Raises:
        OutputFolderError: the path is a file, lies under a file, or its folder cannot be written to.
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{path} is a file, not a folder")
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise OutputFolderError(f"cannot create {path}: {existing} is a file, not a folder")
    if beside and existing == path:
        _probe(path.parent)
    _probe(existing)
    return path


def make_writable(path: str | os.PathLike) -> Path:
    """Creates the output folder (and its parents) and checks that a file can be written into it; returns it.

    Raises:
        OutputFolderError: as `check_writable`, or the folder cannot be created.
    """
    path = check_writable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(f"cannot create {path}: {error.strerror or error}") from None
    _probe(path)
    return path


__all__ = ["check_writable", "make_writable", "nearest_existing"]
