"""`forgerytalker analyze` and `forgerytalker.analyze` with a tiny saved model, loaded the way a user loads one."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_image
from launching import launch_processes
from PIL import Image

import forgerytalker
from forgerytalker import REGION_NAMES
from forgerytalker.analysis import outputs as analysis_outputs
from forgerytalker.analysis import runner as analysis_runner
from forgerytalker.analysis.side_process import LONG_RUN_PHOTOS
from forgerytalker.cli import main
from forgerytalker.image_utils import ImageReadError

MAX_NEW_TOKENS = ["--max-new-tokens", "4"]
RECORD_FIELDS = {
    "record_version": int,
    "status": str,
    "image": str,
    "width": int,
    "height": int,
    "report": str,
    "regions": list,
    "region_probabilities": dict,
    "instruction_regions": list,
    "mask_area_fraction": float,
    "mask_confidence": float,
    "manipulation_score": float,
    "manipulated": bool,
    "manipulation_score_rule": str,
    "mask_threshold": float,
    "region_threshold": float,
    "faces": int,
    "face_mode": str,
    "face_analyses": list,
    "warnings": list,
    "model": str,
    "forgerytalker_version": str,
    "outputs": dict,
}


@pytest.fixture(scope="module")
def checkpoint(saved_tiny_checkpoint):
    return saved_tiny_checkpoint


@pytest.fixture
def photos(tmp_path, face_photos_dir) -> Path:
    """A folder of three photos (two faces, one noise picture of an odd size) and a sub-folder with one more."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(face_photos_dir / "astronaut.png", folder / "astronaut.png")
    Image.open(face_photos_dir / "grace_hopper.jpg").resize((240, 300)).save(folder / "grace.jpg")
    random_image(3, 45, 70).save(folder / "noise.png")
    random_image(4, 64, 48).save(folder / "sub" / "noise.png")
    return folder


def run_cli(*arguments: str, capsys) -> tuple[int, str, str]:
    code = main(["analyze", *arguments, "--no-progress", "--num-threads", "1", *MAX_NEW_TOKENS])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def inside_faces(record: dict) -> np.ndarray:
    """bool `(H, W)`: the photo pixels that some analysed face's aligned crop covers (everything for a whole picture)."""
    if record["face_mode"] == "whole":
        return np.ones((record["height"], record["width"]), dtype=bool)
    ys, xs = np.mgrid[: record["height"], : record["width"]]
    inside = np.zeros(xs.shape, dtype=bool)
    for face in record["face_analyses"]:
        matrix = np.asarray(face["matrix"]).reshape(2, 3)
        u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
        v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
        inside |= (u > -1) & (v > -1) & (u < face["crop_size"]) & (v < face["crop_size"])
    return inside


def check_record(record: dict, out: Path, photo: Path) -> None:
    for key, kind in RECORD_FIELDS.items():
        assert isinstance(record[key], kind), (key, record[key])
    assert record["status"] == "ok"
    assert list(record["region_probabilities"]) == list(REGION_NAMES)
    assert record["regions"] == [name for name, p in record["region_probabilities"].items() if p > record["region_threshold"]]
    assert record["manipulation_score"] == max(record["region_probabilities"].values())
    assert record["manipulated"] == (record["manipulation_score"] > record["region_threshold"])
    with Image.open(photo) as original:
        size = original.size
    assert (record["width"], record["height"]) == size
    with Image.open(out / record["outputs"]["mask"]) as mask:
        assert mask.mode == "L" and mask.size == size
        forged = np.asarray(mask) > 0
    assert set(np.unique(np.asarray(Image.open(out / record["outputs"]["mask"])))) <= {0, 255}
    assert record["mask_area_fraction"] == pytest.approx(forged.mean())
    assert not forged[~inside_faces(record)].any()  # 0 outside every analysed face
    if record["face_mode"] != "whole":
        faces = record["face_analyses"]
        assert [face["face"] for face in faces] == list(range(1, len(faces) + 1)) and len(faces) <= record["faces"]
        assert record["manipulation_score"] == max(face["manipulation_score"] for face in faces)
        for face in faces:
            assert face["manipulation_score"] == max(face["region_probabilities"].values())
            assert face["regions"] == [n for n, p in face["region_probabilities"].items() if p > record["region_threshold"]]
    if forged.any():
        rows, columns = np.flatnonzero(forged.any(1)), np.flatnonzero(forged.any(0))
        assert record["mask_bbox"] == [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]
    else:
        assert record["mask_bbox"] is None
    with Image.open(out / record["outputs"]["overlay"]) as figure:
        assert figure.format == "PNG" and figure.width > 512
    assert json.loads((out / record["outputs"]["record"]).read_text()) == record


