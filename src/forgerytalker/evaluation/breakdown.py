"""All metrics of an evaluation run, overall and per manipulation method, and the robustness drop table.

An `EvaluationRecords` holds what a run produced per image (reports, mask counts, region labels, detection
scores) with each image's manipulation method; `evaluate_records` computes every metric it has data for,
`breakdown_by_method` does the same on each method's images alone, and `robustness_drops` compares a clean run
with degraded ones. Result dicts are flat, `{metric key: value}`, keys as in `conventions.ALL_METRICS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data.methods import METHODS
from .conventions import ALL_METRICS, check_image_ids
from .detection_metrics import detection_metrics, forged_labels
from .mask_metrics import MaskCounts, summarize_mask_counts
from .region_metrics import positive_label_matching
from .text_metrics import score_tokenized_reports, tokenize_report_pairs

logger = logging.getLogger(__name__)

MetricDict = dict[str, float | int | str | None]


@dataclass
class EvaluationRecords:
    """Per-image outputs of one evaluation run, keyed by image_id. Every optional mapping covers all images.

    Attributes:
        methods: image_id -> manipulation method (a name from `forgerytalker.data.methods`); defines the images.
        predicted_reports: image_id -> generated report.
        reference_reports: image_id -> reference report (given with `predicted_reports`).
        mask_counts: image_id -> `MaskCounts` of the predicted and ground-truth masks.
        predicted_regions: image_id -> region labels or probabilities, shape (21,).
        target_regions: image_id -> ground-truth region labels, shape (21,) (given with `predicted_regions`).
        detection_scores: image_id -> image-level score (higher: more likely forged).
        detection_threshold: an image is called forged when its score is above this (given with
            `detection_scores`): the model's region threshold for the highest region probability, 0 for the
            mask area (`conventions.MASK_AREA_DETECTION_THRESHOLD`).
        region_threshold: the model's `config.prompter_config.region_threshold`, above which a region
            probability of `predicted_regions` counts as predicted (needed when those are probabilities).
    """

    methods: Mapping[str, str]
    predicted_reports: Mapping[str, str] | None = None
    reference_reports: Mapping[str, str] | None = None
    mask_counts: Mapping[str, MaskCounts] | None = None
    predicted_regions: Mapping[str, Sequence[float]] | None = None
    target_regions: Mapping[str, Sequence[float]] | None = None
    detection_scores: Mapping[str, float] | None = None
    detection_threshold: float | None = None
    region_threshold: float | None = None

    def __post_init__(self) -> None:
        for first, second in (("predicted_reports", "reference_reports"), ("predicted_regions", "target_regions")):
            if (getattr(self, first) is None) != (getattr(self, second) is None):
                raise ValueError(f"`{first}` and `{second}` must be given together")
        if self.detection_scores is not None and self.detection_threshold is None:
            raise ValueError("`detection_scores` need the `detection_threshold` above which an image is called forged")
        for name in (
            "predicted_reports",
            "reference_reports",
            "mask_counts",
            "predicted_regions",
            "target_regions",
            "detection_scores",
        ):
            values = getattr(self, name)
            if values is not None:
                check_image_ids(self.methods.keys(), values.keys(), f"`{name}` are")


def evaluate_records(records: EvaluationRecords, with_meteor: bool = False) -> MetricDict:
    """Every metric `records` has data for, over all its images (see `conventions.py` for each rule).

    Returns:
        A flat dict: text metrics (if reports), mask metrics (if mask counts), "PLM" (if regions), detection
        metrics (if scores), and "num_images".
    """
    tokenized = _tokenize(records)
    return _evaluate(records, list(records.methods), tokenized, with_meteor)


def breakdown_by_method(records: EvaluationRecords, with_meteor: bool = False) -> dict[str, MetricDict]:
    """`evaluate_records` on each method's images alone; methods in `METHODS` order, absent methods left out,
    then the methods a dataset names that the package does not know (kept as written, see `data/methods.py`),
    sorted.

    Reports are tokenized once for all groups; each group's text metrics (CIDEr's document frequencies included)
    come from that group's reports only.
    """
    tokenized = _tokenize(records)
    groups: dict[str, list[str]] = {method: [] for method in METHODS}
    for method in sorted(set(records.methods.values()) - set(METHODS)):
        groups[method] = []
    for image_id, method in records.methods.items():
        groups[method].append(image_id)
    return {
        method: _evaluate(records, image_ids, tokenized, with_meteor)
        for method, image_ids in groups.items()
        if image_ids
    }


def robustness_drops(clean: Mapping[str, object], degraded: Mapping[str, Mapping[str, object]]) -> dict[str, dict]:
    """Drop of every metric from the clean run to each degraded run: clean - degraded (positive means worse).

    Args:
        clean: the clean run's result dict.
        degraded: degradation spec (e.g. "jpeg:75") -> that run's result dict.

    Returns:
        spec -> {metric key: drop} over the metrics of `ALL_METRICS` that are numbers in both runs.
    """
    return {
        spec: {
            key: float(clean[key]) - float(result[key])
            for key in ALL_METRICS
            if _is_number(clean.get(key)) and _is_number(result.get(key))
        }
        for spec, result in degraded.items()
    }


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tokenize(records: EvaluationRecords) -> tuple[dict[str, str], dict[str, str]] | None:
    if records.predicted_reports is None:
        return None
    return tokenize_report_pairs(records.predicted_reports, records.reference_reports)


def _evaluate(
    records: EvaluationRecords,
    image_ids: list[str],
    tokenized: tuple[dict[str, str], dict[str, str]] | None,
    with_meteor: bool,
) -> MetricDict:
    result: MetricDict = {}
    if tokenized is not None:
        predictions, references = tokenized
        text = score_tokenized_reports(
            {i: predictions[i] for i in image_ids}, {i: references[i] for i in image_ids}, with_meteor
        )
        result.update(text)
    if records.mask_counts is not None:
        result.update(summarize_mask_counts(records.mask_counts[i] for i in image_ids))
    if records.predicted_regions is not None:
        result["PLM"] = positive_label_matching(
            np.stack([np.asarray(records.predicted_regions[i]) for i in image_ids]),
            np.stack([np.asarray(records.target_regions[i]) for i in image_ids]),
            records.region_threshold,
        )
    if records.detection_scores is not None:
        result.update(
            detection_metrics(
                [records.detection_scores[i] for i in image_ids],
                forged_labels(records.methods[i] for i in image_ids),
                records.detection_threshold,
            )
        )
    result["num_images"] = len(image_ids)
    logger.debug("Evaluated %d images: %s", len(image_ids), result)
    return result
