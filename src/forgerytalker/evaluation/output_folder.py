"""The output folder of an evaluation run: what the command owns in it, where an unfinished run lives, and how a
finished run replaces the previous one.

Guarantees (README "Evaluating a model", docs/evaluation.md):

- **Only its own files are ever replaced** (the shared policy, `forgerytalker.output_folder`). A finished run leaves
  the shared manifest `MANIFEST_NAME`, every file it wrote with its size (earlier versions' `evaluation_manifest.json`
  is read too). An earlier run's outputs are replaced only file by file as listed there; an output name
  (`OUTPUT_NAMES`) that holds anything else, such as the user's own `masks/`, stops the run before it starts.
- **One writer.** A run holds the folder's `evaluate` lock (`lock_output_folder`) while it writes.
- **Written beside, swapped when complete.** A run writes into `PARTIAL_DIR_NAME` inside the folder and moves its
  outputs into place only when every prediction and report is written, so a killed or failed run leaves the
  earlier outputs untouched and its own work marked unfinished (`STATE_NAME` says so, in words too).
- **Resumable.** Each finished prediction is appended to a per-process records file under the unfinished run as
  soon as its mask is written; re-running the same command (same model, split and settings, `fingerprint`)
  predicts only the images that have no finished prediction yet.
- **Safe file names.** Mask file names come from `mask_filename`: percent-encoded, at most `MAX_NAME_BYTES` bytes,
  collision-free; `predictions.jsonl` records each image's file.

Layout of an unfinished run:

```
OUT/.evaluation-partial/
  state.json                      fingerprint of the run's settings and a note saying what the folder is
  records/<run>/part-<process>.jsonl   finished predictions, one JSON line each (<run>: clean, degraded/<name>)
  outputs/                        the tree that replaces the outputs in OUT: masks/, degraded/<name>/masks/,
                                  and at the end predictions.jsonl, metrics.json, metrics.md and the manifest
  tmp/                            files being written (renamed into outputs/ when complete)
```
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..output_folder import (
    MANIFEST_NAME,
    OutputFolderError,
    Owner,
    changed_settings,
    check_no_foreign,
    check_writable,
    files_in,
    locked,
    make_writable,
    write_manifest,
)
from ..output_folder import read_manifest as read_owned

logger = logging.getLogger(__name__)

LEGACY_MANIFEST_NAME = "evaluation_manifest.json"
"""The manifest of earlier versions: read as the shared one is, and removed once a new run is installed."""
OWNER = Owner("forgerytalker evaluate", who="this command", legacy_records=(LEGACY_MANIFEST_NAME,))
PARTIAL_DIR_NAME = ".evaluation-partial"
STATE_NAME = "state.json"
OUTPUT_NAMES: tuple[str, ...] = ("predictions.jsonl", "masks", "metrics.json", "metrics.md", "degraded")
"""What a run writes into the output folder besides its manifest; replaced only where the manifest lists them."""
CLEAN_RUN = "clean"
MAX_NAME_BYTES = 160
"""Longest mask file name, in bytes (file systems allow 255; the rest is left for temporary suffixes)."""
_HASH_SEPARATOR = "+"  # never in a percent-encoded id, so a shortened name cannot equal a full one


class OutputWriteError(OSError):
    """Writing into the output folder failed during a run (a full disk, a folder made read-only): the message
    names the folder and the error; the finished predictions stay in the unfinished run, which a re-run resumes."""


@contextlib.contextmanager
def writing(folder: OutputFolder) -> Iterator[None]:
    """Turns an `OSError` met while writing the run into an `OutputWriteError` that says what is kept."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as error:
        raise OutputWriteError(
            f"cannot write into {folder.root}: {error.strerror or error}"
            f"{f' ({error.filename})' if error.filename else ''}. The predictions finished so far are kept in "
            f"{folder.partial}; fix the problem and re-run the same command to resume"
        ) from error


