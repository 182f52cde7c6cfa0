"""Where an MMTT-style folder keeps its records and files: the split files and the record path rule.

**Split files.** By default the dataset root is searched for the release's file names
(`splits.SPLIT_FILE_NAMES`: `train-mutilabel-simple.json` or `train-mutilabel.json` → `train`,
`eval-mutilabel-simple.json` or `eval-mutilabel.json` → `validation`, `test-mutilabel.json` → `test`); any
of them alone is enough. Files can also be named explicitly, split by split (`split_files`).

**Record paths** (`img_path`, `mask_path`) are resolved by one rule, `resolve_record_path`:

1. A path is relative, with `/` or `\\` separators; it never contains `..`. An absolute path is accepted
   only inside the dataset root (it is then stored relative to the root). Anything else is `unsafe_path`.
2. It names a file relative to the dataset root (`images/x.jpg`, `dataset/celeb512/...`) or relative to the
   image root `dataset/` inside it (the release's and the synthesizer's `synthetic/face_swap/x.png`).
3. If both places hold a file (and they are not the same file), the record is `ambiguous_path`; if neither
   does, the file is missing.

The check is on the path as written: a symbolic link inside the root (a `dataset` folder linked to another
disk, say) is followed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from .errors import DataInputError, option
from .json_files import read_json
from .splits import SPLIT_FILE_NAMES, SPLITS
from .validation import AMBIGUOUS_PATH, UNSAFE_PATH, InvalidRecordError

IMAGE_ROOT_NAME = "dataset"


def find_split_files(
    mmtt_root: str | os.PathLike, split_files: Mapping[str, str | os.PathLike] | None = None
) -> dict[str, Path]:
    """Split → its record file, in `SPLITS` order: the files named in `split_files`, else those found in the root.

    Raises:
        DataInputError: an unknown split name, a named file that does not exist, a root that is not a folder,
            holds none of the release's file names, or two files for one split.
    """
    root = Path(mmtt_root)
    if not root.is_dir():
        raise DataInputError(f"{option('mmtt_root')}: no such folder: {root}")
    if split_files:
        unknown = [name for name in split_files if name not in SPLITS]
        if unknown:
            raise DataInputError(
                f"{option('split_files')}: unknown split name {unknown[0]!r}; split names are {', '.join(SPLITS)}"
            )
        found = {}
        for split in SPLITS:
            if split not in split_files:
                continue
            path = Path(split_files[split])
            if not path.is_file():
                under_root = root / path
                hint = f" (relative paths are read from the current folder; did you mean {under_root}?)" if (
                    not path.is_absolute() and under_root.is_file()
                ) else ""
                raise DataInputError(f"{option('split_files')}: no such file for split {split}: {path}{hint}")
            found[split] = path
        return found
    found = {}
    for split, names in SPLIT_FILE_NAMES.items():
        present = [root / name for name in names if (root / name).is_file()]
        if len(present) > 1:
            raise DataInputError(
                f"{option('mmtt_root')}: {root} holds both {present[0].name} and {present[1].name} for split "
                f"{split}; choose one with {option('split_files')}"
            )
        if present:
            found[split] = present[0]
    if not found:
        expected = ", ".join(name for names in SPLIT_FILE_NAMES.values() for name in names)
        raise DataInputError(
            f"{option('mmtt_root')}: {root} holds none of the split files {expected}; name yours with "
            f"{option('split_files')}"
        )
    return found


def split_file_name(path: Path, mmtt_root: Path) -> str:
    """How reports name a split file: relative to the root when inside it, else its file name."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(mmtt_root)).as_posix()
    except ValueError:
        return path.name


def read_split_file(path: Path) -> list:
    """The records of a split file: a JSON list (errors name the file and line)."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataInputError(f"{path}: must hold a JSON list of records, got a {type(records).__name__}")
    return records


def _is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def resolve_record_path(mmtt_root: Path, written: str, what: str) -> tuple[Path, str]:
    """The file a record path names and the path to store (module docstring for the rule).

    Args:
        mmtt_root: the dataset root.
        written: the record's `img_path` or `mask_path`.
        what: "image" or "mask", for the messages.

    Returns:
        (the file, the path as stored: as written with `/` separators, or relative to the root when absolute).

    Raises:
        InvalidRecordError: `unsafe_path`, `ambiguous_path`, or `missing_<what>` when neither place has the file.
    """
    text = written.replace("\\", "/")
    if not text.strip():
        raise InvalidRecordError(UNSAFE_PATH, f"{what} path is empty")
    stored = text
    if os.path.isabs(text) or PurePosixPath(text).is_absolute() or (len(text) > 1 and text[1] == ":"):
        absolute = os.path.normpath(text)
        roots = {os.path.abspath(mmtt_root), os.path.realpath(mmtt_root)}
        inside = [root for root in roots if _is_within(absolute, root)]
        if not inside:
            raise InvalidRecordError(UNSAFE_PATH, f"{what} path {written} is absolute and outside the dataset root")
        stored = Path(absolute).relative_to(inside[0]).as_posix()
    parts = PurePosixPath(stored).parts
    if ".." in parts:
        raise InvalidRecordError(UNSAFE_PATH, f"{what} path {written} contains `..`; paths must stay inside the root")
    candidates = [mmtt_root / stored, mmtt_root / IMAGE_ROOT_NAME / stored]
    present = [path for path in candidates if path.is_file()]
    if len(present) == 2 and not os.path.samefile(*present):
        raise InvalidRecordError(
            AMBIGUOUS_PATH,
            f"{what} path {written} names two files: {stored} under the dataset root and under {IMAGE_ROOT_NAME}/",
        )
    if not present:
        raise InvalidRecordError(
            f"missing_{what}",
            f"{what} file {written} does not exist (looked under the dataset root and under {IMAGE_ROOT_NAME}/)",
        )
    target = os.path.realpath(present[0])
    if not _is_within(target, os.path.realpath(mmtt_root)):
        raise InvalidRecordError(
            UNSAFE_PATH,
            f"{what} path {written} is a link leading out of the dataset root (to {target}); paths must stay inside "
            "the root once links are followed",
        )
    return present[0], stored


def source_from_path(stored_path: str) -> str:
    """The top folder of a path under the image root: `dataset/celeb512/...` → `celeb512`, `images/x.jpg` → `images`."""
    parts = PurePosixPath(stored_path).parts
    if len(parts) > 2 and parts[0] == IMAGE_ROOT_NAME:
        return parts[1]
    return parts[0] if len(parts) > 1 else ""
