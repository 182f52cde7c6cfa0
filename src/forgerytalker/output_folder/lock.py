"""A lock that keeps a second run of a command from writing into the same output folder at once.

The lock is an `flock` on `.forgerytalker-<command>.lock` inside the folder (or, for a command that replaces the
folder whole, on `.<folder>.forgerytalker-<command>.lock` beside it); `locked` removes the file when the run ends.
The operating system releases the lock when the process ends, however it ends, so a killed run never leaves a stale
lock, only an empty file that the next run locks again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .manifest import OutputFolderError

LOCK_PREFIX = ".forgerytalker-"


class FolderLockedError(OutputFolderError):
    """Another run of the command holds the folder's lock."""


def lock_name(command: str) -> str:
    """The lock file of `command` (`"forgerytalker analyze"` → `.forgerytalker-analyze.lock`)."""
    return f"{LOCK_PREFIX}{command.split()[-1]}.lock"


def lock_path(folder: str | os.PathLike, command: str, *, beside: bool = False) -> Path:
    """Where `command`'s lock on `folder` lives: inside it, or beside it (`.<name>.forgerytalker-<command>.lock`)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{lock_name(command)}" if beside else folder / lock_name(command)


def hold_lock(folder: str | os.PathLike, command: str, option: str = "--out", *, beside: bool = False):
    """Takes `command`'s lock on `folder` for this process (released when it exits or the handle is closed);
    returns the open lock file.

    Raises:
        FolderLockedError: another run holds it; the message names the folder and the option that chose it.
    """
    import fcntl

    folder = Path(folder)
    path = lock_path(folder, command, beside=beside)
    for _ in range(3):
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            break
        try:  # the file may have been removed by the run that held it just before: then lock the new one
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                return handle
        except FileNotFoundError:
            pass
        handle.close()
    raise FolderLockedError(
        f"another {command} is writing into {folder}; wait for it to finish, or choose another {option}"
    )


@contextlib.contextmanager
def locked(folder: str | os.PathLike, command: str, option: str = "--out", *, beside: bool = False) -> Iterator[None]:
    """Holds `command`'s lock on `folder` for the block (`hold_lock`), and removes the lock file after it."""
    handle = hold_lock(folder, command, option, beside=beside)
    try:
        yield
    finally:
        Path(handle.name).unlink(missing_ok=True)  # while still held: a run waiting on it locks a new file
        handle.close()


__all__ = ["LOCK_PREFIX", "FolderLockedError", "hold_lock", "lock_name", "lock_path", "locked"]
