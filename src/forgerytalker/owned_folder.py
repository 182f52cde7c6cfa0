"""Output folders that a command writes whole, and replaces only when every file in them is its own.

A command that writes a folder in one piece (`forgerytalker convert-checkpoint`) writes it beside its destination,
records every file it wrote (relative path → size) in `OWNED_FILES_NAME` inside it, and then moves it into place.
`--overwrite` replaces an existing folder only when that record lists exactly the files the folder holds: a file
the command did not write (a user's `thesis.tex`, an edited config) stops the command before anything is deleted,
with or without `--overwrite`, and so does a folder without the record. Entries of the record are checked to stay
inside the folder (`contained_paths`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .contained_paths import OutsidePathError, check_entries_inside

OWNED_FILES_NAME = ".forgerytalker-files.json"


class ForeignFilesError(ValueError):
    """An output folder holds files the command did not write, or cannot be replaced; nothing was deleted."""


def shown_names(names: list[str], most: int = 5) -> str:
    """The first `most` names for a message, and how many more there are."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _files(folder: Path) -> dict[str, int]:
    """Relative POSIX path → size of every file (links included, not followed) under `folder`."""
    return {
        path.relative_to(folder).as_posix(): path.lstat().st_size
        for path in folder.rglob("*")
        if path.is_symlink() or not path.is_dir()
    }


def owned_files(folder: Path) -> dict[str, int] | None:
    """What the command recorded writing into `folder`, or `None` when the folder has no readable record.

    Raises:
        ForeignFilesError: the record lists a path outside the folder.
    """
    record = folder / OWNED_FILES_NAME
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict):
        return None
    try:
        check_entries_inside(folder, files, listed_in=record)
    except OutsidePathError as error:
        raise ForeignFilesError(f"{error}; nothing was deleted") from None
    return files


def check_replaceable(output_dir: str | os.PathLike, *, overwrite: bool, command: str) -> None:
    """Refuses an existing, non-empty `output_dir` unless `overwrite` is set and it holds only `command`'s files.

    Raises:
        ForeignFilesError: the message says why and that nothing was deleted.
    """
    output_dir = Path(output_dir)
    if not os.path.lexists(output_dir):
        return
    if not output_dir.is_dir() or output_dir.is_symlink():
        raise ForeignFilesError(f"{output_dir} exists and is not a folder; nothing was changed")
    present = _files(output_dir)
    if not present:
        return
    if not overwrite:
        raise ForeignFilesError(f"{output_dir} exists; replace it with --overwrite (overwrite=True in Python)")
    owned = owned_files(output_dir)
    if owned is None:
        raise ForeignFilesError(
            f"{output_dir} was not written by `{command}` (it has no {OWNED_FILES_NAME} listing its files); refusing "
            "to replace it, nothing was deleted: choose another folder or remove it yourself"
        )
    present.pop(OWNED_FILES_NAME, None)
    foreign = sorted(name for name, size in present.items() if owned.get(name) != size)
    if foreign:
        raise ForeignFilesError(
            f"{output_dir} holds files `{command}` did not write ({shown_names(foreign)}); move them out of it "
            "before replacing it, nothing was deleted"
        )


def write_folder(
    output_dir: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool, command: str
) -> None:
    """Runs `write(folder)` into a fresh folder beside `output_dir`, records its files, and moves it into place,
    replacing an earlier folder of `command` only once the new one is complete (`check_replaceable`, checked before
    writing and again before the swap)."""
    output_dir = Path(output_dir)
    check_replaceable(output_dir, overwrite=overwrite, command=command)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        write(partial)
        record = {"created_by": command, "files": _files(partial)}
        (partial / OWNED_FILES_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        check_replaceable(output_dir, overwrite=overwrite, command=command)  # files may have appeared meanwhile
        if os.path.lexists(output_dir):
            old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            os.replace(output_dir, old / output_dir.name)
            os.replace(partial, output_dir)
            shutil.rmtree(old)  # only the command's own files: checked just before
        else:
            os.replace(partial, output_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


__all__ = ["OWNED_FILES_NAME", "ForeignFilesError", "check_replaceable", "owned_files", "shown_names", "write_folder"]