def test_files_a_folder_and_a_glob(tmp_path, checkpoint, photos, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        str(photos / "astronaut.png"), str(photos / "sub"), str(photos / "*.jpg"), "--model", str(checkpoint),
        "--out", str(out), "--batch-size", "2", "--json", capsys=capsys,
    )
    assert code == 0, stderr
    records = records_of(out)
    expected = [photos / "astronaut.png", photos / "sub" / "noise.png", photos / "grace.jpg"]
    assert [record["image"] for record in records] == [str(path) for path in expected]
    assert [record["outputs"]["record"] for record in records] == ["astronaut.png.json", "sub/noise.png.json", "grace.jpg.json"]
    for record, path in zip(records, expected):
        check_record(record, out, path)
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(r["image"] for r in printed) == sorted(r["image"] for r in records)
    assert [record["faces"] for record in records] == [1, 0, 1]
    assert [record["face_mode"] for record in records] == ["every", "whole", "every"]
    assert [len(record["face_analyses"]) for record in records] == [1, 0, 1]
    assert "no face" in records[1]["warnings"][0] and records[0]["warnings"] == []
    assert json.loads((out / "run.json").read_text())["model"] == str(checkpoint)


@pytest.mark.parametrize("failing", [False, True], ids=["returns", "raises"])
def test_num_threads_holds_during_the_run_and_is_restored_after(tmp_path, checkpoint, photos, capsys, monkeypatch, failing):
    import torch

    real_run_analysis = analysis_runner.run_analysis
    seen = []

    def spying_run_analysis(*args, **kwargs):
        seen.append(torch.get_num_threads())
        if failing:
            raise RuntimeError("the run fails half-way")
        return real_run_analysis(*args, **kwargs)

    monkeypatch.setattr(analysis_runner, "run_analysis", spying_run_analysis)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        arguments = ["analyze", str(photos / "astronaut.png"), "--model", str(checkpoint), "--out", str(tmp_path / "out"),
                     "--no-progress", "--num-threads", str(wanted), *MAX_NEW_TOKENS]
        if failing:
            with pytest.raises(RuntimeError, match="half-way"):
                main(arguments)
        else:
            assert main(arguments) == 0, capsys.readouterr().err
        assert seen == [wanted]
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


SPY_ON_TORCH_IMPORT = """
import builtins, os, sys
from forgerytalker.cli import main

real_import = builtins.__import__

def spy(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules:
        print("OMP_WAIT_POLICY at torch's import:", os.environ.get("OMP_WAIT_POLICY"), flush=True)
    return real_import(name, *args, **kwargs)

if __name__ == "__main__":
    builtins.__import__ = spy
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("count", [LONG_RUN_PHOTOS - 1, LONG_RUN_PHOTOS])
def test_a_long_run_s_model_threads_wait_without_spinning_on_its_reader_and_writer_s_cores(tmp_path, checkpoint,
                                                                                          face_photos_dir, count):
    """OpenMP reads OMP_WAIT_POLICY when torch is imported: the command sets it before, for a long run only."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(count):
        Image.open(face_photos_dir / "grace_hopper.jpg").resize((120, 150)).save(folder / f"grace_{index}.jpg")
    (tmp_path / "spy.py").write_text(SPY_ON_TORCH_IMPORT)
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "spy.py"), "analyze", str(folder), "--model", str(checkpoint), "--out",
         str(tmp_path / "out"), "--no-progress", "--no-overlay", *MAX_NEW_TOKENS],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    expected = "PASSIVE" if count >= LONG_RUN_PHOTOS else "None"
    assert f"OMP_WAIT_POLICY at torch's import: {expected}" in done.stdout.splitlines()


