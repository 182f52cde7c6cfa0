"""The one output-folder policy (`forgerytalker.output_folder`) that every command follows (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgerytalker.output_folder import (
    MANIFEST_NAME,
    FolderLockedError,
    ForeignFilesError,
    Owner,
    check_no_foreign,
    check_replaceable,
    file_fingerprint,
    foreign_files,
    hold_lock,
    read_manifest,
    recover_swap,
    staging,
    write_folder,
    write_manifest,
)

TEST = Owner("forgerytalker test")


def contents(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def written(folder: Path, files: dict[str, str], owner: Owner = TEST) -> Path:
    """A folder as `owner` leaves it: `files` and the manifest listing them."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    write_manifest(folder, owner)
    return folder


def write_into(files: dict[str, str]):
    def write(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)

    return write


def test_a_foreign_file_is_named_and_never_replaced_with_or_without_overwrite(tmp_path):
    out = written(tmp_path / "out", {"model.bin": "old", "sub/a.txt": "old"})
    (out / "thesis.tex").write_text("mine")
    (out / "sub" / "a.txt").write_text("edited by hand")  # listed, but no longer the size the command wrote
    assert foreign_files(out, TEST) == ["sub/a.txt", "thesis.tex"]
    for overwrite in (False, True):
        with pytest.raises(ForeignFilesError, match=r"already exists|did not write \(sub/a.txt, thesis.tex\)"):
            write_folder(out, write_into({"model.bin": "new"}), TEST, overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "mine" and (out / "model.bin").read_text() == "old"
    with pytest.raises(ForeignFilesError, match="thesis.tex"):
        check_no_foreign(out, TEST, ["thesis.tex"])
    check_no_foreign(out, TEST, ["model.bin"])  # only where the command would write

    mine = tmp_path / "mine"  # a folder no command wrote
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFilesError, match="was not written by `forgerytalker test`"):
        write_folder(mine, write_into({"a": "b"}), TEST, overwrite=True)
    assert contents(mine) == {"notes.txt": b"mine"}
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_overwrite_replaces_a_folder_of_the_commands_own_files_only(tmp_path):
    other = written(tmp_path / "other", {"model.bin": "another command's"}, Owner("forgerytalker other"))
    with pytest.raises(ForeignFilesError, match="was not written by `forgerytalker test`"):  # one command never
        write_folder(other, write_into({"model.bin": "new"}), TEST, overwrite=True)  # replaces another's folder
    assert (other / "model.bin").read_text() == "another command's"
    out = written(tmp_path / "out", {"model.bin": "old", "gone.txt": "old"})
    write_folder(out, write_into({"model.bin": "new", "deep/x": "new"}), TEST, overwrite=True)
    assert contents(out).keys() == {"model.bin", "deep/x", MANIFEST_NAME}
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["created_by"] == "forgerytalker test" and manifest["files"] == {"deep/x": 3, "model.bin": 3}
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("entry", ["../outside.txt", "ABSOLUTE", "sub/../../outside.txt", "linked/outside.txt"])
@pytest.mark.parametrize("record", [MANIFEST_NAME, "evaluation_manifest.json", "conversion_report.json"])
def test_a_stale_manifest_entry_outside_the_folder_is_refused_and_nothing_deleted(tmp_path, entry, record):
    """A downloaded or edited folder whose record (this version's or an earlier one's) lists a file outside it."""
    outside = tmp_path / "outside.txt"
    outside.write_text("the user's")
    out = written(tmp_path / "out", {"model.bin": "old"})
    (out / "linked").symlink_to(tmp_path)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    listing = json.loads((out / MANIFEST_NAME).read_text())["files"] if record == MANIFEST_NAME else {}
    listing[entry] = outside.stat().st_size
    files = sorted(listing) if record == "evaluation_manifest.json" else listing
    (out / record).write_text(json.dumps({"files": files}))
    before = contents(out)
    owner = Owner("forgerytalker test", legacy_records=("evaluation_manifest.json", "conversion_report.json"))
    for attempt in (lambda folder: read_manifest(folder, owner), lambda folder: foreign_files(folder, owner),
                    lambda folder: check_replaceable(folder, owner, overwrite=True)):
        with pytest.raises(ForeignFilesError) as caught:
            attempt(out)
        assert str(out / record) in str(caught.value) and repr(entry) in str(caught.value)
        assert "nothing was deleted" in str(caught.value)
    with pytest.raises(ForeignFilesError):
        write_folder(out, write_into({"model.bin": "new"}), owner, overwrite=True)
    assert outside.read_text() == "the user's" and contents(out) == before


