"""MMTT-style synthesis: layout, masks, reports and labels, determinism and resuming.

Faces come from installed packages (scikit-image's astronaut, matplotlib's Grace Hopper), so the tests need
nothing outside the repository.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from failure_conditions import bomb_png, read_only, run_in_child
from PIL import Image as PIL_Image

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")
cbook = pytest.importorskip("matplotlib.cbook")

from forgerytalker.cli import synthesize as synthesize_cli  # noqa: E402
from forgerytalker.data.errors import DataInputError, WorkerDiedError  # noqa: E402
from forgerytalker.data.synthesis import pipeline  # noqa: E402
from forgerytalker.data.methods import AUTHENTIC, METHODS  # noqa: E402
from forgerytalker.data.synthesis.faces import FaceAligner, crop_face, read_photo  # noqa: E402
from forgerytalker.data.synthesis.landmark_regions import LANDMARK_REGIONS, face_mask, region_masks  # noqa: E402
from forgerytalker.data.synthesis.measurements import FLAW_KINDS, RegionFlaws  # noqa: E402
from forgerytalker.data.synthesis.pipeline import EVAL_FILE, SUMMARY_FILE, TRAIN_FILE, SynthesisConfig, synthesize  # noqa: E402
from forgerytalker.data.synthesis.reports import authentic_report, write_report  # noqa: E402
from forgerytalker.regions import NUM_REGIONS, caption_to_labels, caption_to_regions  # noqa: E402

NUM_SAMPLES = 12
SEED = 3
MAX_UPSCALE = 4.0  # the astronaut's face needs about 3x to fill 512x512


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), folder / "grace_hopper.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _config(faces_dir: Path, output_dir: Path, **overrides) -> SynthesisConfig:
    settings = dict(seed=SEED, authentic_rate=0.25, max_upscale=MAX_UPSCALE, show_progress=False)
    settings.update(overrides)
    return SynthesisConfig(faces_dir, output_dir, settings.pop("num_samples", NUM_SAMPLES), **settings)


@pytest.fixture(scope="module")
def run(faces_dir, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("synthesis")
    synthesize(_config(faces_dir, output_dir))
    return output_dir


@pytest.fixture(scope="module")
def originals(faces_dir) -> dict[str, tuple]:
    """face id → (aligned crop (512, 512, 3), landmarks (68, 2)) of the untouched test photos."""
    aligner = FaceAligner(max_upscale=MAX_UPSCALE)
    found = {}
    for photo in ("astronaut.png", "grace_hopper.jpg"):
        alignments, _ = aligner.align_photo((faces_dir / photo).read_bytes(), photo)
        for alignment in alignments:
            face = crop_face(read_photo(faces_dir / photo), alignment)
            found[alignment.face_id] = (face.image, face.landmarks)
    return found


def _sidecars(output_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((output_dir / "samples").glob("syn*.json"))]


def _load(output_dir: Path, relative: str, mode: str) -> np.ndarray:
    flag = cv2.IMREAD_COLOR if mode == "RGB" else cv2.IMREAD_UNCHANGED
    image = cv2.imread(str(output_dir / "dataset" / relative), flag)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if mode == "RGB" else image


def _all_bytes(output_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output_dir)): p.read_bytes() for p in sorted(output_dir.rglob("*")) if p.is_file()}


def test_released_layout(run):
    train = json.loads((run / TRAIN_FILE).read_text())
    evaluation = json.loads((run / EVAL_FILE).read_text())
    assert len(train) + len(evaluation) == NUM_SAMPLES and len(evaluation) == 1  # sample 9 of 0..11
    assert [record["instance_id"] for record in evaluation] == [0]
    for record in train + evaluation:
        assert set(record) >= {"image_id", "img_path", "mask_path", "caption", "multilabel"}
        method = record["img_path"].split("/")[1]
        assert method in METHODS
        assert record["img_path"] == f"synthetic/{method}/{record['image_id']}.png"
        assert record["mask_path"] == f"synthetic/{method}/masks/{record['image_id']}.png"
        image, mask = _load(run, record["img_path"], "RGB"), _load(run, record["mask_path"], "L")
        assert image.shape == (512, 512, 3) and mask.shape == (512, 512)
        assert set(np.unique(mask)) <= {0, 255}
        assert len(record["multilabel"]) == NUM_REGIONS


def test_methods_and_skipped_photos(run):
    summary = json.loads((run / SUMMARY_FILE).read_text())
    methods = summary["counts"]["methods"]
    assert methods.get(AUTHENTIC, 0) >= 1 and sum(methods.values()) == NUM_SAMPLES
    assert len([m for m in methods if m != AUTHENTIC]) >= 2
    skipped = {entry["photo"]: entry["reason"] for entry in summary["skipped"]}
    assert "broken.jpg" in skipped["broken.jpg"] and "picture" in skipped["broken.jpg"]
    assert skipped["notes.txt"].startswith("not read: not a picture file")
    assert summary["faces"] == ["astronaut.png#0", "grace_hopper.jpg#0"]


def test_masks_regions_and_reports(run, originals):
    for sidecar in _sidecars(run):
        record = sidecar["record"]
        original, landmarks = originals[sidecar["source_face"]]
        image, mask = _load(run, record["img_path"], "RGB"), _load(run, record["mask_path"], "L") > 0
        assert record["multilabel"] == caption_to_labels(record["caption"])
        named = caption_to_regions(record["caption"])
        assert 3 <= len(record["caption"].split()) <= 120
        np.testing.assert_array_equal(image[~mask], original[~mask])  # nothing changes outside the mask
        if sidecar["method"] == AUTHENTIC:
            assert not mask.any() and named == [] and record["multilabel"] == [0] * NUM_REGIONS
            continue
        assert mask.any() and not (mask & ~face_mask(landmarks, 512)).any()
        assert (image[mask] != original[mask]).any()
        assert set(named) == set(sidecar["regions"]) and named
        regions = region_masks(landmarks, original)
        for name in named:
            assert (regions[name] & mask).any(), f"{name} named in {record['caption']!r} has no mask pixels"


def test_same_seed_gives_identical_bytes_with_workers(run, faces_dir, tmp_path):
    synthesize(_config(faces_dir, tmp_path, num_workers=2))
    assert _all_bytes(tmp_path) == _all_bytes(run)


def test_resume_through_cli_gives_identical_bytes(run, faces_dir, tmp_path):
    synthesize(_config(faces_dir, tmp_path, num_samples=5))
    (tmp_path / TRAIN_FILE).unlink()  # as if killed before the end
    parser = argparse.ArgumentParser()
    synthesize_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["synthesize", "--faces", str(faces_dir), "--out", str(tmp_path), "--num-samples", str(NUM_SAMPLES),
         "--seed", str(SEED), "--authentic-rate", "0.25", "--max-upscale", str(MAX_UPSCALE), "--no-progress"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert _all_bytes(tmp_path) == _all_bytes(run)


def test_other_parameters_in_same_folder_are_refused(run, faces_dir):
    with pytest.raises(DataInputError, match="use another output_dir") as caught:
        synthesize(_config(faces_dir, run, seed=SEED + 1))
    assert "use another --out" in caught.value.render(synthesize_cli.FLAGS)


def test_small_faces_are_skipped_with_reason(faces_dir):
    alignments, skipped = FaceAligner(max_upscale=2.0).align_photo((faces_dir / "astronaut.png").read_bytes(), "astronaut.png")
    assert alignments == [] and "upscaling" in skipped[0].reason


def test_reports_name_exactly_their_regions():
    rng = np.random.default_rng(0)
    details = {"colour": ("darker", "brighter", "redder", "greener", "yellower", "bluer")}
    geometry = {"eye": "eye_size", "eyebrow": "eyebrow_height", "mouth": "tilt", "lip": "tilt", "nose": "off_centre"}
    lengths = []
    for _ in range(2000):
        chosen = rng.choice(LANDMARK_REGIONS, size=int(rng.integers(1, 12)), replace=False)
        measured = {}
        for name in chosen:
            flaws = RegionFlaws(colour_shift=str(rng.choice(details["colour"])), geometry=geometry.get(name, ""))
            for kind in FLAW_KINDS if name in geometry else FLAW_KINDS[:3]:
                flaws.scores[kind] = float(rng.exponential(1.0))
            measured[str(name)] = flaws
        report = write_report(measured, whole_face=bool(rng.random() < 0.2), rng=rng)
        assert set(caption_to_regions(report)) == set(measured), report
        # one sentence per region: a region with several visible flaws is still named once
        named = [region for sentence in re.split(r"(?<=\.)\s+", report) for region in caption_to_regions(sentence)]
        assert len(named) == len(set(named)), report
        # with the project's additions the labels are the same: no noun or word of a report is one of them
        assert caption_to_regions(report, include_additions=True) == caption_to_regions(report), report
        lengths.append(len(report.split()))
    assert 3 <= min(lengths) and max(lengths) <= 120
    for _ in range(20):
        assert caption_to_regions(authentic_report(rng)) == []


# ---------------------------------------------------------------- hostile inputs (issue 10)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    synthesize_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synthesize", *argv])
    return args.func(args)


def _cli_argv(faces: Path, out: Path, *extra: str, num_samples: int = NUM_SAMPLES) -> list[str]:
    return ["--faces", str(faces), "--out", str(out), "--num-samples", str(num_samples), "--seed", str(SEED),
            "--authentic-rate", "0.25", "--max-upscale", str(MAX_UPSCALE), "--no-progress", *extra]  # fmt: skip


def _one_photo_folder(tmp_path: Path, name: str = "faces") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), folder / "grace_hopper.jpg")
    return folder


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max-upscale", "-1", "--max-upscale: must be a positive number"),
        ("--max-regions", "0", "--max-regions: must be a whole number of at least 1"),
        ("--eval-every", "-3", "--eval-every: must be a whole number of at least 0"),
        ("--num-workers", "0", "--num-workers: must be a whole number of at least 1"),
        ("--authentic-rate", "1.5", "--authentic-rate: must be between 0 and 1"),
        ("--max-image-pixels", "0", "--max-image-pixels: must be a whole number of at least 1"),
        ("--local-methods", "sdxl_magic", "--local-methods: no manipulation registered for sdxl_magic"),
    ],
)
def test_bad_arguments_are_rejected_up_front_naming_the_flag(faces_dir, tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    assert _cli(_cli_argv(faces_dir, out, flag, value)) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not out.exists()  # nothing written, so nothing (like a bad --max-regions) blocks the corrected run


def test_missing_faces_and_unusable_out_are_rejected_naming_the_flag(faces_dir, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (_cli_argv(tmp_path / "no_such_faces", tmp_path / "out"), "--faces: no such folder"),
        (_cli_argv(faces_dir, a_file), f"--out: {a_file} is a file"),
        (_cli_argv(faces_dir, a_file / "out"), f"--out: cannot create {a_file / 'out'}: {a_file} is a file"),
        (_cli_argv(faces_dir, faces_dir / "synthetic"), "--out: "),
    ]
    for argv, message in cases:
        assert _cli(argv) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (faces_dir / "synthetic").exists()


def test_files_the_synthesis_did_not_write_in_out_are_never_overwritten(faces_dir, tmp_path, capsys):
    """Issue 19 (one output-folder policy): a folder holding the user's own record file or images."""
    out = tmp_path / "mine"
    (out / "dataset").mkdir(parents=True)
    (out / TRAIN_FILE).write_text("my own records")
    (out / "dataset" / "keep.png").write_bytes(b"my picture")
    (out / "notes.txt").write_text("never in the way")
    assert _cli(_cli_argv(faces_dir, out)) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --out: ") and f"did not write (dataset/keep.png, {TRAIN_FILE})" in error
    assert (out / TRAIN_FILE).read_text() == "my own records" and sorted(p.name for p in out.iterdir()) == [
        "dataset", "notes.txt", TRAIN_FILE]  # fmt: skip


