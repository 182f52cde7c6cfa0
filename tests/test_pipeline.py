"""The `forgery-analysis` pipeline, used the way a user does: a saved checkpoint, photos as files or pictures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import random_image
from PIL import Image
from transformers import pipeline

from forgerytalker import PIPELINE_TASK, REGION_NAMES
from forgerytalker.image_utils import ImageReadError
from forgerytalker.analysis.face_crops import FACE_RESULT_KEYS
from forgerytalker.pipeline_forgerytalker import RESULT_KEYS

MAX_NEW_TOKENS = 5


@pytest.fixture
def checkpoint(tmp_path, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model.config.mask_threshold = 0.45  # a tuned threshold travels with the checkpoint
    model.save_pretrained(tmp_path / "checkpoint")
    processor.save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


@pytest.fixture
def analyze(checkpoint):
    return pipeline(PIPELINE_TASK, model=str(checkpoint), max_new_tokens=MAX_NEW_TOKENS)


def photos(tmp_path) -> list:
    """A PIL image, a PNG file, and a JPEG file whose EXIF orientation turns it upright (33 × 45 shown)."""
    picture = random_image(0, 40, 50)
    png = tmp_path / "face.png"
    random_image(1, 64, 48).save(png)
    jpeg = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    random_image(2, 33, 45).save(jpeg, exif=exif)
    return [picture, str(png), jpeg]


def test_the_task_is_registered_on_import():
    from transformers.pipelines import PIPELINE_REGISTRY

    assert PIPELINE_TASK == "forgery-analysis" and PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks()


def test_each_photo_gets_the_documented_answer(tmp_path, analyze):
    results = analyze(photos(tmp_path))
    for result, size in zip(results, [(50, 40), (48, 64), (33, 45)]):
        assert tuple(result) == RESULT_KEYS + FACE_RESULT_KEYS
        # noise has no face: analysed whole, by default, with a warning
        assert result["faces"] == [] and result["face_mode"] == "whole" and result["face_count"] == 0
        assert "no face" in result["warnings"][0]
        assert isinstance(result["report"], str)
        assert result["regions"] == [name for name in REGION_NAMES if name in result["regions"]]
        assert list(result["region_probabilities"]) == list(REGION_NAMES)
        assert result["regions"] == [name for name, p in result["region_probabilities"].items() if p > result["region_threshold"]]
        assert result["instruction_regions"] == result["regions"]  # the default source: the prompter's regions
        mask, probabilities = result["mask"], result["mask_probabilities"]
        assert mask.mode == "L" and mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert probabilities.dtype == np.float32 and probabilities.shape == size[::-1]
        assert np.array_equal(np.asarray(mask) == 255, probabilities > 0.45)
        assert isinstance(result["mask_confidence"], float)
        assert (result["mask_threshold"], result["region_threshold"]) == (0.45, 0.5)


def test_one_photo_gives_one_answer_and_a_batch_gives_the_single_answers(tmp_path, analyze):
    inputs = photos(tmp_path)
    single = [analyze(photo) for photo in inputs]
    assert all(isinstance(result, dict) for result in single)
    batched = analyze(inputs, batch_size=3)
    for alone, together in zip(single, batched):
        assert alone["report"] == together["report"]
        assert alone["regions"] == together["regions"]
        assert np.array_equal(np.asarray(alone["mask"]), np.asarray(together["mask"]))
        np.testing.assert_allclose(alone["mask_probabilities"], together["mask_probabilities"], atol=1e-5)
        assert alone["region_probabilities"] == pytest.approx(together["region_probabilities"], abs=1e-6)


def test_regions_named_by_the_analyst(tmp_path, analyze):
    inputs = photos(tmp_path)
    same = analyze(inputs, regions=["eye", "lip"], batch_size=2)
    assert [result["instruction_regions"] for result in same] == [["eye", "lip"]] * 3
    each = analyze(inputs[:2], regions=[["nose"], ["chin", "jaw"]], batch_size=2)
    assert [result["instruction_regions"] for result in each] == [["nose"], ["chin", "jaw"]]
    as_dict = analyze({"image": inputs[0], "regions": ["tooth"]})
    assert as_dict["instruction_regions"] == ["tooth"] and as_dict["report"] == analyze(inputs[0], regions=["tooth"])["report"]
    assert analyze(inputs[0], region_source="none")["instruction_regions"] is None
    with pytest.raises(ValueError, match=r"`regions` has 1 lists but 2 photos"):
        analyze(inputs[:2], regions=[["nose"]])


def test_generation_and_threshold_arguments(tmp_path, analyze):
    photo = photos(tmp_path)[0]
    short = analyze(photo, max_new_tokens=2)
    assert len(analyze.processor.tokenizer(short["report"], add_special_tokens=False)["input_ids"]) <= 3
    with pytest.raises(ValueError, match="num_return_sequences"):
        analyze(photo, num_beams=2, num_return_sequences=2)
    several = analyze(photo, num_beams=2, num_return_sequences=2, faces="whole")
    assert isinstance(several, list) and len(several) == 2 and all(tuple(r) == RESULT_KEYS for r in several)
    loose = analyze(photo, mask_threshold=0.01)
    assert loose["mask_threshold"] == 0.01
    assert np.array_equal(np.asarray(loose["mask"]) == 255, loose["mask_probabilities"] > 0.01)
    with pytest.raises(TypeError, match="unknown argument"):
        analyze(photo, colour="red")


def test_an_unreadable_file_is_named(tmp_path, analyze):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        analyze(str(broken))


def test_checkpoints_carry_the_pipeline_for_remote_code_users(tmp_path, checkpoint, analyze):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["custom_pipelines"][PIPELINE_TASK]["impl"] == "pipeline_forgerytalker.ForgeryAnalysisPipeline"
    assert (checkpoint / "pipeline_forgerytalker.py").is_file() and (checkpoint / "image_utils.py").is_file()
    photo = tmp_path / "face.png"
    random_image(5, 40, 40).save(photo)
    expected = analyze(str(photo))
    code = textwrap.dedent(f"""
        import json
        from transformers import AutoModelForImageTextToText, pipeline
        analyze = pipeline(model={str(checkpoint)!r}, trust_remote_code=True, max_new_tokens={MAX_NEW_TOKENS})
        result = analyze({str(photo)!r})
        model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        print(json.dumps([type(analyze).__name__, type(model).__name__, result["report"], result["regions"], result["mask"].size]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    names = json.loads(run.stdout.strip().splitlines()[-1])
    assert names == ["ForgeryAnalysisPipeline", "ForgeryTalkerForConditionalGeneration", expected["report"],
                     expected["regions"], [40, 40]]


def test_pictures_in_memory_of_any_mode(analyze):
    sixteen = Image.fromarray(np.linspace(0, 65535, 30 * 20).reshape(30, 20).astype(np.uint16))
    rgba = Image.fromarray(np.zeros((30, 20, 4), np.uint8), "RGBA")
    stored = io.BytesIO()
    random_image(3, 30, 20).convert("CMYK").save(stored, format="JPEG")
    for picture in (sixteen, rgba, Image.open(stored)):
        assert analyze(picture)["mask"].size == (20, 30)
