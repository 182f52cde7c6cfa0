"""`forgerytalker data convert` never deletes or hides what it did not write (issue 10, issue 19): overwrites,
manifests listing files outside `--out`, a second writer, a kill between the renames of an overwrite, a
read-only `--out`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from failure_conditions import read_only
from mmtt_folders import folder_files, run_convert_cli

from forgerytalker.data import mmtt
from forgerytalker.data.errors import DataInputError
from forgerytalker.data.mmtt import convert_mmtt
from forgerytalker.data.mmtt_publish import REPORT_FILE

pytestmark = pytest.mark.usefixtures("offline_hf_cache")


def test_overwrite_deletes_only_what_the_converter_wrote(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    before = folder_files(out)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "extra.parquet").write_bytes(b"mine too")
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds files the converter did not write (data/extra.parquet, notes.txt)" in err and "nothing was deleted" in err
    assert folder_files(out) == {**before, "notes.txt": b"mine", "data/extra.parquet": b"mine too"}

    (out / "notes.txt").unlink()
    (out / "data" / "extra.parquet").unlink()
    (out / "README.md").write_text("my edited card")  # a listed file the user changed is not the converter's any more
    with pytest.raises(DataInputError, match=r"did not write \(README.md\)"):
        convert_mmtt(mmtt_root, out, overwrite=True)

    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / REPORT_FILE).write_text("{}")
    (lookalike / "keep.txt").write_text("mine")
    with pytest.raises(DataInputError, match="is not a folder written by the converter"):
        convert_mmtt(mmtt_root, lookalike, overwrite=True)
    assert (lookalike / "keep.txt").read_text() == "mine"

    (out / "README.md").write_bytes(before["README.md"])
    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    assert "data/test-00000-of-00001.parquet" in folder_files(out)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize("entry", ["../x", "ABSOLUTE", "data/../../x", "linked/x"])
def test_a_report_entry_outside_out_is_refused_and_nothing_is_deleted(mmtt_root, tmp_path, capsys, entry):
    """Issue 19 N2: `conversion_report.json` (downloaded or edited) lists `../x`, an absolute path or a path through a
    link leading out of the folder; `--overwrite` deleted those files."""
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    outside = tmp_path / "x"
    outside.write_text("the user's file")
    (out / "linked").symlink_to(tmp_path)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    report = json.loads((out / REPORT_FILE).read_text())
    report["files"][entry] = len("the user's file")
    report["files"]["linked"] = (out / "linked").lstat().st_size  # the link itself is listed, so only the entry is odd
    (out / REPORT_FILE).write_text(json.dumps(report))
    before = folder_files(out)

    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert str(out / REPORT_FILE) in err and repr(entry) in err and "nothing was deleted" in err
    assert outside.read_text() == "the user's file" and folder_files(out) == before


def test_a_second_conversion_into_the_same_out_is_refused_while_the_first_writes(mmtt_root, tmp_path, capsys):
    """Issue 19 (one output-folder policy): two conversions into one --out shared `.out.partial` and its shards."""
    from forgerytalker.output_folder import hold_lock

    out = tmp_path / "out"
    held = hold_lock(out, mmtt.CONVERTER.command, beside=True)  # a first conversion, still writing
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 2
    assert f"error: --out: another forgerytalker data convert is writing into {out}" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
    held.close()
    Path(held.name).unlink()
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # its lock is gone


def test_a_kill_between_the_renames_of_overwrite_leaves_no_hidden_copy(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    old = folder_files(out)
    renames = []
    real_rename = os.rename

    def killed_at_the_second_rename(source, target):
        renames.append((Path(source).name, Path(target).name))
        if len(renames) == 2:
            raise KeyboardInterrupt  # the process stops here: no clean-up of ours runs
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    monkeypatch.undo()
    assert renames == [("out", ".out.replaced"), (".out.partial", "out")]
    assert not out.exists() and folder_files(tmp_path / ".out.replaced") == old  # the window the issue found

    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    fresh = tmp_path / "fresh"
    convert_mmtt(mmtt_root, fresh, test_fraction=0.5)
    assert folder_files(out) == folder_files(fresh)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []

    # killed after both renames, before the old copy was deleted: the next run deletes it
    monkeypatch.setattr(mmtt, "publish", lambda staging, output: (real_rename(output, tmp_path / ".out.replaced"),
                                                                   real_rename(staging, output), sys.exit(1)))  # fmt: skip
    with pytest.raises(SystemExit):
        convert_mmtt(mmtt_root, out, overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / ".out.replaced").exists()
    with pytest.raises(DataInputError, match="already exists"):
        convert_mmtt(mmtt_root, out)
    assert not (tmp_path / ".out.replaced").exists()


def test_read_only_out_is_refused(mmtt_root, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(locked / "out")]) == 2
        assert capsys.readouterr().err.startswith(f"error: --out: cannot write in {locked}")
