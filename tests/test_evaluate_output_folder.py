"""`forgerytalker evaluate` loses nothing (issue 10, issue 19): an earlier run is kept until the new one is
complete, an interrupted run resumes, the user's files in `--out` are never deleted, a second writer is refused,
and a bad `--out`, `--model` or `--device` exits with code 2 naming the flag."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from evaluate_runs import evaluate_arguments, output_files, read_predictions
from PIL import Image

from forgerytalker.cli import main
from forgerytalker.output_folder import MANIFEST_NAME


pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")


@pytest.fixture
def generated_images(monkeypatch) -> list[int]:
    """Counts the images every `generate` call of the model receives (one entry per call)."""
    from forgerytalker.modeling_forgerytalker import ForgeryTalkerForConditionalGeneration

    counts: list[int] = []
    original = ForgeryTalkerForConditionalGeneration.generate

    def counting(self, pixel_values, *args, **kwargs):
        counts.append(int(pixel_values.shape[0]))
        return original(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(ForgeryTalkerForConditionalGeneration, "generate", counting)
    return counts


def after_records(monkeypatch, count: int, error: BaseException) -> None:
    """Makes the run fail (raise `error`) once `count` predictions have been recorded as finished."""
    from forgerytalker.evaluation.output_folder import RunWriter

    original, recorded = RunWriter.append, []

    def append(self, record):
        if len(recorded) == count:
            raise error
        original(self, record)
        recorded.append(record["image_id"])

    monkeypatch.setattr(RunWriter, "append", append)


def error_line(stderr: str) -> str:
    """The command's `error: ...` line (progress bars of model loading may come before it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------- nothing lost (issue 10)