def test_batched_analysis_equals_one_photo_at_a_time(checkpoint, photos):
    paths = sorted(str(path) for path in photos.rglob("*.png")) + [str(photos / "grace.jpg")]
    alone = [forgerytalker.analyze(path, model=checkpoint, max_new_tokens=4) for path in paths]
    together = forgerytalker.analyze(paths, model=checkpoint, batch_size=3, max_new_tokens=4)
    assert isinstance(alone[0], forgerytalker.ForgeryAnalysis) and len(together) == len(paths)
    for single, batched in zip(alone, together):
        assert single.report == batched.report and single.regions == batched.regions
        np.testing.assert_allclose(single.mask_probabilities, batched.mask_probabilities, atol=1e-5)
        # batched float arithmetic differs in the last bits: only pixels within 1e-4 of the threshold may flip
        settled = np.abs(single.mask_probabilities - single.mask_threshold) > 1e-4
        assert np.array_equal((np.asarray(single.mask) > 0)[settled], (np.asarray(batched.mask) > 0)[settled])
        assert single.manipulation_score == pytest.approx(batched.manipulation_score, abs=1e-6)
        assert single.image == batched.image
    # the model is loaded once and kept for the next call
    assert forgerytalker.analysis.load_analyzer(checkpoint) is forgerytalker.analysis.load_analyzer(str(checkpoint))


def test_the_python_api_takes_pictures_bytes_and_analyst_regions(checkpoint, face_photos_dir):
    picture = Image.open(face_photos_dir / "astronaut.png")
    data = (face_photos_dir / "astronaut.png").read_bytes()
    from_picture, from_bytes = forgerytalker.analyze([picture, data], model=checkpoint, max_new_tokens=4)
    assert from_picture.report == from_bytes.report and from_picture.image is None and from_picture.faces == 1
    corrected = forgerytalker.analyze(picture, model=checkpoint, regions=["eye", "nose"], max_new_tokens=4)
    assert corrected.instruction_regions == ["eye", "nose"]
    record = corrected.to_record()
    assert "mask" not in record and json.loads(json.dumps(record)) == record
    with pytest.raises(ImageReadError, match="broken.jpg"):
        broken = face_photos_dir.parent / "broken.jpg"
        broken.write_bytes(b"not a picture")
        try:
            forgerytalker.analyze(str(broken), model=checkpoint)
        finally:
            broken.unlink()


def test_analyst_regions_on_the_command_line(tmp_path, checkpoint, photos, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(str(photos / "grace.jpg"), "--model", str(checkpoint), "--out", str(out), "--regions", "Eye, nose", capsys=capsys)
    assert code == 0
    assert records_of(out)[0]["instruction_regions"] == ["eye", "nose"]
    assert "grace.jpg: " in stdout and "report: " in stdout
    code, _, stderr = run_cli(str(photos / "grace.jpg"), "--model", str(checkpoint), "--out", str(tmp_path / "o2"), "--regions", "eye,nse", capsys=capsys)
    assert code == 2 and "--regions" in stderr and "nse" in stderr and "dimple" in stderr


def test_a_rerun_skips_finished_photos_and_overwrite_redoes_them(tmp_path, checkpoint, photos, capsys):
    out = tmp_path / "out"
    arguments = (str(photos), "--model", str(checkpoint), "--out", str(out))
    assert run_cli(*arguments, capsys=capsys)[0] == 0
    first = records_of(out)
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    (out / "grace.jpg.json").unlink()  # as if the run had been killed before this photo's record was written
    code, stdout, stderr = run_cli(*arguments, capsys=capsys)
    assert code == 0 and "3 kept from an earlier run" in stderr and stdout.count("[from an earlier run]") == 3
    assert records_of(out) == first
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.png") if "grace" not in path.name} == {
        path: stamp for path, stamp in stamps.items() if "grace" not in path.name
    }
    code, _, stderr = run_cli(*arguments, "--regions", "lip", capsys=capsys)
    assert code == 2 and "--out" in stderr and "regions" in stderr and "--overwrite" in stderr
    code, _, stderr = run_cli(*arguments, "--regions", "lip", "--overwrite", capsys=capsys)
    assert code == 0 and "0 kept" in stderr
    assert all(record["instruction_regions"] == ["lip"] for record in records_of(out))


def assert_only_complete_files(out: Path) -> list[Path]:
    """Every PNG in `out` decodes, no temporary file is left, and every finished record's files exist; returns the
    finished records."""
    finished = [path for path in out.rglob("*.json") if path.name != "run.json"]
    assert not list(out.rglob("*.tmp")) and not (out / "results.jsonl").exists()
    for path in out.rglob("*.png"):
        Image.open(path).load()
    for path in finished:
        record = json.loads(path.read_text())
        assert all((out / name).is_file() for name in record["outputs"].values())
    return finished


