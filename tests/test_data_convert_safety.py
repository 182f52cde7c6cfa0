"""`forgerytalker data convert`: nothing lost and nothing silently wrong (issue 10): overwrites, kills, damaged
images, decompression bombs, bad arguments and full disks."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest

from forgerytalker.data import mmtt
from forgerytalker.data.errors import DataInputError, WorkerDiedError
from forgerytalker.data.mmtt import convert_mmtt
from forgerytalker.data.mmtt_publish import REPORT_FILE

from mmtt_folders import (  # noqa: F401  (offline_hf_cache is an autouse fixture)
    offline_hf_cache,
    _save,
    _pixels,
    _image,
    _mask_pixels,
    _mask,
    _record,
    _write,
    mmtt_root,
    _files,
    _run_cli,
    _in_child,
    _load,
    MAT,
    EYES_NOSE,
)


def test_overwrite_deletes_only_what_the_converter_wrote(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    before = _files(out)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "extra.parquet").write_bytes(b"mine too")
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds files the converter did not write (data/extra.parquet, notes.txt)" in err and "nothing was deleted" in err
    assert _files(out) == {**before, "notes.txt": b"mine", "data/extra.parquet": b"mine too"}

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
    assert "data/test-00000-of-00001.parquet" in _files(out)
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
    before = _files(out)

    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert str(out / REPORT_FILE) in err and repr(entry) in err and "nothing was deleted" in err
    assert outside.read_text() == "the user's file" and _files(out) == before


def test_a_kill_between_the_renames_of_overwrite_leaves_no_hidden_copy(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    old = _files(out)
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
    assert not out.exists() and _files(tmp_path / ".out.replaced") == old  # the window the issue found

    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    fresh = tmp_path / "fresh"
    convert_mmtt(mmtt_root, fresh, test_fraction=0.5)
    assert _files(out) == _files(fresh)
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


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_truncated_images_and_masks_are_skipped_as_unreadable(tmp_path):
    root = tmp_path / "mine"
    whole = _jpeg(_pixels(0))
    (root / "images").mkdir(parents=True)
    (root / "images" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with PIL.Image.open(root / "images" / "cut.jpg") as image:
        image.verify()  # Pillow's verify does not notice
    _image(root, "images/good.png", 1)
    _mask(root, "masks/good.png")
    mask = (root / "masks" / "good.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(mask[: len(mask) - 20])
    _write(root / "train-mutilabel-simple.json", [
        _record("cut_image", "images/cut.jpg", "masks/good.png", EYES_NOSE),
        _record("cut_mask", "images/good.png", "masks/cut.png", EYES_NOSE),
        _record("good", "images/good.png", "masks/good.png", EYES_NOSE),
    ])  # fmt: skip
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [
        ("cut_image", "unreadable_image"),
        ("cut_mask", "unreadable_mask"),
    ]
    assert "image file images/cut.jpg: the picture cannot be decoded" in result.bad_records[0].message
    assert "truncated" in result.bad_records[0].message


def test_exif_rotated_images_are_checked_against_their_mask_as_displayed(tmp_path):
    root = tmp_path / "mine"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 40 wide × 20 high, displayed 20 × 40
    (root / "images").mkdir(parents=True)
    (root / "images" / "phone.jpg").write_bytes(_jpeg(_pixels(0, 40, 20), exif=exif.tobytes()))
    _save(root / "masks" / "displayed.png", _mask_pixels(True, 20, 40), "L")
    _save(root / "masks" / "stored.png", _mask_pixels(True, 40, 20), "L")
    _save(root / "masks" / "tagged.png", _mask_pixels(True, 40, 20), "L", exif=exif.tobytes())
    _write(root / "train-mutilabel-simple.json", [
        _record("as_displayed", "images/phone.jpg", "masks/displayed.png", EYES_NOSE),
        _record("as_stored", "images/phone.jpg", "masks/stored.png", EYES_NOSE),
        _record("mask_tagged_too", "images/phone.jpg", "masks/tagged.png", EYES_NOSE),
    ])  # fmt: skip
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [("as_stored", "mask_size_mismatch")]
    assert "mask masks/stored.png is 40x20 but its image is 20x40" in result.bad_records[0].message
    for row in _load(tmp_path / "out", "train"):
        assert row["image"].size == row["mask"].size == (20, 40)


def test_a_killed_worker_is_an_error_naming_the_shard_and_the_rerun_resumes(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = mmtt.load_example

    def oom_killed(planned, *args):
        if planned.image_id == "mat_0004":  # train shard 3 (records 12..15)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(planned, *args)

    monkeypatch.setattr(mmtt, "load_example", oom_killed)
    message_file = tmp_path / "message.txt"

    def child():
        try:
            convert_mmtt(mmtt_root, out, shard_size=4, num_proc=2)
        except WorkerDiedError as error:
            message_file.write_text(str(error))
            sys.exit(3)

    assert _in_child(child) == 3
    message = message_file.read_text()
    assert "shard data/train-00003-of-00004.parquet (train-mutilabel-simple.json[12] to [15])" in message
    assert "run the same command again to resume" in message
    monkeypatch.undo()
    convert_mmtt(mmtt_root, out, shard_size=4, num_proc=2)
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert _files(out) == _files(tmp_path / "fresh")


SLOW_WORKERS = """
import os, sys, time
from forgerytalker.data import workers

