"""Self-blended images (`SelfBlend`): the face blended with an altered copy of itself. The changed pixels are the
mask's, but for its blur band; the same seed gives the same bytes; odd masks and images work; the pipeline writes
them with their mask, regions and report like every other method.

The face is Grace Hopper's from matplotlib's sample data, so the tests need nothing outside the repository.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
cbook = pytest.importorskip("matplotlib.cbook")

from forgerytalker.data.methods import SELF_BLEND, method_from_name, method_from_path  # noqa: E402
from forgerytalker.data.synthesis.faces import AlignedFace, FaceAligner, crop_face, read_photo  # noqa: E402
from forgerytalker.data.synthesis.landmark_regions import face_geometry, face_mask, region_masks  # noqa: E402
from forgerytalker.data.synthesis.manipulations import MANIPULATIONS, SelfBlend  # noqa: E402
from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize  # noqa: E402
from forgerytalker.regions import caption_to_regions  # noqa: E402

MAX_UPSCALE = 4.0


@pytest.fixture(scope="module")
def hopper_photo() -> str:
    return cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def face(hopper_photo) -> AlignedFace:
    alignment = FaceAligner(max_upscale=MAX_UPSCALE).align_photo(open(hopper_photo, "rb").read(), "hopper.jpg")[0][0]
    return crop_face(read_photo(hopper_photo), alignment)


def _changed(face: AlignedFace, generated: np.ndarray) -> np.ndarray:
    return (generated != face.image).any(axis=2)


def test_self_blend_is_a_registered_method_with_its_own_name():
    assert MANIPULATIONS[SELF_BLEND].method == SELF_BLEND and not MANIPULATIONS[SELF_BLEND].needs_donor
    assert method_from_name("SBI") == method_from_name("self-blend") == SELF_BLEND
    assert method_from_path("synthetic/self_blend/masks/syn0-0000001.png") == SELF_BLEND


@pytest.mark.parametrize("seed", range(4))
def test_changed_pixels_are_the_masks_but_for_its_blur_band(face, seed):
    blend = SelfBlend()
    mask = face_mask(face.landmarks, face.image.shape[0])
    changed = _changed(face, blend(face, mask, np.random.default_rng(seed)))
    assert not (changed & ~mask).any()
    # the alpha is full beyond twice the widest band from the mask's edge (erosion, then a blur as wide)
    band = blend.max_band * face_geometry(face.landmarks)[0]
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3) > 2 * band + 1
    assert inside.sum() > 0.3 * mask.sum()
    assert changed[inside].mean() > 0.97


@pytest.mark.parametrize("names", [("eye",), ("lip",), ("nose", "cheek"), ("forehead", "chin", "jaw")])
def test_small_regions_keep_a_changed_core(face, names):
    regions = region_masks(face.landmarks, face.image)
    mask = np.logical_or.reduce([regions[name] for name in names])
    for seed in range(3):
        changed = _changed(face, SelfBlend()(face, mask, np.random.default_rng(seed)))
        assert not (changed & ~mask).any()
        distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
        assert changed[distance >= 0.9 * distance.max()].all()
        assert changed.sum() > 0.3 * mask.sum()


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_blend(face):
    mask = face_mask(face.landmarks, face.image.shape[0])
    first, again = (SelfBlend()(face, mask, np.random.default_rng([7, 1, 3])) for _ in range(2))
    other = SelfBlend()(face, mask, np.random.default_rng([7, 1, 4]))
    assert first.dtype == np.uint8 and first.shape == face.image.shape
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_odd_masks_and_images(face):
    size = face.image.shape[0]
    rng = np.random.default_rng(0)
    # an empty mask changes nothing
    assert np.array_equal(SelfBlend()(face, np.zeros((size, size), bool), rng), face.image)
    # a one-pixel line is too thin for a band: blended whole
    line = np.zeros((size, size), bool)
    line[size // 2, size // 4 : 3 * size // 4] = True
    changed = _changed(face, SelfBlend()(face, line, rng))
    assert not (changed & ~line).any() and changed.sum() > 0.9 * line.sum()
    # a mask over the whole image (the copy's shift reaches past the border, which is reflected)
    everything = np.ones((size, size), bool)
    assert _changed(face, SelfBlend()(face, everything, rng)).mean() > 0.5
    # a small, grey face
    small = cv2.cvtColor(cv2.cvtColor(cv2.resize(face.image, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY),
                         cv2.COLOR_GRAY2RGB)
    grey = AlignedFace(face.face_id, small, face.landmarks * 64 / size)
    mask = face_mask(grey.landmarks, 64)
    changed = _changed(grey, SelfBlend()(grey, mask, rng))
    assert not (changed & ~mask).any() and changed.any()


def test_the_pipeline_writes_self_blends_with_their_mask_regions_and_report(hopper_photo, face, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(hopper_photo, faces / "hopper.jpg")
    out = tmp_path / "out"
    config = SynthesisConfig(faces, out, 4, seed=2, authentic_rate=0.0, whole_face_rate=0.0, max_regions=3,
                             local_methods=(SELF_BLEND,), max_upscale=MAX_UPSCALE, eval_every=0, show_progress=False)
    summary = synthesize(config)
    assert summary["counts"]["methods"] == {SELF_BLEND: 4}
    regions = region_masks(face.landmarks, face.image)
    for path in sorted((out / "samples").glob("syn*.json")):
        sidecar = json.loads(path.read_text())
        record = sidecar["record"]
        assert record["img_path"].startswith(f"synthetic/{SELF_BLEND}/")
        image = np.asarray(Image.open(out / "dataset" / record["img_path"]))
        mask = np.asarray(Image.open(out / "dataset" / record["mask_path"])) > 0
        changed = (image != face.image).any(axis=2)
        assert changed.any() and not (changed & ~mask).any()
        # the mask is the chosen regions (widened a little), and the report names exactly them
        assert 1 <= len(sidecar["regions"]) <= 3
        assert set(caption_to_regions(record["caption"])) == set(sidecar["regions"])
        chosen = np.logical_or.reduce([regions[name] for name in sidecar["regions"]])
        assert (chosen & mask).sum() > 0.9 * chosen.sum()
        assert all(sidecar["region_pixels"][name] == (regions[name] & mask).sum() > 0 for name in sidecar["regions"])
    again = tmp_path / "again"
    synthesize(SynthesisConfig(faces, again, 4, seed=2, authentic_rate=0.0, whole_face_rate=0.0, max_regions=3,
                               local_methods=(SELF_BLEND,), max_upscale=MAX_UPSCALE, eval_every=0, show_progress=False))
    for image in (out / "dataset" / "synthetic" / SELF_BLEND).glob("*.png"):
        assert image.read_bytes() == (again / "dataset" / "synthetic" / SELF_BLEND / image.name).read_bytes()

