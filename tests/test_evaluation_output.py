"""The evaluation output folder: safe mask file names, ownership, and a swap that survives being interrupted."""

from __future__ import annotations

import json
import os

import pytest

from forgerytalker.evaluation import output_folder
from forgerytalker.evaluation.output_folder import (
    MANIFEST_NAME,
    MAX_NAME_BYTES,
    OutputFolderError,
    check_output_folder,
    complete,
    mask_filename,
    prepare_output_folder,
)


def test_mask_file_names_are_readable_bounded_and_distinct():
    assert mask_filename("celeb512/00042") == "celeb512%2F00042.png"
    assert mask_filename(".hidden") == "%2Ehidden.png" and mask_filename("..") == "%2E..png"
    long_ids = ["顔" * 200 + "/a", "顔" * 200 + "/b", "x" * 500, "x" * 501]
    names = [mask_filename(image_id) for image_id in long_ids]
    assert len(set(names)) == len(names)
    assert all(len(name.encode()) <= MAX_NAME_BYTES and "+" in name for name in names)
    assert mask_filename("a+b") == "a%2Bb.png"  # a "+" in an id is encoded, so it never looks shortened


def finished_run(root, files: dict[str, str]) -> None:
    """A folder holding a finished run's `files` and the manifest listing them."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / MANIFEST_NAME).write_text(json.dumps({"files": sorted(files)}))


def test_an_interrupted_swap_is_finished_by_the_next_command(tmp_path, monkeypatch):
    root = tmp_path / "out"
    finished_run(root, {"metrics.json": "old", "masks/a.png": "old a", "masks/gone.png": "old", "degraded/x/p": "old"})
    (root / "notes.txt").write_text("the user's")
    folder = prepare_output_folder(root, {"model": "new"}, overwrite=True)
    new_files = {"metrics.json": "new", "masks/a.png": "new a", "masks/b.png": "new b", "predictions.jsonl": "new"}
    for name, text in new_files.items():
        (folder.staged / name).parent.mkdir(parents=True, exist_ok=True)
        (folder.staged / name).write_text(text)

    original, moved = os.replace, []

    def killed_after_two_entries(source, destination):
        if str(source).startswith(str(folder.staged)) and len(moved) == 2:
            raise KeyboardInterrupt  # the process dies in the middle of the swap
        if str(source).startswith(str(folder.staged)):
            moved.append(source)
        return original(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(output_folder.os, "replace", killed_after_two_entries)
        with pytest.raises(KeyboardInterrupt):
            complete(folder)
    check_output_folder(root, overwrite=True)  # the next command finishes the swap first
    on_disk = {str(path.relative_to(root)): path.read_text() for path in root.rglob("*") if path.is_file()}
    assert on_disk.pop(MANIFEST_NAME) and on_disk == {**new_files, "notes.txt": "the user's"}
    assert sorted(json.loads((root / MANIFEST_NAME).read_text())["files"]) == sorted(new_files)


def test_a_file_that_appears_during_the_run_is_never_deleted(tmp_path):
    root = tmp_path / "out"
    finished_run(root, {"masks/a.png": "old"})
    folder = prepare_output_folder(root, {"model": "new"}, overwrite=True)
    (folder.staged / "masks").mkdir(parents=True)
    (folder.staged / "masks" / "a.png").write_text("new")
    (root / "masks" / "added-meanwhile.png").write_text("the user's")
    with pytest.raises(OutputFolderError, match="did not write"):
        complete(folder)
    assert (root / "masks" / "added-meanwhile.png").read_text() == "the user's"
    (root / "masks" / "added-meanwhile.png").rename(tmp_path / "moved-away.png")
    check_output_folder(root, overwrite=True)  # once it is moved away, the swap completes
    assert (root / "masks" / "a.png").read_text() == "new" and not folder.partial.exists()


def test_output_names_holding_foreign_files_are_refused_before_anything_starts(tmp_path):
    root = tmp_path / "out"
    (root / "degraded" / "mine").mkdir(parents=True)
    (root / "degraded" / "mine" / "x.png").write_text("the user's")
    with pytest.raises(OutputFolderError, match="degraded/mine/x.png"):
        check_output_folder(root, overwrite=True)
    (root / "metrics.md").write_text("an older run without a manifest")
    with pytest.raises(OutputFolderError, match="did not write"):
        prepare_output_folder(root, {}, overwrite=True)
    assert not (root / ".evaluation-partial").exists()