def test_the_records_of_earlier_versions_are_read(tmp_path):
    evaluation = tmp_path / "evaluation"
    (evaluation / "masks").mkdir(parents=True)
    (evaluation / "masks" / "a.png").write_text("mask")
    (evaluation / "evaluation_manifest.json").write_text(json.dumps({"files": ["masks/a.png"]}))
    record_size = (evaluation / "evaluation_manifest.json").stat().st_size
    evaluate = Owner("forgerytalker evaluate", legacy_records=("evaluation_manifest.json",))
    assert read_manifest(evaluation, evaluate) == {"masks/a.png": None, "evaluation_manifest.json": record_size}
    assert foreign_files(evaluation, evaluate) == []
    assert read_manifest(evaluation, Owner("forgerytalker analyze")) is None  # only the command's own records
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "README.md").write_text("card")
    (converted / "conversion_report.json").write_text(json.dumps({"files": {"README.md": 4}}))
    converter = Owner("forgerytalker data convert", legacy_records=("conversion_report.json",))
    assert foreign_files(converted, converter) == []
    (converted / "README.md").write_text("edited card")
    assert foreign_files(converted, converter) == ["README.md"]
    assert foreign_files(evaluation, converter) == ["evaluation_manifest.json", "masks/a.png"]  # not its record


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from forgerytalker.output_folder import hold_lock; "
         f"lock = hold_lock({str(out)!r}, 'forgerytalker analyze'); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderLockedError, match=f"another forgerytalker analyze is writing into {out}"):
            hold_lock(out, "forgerytalker analyze")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    hold_lock(out, "forgerytalker analyze").close()  # released when its process ended, however it ended
    assert sorted(path.name for path in out.iterdir()) == [".forgerytalker-analyze.lock"]
    assert foreign_files(out, TEST) == []  # the lock is the policy's own bookkeeping, never a foreign file


def test_an_interrupted_staging_is_cleaned_up_and_an_interrupted_swap_restored(tmp_path, monkeypatch):
    out = written(tmp_path / "out", {"model.bin": "old"})
    old = contents(out)

    def killed_while_writing(folder: Path) -> None:
        (folder / "model.bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(out, killed_while_writing, TEST, overwrite=True)
    assert contents(out) == old and not (tmp_path / ".out.partial").exists()

    (tmp_path / ".out.partial").mkdir()  # what a SIGKILL while writing leaves: cleared by the next run
    (tmp_path / ".out.partial" / "model.bin").write_text("half")
    renames, real_rename = [], os.rename

    def killed_at_the_second_rename(source, target):
        renames.append((Path(source).name, Path(target).name))
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(staging.os, "rename", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        write_folder(out, write_into({"model.bin": "new"}), TEST, overwrite=True)
    monkeypatch.undo()
    assert renames == [("out", ".out.replaced"), (".out.partial", "out")] and not out.exists()
    recover_swap(out, TEST)  # the next run puts the complete old folder back first
    assert contents(out) == old
    write_folder(out, write_into({"model.bin": "new"}), TEST, overwrite=True)
    assert (out / "model.bin").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_a_file_is_fingerprinted_by_its_content_not_its_name_or_size(tmp_path):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"A" * 100)
    first = file_fingerprint(photo)
    assert first["size"] == 100 and file_fingerprint(photo) == first
    time.sleep(0.01)
    photo.write_bytes(b"B" * 100)  # same name, same size, another picture
    assert file_fingerprint(photo) != first and file_fingerprint(tmp_path / "missing.jpg") is None


def test_a_resumed_run_is_refused_naming_each_setting_that_differs():
    from forgerytalker.output_folder import changed_settings

    earlier = {"seed": 3, "model_weights": "a" * 64, "dropped": 1, "logging_steps": 10}
    now = {"seed": 4, "model_weights": "b" * 64, "added": True, "logging_steps": 5}
    changes = changed_settings(earlier, now, ignore=("logging_steps",))
    assert changes[:2] == ["added: None -> True", "dropped: 1 -> None"] and changes[3] == "seed: 3 -> 4"
    assert changes[2].startswith("model_weights: 'aaaa") and len(changes[2]) < 120  # long values shortened
    assert changed_settings(earlier, now, ignore=("logging_steps", "model_weights"), only_recorded=True) == ["seed: 3 -> 4"]
    assert changed_settings(earlier, dict(earlier)) == []
