"""The demo model bundled in the package: the default of the command line, the Python API, the pipeline and the
quickstart, loaded the way a user loads any checkpoint, and answering differently for different photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import forgerytalker
from forgerytalker.analysis import defaults

REPO = Path(__file__).resolve().parents[1]
SIZE_BUDGET = 30 * 2**20  # the budget for the bundled model


def test_the_bundled_model_is_in_the_package_small_and_loads_with_auto_classes():
    from transformers import AutoModel, AutoProcessor

    folder = Path(forgerytalker.default_model())
    assert folder == defaults.BUNDLED_MODEL_DIR and folder.is_relative_to(Path(forgerytalker.__file__).parent)
    assert sum(path.stat().st_size for path in folder.iterdir()) < SIZE_BUDGET
    model = AutoModel.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "ForgeryTalkerForConditionalGeneration"
    assert processor.image_processor.size["height"] == model.config.instructblip_config.vision_config.image_size


def test_an_installation_without_the_bundled_model_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(defaults, "BUNDLED_MODEL_DIR", tmp_path)
    with pytest.raises(defaults.NoDefaultModelError, match="bundled default model is missing"):
        defaults.default_model()
    assert defaults.resolve_model("some/checkpoint") == "some/checkpoint"


def _forged_photos(face_photos_dir: Path, tmp_path: Path, count: int) -> list[Path]:
    """`count` forgeries synthesized from the session's two face photos (different faces, regions, methods)."""
    from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize

    synthesize(SynthesisConfig(face_photos_dir, tmp_path / "forged", count, seed=5, authentic_rate=0.0, max_upscale=4.0,
                               max_regions=4, eval_every=0, show_progress=False))
    return sorted(path for path in (tmp_path / "forged" / "dataset").rglob("syn*.png")
                  if "masks" not in path.parts)[:count]


def test_the_pipeline_defaults_to_the_bundled_model_and_its_answers_depend_on_the_photo(face_photos_dir, tmp_path):
    from transformers import pipeline

    analyze = pipeline("forgery-analysis")
    assert Path(analyze.model.name_or_path) == defaults.BUNDLED_MODEL_DIR
    photos = [Image.open(path).convert("RGB") for path in _forged_photos(face_photos_dir, tmp_path, 4)]
    results = analyze(photos)
    assert all(result["report"].strip() and result["mask"].size == photo.size for result, photo in zip(results, photos))
    assert len({result["report"] for result in results}) > 1
    masks = [np.asarray(result["mask_probabilities"]) for result in results]
    assert max(np.abs(masks[0] - other).mean() for other in masks[1:]) > 0.01


def test_the_readmes_main_command_analyzes_a_photo_with_the_bundled_model(face_photos_dir, tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    result = subprocess.run([sys.executable, "-m", "forgerytalker.cli", "analyze", str(face_photos_dir / "astronaut.png"),
                             "--out", str(out), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["status"] == "ok" and record["report"].strip() and record["model"]
    with Image.open(out / record["outputs"]["mask"]) as mask:
        assert mask.size == (512, 512)

    quickstart = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")], env=env, capture_output=True,
                                text=True, timeout=300)
    assert quickstart.returncode == 0, quickstart.stderr[-3000:]
    answer = json.loads(quickstart.stdout)
    assert answer["report"].strip() and answer["mask_size"] == [512, 512] and "bundled" in answer["model"]
    assert not answer["verdict"].startswith("manipulated"), answer  # the astronaut photo is untouched
