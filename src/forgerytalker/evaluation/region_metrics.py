"""Region-prompt metrics: PLM (paper Eq. 8) and per-region precision / recall / F1 over the 21 facial regions.

Labels are arrays of shape (N, 21) (or (21,) for one image) in `forgerytalker.regions.REGION_NAMES` order: bool,
integers (positive where non-zero) or probabilities, positive where p > `threshold`, the model's
`config.prompter_config.region_threshold` (as `conventions.binarize` says).
"""

from __future__ import annotations

import numpy as np

from ..regions import NUM_REGIONS, REGION_NAMES
from .conventions import EMPTY_UNION_IOU, METRIC_SCALE, binarize


def binarize_region_labels(labels, what: str, threshold: float | None = None) -> np.ndarray:
    """Checks and binarizes region labels; returns bool of shape (N, 21) (a (21,) input becomes (1, 21)).

    `threshold` (the model's region threshold) is required when `labels` are probabilities.
    """
    array = np.asarray(labels)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != NUM_REGIONS:
        raise ValueError(f"The {what} must have shape (N, {NUM_REGIONS}) or ({NUM_REGIONS},), got {np.shape(labels)}")
    return binarize(array, what, threshold)


def _binarize_pair(predicted, target, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    predicted = binarize_region_labels(predicted, "predicted region labels", threshold)
    target = binarize_region_labels(target, "ground-truth region labels")
    if predicted.shape != target.shape:
        raise ValueError(
            f"Predicted and ground-truth region labels differ in shape: {predicted.shape} vs {target.shape}"
        )
    return predicted, target


def plm_per_sample(predicted, target, threshold: float | None = None) -> np.ndarray:
    """PLM of each image on the 0-100 scale: |pred and gt| / |pred or gt| over positive labels.

    Args:
        predicted: region labels or probabilities, shape (N, 21).
        target: ground-truth region labels, shape (N, 21).
        threshold: the model's `config.prompter_config.region_threshold`, for probabilities.

    Returns:
        float64 array of shape (N,); `EMPTY_UNION_IOU` x 100 where both label sets are empty.
    """
    predicted, target = _binarize_pair(predicted, target, threshold)
    intersection = np.count_nonzero(predicted & target, axis=1)
    union = np.count_nonzero(predicted | target, axis=1)
    return METRIC_SCALE * np.where(union > 0, intersection / np.maximum(union, 1), EMPTY_UNION_IOU)


def positive_label_matching(predicted, target, threshold: float | None = None) -> float:
    """PLM (paper Eq. 8) averaged over images, on the 0-100 scale. Shapes (N, 21), N >= 1; `threshold` as
    `plm_per_sample`."""
    per_sample = plm_per_sample(predicted, target, threshold)
    if not per_sample.size:
        raise ValueError("No images to compute PLM on")
    return float(per_sample.mean())


def per_region_metrics(predicted, target, threshold: float | None = None) -> dict[str, dict[str, float | int]]:
    """Precision, recall and F1 of each region, pooling all images (0-100 scale).

    Args:
        predicted: region labels or probabilities, shape (N, 21).
        target: ground-truth region labels, shape (N, 21).
        threshold: the model's `config.prompter_config.region_threshold`, for probabilities.

    Returns:
        `{region name: {"precision", "recall", "f1", "support" (ground-truth positives), "predicted"}}` in
        `REGION_NAMES` order; empty-count rules as in `conventions.py` ("per_region").
    """
    predicted, target = _binarize_pair(predicted, target, threshold)
    true_positives = np.count_nonzero(predicted & target, axis=0)
    predicted_positives = np.count_nonzero(predicted, axis=0)
    support = np.count_nonzero(target, axis=0)
    precision = np.where(predicted_positives > 0, true_positives / np.maximum(predicted_positives, 1), support == 0)
    recall = np.where(support > 0, true_positives / np.maximum(support, 1), predicted_positives == 0)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return {
        name: {
            "precision": METRIC_SCALE * float(precision[index]),
            "recall": METRIC_SCALE * float(recall[index]),
            "f1": METRIC_SCALE * float(f1[index]),
            "support": int(support[index]),
            "predicted": int(predicted_positives[index]),
        }
        for index, name in enumerate(REGION_NAMES)
    }
