"""Evaluation metrics of forgerytalker: reports, masks, region prompts, detection, robustness and the report files.

The rules behind every number are in `conventions.py` (`conventions_text()`).

Importing the package is cheap: the light modules load at once, the others (`runner` and `samples` need `datasets`, a
second of start-up) when one of their names is first used, so `forgerytalker analyze`, which needs
`region_detection_scores` only, does not wait for them.
"""

from .._lazy import lazy_attributes

# light and used outside evaluation (`detection_metrics` also binds the function of that name over the submodule)
from .conventions import (
    ALL_METRICS,
    ImageIdMismatchError,
    binarize,
    check_image_ids,
    conventions_dict,
    conventions_text,
)
from .detection_metrics import (
    auc_defined,
    detection_accuracy,
    detection_metrics,
    forged_labels,
    mask_area_score,
    region_detection_scores,
    roc_auc,
)
from .output_folder import OutputFolderError, OutputWriteError

_LAZY_NAMES = {
    "EvaluationRecords": "breakdown",
    "breakdown_by_method": "breakdown",
    "evaluate_records": "breakdown",
    "robustness_drops": "breakdown",
    "Degradation": "degradations",
    "apply_degradations": "degradations",
    "parse_degradation": "degradations",
    "parse_degradations": "degradations",
    "MaskCounts": "mask_metrics",
    "MaskMetricAccumulator": "mask_metrics",
    "accumulate_mask_counts": "mask_metrics",
    "count_mask_pair": "mask_metrics",
    "pair_masks": "mask_metrics",
    "resize_nearest": "mask_metrics",
    "summarize_mask_counts": "mask_metrics",
    "per_region_metrics": "region_metrics",
    "plm_per_sample": "region_metrics",
    "positive_label_matching": "region_metrics",
    "PAPER_REFERENCE_ROWS": "report",
    "metrics_document": "report",
    "render_markdown": "report",
    "write_report": "report",
    "run_evaluation": "runner",
    "UnreadableImageError": "samples",
    "JavaNotFoundError": "text_metrics",
    "PTBAlignmentError": "text_metrics",
    "compute_text_metrics": "text_metrics",
    "ptb_tokenize": "text_metrics",
    "score_tokenized_reports": "text_metrics",
}
"""Public name -> the submodule defining it, imported when the name is first used."""

__all__ = sorted({
    "ALL_METRICS", "ImageIdMismatchError", "auc_defined", "binarize", "check_image_ids", "conventions_dict", "conventions_text",
    "detection_accuracy", "detection_metrics", "forged_labels", "mask_area_score", "region_detection_scores",
    "roc_auc", "OutputFolderError", "OutputWriteError", *_LAZY_NAMES,
})


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES, globals())
