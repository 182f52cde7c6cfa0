"""Synthesis for tightly cropped face photos: padding before detection, the written face size, and the one
resize + JPEG chain that untouched and forged samples share."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
cbook = pytest.importorskip("matplotlib.cbook")

from forgerytalker.data.errors import DataInputError  # noqa: E402
from forgerytalker.data.synthesis.faces import FaceAligner, crop_face, read_photo  # noqa: E402
from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize  # noqa: E402

MAX_UPSCALE = 4.0


@pytest.fixture(scope="module")
def hopper() -> bytes:
    return open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()


def _tight_crop(photo: bytes) -> tuple[bytes, np.ndarray]:
    """Grace Hopper cut like a UTKFace crop (through the forehead, at the jaw); returns its PNG bytes and the
    offset `(x, y)` of the cut in the photo."""
    alignment = FaceAligner(max_upscale=MAX_UPSCALE).align_photo(photo, "hopper.jpg")[0][0]
    inverse = cv2.invertAffineTransform(np.asarray(alignment.matrix).reshape(2, 3))
    points = alignment.landmark_array() @ inverse[:, :2].T + inverse[:, 2]
    (left, top), (right, bottom) = points.min(0), points.max(0)
    top = top + 0.15 * (bottom - top)
    image = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))[int(top) : int(bottom), int(left) : int(right)]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue(), np.float32([int(left), int(top)])


def test_padding_finds_a_tightly_cropped_face_in_the_unpadded_photos_pixels(hopper):
    tight, offset = _tight_crop(hopper)
    assert FaceAligner(max_upscale=MAX_UPSCALE).align_photo(tight, "tight.png")[0] == []
    found, _ = FaceAligner(max_upscale=MAX_UPSCALE, face_padding=0.3).align_photo(tight, "tight.png")
    assert len(found) == 1
    # the same face as in the whole photo: the tight photo's crop matches the whole photo's crop
    whole = FaceAligner(max_upscale=MAX_UPSCALE).align_photo(hopper, "hopper.jpg")[0][0]
    from_tight = crop_face(read_photo(tight), found[0]).landmarks
    matrix = np.asarray(found[0].matrix).reshape(2, 3)
    inverse = cv2.invertAffineTransform(matrix)
    in_photo = from_tight @ inverse[:, :2].T + inverse[:, 2] + offset
    whole_inverse = cv2.invertAffineTransform(np.asarray(whole.matrix).reshape(2, 3))
    in_photo_whole = whole.landmark_array() @ whole_inverse[:, :2].T + whole_inverse[:, 2]
    face_width = np.ptp(in_photo_whole[:, 0])
    assert np.abs(in_photo - in_photo_whole).max() < 0.08 * face_width


def test_untouched_and_forged_samples_go_through_one_resize_and_jpeg_chain(hopper, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "hopper.jpg").write_bytes(hopper)
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), faces / "hopper_again.jpg")
    out = tmp_path / "out"
    config = SynthesisConfig(faces, out, 10, seed=1, authentic_rate=0.5, max_upscale=MAX_UPSCALE, face_size=128,
                             jpeg_quality=(35, 35), max_regions=2, eval_every=0, show_progress=False)
    summary = synthesize(config)
    assert summary["face_size"] == 128 and summary["jpeg_quality"] == [35, 35]
    sidecars = [json.loads(path.read_text()) for path in sorted((out / "samples").glob("syn*.json"))]
    assert {sidecar["jpeg_quality"] for sidecar in sidecars} == {35}
    assert {"authentic"} < {sidecar["method"] for sidecar in sidecars}
    for sidecar in sidecars:
        record = sidecar["record"]
        image = np.asarray(Image.open(out / "dataset" / record["img_path"]))
        mask = np.asarray(Image.open(out / "dataset" / record["mask_path"]))
        assert image.shape == (128, 128, 3) and mask.shape == (128, 128)
        if sidecar["method"] == "authentic":
            # exactly the aligned crop, resized and JPEG-compressed at quality 35
            alignment = FaceAligner(max_upscale=MAX_UPSCALE).align_photo(hopper, "hopper.jpg")[0][0]
            crop = crop_face(read_photo(hopper), alignment).image
            small = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)
            _, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 35])
            expected = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert np.array_equal(image, expected)
            assert not mask.any()
        else:
            assert mask.any()


@pytest.mark.parametrize("field, value, message", [
    ("jpeg_quality", (90, 50), "--jpeg-quality"), ("jpeg_quality", (0, 50), "--jpeg-quality"),
    ("face_size", 16, "--face-size"), ("face_padding", 1.5, "--face-padding"),
])
def test_bad_chain_settings_are_refused_naming_the_flag(tmp_path, field, value, message):
    config = SynthesisConfig(tmp_path, tmp_path / "out", 4, **{field: value})
    with pytest.raises(DataInputError) as error:
        config.validate()
    from forgerytalker.cli.data import render_error
    from forgerytalker.cli.synthesize import FLAGS

    assert message in render_error(error.value, FLAGS)
