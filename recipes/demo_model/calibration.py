"""The shipped manipulation threshold, chosen on the validation identities (never on the test split).

The image-level manipulation score is the prompter's highest region probability, and an image is called
manipulated when it is above the region threshold (`forgerytalker.analysis.records`). The threshold that
balances the two error rates on the validation split (highest balanced accuracy) becomes the model's
`region_threshold`, written into its config.json; `forgerytalker evaluate`, `analyze`, the pipeline and the
figures all read it from there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.evaluation.detection_metrics import forged_labels

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
LOWEST, HIGHEST = 0.01, 0.99
"""The threshold stays inside (0, 1), as the config requires."""


def balanced_threshold(scores: np.ndarray, forged: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): among the midpoints between consecutive distinct scores, the one whose
    rule `score > threshold` has the highest mean of forged recall and authentic recall (the lowest such midpoint
    on ties). Needs both classes."""
    if forged.all() or not forged.any():
        raise ValueError("calibrating a threshold needs authentic and forged images")
    distinct = np.unique(scores)
    candidates = np.clip(np.concatenate([[distinct[0] - 1e-6], (distinct[1:] + distinct[:-1]) / 2]), LOWEST, HIGHEST)
    called = scores[None, :] > candidates[:, None]
    balanced = (called[:, forged].mean(1) + (~called[:, ~forged]).mean(1)) / 2
    best = int(np.argmax(balanced))
    return float(candidates[best]), float(balanced[best])


def prompter_scores(model_dir: Path, dataset: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(highest region probability per image, forged or not) on one split of `dataset`."""
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = ForgeryTalkerProcessor.from_pretrained(model_dir)
    rows = load_dataset(str(dataset), split=split)
    return highest_region_probabilities(model.prompter, processor.image_processor, rows), forged_labels(rows["method"]).astype(bool)


def highest_region_probabilities(prompter, image_processor, rows) -> np.ndarray:
    """float (N,): the manipulation score (the highest region probability) of a prompter network (in eval mode)
    on each image of the dataset rows, read through `image_processor`."""
    scores = []
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start : start + BATCH_SIZE]
        pixels = image_processor(images=[image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        with torch.inference_mode():
            logits = prompter(pixels["pixel_values"]).region_logits
        scores.append(torch.sigmoid(logits).max(-1).values.numpy())
    return np.concatenate(scores)


def calibrate(model_dir: Path, dataset: Path) -> dict:
    """Sets `model_dir`'s region threshold from its validation scores (once: `calibration.json` records it)."""
    record = model_dir / "calibration.json"
    if record.is_file():
        return json.loads(record.read_text())
    scores, forged = prompter_scores(model_dir, dataset, "validation")
    threshold, balanced = balanced_threshold(scores, forged)
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir)
    previous = model.config.region_threshold
    model.config.region_threshold = threshold
    model.config.save_pretrained(model_dir)
    result = {"region_threshold": threshold, "previous_threshold": previous, "validation_balanced_accuracy": balanced,
              "validation_images": len(scores), "validation_authentic": int((~forged).sum())}
    record.write_text(json.dumps(result, indent=1) + "\n")
    logger.info("region threshold %.3f (balanced accuracy %.3f on validation)", threshold, balanced)
    return result
