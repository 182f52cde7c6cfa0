"""The metric conventions of forgerytalker: one owner for every rule that changes a number.

Each rule is a constant used by the metric code and a sentence in `CONVENTIONS`. Reports, `metrics.json`, the
README and `docs/metrics.md` quote `conventions_text()` / `conventions_dict()`; nothing else restates them.
The two helpers here enforce rules shared by several metric modules: `binarize` (probabilities against a
threshold) and `check_image_ids` (a missing prediction is an error).

The probability thresholds are not conventions of the metrics but settings of the evaluated model: the mask
threshold is `model.config.mask_threshold` and the region threshold `model.config.prompter_config.region_threshold`
(a checkpoint with tuned thresholds is evaluated with them). Metric functions take them as arguments;
`forgerytalker evaluate` states the values it used in `metrics.json` ("thresholds") and `metrics.md`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

METRIC_SCALE = 100.0
"""Every metric value (per image or aggregated) is the fraction in [0, 1] times this, as in the paper's tables."""

EMPTY_UNION_IOU = 1.0
"""IoU (and PLM) of an image whose prediction and ground truth are both empty, as a fraction."""

MASK_AREA_DETECTION_THRESHOLD = 0.0
"""An image is called forged when the forged fraction of its predicted mask is above this (any forged pixel)."""

CIDER_SIGMA = 6.0
"""Length-penalty sigma of pycocoevalcap's CIDEr-D."""

ROUGE_BETA = 1.2
"""Recall weight of pycocoevalcap's ROUGE-L F-measure."""

EVALUATION_PROTOCOLS: tuple[str, ...] = ("forgerytalker", "official")
"""`"forgerytalker"`: the rules below. `"official"`: the scoring of the authors' released code
(`scripts/evaluation/evaluate.py` + `evaluate_metrics.py` of NattyLianJc/Generating-Attribution-Reports) where it
differs from them (`OFFICIAL_PROTOCOL`), so that a run compares with their README's numbers."""

OFFICIAL_MASK_GREY_THRESHOLD = 127
"""Protocol "official": a mask pixel is forged where its 8-bit grey value (PIL `convert("L")`) is above this."""

TEXT_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
MASK_METRICS: tuple[str, ...] = ("IoU", "Precision", "Recall", "cIoU")
REGION_METRICS: tuple[str, ...] = ("PLM",)
DETECTION_METRICS: tuple[str, ...] = ("AUC", "Accuracy")
ALL_METRICS: tuple[str, ...] = TEXT_METRICS + MASK_METRICS + REGION_METRICS + DETECTION_METRICS
"""Metric keys as they appear in every result dict, `metrics.json` and the markdown tables."""

