"""`forgerytalker data convert` interrupted: killed mid-conversion, a worker killed, the parent killed, a full
disk, the record files changed in between; the same command resumes and redoes only what is unfinished."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys

import pyarrow.parquet as pq
import pytest
from failure_conditions import run_in_child
from mmtt_folders import folder_files, load_converted, run_convert_cli, write_records
from worker_deaths import workers_left_after_killing_the_parent

from forgerytalker.data import mmtt
from forgerytalker.data.errors import WorkerDiedError
from forgerytalker.data.mmtt import convert_mmtt

pytestmark = pytest.mark.usefixtures("offline_hf_cache")


def test_resume_after_a_kill_mid_conversion_redoes_only_unfinished_shards(mmtt_root, tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    convert_mmtt(mmtt_root, uninterrupted, shard_size=4)
    out = tmp_path / "out"
    original = mmtt.load_example

    def killed_in_the_third_shard(planned, *args):
        if planned.index == 9:  # train shard 2 holds records 8..11
            os.kill(os.getpid(), signal.SIGKILL)
        return original(planned, *args)

    monkeypatch.setattr(mmtt, "load_example", killed_in_the_third_shard)
    assert run_in_child(lambda: convert_mmtt(mmtt_root, out, shard_size=4)) == -signal.SIGKILL
    staging = tmp_path / ".out.partial"
    assert not out.exists()
    assert sorted(path.name for path in (staging / "data").iterdir()) == [
        "train-00000-of-00004.parquet",
        "train-00001-of-00004.parquet",
        "train-00002-of-00004.parquet.tmp",
    ]
    monkeypatch.undo()
    converted = []
    monkeypatch.setattr(mmtt, "load_example", lambda planned, *args: converted.append(planned.index) or original(planned, *args))
    convert_mmtt(mmtt_root, out, shard_size=4)
    assert converted == [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2]  # train shards 2-3, then validation
    assert folder_files(out) == folder_files(uninterrupted)
    assert not staging.exists()


def test_a_changed_record_file_starts_the_conversion_over(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(mmtt, "publish", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        convert_mmtt(mmtt_root, out, shard_size=4)
    monkeypatch.undo()
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text())
    records[0]["caption"] = "The lips are too red."
    write_records(mmtt_root / "train-mutilabel-simple.json", records)
    convert_mmtt(mmtt_root, out, shard_size=4)
    assert load_converted(out, "train")[0]["caption"] == "The lips are too red."


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

    assert run_in_child(child) == 3
    message = message_file.read_text()
    assert "shard data/train-00003-of-00004.parquet (train-mutilabel-simple.json[12] to [15])" in message
    assert "run the same command again to resume" in message
    monkeypatch.undo()
    convert_mmtt(mmtt_root, out, shard_size=4, num_proc=2)
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert folder_files(out) == folder_files(tmp_path / "fresh")


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_pool_workers_die_with_their_parent_killed_by_sigkill(mmtt_root, tmp_path):
    """Issue 19 F18: the parent of `data convert --num-proc 2` killed with SIGKILL left its workers running."""
    arguments = ["data", "convert", "--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out"), "--num-proc", "2",
                 "--shard-size", "4", "--no-progress"]
    assert workers_left_after_killing_the_parent(arguments, tmp_path) == []


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
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write: No space left on device; finished shards are kept in")
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 0
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert folder_files(out) == folder_files(tmp_path / "fresh")

    from forgerytalker.data import output_folders

    monkeypatch.setattr(output_folders.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "tiny_disk")]) == 2
    assert "--out: " in (err := capsys.readouterr().err) and "needs about" in err and "GB free" in err