def slow(index, task):
    open(os.path.join(os.environ["WORKER_PIDS"], str(os.getpid())), "w").close()
    time.sleep(120)

workers._run_in_worker = slow
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie waits only to be reaped


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_pool_workers_die_with_their_parent_killed_by_sigkill(mmtt_root, tmp_path):
    """Issue 19 F18: the parent of `data convert --num-proc 2` killed with SIGKILL left its workers running."""
    import time

    script, pids = tmp_path / "convert_with_slow_workers.py", tmp_path / "pids"
    script.write_text(SLOW_WORKERS)
    pids.mkdir()
    command = [sys.executable, str(script), "data", "convert", "--mmtt-root", str(mmtt_root), "--out",
               str(tmp_path / "out"), "--num-proc", "2", "--shard-size", "4", "--no-progress"]
    parent = subprocess.Popen(command, env=dict(os.environ, WORKER_PIDS=str(pids)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    workers = [int(path.name) for path in pids.iterdir()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header announces width × height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_skipped_records_and_the_limit_is_a_flag(mmtt_root, tmp_path, capsys):
    (mmtt_root / MAT / "bomb.png").write_bytes(_bomb_png(12_000, 12_000))
    (mmtt_root / MAT / "masks" / "bomb.png").write_bytes(_bomb_png(30_000, 30_000))  # over Pillow's own limit too
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text())
    records.append(_record("bomb", f"{MAT}/bomb.png", f"{MAT}/masks/0001.png", EYES_NOSE))
    records.append(_record("mask_bomb", f"{MAT}/0001.png", f"{MAT}/masks/bomb.png", EYES_NOSE))
    _write(mmtt_root / "train-mutilabel-simple.json", records)
    result = convert_mmtt(mmtt_root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records[-3:-1]] == [
        ("bomb", "image_too_large"),
        ("mask_bomb", "mask_too_large"),
    ]
    assert "12000×12000 = 144,000,000 pixels is over the limit of 100,000,000 pixels (refused before decoding" in (
        result.bad_records[-3].message
    )
    assert "is over the limit of 100,000,000 pixels" in result.bad_records[-2].message
    assert result.num_examples == {"train": 6, "validation": 2}  # the good records of the run are kept

    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "small"), "--max-image-pixels", "1000"]) == 2
    assert "None of the 21 records is valid" in capsys.readouterr().err
    report = convert_mmtt(mmtt_root, tmp_path / "limit", max_image_pixels=20_000).bad_records
    assert "is over the limit of 20,000" in report[-3].message


def test_corrupt_or_non_utf8_split_files_are_named_with_their_line(mmtt_root, tmp_path, capsys):
    split_file = mmtt_root / "train-mutilabel-simple.json"
    split_file.write_bytes(b'[\n  {"image_id": "a",\n   "caption": "caf\xe9"}\n]\n')
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {split_file}: line 3, column 19: not UTF-8 text (byte 0xe9)\n"
    split_file.write_text('[\n  {"image_id": "a",\n   "caption": "x" "y"}\n]\n')
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {split_file}: line 3, column 19: Expecting ',' delimiter\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shard-size", "0"], "--shard-size: must be a whole number of at least 1, got 0"),
        (["--num-proc", "0"], "--num-proc: must be a whole number of at least 1, got 0"),
        (["--max-image-pixels", "-5"], "--max-image-pixels: must be a whole number of at least 1, got -5"),
        (["--test-split", "--test-fraction", "1.5"], "--test-fraction: must be between 0 and 1, got 1.5"),
    ],
)
def test_bad_arguments_are_rejected_up_front_naming_the_flag(mmtt_root, tmp_path, capsys, arguments, message):
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out"), *arguments]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_missing_dataset_and_unusable_out_are_rejected_naming_the_flag(mmtt_root, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for argv, message in [
        (["--mmtt-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], "--mmtt-root: no such folder"),
        (["--mmtt-root", str(mmtt_root), "--out", str(a_file)], f"--out: {a_file} is a file, not a folder"),
        (["--mmtt-root", str(mmtt_root), "--out", str(a_file / "out")], f"--out: cannot create {a_file / 'out'}: {a_file} is a file"),
    ]:  # fmt: skip
        assert _run_cli(argv) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")


@contextlib.contextmanager
def _read_only(folder: Path):
    """Makes `folder` unwritable for this process: permission bits, or for root (whom they do not stop) the
    immutable attribute; skips the test where neither is available."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without `chattr +i`: nothing here can make a folder read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_out_is_refused(mmtt_root, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    with _read_only(locked):
        assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(locked / "out")]) == 2
        assert capsys.readouterr().err.startswith(f"error: --out: cannot write in {locked}")


def test_full_disk_names_out_keeps_finished_shards_and_the_rerun_resumes(mmtt_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    tables = []
    original = pq.ParquetWriter.write_table

    def fill_up(writer, table, *args, **kwargs):
        tables.append(table.num_rows)
        if len(tables) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(writer, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fill_up)
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write: No space left on device; finished shards are kept in")
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 0
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert _files(out) == _files(tmp_path / "fresh")

    from forgerytalker.data import output_folders

    monkeypatch.setattr(output_folders.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "tiny_disk")]) == 2
    assert "--out: " in (err := capsys.readouterr().err) and "needs about" in err and "GB free" in err
