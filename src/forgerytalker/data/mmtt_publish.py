"""Putting a finished conversion in place, and replacing an earlier one without touching anything else.

A converted folder lists the files it wrote (path → size) in the `files` entry of its `conversion_report.json`.
Only a folder whose every file is listed there, with that size, counts as a converted folder that
`overwrite=True` may replace; anything else in it (a user's notes, an edited card) stops the replacement
before anything is deleted. Replacing is two renames:

    OUT → .OUT.replaced        (the old dataset steps aside)
    .OUT.partial → OUT         (the new one appears, complete)

and then the old dataset's listed files are deleted. A run killed between the renames leaves
`.OUT.replaced` and no `OUT`; the next conversion into `OUT` renames it back first (`recover_interrupted_replace`),
and one killed after them has its `.OUT.replaced` cleared the same way: no hidden copy outlives the next run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..contained_paths import OutsidePathError, check_entries_inside
from ..owned_folder import shown_names
from .errors import DataInputError, option
from .json_files import read_json

logger = logging.getLogger(__name__)

REPORT_FILE = "conversion_report.json"


def sibling(output_dir: Path, suffix: str) -> Path:
    """The hidden sibling `.<name>.<suffix>` of `output_dir` (same file system, so renames are atomic)."""
    return output_dir.parent / f".{output_dir.name}.{suffix}"


def listed_files(folder: Path) -> dict[str, int] | None:
    """Path → size of the files a conversion wrote into `folder` (its report included), or None if it is not one."""
    report_path = folder / REPORT_FILE
    if not report_path.is_file():
        return None
    try:
        report = read_json(report_path)
    except (DataInputError, OSError):
        return None
    files = report.get("files") if isinstance(report, dict) else None
    if not isinstance(files, dict) or not all(isinstance(size, int) for size in files.values()):
        return None
    try:
        check_entries_inside(folder, files, listed_in=report_path)
    except OutsidePathError as error:
        raise DataInputError(f"{error}; refusing to use {folder} as a converted folder, nothing was deleted") from None
    return {**files, REPORT_FILE: report_path.stat().st_size}


def _entries(folder: Path) -> tuple[dict[str, int], set[str]]:
    """(file path → size, folder paths) of everything under `folder`, relative, with `/` separators."""
    files, folders = {}, set()
    for path in folder.rglob("*"):
        name = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            folders.add(name)
        else:
            files[name] = path.lstat().st_size
    return files, folders


def foreign_entries(folder: Path) -> list[str] | None:
    """What in a converted `folder` the conversion did not write (sorted), or None if it is not a converted folder."""
    listed = listed_files(folder)
    if listed is None:
        return None
    files, folders = _entries(folder)
    own_folders = {Path(name).parent.as_posix() for name in listed} - {"."}
    own_folders |= {parent.as_posix() for name in own_folders for parent in Path(name).parents} - {"."}
    foreign = [name for name, size in files.items() if listed.get(name) != size]
    foreign += [f"{name}/" for name in folders if name not in own_folders]
    return sorted(foreign)


def check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuses an existing `output_dir` unless it is empty, or a converted folder holding only its own files and
    `overwrite` is set. Nothing is deleted here."""
    if not output_dir.exists() or (output_dir.is_dir() and not any(output_dir.iterdir())):
        return
    if not overwrite:
        raise DataInputError(
            f"{option('output_dir')}: {output_dir} already exists; pass {option('overwrite')} to replace it"
        )
    foreign = foreign_entries(output_dir)
    if foreign is None:
        raise DataInputError(
            f"{option('output_dir')}: {output_dir} is not a folder written by the converter (no {REPORT_FILE} "
            "listing its files); refusing to replace it, nothing was deleted"
        )
    if foreign:
        raise DataInputError(
            f"{option('output_dir')}: {output_dir} holds files the converter did not write ({shown_names(foreign)}); "
            "move them out of it before replacing it, nothing was deleted"
        )


def remove_listed_files(folder: Path) -> None:
    """Deletes the files a conversion listed in `folder`, then the folders left empty; anything else stays.

    Raises:
        DataInputError: the report lists a path outside `folder` (`listed_files`); nothing is deleted.
    """
    listed = listed_files(folder) or {}
    for name in sorted(listed, key=lambda entry: entry == REPORT_FILE):  # the report, the list, goes last
        (folder / name).unlink(missing_ok=True)  # inside `folder`: `listed_files` checked every entry
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(path.iterdir()):
            path.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    elif folder.exists():
        logger.warning("Left %s in place: it holds files the converter did not write", folder)


def recover_interrupted_replace(output_dir: Path) -> None:
    """Undoes what a conversion killed while replacing `output_dir` left behind (module docstring)."""
    retired = sibling(output_dir, "replaced")
    if not retired.exists():
        return
    if not output_dir.exists():
        logger.warning("Restoring %s, moved aside by a conversion that was stopped while replacing it", output_dir)
        os.rename(retired, output_dir)
    else:
        logger.info("Removing %s, the dataset a finished replacement left behind", retired)
        remove_listed_files(retired)


def publish(staging_dir: Path, output_dir: Path) -> None:
    """Moves the finished `staging_dir` to `output_dir` by renames, replacing a converted folder there."""
    if output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if not output_dir.exists():
        os.rename(staging_dir, output_dir)
        return
    check_replaceable(output_dir, overwrite=True)  # again: files may have been added during the conversion
    retired = sibling(output_dir, "replaced")
    os.rename(output_dir, retired)
    os.rename(staging_dir, output_dir)
    remove_listed_files(retired)
