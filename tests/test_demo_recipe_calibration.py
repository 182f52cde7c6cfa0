"""The demo recipe's calibration: the region threshold balances the error rates and the mask threshold maximises
the IoU, both on the validation split and written into the shipped config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgerytalker import ForgeryTalkerForConditionalGeneration  # noqa: E402
from forgerytalker.evaluation.mask_metrics import count_mask_pair, summarize_mask_counts  # noqa: E402
from forgerytalker.tiny import build_tiny_model_and_processor  # noqa: E402
from recipe_datasets import parquet_folder, recipe_rows  # noqa: E402
from recipes.demo_model import calibration  # noqa: E402
from recipes.demo_model.calibration import MASK_THRESHOLDS, balanced_threshold, calibrate  # noqa: E402


def test_the_threshold_balances_forged_and_authentic_recall_on_validation():
    scores = np.array([0.10, 0.20, 0.35, 0.40, 0.60, 0.70, 0.90, 0.95])
    forged = np.array([False, False, False, True, False, True, True, True])
    threshold, balanced = balanced_threshold(scores, forged, noise=0.01)  # scores taken as exact: the plain best
    assert 0.35 < threshold < 0.40 and balanced == pytest.approx(0.875)
    with pytest.raises(ValueError, match="authentic and forged"):
        balanced_threshold(scores, np.ones(8, bool))


def test_the_threshold_keeps_a_margin_from_a_dense_band_of_untouched_scores():
    """Untouched faces in a narrow band (as the prompter with the patch head scores them) and a few forgeries just
    above it: the exact best threshold sits at the band's edge, where an untouched face of another photo lands on
    the wrong side; expected under SCORE_NOISE logits, it keeps clear of the band and gives up those forgeries."""
    rng = np.random.default_rng(0)
    authentic = rng.uniform(0.0135, 0.0145, 40)
    scores = np.concatenate([authentic, np.full(4, 0.016), rng.uniform(0.7, 0.9, 36)])
    forged = np.arange(80) >= 40
    exact, exact_balanced = balanced_threshold(scores, forged, noise=0.01)
    assert exact < 0.016 and exact_balanced == pytest.approx(1.0)
    threshold, balanced = balanced_threshold(scores, forged)
    assert calibration.SCORE_NOISE == 0.5
    assert 0.03 < threshold < 0.7 and balanced == pytest.approx((1.0 + 36 / 40) / 2)


def _iou_one_image_at_a_time(model, processor, rows, threshold: float) -> float:
    counts = []
    for row in rows:
        image = row["image"].convert("RGB")
        with torch.inference_mode():
            outputs = model.generate(**processor(images=[image], return_tensors="pt"), max_new_tokens=1)
        mask = processor.post_process_generation(outputs, target_sizes=[(image.height, image.width)],
                                                 mask_threshold=threshold)[0]["mask"]
        counts.append(count_mask_pair(row["image_id"], mask.numpy(), row["mask"]))
    return summarize_mask_counts(counts)["IoU"]


def test_the_mask_threshold_is_the_one_with_the_best_validation_iou_after_the_region_threshold(tmp_path, monkeypatch):
    methods = ["authentic", "face_swap", "classical_inpainting", "authentic", "region_transplant", "face_swap",
               "classical_inpainting", "authentic", "region_transplant", "face_swap", "classical_inpainting"]
    monkeypatch.setattr(calibration, "BATCH_SIZE", 4)  # three batches, the last one short
    dataset = parquet_folder(tmp_path / "mmtt", {"train": recipe_rows(["authentic"], "t"),
                                                 "validation": recipe_rows(methods, "v")})
    model, processor = build_tiny_model_and_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    result = calibrate(tmp_path / "model", dataset)

    rows = load_dataset(str(dataset), split="validation")
    pixels = processor.image_processor(images=[image.convert("RGB") for image in rows["image"]], return_tensors="pt")
    with torch.inference_mode():
        scores = torch.sigmoid(model.prompter(pixels["pixel_values"]).region_logits).max(-1).values.numpy()
    region_threshold, _ = balanced_threshold(scores, np.array([method != "authentic" for method in methods]))
    model.config.region_threshold = region_threshold
    ious = [_iou_one_image_at_a_time(model.eval(), processor, rows, threshold) for threshold in MASK_THRESHOLDS]
    assert len(set(np.round(ious, 6))) > 1  # the thresholds differ on these images
    best = int(np.argmax(ious))
    assert result["mask_threshold"] == MASK_THRESHOLDS[best]
    assert result["validation_iou"] == pytest.approx(ious[best])
    assert result["previous_mask_threshold"] == 0.5
    assert result["validation_iou_at_previous_mask_threshold"] == pytest.approx(ious[MASK_THRESHOLDS.index(0.5)])
    shipped = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "model").config
    assert (shipped.region_threshold, shipped.mask_threshold) == pytest.approx((region_threshold, MASK_THRESHOLDS[best]))
    # calibrated once: a resumed recipe reads the record back
    assert json.loads((tmp_path / "model" / "calibration.json").read_text()) == result
    assert calibrate(tmp_path / "model", dataset) == result
