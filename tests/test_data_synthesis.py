"""MMTT-style synthesis: layout, masks, reports and labels, determinism and resuming.

Faces come from installed packages (scikit-image's astronaut, matplotlib's Grace Hopper), so the tests need
nothing outside the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")
cbook = pytest.importorskip("matplotlib.cbook")

from forgerytalker.cli import synthesize as synthesize_cli  # noqa: E402
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
        alignments, _ = aligner.align_photo(faces_dir, photo)
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
    assert "corrupt" in skipped["broken.jpg"]
    assert "notes.txt" not in skipped
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
    with pytest.raises(ValueError, match="another --out"):
        synthesize(_config(faces_dir, run, seed=SEED + 1))


def test_small_faces_are_skipped_with_reason(faces_dir):
    alignments, skipped = FaceAligner(max_upscale=2.0).align_photo(faces_dir, "astronaut.png")
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
        lengths.append(len(report.split()))
    assert 3 <= min(lengths) and max(lengths) <= 120
    for _ in range(20):
        assert caption_to_regions(authentic_report(rng)) == []
