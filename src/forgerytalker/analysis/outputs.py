"""The output folder of an `analyze` run: atomic files, the run's settings, finished photos and `results.jsonl`.

    OUT/
      run.json                   the settings of the run (model, regions, thresholds, generation); a re-run with
                                 other settings is refused unless --overwrite
      <name>.mask.png            binary mask, 0/255, at the photo's resolution
      <name>.overlay.png         the heatmap figure (`overlay.py`)
      <name>.json                the photo's record, written last: its presence marks the photo finished
      <name>.error.json          the record of a photo that failed (retried by the next run)
      results.jsonl              every photo's record, in input order, rewritten at the end of each run
      .forgerytalker-files.json  the files analyze wrote (path -> size), rewritten at the end of each run
      .forgerytalker-analyze.lock  held while a run writes, so that a second run into the same folder is refused

Every file is written to a temporary sibling and renamed into place, so a killed run never leaves a partial
PNG, JSON file or line: what exists is complete.

The folder follows the shared policy (`forgerytalker.output_folder`): nothing the command did not write is replaced,
with or without --overwrite (`check_foreign_files`). A file is analyze's own when its manifest lists it with its
size; in a folder an earlier version or a killed run wrote, a JSON file named like a record must be one of analyze's
records, `results.jsonl` must hold only records, and masks and figures count as its own only beside its `run.json`.
A finished photo is kept by a re-run only while its record's `source` (the photo's size and SHA-256,
`output_folder.file_fingerprint`) matches the photo, and `run.json` holds a fingerprint of the model's weights
(`forgerytalker.model_fingerprint`), so a replaced photo or a retrained model is never answered from an earlier run.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from PIL import Image

from ..output_folder import (
    OutputFolderError,
    Owner,
    changed_settings,
    check_no_foreign,
    file_fingerprint,
    read_manifest,
    write_manifest,
)
from .inputs import PhotoInput

SETTINGS_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
OWNER = Owner("forgerytalker analyze")
RECORD_STATUSES = ("ok", "error", "skipped")
"""The `status` of every record analyze writes: analysed, failed (retried by the next run), skipped for want of a face."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary sibling renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


PNG_ZLIB_RLE = 3
"""zlib's Z_RLE strategy: on the figure (flat background, bars, text, one photo) and on binary masks as fast as the
default strategy at level 1 and about a fifth smaller (a 908 x 666 figure: 325 KB against 414 KB, 24 ms)."""


def atomic_write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1, compress_type=PNG_ZLIB_RLE)
    atomic_write_bytes(path, buffer.getvalue())


def check_settings(out_dir: Path, settings: Mapping, overwrite: bool, ignore: tuple[str, ...] = ()) -> bool:
    """Whether `out_dir` may take a run with `settings`; returns True when its finished photos may be kept.

    Args:
        ignore: settings not compared (those only known once the model is loaded, for a check before loading it).

    Raises:
        OutputFolderError: `out_dir` holds the results of a run with other settings and `overwrite` is not set.
    """
    path = out_dir / SETTINGS_FILE
    if overwrite or not path.exists():
        return not overwrite
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(earlier, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise OutputFolderError(f"{path}: unreadable ({error}); pass --overwrite to analyse every photo again") from None
    differences = changed_settings(earlier, settings, ignore=("forgerytalker_version", *ignore))
    if differences:
        raise OutputFolderError(
            f"{out_dir} holds the results of a run with other settings ({'; '.join(differences)}); pass --overwrite "
            "to analyse every photo again, or choose another --out"
        )
    return True


def write_settings(out_dir: Path, settings: Mapping) -> None:
    atomic_write_json(out_dir / SETTINGS_FILE, dict(settings))


def is_finished(out_dir: Path, photo: PhotoInput) -> bool:
    """Whether the photo has a record made from the photo as it is now (same size and content)."""
    path = out_dir / photo.output("record")
    if not _is_file(path):
        return False
    record = _parse_record(path)
    return record is not None and record.get("source") is not None and record["source"] == file_fingerprint(photo.path)


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False for a name the file system cannot hold (too long: such a photo fails to write)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _parse_record(path: Path) -> dict | None:
    """The record in `path`, or `None` when the file is not a record written by analyze."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if _is_record(record) else None


def _is_record(value) -> bool:
    return isinstance(value, dict) and value.get("status") in RECORD_STATUSES and "record_version" in value


def read_record(out_dir: Path, photo: PhotoInput) -> dict | None:
    """The photo's record: its finished one made from the photo as it is now, else its error record, else `None`
    (not analysed: a record of another photo of the same name is never returned for it).

    Raises:
        OutputFolderError: the file is not a record written by analyze (`check_foreign_files` refuses such folders).
    """
    for kind in ("record", "error"):
        path = out_dir / photo.output(kind)
        if _is_file(path):
            record = _parse_record(path)
            if record is None:
                raise OutputFolderError(f"{path} is not a record written by forgerytalker analyze; move it away")
            if kind == "error" or record.get("source") == file_fingerprint(photo.path):
                return record
    return None


def _would_write(photos: Iterable[PhotoInput]) -> dict[str, str]:
    """Output file name -> its kind, for every file a run over `photos` writes (besides `run.json`)."""
    names = {RESULTS_FILE: "results"}
    for photo in photos:
        names.update({photo.output(kind): kind for kind in ("record", "error", "mask", "overlay")})
    return names


def check_foreign_files(out_dir: Path, photos: Iterable[PhotoInput]) -> None:
    """Refuses an output folder where the run would replace a file analyze did not write (module docstring).

    Raises:
        OutputFolderError: naming the files.
    """
    names = {**_would_write(photos), SETTINGS_FILE: "settings"}
    ours = (out_dir / SETTINGS_FILE).is_file()

    def written_before_manifests(path: Path) -> bool:
        kind = names[path.relative_to(out_dir).as_posix()]
        if kind == "settings":
            try:
                return "forgerytalker_version" in json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError):
                return False
        if kind in ("record", "error"):
            return _parse_record(path) is not None
        if kind == "results":
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                return False
            return ours and all(_is_record_line(line) for line in lines if line.strip())
        return ours

    check_no_foreign(out_dir, OWNER, names, legacy_own=written_before_manifests)


def _is_record_line(line: str) -> bool:
    try:
        return _is_record(json.loads(line))
    except ValueError:
        return False


def record_outputs(out_dir: Path, photos: Iterable[PhotoInput]) -> None:
    """Rewrites the folder's manifest: the files this run wrote, and those of earlier runs still unchanged."""
    files = {
        name: size for name, size in (read_manifest(out_dir, OWNER) or {}).items()
        if size is not None and _is_file(out_dir / name) and (out_dir / name).stat().st_size == size
    }  # fmt: skip
    for name in (*_would_write(photos), SETTINGS_FILE):
        if _is_file(out_dir / name):
            files[name] = (out_dir / name).stat().st_size
    write_manifest(out_dir, OWNER, files)


def write_results(out_dir: Path, photos: Iterable[PhotoInput]) -> list[dict]:
    """Rewrites `results.jsonl` from the photos' own records, in input order; returns the records."""
    records = [record for record in (read_record(out_dir, photo) for photo in photos) if record is not None]
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    atomic_write_bytes(out_dir / RESULTS_FILE, text.encode("utf-8"))
    record_outputs(out_dir, photos)
    return records


__all__ = [
    "OWNER",
    "RESULTS_FILE",
    "SETTINGS_FILE",
    "OutputFolderError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_png",
    "check_foreign_files",
    "check_settings",
    "is_finished",
    "read_record",
    "record_outputs",
    "write_results",
    "write_settings",
]
