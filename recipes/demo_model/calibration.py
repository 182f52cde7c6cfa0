"""The shipped thresholds, chosen on the validation identities (never on the test split).

- **Region threshold.** The image-level manipulation score is the prompter's highest region probability, and an
  image is called manipulated when it is above the region threshold (`forgerytalker.analysis.records`). The
  threshold that balances the two error rates on the validation split (highest balanced accuracy), with every
  validation score taken to move by `SCORE_NOISE` logits, becomes the model's `region_threshold`.
- **Located-region threshold** (a prompter with a region map), chosen second: of `LOCATED_THRESHOLDS`, the one whose
  flagged regions (`forgerytalker.region_decision.flag_regions`, at the new region threshold) have the highest PLM
  on the validation split becomes `prompter_config.located_region_threshold`.
- **Mask threshold and empty masks of untouched faces**, chosen last because the mask depends on the regions the
  instruction names (those flagged at the new thresholds): of the values of `MASK_THRESHOLDS`, each with the masks
  as decoded and with the masks of faces not called manipulated emptied (`config.empty_untouched_masks`,
  `forgerytalker.region_decision.empty_untouched_masks`), the pair with the highest mean per-image IoU on the
  validation split (`forgerytalker.evaluation.mask_metrics`, the evaluation's own counting) becomes
  `mask_threshold` and `empty_untouched_masks` (masks as decoded on ties).

All are written into the model's config.json; `forgerytalker evaluate`, `analyze`, the pipeline and the figures
all read them from there.
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
from forgerytalker.evaluation.mask_metrics import count_mask_pair, summarize_mask_counts
from forgerytalker.evaluation.prediction import PredictionSettings, generate_batches
from forgerytalker.evaluation.region_metrics import positive_label_matching
from forgerytalker.evaluation.samples import iter_samples
from forgerytalker.region_decision import empty_untouched_masks, flag_regions
from forgerytalker.regions import regions_to_labels
from forgerytalker.training.data import region_names_of

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
LOWEST, HIGHEST = 0.01, 0.99
"""The region threshold stays inside (0, 1), as the config requires."""
SCORE_NOISE = 0.5
"""How far (standard deviation, in logits) a validation image's manipulation score is taken to move for another photo
of the same kind. Untouched faces score in a narrow band, and the plain best balanced accuracy put the threshold at
its very edge (0.016 against untouched validation faces at 0.014 and untouched sample photos at 0.013-0.016), where
it calls untouched photos it has not seen manipulated; it also jumped between resamples of the validation split
(bootstrap 5-95 %: 0.023-0.715 for the session-22 model). Expected under this noise, the balanced accuracy keeps a
margin from such a band: 0.060 (bootstrap 0.054-0.071) for the model with the patch head, 0.41 (0.11-0.48) for the
session-22 model, each costing about 0.01 of validation balanced accuracy."""
THRESHOLD_STEP = 0.01
"""The thresholds tried, `THRESHOLD_STEP` logits apart from LOWEST to HIGHEST."""
MASK_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(2, 19))
"""The mask thresholds tried: 0.1, 0.15, ..., 0.9."""
LOCATED_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))
"""The located-region thresholds tried: 0.05, 0.1, ..., 0.95."""


def balanced_threshold(scores: np.ndarray, forged: np.ndarray, noise: float = SCORE_NOISE) -> tuple[float, float]:
    """(threshold, balanced accuracy at it): of the thresholds from LOWEST to HIGHEST, `THRESHOLD_STEP` logits
    apart, the one whose rule `score > threshold` has the highest expected mean of forged recall and authentic
    recall when each score's logit moves by Gaussian noise of `noise` logits (the lowest on ties). The balanced
    accuracy returned is the plain one of `scores` at that threshold. Needs both classes.

    Args:
        scores: float (N,), manipulation scores in [0, 1].
        forged: bool (N,), True for forged images.
    """
    if forged.all() or not forged.any():
        raise ValueError("calibrating a threshold needs authentic and forged images")
    lowest, highest = torch.logit(torch.tensor([LOWEST, HIGHEST], dtype=torch.float64)).tolist()
    candidates = torch.arange(lowest, highest + THRESHOLD_STEP / 2, THRESHOLD_STEP, dtype=torch.float64)
    logits = torch.logit(torch.as_tensor(scores, dtype=torch.float64), eps=1e-9)
    called = torch.special.ndtr((logits[None, :] - candidates[:, None]) / noise).numpy()
    expected = (called[:, forged].mean(1) + (1 - called[:, ~forged]).mean(1)) / 2
    threshold = float(torch.sigmoid(candidates[int(np.argmax(expected))]))
    decided = scores > threshold
    return threshold, float((decided[forged].mean() + (~decided[~forged]).mean()) / 2)


def prompter_probabilities(prompter, image_processor, rows) -> tuple[np.ndarray, np.ndarray | None]:
    """The region probabilities, float (N, 21), and the located-region probabilities (float (N, 21), `None` without a
    region map) of a prompter network (in eval mode) on each image of the dataset rows, read through
    `image_processor`."""
    regions, located = [], []
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start : start + BATCH_SIZE]
        pixels = image_processor(images=[image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        with torch.inference_mode():
            output = prompter(pixels["pixel_values"])
        regions.append(torch.sigmoid(output.region_logits).numpy())
        if output.located_region_logits is not None:
            located.append(torch.sigmoid(output.located_region_logits).numpy())
    return np.concatenate(regions), (np.concatenate(located) if located else None)


def highest_region_probabilities(prompter, image_processor, rows) -> np.ndarray:
    """float (N,): the manipulation score (the highest region probability) of a prompter network on each image."""
    return prompter_probabilities(prompter, image_processor, rows)[0].max(-1)


def region_label_array(rows) -> np.ndarray:
    """bool (N, 21): the true regions of each row (its `regions` column of label indices)."""
    return np.array([regions_to_labels(region_names_of({"regions": regions})) for regions in rows["regions"]], dtype=bool)


def located_threshold(region_probs: np.ndarray, located_probs: np.ndarray, region_threshold: float,
                      targets: np.ndarray) -> tuple[float, float]:
    """(threshold, PLM at it): of `LOCATED_THRESHOLDS`, the one whose flagged regions have the highest PLM against
    `targets` (bool (N, 21)); the lowest on ties."""
    plms = [
        positive_label_matching(
            flag_regions(torch.from_numpy(region_probs), region_threshold, torch.from_numpy(located_probs), candidate).numpy(),
            targets,
        )
        for candidate in LOCATED_THRESHOLDS
    ]
    best = int(np.argmax(plms))
    return LOCATED_THRESHOLDS[best], float(plms[best])


def mask_ious(model, processor, rows, thresholds: tuple[float, ...]) -> np.ndarray:
    """float (2, len(thresholds)): the mean per-image IoU (0-100) of the model's masks on the dataset rows, binarised at
    each threshold; row 0 the masks as the decoder gives them, row 1 with the masks of the faces not called
    manipulated emptied (`region_decision.empty_untouched_masks`). The masks come from the evaluation's own
    prediction path (`evaluation.prediction`, with the model's `empty_untouched_masks` off), the instruction naming the
    regions the model predicts at its configured region threshold; the report does not shape the mask, so one
    generated token suffices."""
    settings = PredictionSettings("predicted", max_new_tokens=1, mask_threshold=model.config.mask_threshold,
                                  batch_size=BATCH_SIZE)
    configured, model.config.empty_untouched_masks = model.config.empty_untouched_masks, False
    counts = [[[] for _ in thresholds] for _ in range(2)]
    try:
        for batch, outputs in generate_batches(model, processor, iter_samples(rows), settings):
            emptied, _ = empty_untouched_masks(outputs.pred_masks, outputs.predicted_regions)
            for row, logits in enumerate((outputs.pred_masks, emptied)):
                probabilities = processor.post_process_masks(logits, batch.sizes, binarize=False)
                for sample, probability in zip(batch.samples, probabilities):
                    for per_threshold, threshold in zip(counts[row], thresholds):
                        per_threshold.append(count_mask_pair(sample.image_id, probability.numpy(), sample.mask, threshold))
    finally:
        model.config.empty_untouched_masks = configured
    return np.array([[summarize_mask_counts(per_threshold)["IoU"] for per_threshold in row] for row in counts])


def best_mask_setting(ious: np.ndarray) -> tuple[bool, int]:
    """(empty the masks of untouched faces, index of the mask threshold) with the highest IoU in `ious` (2, T) as
    `mask_ious` gives them: on ties the masks as decoded, then the lowest threshold."""
    emptied, best = np.unravel_index(int(np.argmax(ious)), ious.shape)
    return bool(emptied), int(best)


def calibrate(model_dir: Path, dataset: Path) -> dict:
    """Sets `model_dir`'s region threshold, then its mask threshold, from the validation split (once:
    `calibration.json` records them)."""
    record = model_dir / "calibration.json"
    if record.is_file():
        return json.loads(record.read_text())
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = ForgeryTalkerProcessor.from_pretrained(model_dir)
    rows = load_dataset(str(dataset), split="validation")
    region_probs, located_probs = prompter_probabilities(model.prompter, processor.image_processor, rows)
    scores = region_probs.max(-1)
    forged = forged_labels(rows["method"]).astype(bool)
    threshold, balanced = balanced_threshold(scores, forged)
    previous, previous_mask = model.config.region_threshold, model.config.mask_threshold
    model.config.region_threshold = threshold
    located = {}
    if located_probs is not None:
        prompter_config = model.config.prompter_config
        targets = region_label_array(rows)
        previous_located = prompter_config.located_region_threshold
        located_choice, plm = located_threshold(region_probs, located_probs, threshold, targets)
        prompter_config.located_region_threshold = located_choice
        located = {"located_region_threshold": located_choice, "previous_located_region_threshold": previous_located,
                   "validation_plm": plm}
        logger.info("located-region threshold %.2f (PLM %.2f on validation)", located_choice, plm)
    previous_emptied = model.config.empty_untouched_masks
    ious = mask_ious(model, processor, rows, (*MASK_THRESHOLDS, previous_mask))
    emptied, best = best_mask_setting(ious[:, :-1])
    model.config.mask_threshold = MASK_THRESHOLDS[best]
    model.config.empty_untouched_masks = emptied
    model.config.save_pretrained(model_dir)
    result = {"region_threshold": threshold, "previous_threshold": previous, "validation_balanced_accuracy": balanced,
              "validation_images": len(scores), "validation_authentic": int((~forged).sum()), **located,
              "mask_threshold": MASK_THRESHOLDS[best], "empty_untouched_masks": emptied,
              "previous_mask_threshold": previous_mask, "previous_empty_untouched_masks": previous_emptied,
              "validation_iou": float(ious[int(emptied), best]),
              "validation_iou_as_decoded": float(ious[0, best]), "validation_iou_emptied": float(ious[1, best]),
              "validation_iou_at_previous_mask_threshold": float(ious[int(previous_emptied), -1])}
    record.write_text(json.dumps(result, indent=1) + "\n")
    logger.info("region threshold %.3f (balanced accuracy %.3f on validation), mask threshold %.2f with the masks of "
                "untouched faces %s (IoU %.2f on validation; %.2f at %g as before)", threshold, balanced,
                MASK_THRESHOLDS[best], "emptied" if emptied else "as decoded", ious[int(emptied), best],
                ious[int(previous_emptied), -1], previous_mask)
    return result
