"""Evaluation metrics of forgerytalker: reports, masks, region prompts, detection, robustness and the report files.

The rules behind every number are in `conventions.py` (`conventions_text()`).
"""

from .breakdown import EvaluationRecords, breakdown_by_method, evaluate_records, robustness_drops
from .conventions import (
    ALL_METRICS,
    ImageIdMismatchError,
    binarize,
    check_image_ids,
    conventions_dict,
    conventions_text,
)
from .degradations import Degradation, apply_degradations, parse_degradation, parse_degradations
from .detection_metrics import (
    detection_accuracy,
    detection_metrics,
    forged_labels,
    mask_area_score,
    region_detection_scores,
    roc_auc,
)
from .mask_metrics import (
    MaskCounts,
    MaskMetricAccumulator,
    accumulate_mask_counts,
    count_mask_pair,
    pair_masks,
    resize_nearest,
    summarize_mask_counts,
)
from .output_folder import OutputFolderError, OutputWriteError
from .region_metrics import per_region_metrics, plm_per_sample, positive_label_matching
from .report import PAPER_REFERENCE_ROWS, metrics_document, render_markdown, write_report
from .runner import run_evaluation
from .samples import UnreadableImageError
from .text_metrics import (
    JavaNotFoundError,
    PTBAlignmentError,
    compute_text_metrics,
    ptb_tokenize,
    score_tokenized_reports,
)
