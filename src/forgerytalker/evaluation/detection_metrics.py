"""Image-level detection (authentic vs forged) from per-image scores: ROC AUC and accuracy.

Labels are 1 for forged and 0 for authentic images (`forged_labels` derives them from the `method` field).
Scores come from the localization outputs: `region_detection_scores` (maximum region probability) or
`mask_area_scores` (forged fraction of the predicted mask). AUC uses numpy rank statistics; no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..data.methods import AUTHENTIC
from .conventions import METRIC_SCALE, binarize


def forged_labels(methods: Iterable[str]) -> np.ndarray:
    """1 for every image whose method is not `AUTHENTIC`, else 0; int64 of shape (N,)."""
    return np.array([method != AUTHENTIC for method in methods], dtype=np.int64)


def region_detection_scores(region_probabilities) -> np.ndarray:
    """Maximum region probability per image: (N, 21) floats in [0, 1] -> float64 (N,)."""
    probabilities = np.asarray(region_probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"Region probabilities must have shape (N, 21), got {probabilities.shape}")
    return probabilities.max(axis=1)


def mask_area_score(prediction, threshold: float | None = None) -> float:
    """Fraction of pixels predicted forged in one mask of shape (H, W) (binarized as `conventions.binarize`;
    `threshold`, the model's `config.mask_threshold`, is needed for probabilities)."""
    return float(binarize(prediction, "predicted mask", threshold).mean())


def _check_scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"Got {scores.size} scores for {labels.size} labels")
    if not scores.size:
        raise ValueError("No images to compute detection metrics on")
    if np.isnan(scores).any():
        raise ValueError("Detection scores contain NaN")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("Detection labels must be 1 (forged) or 0 (authentic)")
    return scores, labels.astype(bool)


def auc_defined(labels) -> bool:
    """Whether ROC AUC is defined for these labels (1 forged, 0 authentic, or booleans): both classes present."""
    forged = np.asarray(labels).reshape(-1).astype(bool)
    return bool(forged.any() and not forged.all())


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve on the 0-100 scale, as the Mann-Whitney statistic with average ranks for ties.

    AUC = (sum of the forged images' ranks - n_f (n_f + 1) / 2) / (n_f n_a): the probability that a random forged
    image scores above a random authentic one, a tie counting one half.

    Args:
        scores: float (N,), higher means more likely forged.
        labels: (N,), 1 forged, 0 authentic.

    Raises:
        ValueError: when only one class is present (AUC is undefined).
    """
    scores, forged = _check_scores_and_labels(scores, labels)
    num_forged, num_authentic = int(forged.sum()), int((~forged).sum())
    if not auc_defined(forged):
        raise ValueError(
            f"ROC AUC is undefined with only one class present ({num_forged} forged, {num_authentic} authentic images)"
        )
    _, group, group_sizes = np.unique(scores, return_inverse=True, return_counts=True)
    group_ends = np.cumsum(group_sizes)
    average_ranks = group_ends - (group_sizes - 1) / 2.0
    forged_rank_sum = average_ranks[group][forged].sum()
    statistic = forged_rank_sum - num_forged * (num_forged + 1) / 2.0
    return METRIC_SCALE * float(statistic / (num_forged * num_authentic))


def detection_accuracy(scores, labels, threshold: float) -> float:
    """Share of images classified correctly on the 0-100 scale; an image is called forged when score > threshold."""
    scores, forged = _check_scores_and_labels(scores, labels)
    return METRIC_SCALE * float(((scores > threshold) == forged).mean())


def detection_metrics(scores, labels, threshold: float) -> dict[str, float | int | str | None]:
    """AUC and accuracy of per-image scores, tolerating a single class.

    Returns:
        `{"AUC": float or None, "Accuracy": float, "num_forged": int, "num_authentic": int}`, plus
        `"AUC_undefined": reason` when only one class is present.
    """
    scores, forged = _check_scores_and_labels(scores, labels)
    result: dict[str, float | int | str | None] = {
        "AUC": None,
        "Accuracy": detection_accuracy(scores, forged, threshold),
        "num_forged": int(forged.sum()),
        "num_authentic": int((~forged).sum()),
    }
    try:
        result["AUC"] = roc_auc(scores, forged)
    except ValueError as error:
        result["AUC_undefined"] = str(error)
    return result