CONVENTIONS: tuple[tuple[str, str], ...] = (
    (
        "scale",
        f"Every metric is reported on a 0-100 scale (the fraction x {METRIC_SCALE:g}), as in the paper's tables: "
        "per-image values, BLEU, METEOR, ROUGE-L, CIDEr, IoU, precision, recall, cIoU, PLM, AUC and accuracy alike.",
    ),
    (
        "mask_binarization",
        "Predicted masks: boolean masks are used as given; integer masks are forged where non-zero; floating-point "
        "masks are probabilities in [0, 1], forged where p > the mask threshold, the evaluated checkpoint's "
        "config.mask_threshold (values outside [0, 1] are rejected: apply a sigmoid to logits first). Ground-truth "
        "masks are forged where any colour band of a pixel is > 0, alpha ignored (forgerytalker.image_utils."
        "forged_pixels, the rule of the processor and the converter too).",
    ),
    (
        "mask_resize",
        "A prediction whose (H, W) differs from its ground truth is resized to the ground truth's size by "
        "pixel-centre nearest neighbour (row i takes source row floor((i + 0.5) * H_pred / H_gt), likewise for "
        "columns); the ground truth is never resized.",
    ),
    (
        "mask_per_image",
        "Per image, with P the predicted and G the ground-truth forged pixels: IoU = |P and G| / |P or G|, "
        f"{EMPTY_UNION_IOU:g} when both are empty; precision = |P and G| / |P|, and when P is empty 1 if G is empty "
        "else 0; recall = |P and G| / |G|, and when G is empty 1 if P is empty else 0. The reported IoU, "
        "precision and recall are the means of the per-image values over images (the paper's numbers).",
    ),
    (
        "ciou",
        "cIoU = sum over images of |P and G| / sum over images of |P or G| (1 when every union is empty): a "
        "dataset-level IoU in which large masks weigh more.",
    ),
    (
        "missing_predictions",
        "Every evaluated image must have a prediction (report, mask, regions): a missing one is an error naming "
        "the image_id, never skipped; predictions for images outside the evaluated set are an error too.",
    ),
    (
        "plm",
        "PLM (paper Eq. 8) per image = |predicted and ground-truth positive regions| / |predicted or "
        f"ground-truth positive regions| over the 21 regions, {EMPTY_UNION_IOU:g} when both are empty; the "
        "reported PLM is the mean over images. The predicted regions are the ones the model flags: region "
        "probabilities above the evaluated checkpoint's config.prompter_config.region_threshold or, for a prompter "
        "with a region map, the located regions of a face called manipulated (forgerytalker.region_decision).",
    ),
    (
        "per_region",
        "Per-region precision, recall and F1 pool all images for each of the 21 regions: precision = TP / "
        "predicted positives, recall = TP / ground-truth positives, with the empty rules of the masks (no "
        "predicted positives: precision 1 if the region has no ground-truth positives, else 0; no ground-truth "
        "positives: recall 1 if nothing is predicted, else 0); F1 = 2PR / (P + R), 0 when P + R = 0.",
    ),
    (
        "text",
        "Reports are scored with pycocoevalcap 1.2 after its PTB tokenizer (Stanford CoreNLP 3.4.1 through Java: "
        "lower-cased, punctuation removed), one reference per image. BLEU-1..4: corpus-level BLEU (closest "
        "reference length); METEOR: METEOR 1.5 (Java, optional); ROUGE-L: mean per-image ROUGE-L F-measure "
        f"(beta = {ROUGE_BETA:g}); CIDEr: pycocoevalcap's Cider, which is CIDEr-D (sigma = {CIDER_SIGMA:g}, "
        "clipped n-gram counts, x10) with document frequencies from the evaluated references, so its value "
        "depends on the evaluated set. SPICE is not available (it needs a model download).",
    ),
    (
        "detection",
        "Image-level detection (authentic vs forged): an image is forged unless its method is 'authentic'. The "
        "score is the maximum region probability or the forged-area fraction of the predicted mask; an image is "
        "called forged when its score is above the region threshold (region probability) or "
        f"{MASK_AREA_DETECTION_THRESHOLD:g} (mask area: any forged pixel). AUC is the Mann-Whitney rank statistic "
        "with tied scores counted as half; with only one class present (MMTT alone has only forgeries) it is "
        "undefined and reported as null with the reason.",
    ),
    (
        "breakdown",
        "A per-method row computes every metric exactly as the overall row, on that method's images alone "
        "(a method's CIDEr therefore uses the document frequencies of that method's references).",
    ),
    (
        "robustness",
        "Robustness runs degrade the input image only (ground-truth masks are unchanged; every degradation keeps "
        "the image size) and report drop = clean value - degraded value per metric: positive means worse.",
    ),
)


OFFICIAL_PROTOCOL: tuple[tuple[str, str], ...] = (
    (
        "protocol",
        "Protocol 'official': the mask rules of the authors' released evaluation (scripts/evaluation/evaluate.py "
        "and evaluate_metrics.py of NattyLianJc/Generating-Attribution-Reports) replace mask_binarization and "
        "mask_resize; every other rule is as stated, theirs too (per-image means, the empty-mask rules, "
        "pycocoevalcap with the PTB tokenizer, CIDEr-D; their README multiplies their fractions by 100). Not "
        "reproduced: their script silently leaves out images without a prediction and predicts on a black image "
        "when one fails to load; here both are errors (or, with skip_unreadable_images, listed).",
    ),
    (
        "mask_binarization",
        "Protocol 'official': the predicted mask is thresholded at the model's own output resolution (p > the "
        "checkpoint's config.mask_threshold; the release's 224x224 sigmoid > 0.5) and kept as a 0/255 grey "
        f"picture. Ground-truth masks are forged where their 8-bit grey value (PIL convert('L'), ITU-R 601-2 "
        f"luma of the colour bands) is > {OFFICIAL_MASK_GREY_THRESHOLD}.",
    ),
    (
        "mask_resize",
        "Protocol 'official': the thresholded 0/255 prediction is resized to the ground truth's size with PIL's "
        f"Image.NEAREST and forged where > {OFFICIAL_MASK_GREY_THRESHOLD}; the ground truth is never resized.",
    ),
)
"""The rules of protocol "official" that replace (or precede) those of `CONVENTIONS`."""


