"""ForgeryTalker metrics for the Hugging Face `evaluate` library: reports, masks, regions, detection.

Load it from the installed package, offline: `evaluate.load(forgerytalker.evaluate_modules.FORGERYTALKER_METRIC)`.
"""

import datasets
import evaluate
import numpy as np

from forgerytalker.data.methods import AUTHENTIC, UNKNOWN
from forgerytalker.evaluation.breakdown import EvaluationRecords, evaluate_records
from forgerytalker.evaluation.conventions import MASK_AREA_DETECTION_THRESHOLD, conventions_text
from forgerytalker.evaluation.detection_metrics import mask_area_score, region_detection_scores
from forgerytalker.evaluation.mask_metrics import count_mask_pair
from forgerytalker.regions import NUM_REGIONS

_DESCRIPTION = f"""
The metrics of ForgeryTalker (arXiv 2412.19685), computed exactly as `forgerytalker evaluate` computes them
(the same functions): report metrics (BLEU-1..4, ROUGE-L, CIDEr and optionally METEOR, pycocoevalcap after the
PTB tokenizer; needs Java), mask metrics (per-image IoU, precision and recall averaged over images, and cIoU), PLM
over the 21 facial regions, and authentic-vs-forged detection (AUC and accuracy). All values are on the 0-100
scale. Configurations: "default" (all of them), "text", "masks", "regions", "detection".

Conventions:
{conventions_text()}
"""

_KWARGS_DESCRIPTION = """
Args (configuration "default": one dict per image in `predictions` and in `references`):
    predictions: {"report": str, "mask": binary mask (PIL image, file path or uint8 array, forged where > 0),
        "region_probabilities": 21 floats in REGION_NAMES order}
    references: {"report": str, "mask": ground-truth mask (forged where any colour band > 0),
        "regions": 21 ints (0/1, REGION_NAMES order), "method": the manipulation method ("authentic" for real)}
    region_threshold: the model's `config.prompter_config.region_threshold` (needed for region probabilities,
        and the detection threshold of the "region" score).
    detection_score: "region" (highest region probability, default) or "mask_area" (forged fraction of the mask).
    with_meteor: also compute METEOR (default False).
Configuration "text": predictions and references are reports (str). "masks": binary masks. "regions": 21-long
vectors (probabilities or 0/1 predictions; 0/1 references). "detection": predictions are image-level scores,
references 1 (forged) or 0 (authentic); `threshold` is the score above which an image is called forged.
Returns:
    {"BLEU-1", ..., "CIDEr", "IoU", "Precision", "Recall", "cIoU", "PLM", "AUC", "Accuracy", ..., "num_images"}:
    the keys of `forgerytalker evaluate`'s metrics.json "overall" for the configuration's group.
Example:
    >>> metric = evaluate.load(FORGERYTALKER_METRIC, "masks")
    >>> metric.compute(predictions=[mask_png_path], references=[ground_truth_png_path])["IoU"]
"""

_CITATION = """@article{lian2024forgerytalker,
  title={Interpretable Face Forgery Localization and Report Generation with ForgeryTalker},
  author={Lian, Jingchun and others},
  journal={arXiv preprint arXiv:2412.19685},
  year={2024}
}
"""

_REGION_VECTOR = datasets.Sequence(datasets.Value("float64"), length=NUM_REGIONS)
_LABEL_VECTOR = datasets.Sequence(datasets.Value("int64"), length=NUM_REGIONS)
_FEATURES = {
    "default": datasets.Features(
        {
            "predictions": {"report": datasets.Value("string"), "mask": datasets.Image(), "region_probabilities": _REGION_VECTOR},
            "references": {
                "report": datasets.Value("string"),
                "mask": datasets.Image(),
                "regions": _LABEL_VECTOR,
                "method": datasets.Value("string"),
            },
        }
    ),
    "text": datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
    "masks": datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
    "regions": datasets.Features({"predictions": _REGION_VECTOR, "references": _LABEL_VECTOR}),
    "detection": datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ForgeryTalker(evaluate.Metric):
    def _info(self):
        if self.config_name not in _FEATURES:
            raise ValueError(f"Unknown configuration {self.config_name!r}; choose one of {', '.join(_FEATURES)}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES[self.config_name],
            reference_urls=["https://arxiv.org/abs/2412.19685"],
        )

    def _compute(
        self,
        predictions,
        references,
        region_threshold=None,
        detection_score="region",
        with_meteor=False,
        threshold=None,
    ):
        ids = [str(index) for index in range(len(predictions))]
        config = self.config_name
        if config == "detection":
            methods = {i: UNKNOWN if label else AUTHENTIC for i, label in zip(ids, references)}
            if threshold is None:
                raise ValueError("The detection configuration needs `threshold`: the score above which an image is called forged")
            return evaluate_records(
                EvaluationRecords(methods, detection_scores=dict(zip(ids, predictions)), detection_threshold=threshold)
            )
        if config == "text":
            return evaluate_records(
                EvaluationRecords(
                    {i: UNKNOWN for i in ids},
                    predicted_reports=dict(zip(ids, predictions)),
                    reference_reports=dict(zip(ids, references)),
                ),
                with_meteor,
            )
        if config == "masks":
            counts = {i: count_mask_pair(i, np.asarray(p), np.asarray(r)) for i, p, r in zip(ids, predictions, references)}
            return evaluate_records(EvaluationRecords({i: UNKNOWN for i in ids}, mask_counts=counts))
        if config == "regions":
            return evaluate_records(
                EvaluationRecords(
                    {i: UNKNOWN for i in ids},
                    predicted_regions=dict(zip(ids, predictions)),
                    target_regions=dict(zip(ids, references)),
                    region_threshold=region_threshold,
                )
            )
        if detection_score not in ("region", "mask_area"):
            raise ValueError(f"`detection_score` must be 'region' or 'mask_area', got {detection_score!r}")
        masks = {i: np.asarray(p["mask"]) for i, p in zip(ids, predictions)}
        if detection_score == "region":
            if region_threshold is None:
                raise ValueError("Pass `region_threshold`, the model's config.prompter_config.region_threshold")
            scores = region_detection_scores([p["region_probabilities"] for p in predictions])
            detection_threshold = region_threshold
        else:
            scores = [mask_area_score(masks[i]) for i in ids]
            detection_threshold = MASK_AREA_DETECTION_THRESHOLD
        records = EvaluationRecords(
            methods={i: r["method"] for i, r in zip(ids, references)},
            predicted_reports={i: p["report"] for i, p in zip(ids, predictions)},
            reference_reports={i: r["report"] for i, r in zip(ids, references)},
            mask_counts={i: count_mask_pair(i, masks[i], np.asarray(r["mask"])) for i, r in zip(ids, references)},
            predicted_regions={i: p["region_probabilities"] for i, p in zip(ids, predictions)},
            target_regions={i: r["regions"] for i, r in zip(ids, references)},
            detection_scores=dict(zip(ids, (float(score) for score in scores))),
            detection_threshold=detection_threshold,
            region_threshold=region_threshold,
        )
        return evaluate_records(records, with_meteor)