def mask_filename(image_id: str) -> str:
    """The mask file name of an image: `<percent-encoded image_id>.png`, or, when that is longer than
    `MAX_NAME_BYTES`, its first characters + `+` + a SHA-256 prefix of the id (`a/b` -> `a%2Fb.png`).

    Distinct ids always get distinct names: percent-encoding is one-to-one and never yields `+`, and a shortened
    name carries 80 bits of the id's hash.
    """
    encoded = quote(image_id, safe="")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]  # no hidden files, no "." or ".."
    if len(encoded) + len(".png") <= MAX_NAME_BYTES:
        return encoded + ".png"
    digest = hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:20]
    return encoded[: MAX_NAME_BYTES - len(".png") - len(digest) - 1] + _HASH_SEPARATOR + digest + ".png"


def degradation_name(spec: str) -> str:
    """The folder name of a degradation spec: `jpeg:75` -> `jpeg-75`, `resize:0.5+jpeg:75` -> `resize-0.5_jpeg-75`."""
    return "".join(character if character.isalnum() or character in "._-" else "-" for character in spec.replace("+", "_"))


def run_key(spec: str | None) -> str:
    """The records folder of a run: `clean`, or `degraded/<name>` for a degradation spec."""
    return CLEAN_RUN if spec is None else f"degraded/{degradation_name(spec)}"


@dataclass(frozen=True)
class OutputFolder:
    """An output folder prepared for one run (`prepare_output_folder`); picklable, so shared by all processes.

    Attributes:
        root: the folder the user named.
    """

    root: Path

    @property
    def partial(self) -> Path:
        return self.root / PARTIAL_DIR_NAME

    @property
    def staged(self) -> Path:
        """The outputs of the unfinished run, laid out as they will be in `root`."""
        return self.partial / "outputs"

    def run_dir(self, spec: str | None) -> Path:
        """Where a run's predictions.jsonl and masks/ go in `staged`: the top, or `degraded/<name>`."""
        return self.staged if spec is None else self.staged / "degraded" / degradation_name(spec)

    def records_dir(self, spec: str | None) -> Path:
        return self.partial / "records" / run_key(spec)


