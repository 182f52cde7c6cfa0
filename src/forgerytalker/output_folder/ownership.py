"""Which files of an output folder are the command's own, and the refusal of everything else.

A file counts as the command's own when a manifest (`manifest.read_manifest`) lists it with its present size (any
size for an older record that kept none), or, for folders written before manifests existed, when the command's
`legacy_own` test recognises it. Everything else is foreign: never deleted, replaced or written over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .lock import LOCK_PREFIX
from .manifest import MANIFEST_NAME, ForeignFilesError, Owner, files_in, read_manifest


def shown_names(names: list[str], most: int = 5) -> str:
    """The first `most` names for a message, and how many more there are."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _is_bookkeeping(name: str) -> bool:
    return name == MANIFEST_NAME or (name.startswith(LOCK_PREFIX) and name.endswith(".lock"))


def _present(folder: Path, name: str) -> list[str]:
    """The files at `name` under `folder`: itself, or every file under it when it is a folder."""
    path = folder / name
    if not os.path.lexists(path):  # False too for a name the file system cannot hold (too long)
        return []
    if path.is_dir() and not path.is_symlink():
        return [f"{name}/{inner}" for inner in files_in(path)]
    return [name]


def foreign_files(
    folder: str | os.PathLike,
    owner: Owner,
    names: Iterable[str] | None = None,
    legacy_own: Callable[[Path], bool] | None = None,
) -> list[str]:
    """The files (sorted, relative) at `names` (default: everything) in `folder` that `owner` did not write.

    Args:
        names: where the command would write, delete or replace (files or folders, relative to `folder`).
        legacy_own: recognises a file written before manifests existed (`path` → whether it is the command's own).

    Raises:
        ForeignFilesError: a manifest lists a path outside the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    owned = read_manifest(folder, owner) or {}
    present = files_in(folder) if names is None else [file for name in names for file in _present(folder, name)]
    foreign = []
    for name in present:
        path = folder / name
        if _is_bookkeeping(name):
            continue
        if name in owned and (owned[name] is None or owned[name] == path.lstat().st_size):
            continue
        if legacy_own is not None and not path.is_symlink() and legacy_own(path):
            continue
        foreign.append(name)
    return sorted(set(foreign))


def check_no_foreign(
    folder: str | os.PathLike,
    owner: Owner,
    names: Iterable[str] | None = None,
    legacy_own: Callable[[Path], bool] | None = None,
) -> None:
    """Refuses `folder` when `foreign_files` finds any; the message names them and says nothing was deleted.

    Raises:
        ForeignFilesError: naming the files (or the manifest entry leading out of the folder).
    """
    foreign = foreign_files(folder, owner, names, legacy_own)
    if foreign:
        raise ForeignFilesError(
            f"{folder} holds files {owner.name} did not write ({shown_names(foreign)}); they are never deleted or "
            "overwritten, with or without --overwrite: move them out of it or choose another folder, nothing was "
            "deleted"
        )


def check_replaceable(
    output_dir: str | os.PathLike,
    owner: Owner,
    *,
    overwrite: bool,
    legacy_own: Callable[[Path], bool] | None = None,
) -> None:
    """Refuses an existing, non-empty `output_dir` that a command writing folders whole would replace, unless
    `overwrite` is set and every file in it is `owner`'s own (its manifest lists it with its size).

    Args:
        legacy_own: recognises the files of a folder an earlier version wrote without a manifest (`foreign_files`).

    Raises:
        ForeignFilesError: the message says why and that nothing was deleted.
    """
    output_dir = Path(output_dir)
    if not os.path.lexists(output_dir):
        return
    if not output_dir.is_dir() or output_dir.is_symlink():
        raise ForeignFilesError(f"{output_dir} exists and is not a folder; nothing was changed")
    if not files_in(output_dir):
        return
    if not overwrite:
        raise ForeignFilesError(f"{output_dir} already exists; pass {owner.overwrite_flag} to replace it")
    if read_manifest(output_dir, owner) is None and legacy_own is None:
        raise ForeignFilesError(
            f"{output_dir} is not a folder written by {owner.name}: it was not written by {owner.name} (no record of "
            f"its files lists them); refusing to replace it, nothing was deleted: choose another folder or remove it "
            "yourself"
        )
    check_no_foreign(output_dir, owner, legacy_own=legacy_own)


def remove_owned(folder: str | os.PathLike, owner: Owner, legacy_own: Callable[[Path], bool] | None = None) -> list[str]:
    """Deletes the files a manifest lists in `folder` with their size (or that `legacy_own` recognises), then the
    folders left empty, and the folder itself when nothing else is left; returns what stays (foreign files, sorted).

    Raises:
        ForeignFilesError: a manifest lists a path outside the folder; nothing is deleted.
    """
    folder = Path(folder)
    foreign = set(foreign_files(folder, owner, legacy_own=legacy_own))
    owned = [name for name in files_in(folder) if name not in foreign]  # inside `folder`: found by walking it
    for name in sorted(owned, key=lambda entry: entry in owner.records):  # the records, the lists, go last
        (folder / name).unlink()
    parents = {parent for name in owned for parent in Path(name).parents if parent != Path(".")}
    for parent in sorted(parents, key=lambda path: -len(path.parts)):  # deepest first; only folders of its files
        if (folder / parent).is_dir() and not any((folder / parent).iterdir()):
            (folder / parent).rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return sorted(foreign)


__all__ = ["check_no_foreign", "check_replaceable", "foreign_files", "remove_owned", "shown_names"]
