"""Per-face analysis: the inverse of the alignment, group photos, a forgery in one face, and awkward photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

import forgerytalker
from forgerytalker.analysis.face_crops import DETECTION_SIDE, MAX_DETECTION_UPSCALE, FaceFinder, FaceOptions
from forgerytalker.cli import main
from forgerytalker.data.synthesis.faces import (
    CROP_SIZE,
    FaceAligner,
    FaceAlignment,
    FaceDetector,
    crop_face,
    ffhq_crop_matrix,
    uncrop,
)

MAX_NEW_TOKENS = 4
PATCH = (255, 0, 255)
"""Colour of the forgery the test model learns to find."""


def face_landmarks(angle: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    """68 landmark points of an upright face (eyes 60 px apart at scale 1), rotated by `angle` degrees, scaled and
    moved to `centre`; only the eyes and mouth corners matter to the alignment."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-60, 60, (68, 2))
    points[36:42] = [-30, -20] + rng.uniform(-3, 3, (6, 2))
    points[42:48] = [30, -20] + rng.uniform(-3, 3, (6, 2))
    points[48], points[54] = [-22, 40], [22, 40]
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return (points @ rotation.T) * scale + centre


@pytest.mark.parametrize(
    ("angle", "scale", "centre"),
    [(0.0, 1.0, (200.0, 150.0)), (25.0, 0.6, (150.0, 170.0)), (-40.0, 2.5, (330.0, 260.0)), (10.0, 1.4, (20.0, 15.0))],
    ids=["upright", "rotated-small", "rotated-large", "touching-the-border"],
)
def test_a_mask_drawn_on_the_crop_lands_on_the_right_photo_pixels(angle, scale, centre):
    size = (360, 300)
    matrix = ffhq_crop_matrix(face_landmarks(angle, scale, centre), CROP_SIZE)
    crop_mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    crop_mask[150:330, 200:420] = 1.0  # rows v, columns u
    on_photo = uncrop(crop_mask, matrix, size)
    assert on_photo.shape == size[::-1] and on_photo.dtype == np.float32
    ys, xs = np.mgrid[: size[1], : size[0]]
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    inside = (u >= 201) & (u <= 418) & (v >= 151) & (v <= 328)
    outside = (u <= 198) | (u >= 421) | (v <= 148) | (v >= 331)
    assert inside.any()
    np.testing.assert_allclose(on_photo[inside], 1.0, atol=1e-5)
    np.testing.assert_allclose(on_photo[outside], 0.0, atol=1e-5)
    # and through the package's crop: the crop of a photo, mapped back, is the photo wherever the crop reaches
    photo = np.asarray(random_image(7, size[1], size[0]).resize((36, 30)).resize(size, Image.Resampling.BILINEAR))
    alignment = FaceAlignment("t#0", "t", tuple(matrix.ravel()), (0.0,) * 136, float(np.sqrt(np.linalg.det(matrix[:, :2]))))
    crop = crop_face(photo, alignment, CROP_SIZE).image.astype(np.float32)
    back = np.stack([uncrop(crop[..., channel], matrix, size) for channel in range(3)], axis=-1)
    reached = (u > 2) & (v > 2) & (u < CROP_SIZE - 3) & (v < CROP_SIZE - 3)
    assert np.abs(back[reached] - photo[reached]).mean() < 3.0
    assert not back[~((u > -1) & (v > -1) & (u < CROP_SIZE) & (v < CROP_SIZE))].any()


@pytest.fixture(scope="module")
def portraits(face_photos_dir) -> list[Image.Image]:
    """Three portraits of about 300 px: the astronaut, Grace Hopper, Grace Hopper mirrored."""
    astronaut = Image.open(face_photos_dir / "astronaut.png").convert("RGB").resize((300, 300))
    grace = Image.open(face_photos_dir / "grace_hopper.jpg").convert("RGB").resize((260, 300))
    return [astronaut, grace, grace.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]


def group_photo(portraits) -> Image.Image:
    photo = Image.new("RGB", (900, 320), (128, 128, 128))
    for index, portrait in enumerate(portraits):
        photo.paste(portrait, (index * 300, 10))
    return photo


@pytest.fixture(scope="module")
def checkpoint(saved_tiny_checkpoint):
    return saved_tiny_checkpoint