def _conventions(protocol: str) -> dict[str, str]:
    if protocol not in EVALUATION_PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {', '.join(EVALUATION_PROTOCOLS)}, got {protocol!r}")
    if protocol == "forgerytalker":
        return dict(CONVENTIONS)
    replaced = dict(OFFICIAL_PROTOCOL)
    return {"protocol": replaced["protocol"], **{name: replaced.get(name, sentence) for name, sentence in CONVENTIONS}}


def conventions_dict(protocol: str = "forgerytalker") -> dict[str, str]:
    """The conventions of `protocol` as `{rule name: sentence}`, as embedded in `metrics.json`."""
    return _conventions(protocol)


def conventions_text(protocol: str = "forgerytalker") -> str:
    """The conventions of `protocol` as a markdown bullet list, as quoted by reports, the README and docs/metrics.md."""
    return "\n".join(f"- **{name}**: {sentence}" for name, sentence in _conventions(protocol).items())


def binarize(values, what: str, threshold: float | None = None) -> np.ndarray:
    """Applies the positive rule of `mask_binarization` / `plm` to an array of any shape.

    Args:
        values: array-like; bool is used as given, integers are positive where non-zero, floating point values
            are probabilities in [0, 1], positive where `p > threshold`.
        what: names the input in error messages (e.g. "prediction for image 'abc'").
        threshold: the model's threshold for these probabilities (`config.mask_threshold` for masks,
            `config.prompter_config.region_threshold` for regions); required when `values` are floating point
            other than exactly 0 and 1 (0/1 labels give the same result at every threshold).

    Returns:
        `np.ndarray` of dtype bool with the shape of `values`.
    """
    array = np.asarray(values)
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return array != 0
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"The {what} must be bool, integer or floating point, got dtype {array.dtype}")
    if array.size:
        low, high = float(array.min()), float(array.max())
        if not (low >= 0.0 and high <= 1.0):
            raise ValueError(
                f"The {what} holds values in [{low:g}, {high:g}]; floating-point inputs must be probabilities in "
                "[0, 1] (apply a sigmoid to logits, or pass a boolean mask)"
            )
    if threshold is None:
        if np.isin(array, (0.0, 1.0)).all():
            return array == 1.0  # 0/1 labels: the same for every threshold in (0, 1)
        raise ValueError(
            f"The {what} holds probabilities: pass the model's threshold for them (`threshold=model.config."
            "mask_threshold` for masks, `model.config.prompter_config.region_threshold` for regions)"
        )
    return array > threshold


class ImageIdMismatchError(ValueError):
    """Predictions and ground truths do not cover the same images."""


def check_image_ids(expected: Iterable, given: Iterable, what: str) -> None:
    """Raises `ImageIdMismatchError` listing the ids of `expected` missing from `given`, and those only in `given`.

    `what` names the predictions in the message, e.g. "Predicted reports" gives
    "Predicted reports missing for 1 image(s): 'img_7'".
    """
    expected_ids, given_ids = set(expected), set(given)
    missing, unexpected = expected_ids - given_ids, given_ids - expected_ids
    if not (missing or unexpected):
        return
    problems = []
    if missing:
        problems.append(f"missing for {len(missing)} image(s): {_sample_ids(missing)}")
    if unexpected:
        problems.append(f"given for {len(unexpected)} image(s) not evaluated: {_sample_ids(unexpected)}")
    raise ImageIdMismatchError(f"{what} {'; '.join(problems)}")


def _sample_ids(ids: set, limit: int = 20) -> str:
    listed = sorted(ids, key=str)
    shown = ", ".join(repr(image_id) for image_id in listed[:limit])
    return shown + (f", ... ({len(listed) - limit} more)" if len(listed) > limit else "")
