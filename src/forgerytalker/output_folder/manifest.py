"""The record of the files a command wrote into its output folder, and the records of earlier versions.

    OUT/.forgerytalker-files.json   {"created_by": "forgerytalker evaluate", "files": {"masks/a.png": 1234, ...}}

`read_manifest` merges it with the older records still found in folders a command's earlier versions wrote, which
each command names once, in its `Owner.legacy_records` (evaluate's `evaluation_manifest.json`: a list of paths,
sizes unknown; data convert's `conversion_report.json`: its `files`, path → size). Every entry is checked to stay
inside the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..contained_paths import OutsidePathError, check_entries_inside

MANIFEST_NAME = ".forgerytalker-files.json"


@dataclass(frozen=True)
class Owner:
    """A command as the policy knows it.

    Attributes:
        command: `"forgerytalker evaluate"`: recorded as the manifest's `created_by` (only files a manifest of this
            command lists are its own) and named by the lock's message.
        who: how messages name it (default: the command in backquotes).
        overwrite_flag: how the user asks for a replacement, for messages (`"--overwrite"`).
        legacy_records: the records earlier versions of this command kept instead of the manifest (JSON files whose
            `files` lists paths, or maps them to sizes), read as the manifest is.
    """

    command: str
    who: str = ""
    overwrite_flag: str = "--overwrite"
    legacy_records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.who or f"`{self.command}`"

    @property
    def records(self) -> tuple[str, ...]:
        """The files that record what the command wrote: the manifest, and its earlier versions' records."""
        return (MANIFEST_NAME, *self.legacy_records)


class OutputFolderError(ValueError):
    """An output folder cannot be used as asked; the message names the folder or file and what to do."""


class ForeignFilesError(OutputFolderError):
    """An output folder holds files the command did not write where it would write, or cannot be replaced; nothing
    was deleted."""


def files_in(folder: Path) -> dict[str, int]:
    """Relative POSIX path → size of every file (links included, not followed) under `folder`."""
    return {
        path.relative_to(folder).as_posix(): path.lstat().st_size
        for path in Path(folder).rglob("*")
        if path.is_symlink() or not path.is_dir()
    }


def _listing(path: Path) -> Mapping[str, int | None] | None:
    """The `files` of one record file: path → size (`None`: any size), or `None` when it holds no listing."""
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(files, list) and all(isinstance(name, str) for name in files):
        return dict.fromkeys(files)
    if isinstance(files, dict) and all(isinstance(size, int) for size in files.values()):
        return files
    return None


def _created_by(record: Path) -> str | None:
    try:
        created_by = json.loads(record.read_text(encoding="utf-8")).get("created_by")
    except (OSError, ValueError, AttributeError):
        return None
    return created_by if isinstance(created_by, str) else None


def read_manifest(folder: str | os.PathLike, owner: Owner) -> dict[str, int | None] | None:
    """Path → size (`None` where an older record kept no size) of every file `owner` recorded writing into `folder`,
    the records themselves included; `None` when the folder has no readable record of it.

    Raises:
        ForeignFilesError: a record lists a path outside the folder (the message names the record and the entry).
    """
    folder = Path(folder)
    owned: dict[str, int | None] = {}
    found = False
    for name in owner.records:
        record = folder / name
        if record.is_symlink() or not record.is_file():
            continue
        listed = _listing(record)
        if listed is None:
            continue
        if name == MANIFEST_NAME and _created_by(record) not in (None, owner.command):
            continue  # another command's folder: none of its files is this command's
        try:
            check_entries_inside(folder, listed, listed_in=record)
        except OutsidePathError as error:
            raise ForeignFilesError(f"{error}; nothing was deleted") from None
        found = True
        owned.update(listed)
        owned[name] = record.stat().st_size
    return owned if found else None


def write_manifest(folder: str | os.PathLike, owner: Owner, files: Mapping[str, int] | None = None) -> None:
    """Records `files` (default: every file in `folder`) as written by `owner`, atomically."""
    from .. import __version__

    folder = Path(folder)
    files = files_in(folder) if files is None else files
    files = {name: size for name, size in files.items() if name != MANIFEST_NAME}
    manifest = {"created_by": owner.command, "forgerytalker_version": __version__, "files": dict(sorted(files.items()))}
    text = json.dumps(manifest, indent=1) + "\n"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f"{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, folder / MANIFEST_NAME)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


__all__ = [
    "MANIFEST_NAME",
    "ForeignFilesError",
    "OutputFolderError",
    "Owner",
    "files_in",
    "read_manifest",
    "write_manifest",
]