def test_ctrl_c_writes_the_photos_the_model_has_analysed_and_the_rerun_resumes(tmp_path, checkpoint, photos, capsys, monkeypatch):
    from forgerytalker.analysis.writer_process import PhotoWriterProcess, PhotoWriterThread

    out = tmp_path / "out"
    arguments = (str(photos), "--model", str(checkpoint), "--out", str(out), "--batch-size", "4")
    calls = []

    def interrupted_at_the_fourth_photo(write):
        def interrupting(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return write(self, *args, **kwargs)

        return interrupting

    for writer in (PhotoWriterProcess, PhotoWriterThread):  # four photos get a thread (`writer_for`)
        monkeypatch.setattr(writer, "write", interrupted_at_the_fourth_photo(writer.write))
    with pytest.raises(KeyboardInterrupt):
        run_cli(*arguments, capsys=capsys)
    monkeypatch.undo()
    # three photos were analysed and handed to the writer: all three are written before it stops
    assert len(assert_only_complete_files(out)) == 3
    code, _, stderr = run_cli(*arguments, capsys=capsys)
    assert code == 0 and "3 kept from an earlier run" in stderr and len(records_of(out)) == 4


def test_a_killed_command_leaves_only_complete_files_and_its_side_processes_end(tmp_path, checkpoint, face_photos_dir, capsys):
    import psutil

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(12):
        shutil.copy(face_photos_dir / "grace_hopper.jpg", photos / f"grace_{index:02d}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "forgerytalker.cli", "analyze", str(photos), "--model", str(checkpoint), "--out",
               str(out), "--no-progress", "--num-threads", "1", "--json", *MAX_NEW_TOKENS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = json.loads(process.stdout.readline())
        children = psutil.Process(process.pid).children(recursive=True)
        process.kill()  # SIGKILL: no clean-up code of the command runs
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stdout.close()
    assert first["status"] == "ok"
    psutil.wait_procs(children, timeout=30)
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    finished = assert_only_complete_files(out)
    assert 1 <= len(finished) < 12
    code, _, stderr = run_cli(str(photos), "--model", str(checkpoint), "--out", str(out), capsys=capsys)
    assert code == 0 and f"{len(finished)} kept from an earlier run" in stderr and len(records_of(out)) == 12


def test_atomic_writes_never_leave_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    analysis_outputs.atomic_write_json(target, {"old": True})

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        analysis_outputs.atomic_write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True} and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def bad_inputs(folder: Path, face_photos_dir: Path) -> dict[str, str | None]:
    """Writes one photo of each kind of bad input; name → the error expected (None: analysed, with a warning)."""
    folder.mkdir()
    astronaut = Image.open(face_photos_dir / "astronaut.png").convert("RGB").resize((160, 160))
    data = io.BytesIO()
    astronaut.save(data, format="JPEG")
    (folder / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    random_image(5, 20, 40).save(folder / "tiny.png")
    Image.new("L", (3000, 3000)).save(folder / "bomb.png")  # a few kB, 9 megapixels: over the limit below
    random_image(6, 60, 80).save(folder / "no_face.png")
    grace = Image.open(face_photos_dir / "grace_hopper.jpg").convert("RGB").resize((240, 280))
    two = Image.new("RGB", (480, 280))
    two.paste(grace, (0, 0))
    two.paste(grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (240, 0))
    two.save(folder / "two_faces.png")
    astronaut.convert("L").save(folder / "gray.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "rgba.png")
    Image.fromarray((np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257)).save(folder / "sixteen_bit.png")
    astronaut.convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    astronaut.resize((160, 120)).save(folder / "rotated.jpg", exif=exif)
    return {
        "truncated.jpg": "cannot be decoded",
        "empty.png": "not a readable picture",
        "notes.jpg": "not a readable picture",
        "dangling.png": "no such file",
        "tiny.png": "too small to analyse",
        "bomb.png": "over the limit of 1,000,000 pixels (refused before decoding",
        "no_face.png": "no face of at least 32 px found",
        "two_faces.png": None,
        "gray.png": "grayscale picture",
        "rgba.png": "transparent picture",
        "sixteen_bit.png": "16-bit picture",
        "cmyk.jpg": "CMYK picture",
        "rotated.jpg": "EXIF orientation 6",
    }


def test_every_kind_of_bad_input_gets_its_record_and_the_run_goes_on(tmp_path, checkpoint, face_photos_dir, capsys):
    folder = tmp_path / "bad"
    expected = bad_inputs(folder, face_photos_dir)
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        str(folder), *[str(folder / name) for name in ("notes.jpg", "dangling.png")], "--model", str(checkpoint),
        "--out", str(out), "--max-image-pixels", "1000000", "--batch-size", "4", capsys=capsys,
    )
    assert code == 1  # some photos failed
    records = {Path(record["image"]).name: record for record in records_of(out)}
    assert set(records) == set(expected)
    for name, message in expected.items():
        record = records[name]
        if record["status"] == "error":
            assert message in record["error"] and name in record["error"], (name, record)
            assert f"FAILED: {record['error']}" in stdout
        elif message is not None:
            assert any(message in warning for warning in record["warnings"]), (name, record["warnings"])
    failed = {name for name, record in records.items() if record["status"] == "error"}
    assert failed == {"truncated.jpg", "empty.png", "notes.jpg", "dangling.png", "tiny.png", "bomb.png"}
    assert records["two_faces.png"]["faces"] == 2 and records["no_face.png"]["faces"] == 0
    assert [face["face"] for face in records["two_faces.png"]["face_analyses"]] == [1, 2]
    assert "face 2 at" in stdout
    assert (records["rotated.jpg"]["width"], records["rotated.jpg"]["height"]) == (120, 160)  # shown upright
    with Image.open(out / records["rotated.jpg"]["outputs"]["mask"]) as mask:
        assert mask.size == (120, 160)
    for name in failed:
        assert (out / f"{name}.error.json").is_file() and not (out / f"{name}.json").exists()


def test_bad_arguments_name_their_flag(tmp_path, checkpoint, photos, capsys, monkeypatch):
    from forgerytalker.analysis import defaults

    with monkeypatch.context() as patch:  # an installation that lost its bundled model
        patch.setattr(defaults, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
        code, _, stderr = run_cli(str(photos), "--out", str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "--model" in stderr and "bundled default model is missing" in stderr
    code, _, stderr = run_cli(str(tmp_path / "missing.jpg"), "--model", str(checkpoint), capsys=capsys)
    assert code == 2 and "PATH" in stderr and "missing.jpg" in stderr
    code, _, stderr = run_cli(str(photos), "--model", str(tmp_path / "no-model"), capsys=capsys)
    assert code == 2 and "--model" in stderr
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli(str(tmp_path / "empty"), "--model", str(checkpoint), capsys=capsys)
    assert code == 2 and "holds no picture" in stderr
    for flag, value in (("--threshold", "1.5"), ("--batch-size", "0"), ("--max-image-pixels", "-3")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(str(photos), "--model", str(checkpoint), flag, value, capsys=capsys)
        assert exit_info.value.code == 2 and flag in capsys.readouterr().err


def test_the_output_folder_is_not_read_as_input(tmp_path, checkpoint, photos, capsys):
    out = photos / "results"
    for _ in range(2):
        assert run_cli(str(photos), "--model", str(checkpoint), "--out", str(out), capsys=capsys)[0] == 0
    assert len(records_of(out)) == 4


@pytest.mark.slow
def test_two_processes_split_the_photos_and_merge_one_results_file(tmp_path, checkpoint, photos):
    out = tmp_path / "out"
    arguments = ["-m", "forgerytalker.cli", "analyze", str(photos), "--model", str(checkpoint), "--out", str(out),
                 "--num-threads", "1", "--no-progress", "--json", *MAX_NEW_TOKENS]
    result = launch_processes(arguments, tmp_path / "scratch")
    assert result.returncode == 0, result.stderr[-3000:]
    records = records_of(out)
    expected = [str(path) for path in sorted(photos.rglob("*")) if path.is_file()]
    assert sorted(record["image"] for record in records) == sorted(expected) and len(records) == 4
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(record["image"] for record in printed) == sorted(expected)  # each photo once, by one process
    single = tmp_path / "single"
    assert main(["analyze", str(photos), "--model", str(checkpoint), "--out", str(single), "--no-progress", *MAX_NEW_TOKENS]) == 0
    for split, alone in zip(records, records_of(single)):
        assert (split["image"], split["report"], split["regions"]) == (alone["image"], alone["report"], alone["regions"])


@pytest.mark.parametrize("argv", [("analyze", "--help"), ("demo", "--help"), ("push", "--help")])
def test_the_help_of_these_commands_imports_no_torch(argv):
    from test_cli import imported_heavy_modules

    assert imported_heavy_modules(*argv) == []


# ------------------------------------------------------------------ nothing lost, round two (issue 19)


def test_files_the_command_did_not_write_are_never_replaced(tmp_path, checkpoint, photos, capsys):
    """N3, N4: a user's photo sidecar named like a record, or their own results.jsonl, in --out."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "grace.jpg.json").write_text('{"caption": "my notes on this photo"}')
    for extra in ((), ("--overwrite",)):
        code, _, stderr = run_cli(str(photos), "--model", str(checkpoint), "--out", str(out), *extra, capsys=capsys)
        assert code == 2 and "--out: " in stderr and "grace.jpg.json" in stderr and "Traceback" not in stderr
    assert (out / "grace.jpg.json").read_text() == '{"caption": "my notes on this photo"}'
    assert sorted(path.name for path in out.iterdir()) == [".forgerytalker-analyze.lock", "grace.jpg.json"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.jsonl").write_text("my own results\n")
    code, _, stderr = run_cli(str(photos), "--model", str(checkpoint), "--out", str(mine), capsys=capsys)
    assert code == 2 and "results.jsonl" in stderr
    assert (mine / "results.jsonl").read_text() == "my own results\n"


def test_a_replaced_photo_or_a_retrained_model_is_analysed_again(tmp_path, checkpoint, photos, capsys):
    """N5, N6, M3: a finished record is kept only for the same photo content and the same model weights."""
    from safetensors.torch import load_file, save_file

    out = tmp_path / "out"
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    arguments = (str(photos), "--model", str(model), "--out", str(out))
    assert run_cli(*arguments, capsys=capsys)[0] == 0
    Image.open(photos / "grace.jpg").resize((120, 150)).save(photos / "grace.jpg")  # same name, another picture
    code, _, stderr = run_cli(*arguments, capsys=capsys)
    assert code == 0 and "3 kept from an earlier run" in stderr
    grace = json.loads((out / "grace.jpg.json").read_text())
    assert (grace["width"], grace["height"]) == (120, 150)

    weights = load_file(model / "model.safetensors")
    weights = {name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in weights.items()}
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})  # retrained in place
    forgerytalker.analysis.api._load.cache_clear()  # as a new process would load it
    code, _, stderr = run_cli(*arguments, capsys=capsys)
    assert code == 2 and "model_weights" in stderr and "--overwrite" in stderr
    assert run_cli(*arguments, "--overwrite", capsys=capsys)[0] == 0

    other = tmp_path / "other"  # another photo of the same name from another folder, into the same --out
    other.mkdir()
    random_image(9, 50, 40).save(other / "grace.jpg")
    code, _, _ = run_cli(str(other / "grace.jpg"), "--model", str(model), "--out", str(out), capsys=capsys)
    assert code == 0 and json.loads((out / "grace.jpg.json").read_text())["width"] == 40
    random_image(9, 20, 20).save(other / "grace.jpg")  # too small: fails, and the earlier answer is not its answer
    code, _, stderr = run_cli(str(other / "grace.jpg"), "--model", str(model), "--out", str(out), capsys=capsys)
    assert code == 1 and "1 failed" in stderr and records_of(out)[0]["status"] == "error"


def test_an_output_folder_reached_through_a_link_into_the_inputs_is_not_read(tmp_path, checkpoint, photos, capsys):
    """M1: --out a link into the input folder; the second run analysed its own masks and figures."""
    (photos / "results").mkdir()
    link = tmp_path / "out-link"
    link.symlink_to(photos / "results", target_is_directory=True)
    for _ in range(2):
        assert run_cli(str(photos), "--model", str(checkpoint), "--out", str(link), capsys=capsys)[0] == 0
    assert len(records_of(link)) == 4


def test_a_photo_whose_outputs_cannot_be_named_counts_as_failed(tmp_path, checkpoint, photos, capsys):
    """M2: a name too long for its output files was missing from results.jsonl, yet rc 0 and '0 failed'."""
    long_name = "x" * 250 + ".png"  # 254 bytes: the photo fits, `<name>.overlay.png` does not
    random_image(5, 40, 40).save(photos / long_name)
    code, _, stderr = run_cli(str(photos), "--model", str(checkpoint), "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 1 and "4 of 5 photo(s) analysed" in stderr and "1 failed" in stderr


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(tmp_path, checkpoint, photos, capsys):
    """N11: two runs with different settings on one --out at once both returned 0, one overwriting the other."""
    from forgerytalker.output_folder import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    held = hold_lock(out, "forgerytalker analyze")  # a first run, still writing
    code, _, stderr = run_cli(str(photos), "--model", str(checkpoint), "--out", str(out), capsys=capsys)
    assert code == 2 and "another forgerytalker analyze is writing into" in stderr
    held.close()
    assert run_cli(str(photos), "--model", str(checkpoint), "--out", str(out), capsys=capsys)[0] == 0


def test_an_unwritable_out_is_refused_before_the_model_loads(tmp_path, photos, capsys, monkeypatch):
    """N12: an unwritable --out gave a traceback after the model loaded, rc 1."""
    from forgerytalker.cli import analyze as analyze_cli

    monkeypatch.setattr(analyze_cli, "_load_pipeline", lambda *args: pytest.fail("the model was loaded"))
    (tmp_path / "file").write_text("x")
    code, _, stderr = run_cli(str(photos), "--out", str(tmp_path / "file" / "out"), capsys=capsys)
    assert code == 2 and stderr.startswith("error: --out: cannot create")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    monkeypatch.setattr(os, "open", _read_only_open(readonly))
    code, _, stderr = run_cli(str(photos), "--out", str(readonly), capsys=capsys)
    assert code == 2 and stderr.startswith("error: --out: cannot write in")


def _read_only_open(folder: Path):
    """`os.open` as on a read-only file system under `folder` (root ignores permission bits)."""
    import errno

    original = os.open

    def opener(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return original(path, flags, *args, **kwargs)

    return opener


def test_a_small_file_that_decodes_to_gigabytes_is_refused_before_decoding(tmp_path, checkpoint, capsys):
    """N7: a 12 KB 1-bit PNG of 9990 x 9990 passed the 100 MP limit and took 2.6 GB to analyse."""
    import resource

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("1", (9990, 9990)).save(folder / "bomb.png")
    assert (folder / "bomb.png").stat().st_size < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, stderr = run_cli(str(folder), "--model", str(checkpoint), "--out", str(tmp_path / "out"), capsys=capsys)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 1 and "1 failed" in stderr
    error = records_of(tmp_path / "out")[0]["error"]
    assert "bomb.png: 9990×9990" in error and "GiB of memory" in error and "refused before decoding" in error
    assert grown_mib < 200  # never decoded


def test_the_face_check_options_of_earlier_versions_still_work_with_a_deprecation(tmp_path, checkpoint, photos, capsys):
    code, _, stderr = run_cli(str(photos / "grace.jpg"), "--model", str(checkpoint), "--out", str(tmp_path / "o"),
                              "--no-face-check", capsys=capsys)
    assert code == 0 and "--no-face-check are deprecated" in stderr
    assert records_of(tmp_path / "o")[0]["face_mode"] == "whole"
    with pytest.warns(FutureWarning, match="check_faces"):
        analysis = forgerytalker.analyze(str(photos / "grace.jpg"), model=checkpoint, check_faces=False,
                                         max_new_tokens=4)
    assert analysis.face_mode == "whole"


def test_analyze_does_not_pay_for_the_evaluation_stack(checkpoint, photos, tmp_path):
    """`datasets` and the caption metrics take most of a second to import; analysing a photo needs neither (the model's
    weight fingerprint lives outside the evaluation runner)."""
    photo = next(path for path in sorted(photos.iterdir()) if path.suffix == ".jpg")
    code = (
        "import sys; from forgerytalker.cli import main; "
        f"code = main(['analyze', {str(photo)!r}, '--model', {str(checkpoint)!r}, '--out', {str(tmp_path / 'out')!r}, "
        "'--no-progress', '--max-new-tokens', '2']); "
        "print(code, sorted(name for name in ('datasets', 'pycocoevalcap', 'forgerytalker.evaluation.runner') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split("\n")[-2] == "0 []", result.stdout + result.stderr
