"""Paths read from files stay inside the folder they describe.

Manifests, conversion reports and dataset listings name files relative to their own folder. A folder can be
downloaded, copied or edited by hand, so every command resolves such an entry with `resolve_inside` before it
deletes, moves, reads or uploads what it names: an absolute entry, one that climbs out with `..`, or one that
leaves through a symbolic link (the link itself, or a folder on the way) is refused with an error that names the
file it was read from and the entry. Kept free of torch, so that the command line can use it anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class OutsidePathError(ValueError):
    """An entry read from a file names a path outside the folder it belongs to."""


def resolve_inside(folder: str | os.PathLike, entry: object, *, listed_in: str | os.PathLike) -> Path:
    """`folder / entry`, checked to stay inside `folder` once every symbolic link on the way is followed.

    Args:
        folder: the folder the entry is relative to.
        entry: the relative path as read from the file (`/`-separated).
        listed_in: the file the entry was read from, for the message.

    Returns:
        The path `folder / entry` (not resolved: deleting it removes a link inside the folder, never its target).

    Raises:
        OutsidePathError: the entry is not a relative path, or it leads out of `folder`.
    """
    if not isinstance(entry, str) or not entry or "\0" in entry:
        raise OutsidePathError(f"{listed_in}: the entry {entry!r} is not a file path")
    if PurePosixPath(entry).is_absolute() or PureWindowsPath(entry).is_absolute() or PureWindowsPath(entry).drive:
        raise OutsidePathError(f"{listed_in}: the entry {entry!r} is an absolute path; only paths inside {folder} are used")
    root = Path(folder).resolve()
    path = Path(folder) / entry
    if not path.resolve().is_relative_to(root):
        raise OutsidePathError(
            f"{listed_in}: the entry {entry!r} leads out of {folder} (to {path.resolve()}); it is not used"
        )
    return path


def check_entries_inside(folder: str | os.PathLike, entries, *, listed_in: str | os.PathLike) -> None:
    """`resolve_inside` for every entry of a listing read from `listed_in`.

    Raises:
        OutsidePathError: for the first entry that is not a path inside `folder`.
    """
    for entry in entries:
        resolve_inside(folder, entry, listed_in=listed_in)


def check_inside(folder: str | os.PathLike, path: str | os.PathLike, *, what: str) -> Path:
    """`path` resolved, checked to lie inside `folder` after following symbolic links (for files found by walking a
    folder, where a link may point anywhere).

    Raises:
        OutsidePathError: it leads out of `folder`; the message starts with `what`.
    """
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(folder).resolve()):
        raise OutsidePathError(f"{what}: {path} leads out of {folder} (to {resolved}); it is not used")
    return resolved


__all__ = ["OutsidePathError", "check_entries_inside", "check_inside", "resolve_inside"]