def test_a_group_photo_gives_one_answer_per_detected_face(checkpoint, portraits):
    photo = group_photo(portraits)
    alone = forgerytalker.analyze(photo, model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    scale = min(MAX_DETECTION_UPSCALE, DETECTION_SIDE / max(photo.size))
    detected = sorted(box for box, score in FaceDetector().detect(np.asarray(photo), scale) if score >= 0.2)
    assert alone.faces == 3 and alone.face_mode == "every"
    assert [face["box"] for face in alone.face_analyses] == [list(box) for box in detected]
    assert [face["face"] for face in alone.face_analyses] == [1, 2, 3]
    assert alone.manipulation_score == max(face["manipulation_score"] for face in alone.face_analyses)
    assert alone.report == "\n".join(f"Face {f['face']}: {f['report']}" for f in alone.face_analyses)
    record = alone.to_record()
    assert json.loads(json.dumps(record)) == record and len(record["face_analyses"]) == 3
    # all faces of a batch at once (4 crops: the group's three and the single portrait's one) == one at a time
    together = forgerytalker.analyze([photo, portraits[0]], model=checkpoint, batch_size=4, max_new_tokens=MAX_NEW_TOKENS)
    single = forgerytalker.analyze(portraits[0], model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    for one, batched in ((alone, together[0]), (single, together[1])):
        assert [f["report"] for f in one.face_analyses] == [f["report"] for f in batched.face_analyses]
        assert [f["box"] for f in one.face_analyses] == [f["box"] for f in batched.face_analyses]
        np.testing.assert_allclose(one.mask_probabilities, batched.mask_probabilities, atol=1e-5)
    largest = forgerytalker.analyze(photo, model=checkpoint, faces="largest", max_new_tokens=MAX_NEW_TOKENS)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in detected]
    (chosen,) = [face["box"] for face in largest.face_analyses]
    assert tuple(chosen) in detected and (chosen[2] - chosen[0]) * (chosen[3] - chosen[1]) == max(areas)
    assert "only the largest" in largest.warnings[0]


def test_aligned_faces_are_the_crops_the_analysis_reads(checkpoint, portraits):
    photo = group_photo(portraits)
    crops = forgerytalker.aligned_faces(photo)
    analysed = forgerytalker.analyze(photo, model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    assert [list(crop.box) for crop in crops] == [face["box"] for face in analysed.face_analyses]
    assert all(crop.image.size == (CROP_SIZE, CROP_SIZE) for crop in crops)
    # each crop is the synthesizer's alignment of its face (the transform of its 68 landmarks)
    aligner = FaceAligner()
    for crop in crops:
        np.testing.assert_allclose(crop.matrix, ffhq_crop_matrix(aligner.landmarks(np.asarray(photo), crop.box), CROP_SIZE))
    as_array = forgerytalker.aligned_faces(np.asarray(photo), faces="largest")
    areas = [(crop.box[2] - crop.box[0]) * (crop.box[3] - crop.box[1]) for crop in crops]
    (largest,) = [crop for crop in crops if crop.box == as_array[0].box] if len(as_array) == 1 else [None, None]
    assert (largest.box[2] - largest.box[0]) * (largest.box[3] - largest.box[1]) == max(areas)
    assert np.array_equal(np.asarray(as_array[0].image), np.asarray(largest.image))
    assert forgerytalker.aligned_faces(photo, min_face_size=10_000) == []
    assert forgerytalker.aligned_faces(Image.new("RGB", (300, 300), (128, 128, 128))) == []
    with pytest.raises(ValueError, match='`faces` must be "every" or "largest"'):
        forgerytalker.aligned_faces(photo, faces="whole")


def test_whole_picture_mode_reads_the_photo_as_one_face_crop(checkpoint, portraits):
    from transformers import pipeline

    whole = forgerytalker.analyze(portraits[0], model=checkpoint, faces="whole", max_new_tokens=MAX_NEW_TOKENS)
    assert whole.face_mode == "whole" and whole.face_analyses == [] and whole.faces is None and whole.warnings == []
    plain = pipeline("forgery-analysis", model=str(checkpoint), max_new_tokens=MAX_NEW_TOKENS)(portraits[0], faces="whole")
    assert plain["report"] == whole.report and plain["faces"] == []
    np.testing.assert_allclose(plain["mask_probabilities"], whole.mask_probabilities)
    # the pipeline takes the same options, with the same defaults
    pipe = pipeline("forgery-analysis", model=str(checkpoint), max_new_tokens=MAX_NEW_TOKENS)
    group = group_photo(portraits)
    per_face = pipe([group, random_image(1, 60, 80)], batch_size=4)
    assert [face["face"] for face in per_face[0]["faces"]] == [1, 2, 3] and per_face[1]["face_mode"] == "whole"
    assert per_face[0]["report"] == forgerytalker.analyze(group, model=pipe).report
    skipped = pipe(random_image(1, 60, 80), no_face="skip")
    assert set(skipped) == {"skipped", "faces", "face_count", "face_mode", "warnings"} and "no face" in skipped["skipped"]
    assert skipped["faces"] == [] and skipped["warnings"] == [skipped["skipped"]]
    assert pipe(group, min_face_size=400)["face_mode"] == "whole"
    face = forgerytalker.analyze(portraits[0], model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    assert not np.asarray(face.mask)[:, :30].any()  # the background left of the face is outside its crop


def test_no_face_and_faces_under_the_minimum(tmp_path, checkpoint, portraits, capsys):
    noise = random_image(3, 120, 160)
    analysed = forgerytalker.analyze(noise, model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    assert analysed.face_mode == "whole" and analysed.faces == 0 and "no face" in analysed.warnings[0]
    assert forgerytalker.analyze(noise, model=checkpoint, no_face="skip") is None
    small = forgerytalker.analyze(group_photo(portraits), model=checkpoint, min_face_size=400, max_new_tokens=MAX_NEW_TOKENS)
    assert small.face_mode == "whole" and small.faces == 3
    assert any("3 face(s) narrower than 400 px left out" in warning for warning in small.warnings)
    with pytest.raises(ValueError, match="`faces` must be one of"):
        forgerytalker.analyze(noise, model=checkpoint, faces="all")
    folder = tmp_path / "in"
    folder.mkdir()
    noise.save(folder / "noise.png")
    portraits[1].save(folder / "grace.png")
    out = tmp_path / "out"
    code = main(["analyze", str(folder), "--model", str(checkpoint), "--out", str(out), "--no-face", "skip",
                 "--no-progress", "--num-threads", "1", "--max-new-tokens", str(MAX_NEW_TOKENS)])
    assert code == 0
    records = {json.loads(line)["image"].rsplit("/", 1)[-1]: json.loads(line) for line in (out / "results.jsonl").open()}
    assert records["noise.png"]["status"] == "skipped" and "no face" in records["noise.png"]["reason"]
    assert not (out / "noise.png.png").exists() and records["grace.png"]["status"] == "ok"
    assert "noise.png: not analysed: no face" in capsys.readouterr().out


def test_exif_rotated_and_huge_photos(tmp_path, checkpoint, portraits):
    upright = portraits[1]
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns the stored picture 90° clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    turned = forgerytalker.analyze(str(tmp_path / "phone.jpg"), model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    reference = forgerytalker.analyze(upright, model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    assert (turned.width, turned.height) == upright.size and turned.faces == 1
    assert np.abs(np.subtract(turned.face_analyses[0]["box"], reference.face_analyses[0]["box"])).max() <= 12
    # 12 megapixels with a face of 520 px: found on the reduced copy, cropped from the full photo
    huge = Image.new("RGB", (4000, 3000), (90, 110, 90))
    huge.paste(upright.resize((520, 600)), (2900, 1700))
    huge.save(tmp_path / "huge.jpg", quality=90)
    analysis = forgerytalker.analyze(str(tmp_path / "huge.jpg"), model=checkpoint, max_new_tokens=MAX_NEW_TOKENS)
    assert analysis.mask.size == (4000, 3000) and analysis.faces == 1
    left, top, right, bottom = analysis.face_analyses[0]["box"]
    assert 2900 <= left < right <= 3420 and 1700 <= top < bottom <= 2300
    matrix = np.asarray(analysis.face_analyses[0]["matrix"]).reshape(2, 3)
    assert np.sqrt(np.linalg.det(matrix[:, :2])) > 1.0  # the crop has more pixels than the reduced copy's face
    assert not np.asarray(analysis.mask)[:, :2800].any()


def paste_patch(image: Image.Image, matrix: np.ndarray, rng) -> tuple[Image.Image, np.ndarray]:
    """The photo with a `PATCH` square over a random spot of the lower face (the eyes stay visible, so the face is
    still found) whose crop transform is `matrix`, and its 0/1 mask in photo pixels."""
    side = int(rng.integers(80, 120))
    u, v = int(rng.integers(140, 372 - side)), int(rng.integers(270, 420 - side))  # cheeks, nose tip, mouth
    crop_mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    crop_mask[v : v + side, u : u + side] = 1
    mask = uncrop(crop_mask, matrix, image.size) > 0.5
    pixels = np.array(image)
    pixels[mask] = PATCH
    return Image.fromarray(pixels), mask


@pytest.fixture(scope="module")
def patch_finder(tmp_path_factory, portraits):
    """A tiny model trained here to mask magenta squares pasted on aligned faces (and nothing on clean ones)."""
    import torch

    from forgerytalker.tiny import build_tiny_model_and_processor

    finder = FaceFinder()
    faces = [finder(portrait, FaceOptions()).crops[0] for portrait in portraits]
    model, processor = build_tiny_model_and_processor("llama", image_size=32, seed=1)
    model.config.region_source = "none"
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same training on every machine: sums over threads round differently
    for _ in range(120):
        images, masks = [], []
        for face in faces:
            identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            forged, mask = paste_patch(face.image, identity, rng)
            images += [forged, face.image]
            masks += [mask, np.zeros(mask.shape, bool)]
        batch = processor(images=images, reports=["patch"] * len(images), region_labels=[["nose"], []] * 3, masks=masks)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("patch-finder") / "model"
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_forgery_in_one_face_of_a_group_is_found_in_that_face_only(patch_finder, portraits):
    photo = group_photo(portraits)
    faces = FaceFinder()(photo, FaceOptions()).crops
    forged, truth = paste_patch(photo, faces[1].matrix, np.random.default_rng(5))
    analysis = forgerytalker.analyze(forged, model=patch_finder, max_new_tokens=MAX_NEW_TOKENS)
    mask = np.asarray(analysis.mask) > 0
    assert len(analysis.face_analyses) == 3
    assert (mask & truth).sum() / (mask | truth).sum() > 0.3  # localized
    for face in (faces[0], faces[2]):
        left, top, right, bottom = face.box
        assert not mask[top:bottom, left:right].any()  # and not in the other faces
    assert analysis.manipulation_score == max(face["manipulation_score"] for face in analysis.face_analyses)
    clean = forgerytalker.analyze(photo, model=patch_finder, max_new_tokens=MAX_NEW_TOKENS)
    assert np.asarray(clean.mask).mean() / 255 < 0.2 * truth.mean()  # the clean group photo: hardly anything


def test_pasting_a_face_back_through_its_window_equals_the_whole_photo_warp():
    from forgerytalker.analysis.face_crops import FaceCrop, FacePhoto, merge_faces

    size = (900, 700)
    matrix = ffhq_crop_matrix(face_landmarks(30.0, 0.8, (880.0, 40.0)), CROP_SIZE)  # rotated, over the corner
    crop_map = np.random.default_rng(0).random((CROP_SIZE, CROP_SIZE), dtype=np.float32)
    crop = FaceCrop((850, 10, 899, 60), 1.0, matrix, Image.new("RGB", (CROP_SIZE, CROP_SIZE)))
    result = {"mask_probabilities": crop_map, "mask_threshold": 0.5, "report": "r", "regions": [],
              "region_probabilities": dict.fromkeys(forgerytalker.REGION_NAMES, 0.1), "instruction_regions": None,
              "mask_confidence": 0.5, "region_threshold": 0.5, "located_region_probabilities": None,
              "located_region_threshold": None}
    merged = merge_faces(FacePhoto(Image.new("RGB", size), [crop], 1, "every"), [result])
    whole = uncrop(crop_map, matrix, size)
    np.testing.assert_allclose(merged["mask_probabilities"], whole, atol=1e-6)
    assert np.array_equal(np.asarray(merged["mask"]) > 0, whole > 0.5)