def check_output_folder(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """The checks of `prepare_output_folder` that need no model, made before loading one; creates nothing.

    Finishes installing a run that completed but was killed while moving its outputs into place.
    """
    root = Path(output_dir)
    check_writable(root)  # a file, under a file, or not writable
    if not root.exists():
        return
    folder = OutputFolder(root)
    if any((folder.staged / name).exists() for name in (MANIFEST_NAME, LEGACY_MANIFEST_NAME)):
        logger.info("Finishing the installation of the run completed earlier in %s", root)
        install(folder)
    owned = read_manifest(root)
    if owned is not None and not overwrite:
        raise OutputFolderError(
            f"{root} holds the outputs of an earlier run ({MANIFEST_NAME}); choose another folder or overwrite them "
            "(they are kept until the new run is complete)"
        )
    check_owned(root)


def prepare_output_folder(
    output_dir: str | os.PathLike, fingerprint: Mapping, overwrite: bool, held: contextlib.ExitStack | None = None
) -> OutputFolder:
    """Checks the output folder and opens the unfinished run in it: resumed if its settings match, else new.

    Args:
        output_dir: the folder; created if missing.
        fingerprint: the settings that decide the predictions (model, split, region source, thresholds, ...);
            an unfinished run is resumed only when its fingerprint is equal.
        overwrite: allow replacing an earlier finished run (its files only), and discarding an unfinished run
            whose settings differ.
        held: where the folder's lock is kept (`lock_output_folder`, taken before the folder is changed), so that a
            second run into it is refused until the stack closes.

    Raises:
        OutputFolderError: the folder is a file, under a file, not writable, holds an earlier run (without
            `overwrite`), holds files this command did not write under an output name, or holds an unfinished
            run with other settings (without `overwrite`).
    """
    root = Path(output_dir)
    check_output_folder(root, overwrite)
    if held is not None:
        held.enter_context(lock_output_folder(root))
        check_output_folder(root, overwrite)  # again, now that no other run can change it
    make_writable(root)
    folder = OutputFolder(root)
    state = _read_state(folder.partial)
    if state is not None and state.get("fingerprint") == dict(fingerprint):
        logger.info("Resuming the unfinished run in %s", folder.partial)
        return folder
    if state is not None and not overwrite:
        earlier = state.get("fingerprint", {})
        differences = changed_settings(earlier, fingerprint)
        raise OutputFolderError(
            f"{folder.partial} holds an unfinished run made with other settings ({'; '.join(differences)}); "
            "re-run it with its own settings to finish it, or overwrite it"
        )
    with writing(folder):
        if folder.partial.exists():
            shutil.rmtree(folder.partial)
        folder.staged.mkdir(parents=True)
        write_json_atomic(
            folder.partial / STATE_NAME,
            {
                "note": "An unfinished `forgerytalker evaluate` run: re-run the same command to resume it. The "
                "outputs in the folder above are replaced only when it is complete.",
                "fingerprint": dict(fingerprint),
            },
            folder.partial / "tmp",
        )
    return folder


def read_manifest(folder: Path) -> set[str] | None:
    """The files (relative POSIX paths) a finished run wrote into `folder`, its manifests left out, or `None` if it
    holds no manifest (`output_folder.read_manifest`, which checks every entry to stay inside the folder)."""
    owned = read_owned(folder, OWNER)
    return None if owned is None else set(owned) - {MANIFEST_NAME, LEGACY_MANIFEST_NAME}


@contextlib.contextmanager
def lock_output_folder(output_dir: str | os.PathLike) -> Iterator[None]:
    """Creates the folder and holds its `evaluate` lock for the block (`output_folder.locked`).

    Raises:
        OutputFolderError: another `forgerytalker evaluate` is writing into it.
    """
    root = Path(output_dir)
    make_writable(root)
    with locked(root, OWNER.command):
        yield


def check_owned(root: Path) -> None:
    """Raises `OutputFolderError` if an output name in `root` holds anything a manifest does not list."""
    check_no_foreign(root, OWNER, OUTPUT_NAMES)


def _files_under(path: Path) -> list[Path]:
    if path.is_symlink() or path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(Path(folder) / name for folder, _, names in os.walk(path) for name in names)


def _relative(path: Path, root: Path) -> str:
    return PurePosixPath(path.relative_to(root)).as_posix()


def _read_state(partial: Path) -> dict | None:
    try:
        return json.loads((partial / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, value, scratch: Path) -> None:
    """Writes JSON to `path` through a temporary file in `scratch` (same file system) and a rename."""
    write_bytes_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode(), scratch)


def write_bytes_atomic(path: Path, data: bytes, scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=scratch, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class RunWriter:
    """Writes one process's share of one run (clean or degraded) into an unfinished run: mask PNGs, and a records
    line per finished prediction. Thread-safe: masks may be written by several threads at once.

    Args:
        folder: the prepared `OutputFolder`.
        spec: `None` for the clean run, else the degradation spec.
        process_index: this process's index; each process appends to its own records file.
    """

    def __init__(self, folder: OutputFolder, spec: str | None, process_index: int):
        self.folder = folder
        self.run_dir = folder.run_dir(spec)
        self.scratch = folder.partial / "tmp"
        records_dir = folder.records_dir(spec)
        path = records_dir / f"part-{process_index:05d}.jsonl"
        with writing(folder):
            for needed in (records_dir, self.run_dir / "masks", self.scratch):
                needed.mkdir(parents=True, exist_ok=True)
            _drop_torn_last_line(path)
            self._lines = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def mask_path(self, image_id: str) -> str:
        """The mask's path relative to the run's `predictions.jsonl`."""
        return f"masks/{mask_filename(image_id)}"

    def write_mask(self, image_id: str, mask: np.ndarray) -> str:
        """Writes a bool (H, W) mask as a 0/255 grayscale PNG (atomically); returns `mask_path(image_id)`.

        zlib level 1: a binary mask compresses well at any level, and level 1 encodes it several times faster.
        """
        relative = self.mask_path(image_id)
        with writing(self.folder):
            descriptor, temporary = tempfile.mkstemp(dir=self.scratch, suffix=".png")
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    Image.fromarray(mask.astype(np.uint8) * 255).save(handle, format="PNG", compress_level=1)
                os.replace(temporary, self.run_dir / relative)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        return relative

    def append(self, record: Mapping) -> None:
        """Records a finished prediction (after its mask is written), so that a resumed run skips it."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, writing(self.folder):
            self._lines.write(line)
            self._lines.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a failed flush was reported by `append` already
            self._lines.close()


def _drop_torn_last_line(path: Path) -> None:
    """Cuts a last line that a killed process left without its newline."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def load_finished(folder: OutputFolder, spec: str | None, image_ids: Iterable[str]) -> dict[str, dict]:
    """The finished predictions of a run recorded by any process, for the ids in `image_ids` (those whose mask file
    is in place). A line cut short by a kill is ignored."""
    wanted = set(image_ids)
    finished: dict[str, dict] = {}
    records_dir = folder.records_dir(spec)
    if not records_dir.is_dir():
        return finished
    run_dir = folder.run_dir(spec)
    for path in sorted(records_dir.glob("part-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            image_id = record.get("image_id")
            if image_id in wanted and image_id not in finished and (run_dir / record["mask"]).is_file():
                finished[image_id] = record
    return finished


def write_predictions(folder: OutputFolder, spec: str | None, records: Iterable[Mapping]) -> None:
    """Writes a run's `predictions.jsonl` (records in split order) into the staged outputs."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_bytes_atomic(folder.run_dir(spec) / "predictions.jsonl", lines.encode("utf-8"), folder.partial / "tmp")


def complete(folder: OutputFolder) -> None:
    """Marks the staged outputs complete (their manifest) and moves them into place (`install`)."""
    files = {name: size for name, size in files_in(folder.staged).items() if (folder.staged / name).is_file()}
    write_manifest(folder.staged, OWNER, files)
    install(folder)


def install(folder: OutputFolder) -> None:
    """Moves complete staged outputs into the folder, replacing the files an earlier run listed in its manifest.

    Idempotent, so that a run killed half-way through is finished by the next command: entries already moved are
    skipped, and the new manifest is copied into place last.
    """
    root, staged = folder.root, folder.staged
    new_files = read_manifest(staged) or set()
    old_files = read_manifest(root) or set()
    replaced = folder.partial / "replaced"
    new_names = {PurePosixPath(path).parts[0] for path in new_files}
    for name in sorted(new_names):
        if (staged / name).exists() or (staged / name).is_symlink():
            _move_owned(root / name, old_files, root, replaced)
            os.replace(staged / name, root / name)
    for path in sorted(old_files):
        if PurePosixPath(path).parts[0] not in new_names:
            _move_owned(root / path, old_files, root, replaced)
    manifest = next(staged / name for name in (MANIFEST_NAME, LEGACY_MANIFEST_NAME) if (staged / name).exists())
    write_bytes_atomic(root / MANIFEST_NAME, manifest.read_bytes(), folder.partial / "tmp")
    (root / LEGACY_MANIFEST_NAME).unlink(missing_ok=True)  # an earlier version's record, replaced by the line above
    shutil.rmtree(folder.partial)
    logger.info("Wrote the outputs into %s", root)


def _move_owned(target: Path, owned: set[str], root: Path, replaced: Path) -> None:
    """Moves the files under `target` that `owned` lists into `replaced`, then removes the folders left empty;
    raises `OutputFolderError` if `target` still holds anything (files the command did not write)."""
    if not (target.exists() or target.is_symlink()):
        return
    for path in _files_under(target):
        relative = _relative(path, root)
        if relative in owned and (path.is_file() or path.is_symlink()):
            destination = replaced / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
    if target.is_dir() and not target.is_symlink():
        for folder, _, _ in os.walk(target, topdown=False):  # deepest first
            with contextlib.suppress(OSError):  # not empty: it holds a file the command did not write
                os.rmdir(folder)
    if target.exists() or target.is_symlink():
        raise OutputFolderError(
            f"{target} holds files this command did not write; move them away and re-run the command to finish "
            "installing the new outputs"
        )