KILL_AFTER_TWO_RECORDS = """
import os, signal, sys
from forgerytalker.evaluation.output_folder import RunWriter
original, recorded = RunWriter.append, []
def append(self, record):
    if len(recorded) == 2:
        self._lines.write('{"image_id": "torn li')  # a kill in the middle of a line
        self._lines.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, record)
    recorded.append(record)
RunWriter.append = append
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_overwrite_keeps_the_earlier_run_until_the_new_one_is_complete(
    model_dir, tiny_dataset_dir, tmp_path, generated_images
):
    out = tmp_path / "out"
    # one thread named: by default the count follows the cores free at the time, and metrics.json records it
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1", "--num-threads", "1")
    assert main(arguments) == 0
    earlier = output_files(out)
    script = tmp_path / "killed_evaluate.py"
    script.write_text(KILL_AFTER_TWO_RECORDS)
    killed = subprocess.run([sys.executable, str(script), *arguments, "--overwrite"], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = out / ".evaluation-partial"
    unfinished = (".evaluation-partial/", ".forgerytalker-evaluate.lock")  # the killed run's, and its lock
    assert {name: data for name, data in output_files(out).items() if not name.startswith(unfinished)} == earlier
    assert "unfinished" in json.loads((partial / "state.json").read_text())["note"]

    generated_images.clear()
    assert main([*arguments, "--overwrite"]) == 0
    assert sum(generated_images) == 2  # the two finished predictions are not redone
    assert output_files(out) == earlier  # the resumed run equals the uninterrupted one, byte for byte
    assert not partial.exists()


def test_an_interrupted_run_resumes_and_refuses_other_settings(
    model_dir, tiny_dataset_dir, tmp_path, monkeypatch, generated_images, capsys
):
    out = tmp_path / "out"
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1")
    with monkeypatch.context() as patch:
        after_records(patch, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            main(arguments)
    assert not (out / "metrics.json").exists() and (out / ".evaluation-partial" / "state.json").exists()
    assert main([*arguments, "--max-new-tokens", "7"]) == 2
    error = capsys.readouterr().err
    assert "--out:" in error and "unfinished run made with other settings (max_new_tokens: " in error and "-> 7)" in error
    generated_images.clear()
    assert main(arguments) == 0  # the same command resumes, without --overwrite
    assert sum(generated_images) == 1
    assert len(read_predictions(out)) == 4 and len(list((out / "masks").iterdir())) == 4


def test_full_disk_exits_2_naming_out_and_the_rerun_resumes(
    model_dir, tiny_dataset_dir, tmp_path, monkeypatch, generated_images, capsys
):
    import errno

    out = tmp_path / "out"
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1")
    original_save, saved = Image.Image.save, []

    def save(self, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(1)
        return original_save(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", save)
        assert main(arguments) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: cannot write into") and "No space left on device" in error
    assert "re-run the same command to resume" in error and "Traceback" not in error
    generated_images.clear()
    assert main(arguments) == 0
    assert sum(generated_images) == 2


def test_the_users_own_files_in_out_are_never_deleted(model_dir, tiny_dataset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    for index in range(3):
        (out / "masks" / f"gt_{index}.png").write_bytes(b"ground truth")
    before = output_files(out)
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite")) == 2
    error = capsys.readouterr().err
    assert "--out:" in error and "holds files this command did not write (masks/gt_0.png" in error
    assert output_files(out) == before

    finished = tmp_path / "finished"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--limit", "2")) == 0
    (finished / "masks" / "notes.txt").write_text("mine")
    (finished / "my-notes.md").write_text("mine too")
    earlier = output_files(finished)
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--overwrite")) == 2
    assert "masks/notes.txt" in capsys.readouterr().err and output_files(finished) == earlier
    (finished / "masks" / "notes.txt").unlink()
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--overwrite")) == 0
    assert (finished / "my-notes.md").read_text() == "mine too" and len(read_predictions(finished)) == 4
    manifest = json.loads((finished / MANIFEST_NAME).read_text())["files"]
    assert sorted(manifest) == sorted(name for name in output_files(finished)
                                      if name not in ("my-notes.md", MANIFEST_NAME))


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(model_dir, tiny_dataset_dir, tmp_path, capsys):
    """Issue 19 (one output-folder policy): two evaluations into one --out mixed their unfinished runs."""
    from forgerytalker.output_folder import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    held = hold_lock(out, "forgerytalker evaluate")  # a first run, still writing
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: another forgerytalker evaluate is writing into")
    assert sorted(path.name for path in out.iterdir()) == [".forgerytalker-evaluate.lock"]  # nothing else begun
    held.close()
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 0


@pytest.mark.parametrize("entry", ["../notes.txt", "ABSOLUTE", "masks/../../notes.txt", "linked/notes.txt"])
def test_a_manifest_entry_outside_out_is_refused_and_nothing_is_deleted(
    model_dir, tiny_dataset_dir, tmp_path, capsys, entry
):
    """Issue 19 N1: a downloaded or edited output folder whose manifest lists a file outside `--out`."""
    out = tmp_path / "out"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    (tmp_path / "elsewhere").mkdir()
    (out / "linked").symlink_to(tmp_path)  # a folder inside --out that leads out of it
    entry = str(notes) if entry == "ABSOLUTE" else entry
    manifest_path = out / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][entry] = notes.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    before = output_files(out)

    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: ") and str(manifest_path) in error and repr(entry) in error
    assert notes.read_text() == "the user's notes" and output_files(out) == before


def test_bad_out_model_and_device_arguments_exit_2_naming_the_flag(model_dir, tiny_dataset_dir, tmp_path, capsys):
    import torch

    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    cases = [
        (a_file, (), "--out: ", "is a file, not a folder"),
        (a_file / "sub", (), "--out: cannot create", "is a file, not a folder"),
        (tmp_path / "d", ("--device", "quantum"), "--device: ", "not a torch device"),
    ]
    if not torch.cuda.is_available():
        cases.append((tmp_path / "c", ("--device", "cuda"), "--device: CUDA is not available", "--device cpu"))
    for out, extra, start, detail in cases:
        assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, *extra)) == 2, start
        stderr = capsys.readouterr().err
        assert error_line(stderr).startswith(f"error: {start}") and detail in stderr and "Traceback" not in stderr
    damaged = tmp_path / "damaged-model"
    shutil.copytree(model_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(evaluate_arguments(damaged, tiny_dataset_dir, tmp_path / "m")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --model: the weights in") and "damaged or incomplete" in error
    assert not any((tmp_path / name).exists() for name in "cdm")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written into: chmod for ordinary users, a read-only tmpfs for root."""
    import os

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_out_exits_2_naming_out(model_dir, tiny_dataset_dir, read_only_folder, capsys):
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, read_only_folder / "out")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: cannot write in") and "read-only" in error