def test_output_inside_the_photo_folder_is_refused(faces_dir, capsys):
    assert _cli(_cli_argv(faces_dir, faces_dir / "forged")) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is inside --faces" in err and "forged images for face photos" in err
    assert not (faces_dir / "forged").exists()


def test_read_only_out_is_refused(faces_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        assert _cli(_cli_argv(faces_dir, locked / "out")) == 2
        assert capsys.readouterr().err.startswith(f"error: --out: cannot write in {locked}")


def test_max_regions_zero_left_by_an_old_run_does_not_block_the_corrected_run(tmp_path):
    faces = _one_photo_folder(tmp_path)
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    stale = {"seed": SEED, "authentic_rate": 0.25, "whole_face_rate": 0.2, "max_regions": 0,
             "local_methods": ["classical_inpainting"], "eval_every": 10}  # fmt: skip
    (out / "samples" / "parameters.json").write_text(json.dumps(stale))
    summary = synthesize(_config(faces, out, num_samples=2))
    assert summary["max_regions"] == 11
    assert json.loads((out / "samples" / "parameters.json").read_text())["max_regions"] == 11


def test_gifs_are_read_and_other_files_listed_as_skipped(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    PIL_Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).save(faces / "grace.gif")
    (faces / "notes.txt").write_text("my notes")
    (faces / "scan.heic").write_bytes(b"\x00" * 64)
    summary = synthesize(_config(faces, tmp_path / "out", num_samples=2))
    assert summary["faces"] == ["grace.gif#0"]
    skipped = {entry["photo"]: entry["reason"] for entry in summary["skipped"]}
    assert set(skipped) == {"notes.txt", "scan.heic"}
    assert all(reason.startswith("not read: not a picture file") for reason in skipped.values())


def test_decompression_bomb_photo_is_skipped_before_decoding(tmp_path, monkeypatch):
    faces = _one_photo_folder(tmp_path)
    (faces / "bomb.png").write_bytes(bomb_png(12_000, 12_000))
    decoded = []
    original_load = PIL_Image.Image.load
    monkeypatch.setattr(PIL_Image.Image, "load", lambda image: decoded.append(image.size) or original_load(image))
    summary = synthesize(_config(faces, tmp_path / "out", num_samples=2))
    skipped = {entry["photo"]: entry["reason"] for entry in summary["skipped"]}
    assert "144,000,000 pixels is over the limit of 100,000,000" in skipped["bomb.png"]
    assert (12_000, 12_000) not in decoded
    assert summary["faces"] == ["grace_hopper.jpg#0"]

    monkeypatch.undo()
    assert _cli(_cli_argv(faces, tmp_path / "strict", "--max-image-pixels", "1000", num_samples=2)) == 2  # no face left
    for entry in (tmp_path / "strict" / "cache" / "faces").iterdir():
        assert "over the limit of 1,000" in json.loads(entry.read_text())["skipped"][0]["reason"]


def test_face_cache_is_keyed_by_content_not_name_and_size(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    photo = faces / "face.png"
    original = cv2.imencode(".png", cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
    mirrored = cv2.imencode(".png", cv2.cvtColor(skimage_data.astronaut()[:, ::-1], cv2.COLOR_RGB2BGR))[1].tobytes()
    size = max(len(original), len(mirrored))
    photo.write_bytes(original.ljust(size, b"\x00"))  # PNG readers ignore bytes after IEND
    first = synthesize(_config(faces, tmp_path / "first", num_samples=1))
    photo.write_bytes(mirrored.ljust(size, b"\x00"))  # same name, same size, other picture
    cache = tmp_path / "first" / "cache"
    shutil.copytree(cache, tmp_path / "second" / "cache")
    synthesize(_config(faces, tmp_path / "second", num_samples=1))
    cached = {}
    for name in ("first", "second"):
        entry = json.loads(next((tmp_path / name / "cache" / "faces").iterdir()).read_text())
        cached[name] = np.asarray(entry["faces"][0]["matrix"])
    assert first["faces"] == ["face.png#0"]
    assert not np.allclose(cached["first"], cached["second"])  # the mirrored photo was aligned again


def test_resuming_with_changed_photos_is_refused_unless_allowed(tmp_path, capsys):
    faces = _one_photo_folder(tmp_path)
    out = tmp_path / "out"
    synthesize(_config(faces, out, num_samples=2))
    cv2.imwrite(str(faces / "astronaut.png"), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    assert _cli(_cli_argv(faces, out, num_samples=4)) == 2
    err = capsys.readouterr().err
    assert "--faces: the photos changed since samples were made" in err and "1 added: astronaut.png" in err
    assert "use a new --out" in err and "--allow-changed-faces" in err
    assert len(list((out / "samples").glob("syn*.json"))) == 2  # nothing made

    assert _cli(_cli_argv(faces, out, "--allow-changed-faces", num_samples=4)) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["mixed_photo_sets"] is True and summary["faces"] == ["astronaut.png#0", "grace_hopper.jpg#0"]


def test_corrupt_json_files_are_named_with_their_line(run, faces_dir, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    sidecar = sorted((copy / "samples").glob("syn*.json"))[3]
    sidecar.write_bytes(b'{\n "index": 3,\n "split": "tr\xffin"\n}\n')
    with pytest.raises(DataInputError, match=rf"{sidecar.name}: line 3, column 14: not UTF-8 text \(byte 0xff\); delete"):
        synthesize(_config(faces_dir, copy))
    sidecar.unlink()

    parameters = copy / "samples" / "parameters.json"
    parameters.write_text('{"seed": 3,\n "max_regions": 11,,\n}')
    with pytest.raises(DataInputError, match=r"parameters.json: line 2, column 20: Expecting property name"):
        synthesize(_config(faces_dir, copy))
    shutil.copy(run / "samples" / "parameters.json", parameters)

    cache_entry = next((copy / "cache" / "faces").iterdir())
    cache_entry.write_text('{"key": ')
    with caplog.at_level("WARNING"):
        synthesize(_config(faces_dir, copy))
    assert f"{cache_entry}: line 1, column 9" in caplog.text and "Aligning the photo again" in caplog.text
    assert _all_bytes(copy) == _all_bytes(run)  # the sample is made again, the cache entry rewritten


def test_full_disk_names_out_and_the_rerun_resumes(run, faces_dir, tmp_path, monkeypatch):
    writes = []
    original = pipeline._write_png

    def fill_up(path, image):
        writes.append(path)
        if len(writes) == 7:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(path, image)

    monkeypatch.setattr(pipeline, "_write_png", fill_up)
    with pytest.raises(DataInputError) as caught:
        synthesize(_config(faces_dir, tmp_path))
    message = caught.value.render(synthesize_cli.FLAGS)
    assert message.startswith(f"--out: cannot write {writes[-1]}: No space left on device; finished samples are kept")
    monkeypatch.undo()
    synthesize(_config(faces_dir, tmp_path))
    assert _all_bytes(tmp_path) == _all_bytes(run)


def test_killed_worker_is_an_error_naming_the_sample_and_the_rerun_resumes(run, faces_dir, tmp_path, monkeypatch):
    original = pipeline.make_sample

    def killed_at_five(index):
        if index == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        return original(index)

    monkeypatch.setattr(pipeline, "make_sample", killed_at_five)
    message_file = tmp_path.parent / f"{tmp_path.name}-message.txt"

    def child():
        try:
            synthesize(_config(faces_dir, tmp_path, num_workers=2))
        except WorkerDiedError as error:
            message_file.write_text(str(error))
            sys.exit(3)

    assert run_in_child(child) == 3
    message = message_file.read_text()
    message_file.unlink()
    assert "sample 5 (syn3-0000005)" in message and "run the same command again to resume" in message
    monkeypatch.undo()
    made_again = []
    monkeypatch.setattr(pipeline, "make_sample", lambda index: made_again.append(index) or original(index))
    synthesize(_config(faces_dir, tmp_path))
    assert 5 in made_again and len(made_again) < NUM_SAMPLES
    assert _all_bytes(tmp_path) == _all_bytes(run)
