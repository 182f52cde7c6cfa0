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
from recipes.demo_model.calibration import MASK_THRESHOLDS, balanced_threshold, best_mask_setting, calibrate  # noqa: E402


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


def test_the_masks_of_untouched_faces_are_emptied_only_where_that_has_the_best_iou():
    as_decoded = [50.0, 61.0, 60.0]
    assert best_mask_setting(np.array([as_decoded, [55.0, 60.5, 62.0]])) == (True, 2)
    assert best_mask_setting(np.array([as_decoded, [55.0, 61.0, 58.0]])) == (False, 1)  # a tie: as decoded
    assert best_mask_setting(np.array([[60.0, 60.0, 59.0], [58.0, 58.0, 58.0]])) == (False, 0)  # then the lowest


def _ious_one_image_at_a_time(model, processor, rows, thresholds) -> list[float]:
    """The mean IoU at each threshold of the masks `generate` gives each image alone (the config as it is)."""
    counts = [[] for _ in thresholds]
    for row in rows:
        image = row["image"].convert("RGB")
        with torch.inference_mode():
            outputs = model.generate(**processor(images=[image], return_tensors="pt"), max_new_tokens=1)
        result = processor.post_process_generation(outputs, target_sizes=[(image.height, image.width)],
                                                   return_mask_probabilities=True)[0]
        for index, threshold in enumerate(thresholds):
            mask = result["mask_probabilities"] > threshold
            counts[index].append(count_mask_pair(row["image_id"], mask.numpy(), row["mask"]))
    return [summarize_mask_counts(per_threshold)["IoU"] for per_threshold in counts]


def test_the_mask_threshold_is_the_one_with_the_best_validation_iou_after_the_region_threshold(tmp_path, monkeypatch):
    methods = ["authentic", "face_swap", "classical_inpainting", "authentic", "region_transplant", "face_swap",
               "classical_inpainting", "authentic", "region_transplant", "face_swap", "classical_inpainting"]
    monkeypatch.setattr(calibration, "BATCH_SIZE", 4)  # three batches, the last one short
    # the random tiny prompter scores every face alike, where the balanced threshold calls them all manipulated: a
    # threshold inside its scores calls some untouched, whose masks the calibration may then empty
    balanced = calibration.balanced_threshold
    monkeypatch.setattr(calibration, "balanced_threshold",
                        lambda scores, forged: (float(np.median(scores)), balanced(scores, forged)[1]))
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
    region_threshold = float(np.median(scores))
    model.config.region_threshold = region_threshold
    assert 0 < (scores > region_threshold).sum() < len(methods)  # some faces are called untouched
    model.eval()
    ious = {}
    for emptied in (False, True):
        model.config.empty_untouched_masks = emptied
        ious[emptied] = _ious_one_image_at_a_time(model, processor, rows, MASK_THRESHOLDS)
    assert len(set(np.round(ious[False], 6))) > 1  # the thresholds differ on these images
    assert not np.allclose(ious[False], ious[True])  # and so does emptying the masks of untouched faces
    # the best IoU; on ties the masks as decoded, then the lowest threshold
    best_iou, as_decoded, best = max((round(iou, 9), not emptied, -index) for emptied in (False, True)
                                     for index, iou in enumerate(ious[emptied]))
    emptied, best = not as_decoded, -best
    assert (result["mask_threshold"], result["empty_untouched_masks"]) == (MASK_THRESHOLDS[best], emptied)
    assert result["validation_iou"] == pytest.approx(best_iou)
    assert result["validation_iou_as_decoded"] == pytest.approx(ious[False][best])
    assert result["validation_iou_emptied"] == pytest.approx(ious[True][best])
    assert (result["previous_mask_threshold"], result["previous_empty_untouched_masks"]) == (0.5, False)
    assert result["validation_iou_at_previous_mask_threshold"] == pytest.approx(ious[False][MASK_THRESHOLDS.index(0.5)])
    shipped = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "model").config
    assert (shipped.region_threshold, shipped.mask_threshold) == pytest.approx((region_threshold, MASK_THRESHOLDS[best]))
    assert shipped.empty_untouched_masks == emptied
    # calibrated once: a resumed recipe reads the record back
    assert json.loads((tmp_path / "model" / "calibration.json").read_text()) == result
    assert calibrate(tmp_path / "model", dataset) == result
