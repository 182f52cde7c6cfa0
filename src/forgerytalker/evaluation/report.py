"""`metrics.json` and the markdown report of an evaluation run, laid out like the paper's Table 2.

Both embed the conventions of `conventions.py`. The paper's own numbers are listed in `PAPER_REFERENCE_ROWS` and
shown as separate, labelled rows: they are the paper's, not this run's, and were measured on other splits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from .breakdown import robustness_drops
from .conventions import DETECTION_METRICS, conventions_dict, conventions_text

logger = logging.getLogger(__name__)

TABLE2_COLUMNS: tuple[str, ...] = (
    "CIDEr",
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "ROUGE-L",
    "IoU",
    "Precision",
    "Recall",
)
"""The columns of the paper's Table 2, in its order."""

EXTRA_COLUMNS: tuple[str, ...] = ("METEOR", "cIoU", "PLM")
"""Columns the paper's Table 2 lacks, shown when a run has them."""

PAPER_REFERENCE_ROWS: dict[str, dict[str, float]] = {
    "Paper: ForgeryTalker, arXiv v1 Table 2 (test split; PLM from Table 4)": {
        "CIDEr": 21.5,
        "BLEU-1": 31.1,
        "BLEU-2": 16.9,
        "BLEU-3": 9.8,
        "BLEU-4": 5.9,
        "ROUGE-L": 24.3,
        "IoU": 70.81,
        "Precision": 87.06,
        "Recall": 78.34,
        "PLM": 41.05,
    },
    "Paper: authors' release README (validation split)": {
        "CIDEr": 59.30,
        "BLEU-1": 35.0,
        "BLEU-4": 12.5,
        "ROUGE-L": 28.80,
        "IoU": 73.67,
        "Precision": 91.43,
        "Recall": 86.22,
    },
}
"""The numbers the paper's authors published, for comparing protocols (DESIGN.md section 5)."""

MISSING = "-"
"""Cell text of a metric a row does not have (as the paper's tables)."""


def format_value(value: object) -> str:
    """A table cell: floats with two decimals, integers as they are, None or absent as `MISSING`."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: Mapping[str, Mapping[str, object]], columns: Sequence[str], first_column: str) -> str:
    """A markdown table with one row per entry of `rows` (row label -> {column: value})."""
    lines = [
        "| " + " | ".join((first_column, *columns)) + " |",
        "| " + " | ".join(["---"] + ["---:"] * len(columns)) + " |",
    ]
    for label, values in rows.items():
        lines.append("| " + " | ".join([label] + [format_value(values.get(column)) for column in columns]) + " |")
    return "\n".join(lines)


def _present(columns: Sequence[str], rows: Mapping[str, Mapping[str, object]]) -> list[str]:
    return [column for column in columns if any(row.get(column) is not None for row in rows.values())]


def table2_markdown(rows: Mapping[str, Mapping[str, object]], with_paper_rows: bool = True) -> str:
    """Rows laid out like the paper's Table 2, plus METEOR / cIoU / PLM when a row has them.

    Args:
        rows: row label (a model or run) -> result dict.
        with_paper_rows: append the labelled `PAPER_REFERENCE_ROWS`.
    """
    columns = list(TABLE2_COLUMNS) + _present(EXTRA_COLUMNS, rows)
    shown = {**rows, **(PAPER_REFERENCE_ROWS if with_paper_rows else {})}
    return markdown_table(shown, columns, "Method")


def breakdown_markdown(per_method: Mapping[str, Mapping[str, object]]) -> str:
    """One row per manipulation method: image count, Table 2 columns, extras and detection metrics present."""
    columns = ["num_images", *TABLE2_COLUMNS, *_present(EXTRA_COLUMNS + DETECTION_METRICS, per_method)]
    return markdown_table(per_method, columns, "Manipulation method")


def robustness_markdown(drops: Mapping[str, Mapping[str, float]]) -> str:
    """One row per degradation: the drop (clean - degraded) of each metric."""
    columns = _present((*TABLE2_COLUMNS, *EXTRA_COLUMNS, *DETECTION_METRICS), drops)
    return markdown_table(drops, columns, "Degradation")


def per_region_markdown(per_region: Mapping[str, Mapping[str, object]]) -> str:
    """One row per facial region: precision, recall, F1, ground-truth support and predicted positives."""
    return markdown_table(per_region, ("precision", "recall", "f1", "support", "predicted"), "Region")


def thresholds_sentence(thresholds: Mapping[str, float]) -> str:
    """How `metrics.md` (and the command's summary) states the thresholds a run was scored with."""
    return (
        f"Thresholds of the evaluated checkpoint: a mask pixel is forged where p > {thresholds['mask_threshold']:g} "
        f"(`config.mask_threshold`); a region is predicted where p > {thresholds['region_threshold']:g} "
        "(`config.prompter_config.region_threshold`)"
        + (
            "."
            if "located_region_threshold" not in thresholds
            else f" or, with the region map, of a face called manipulated where its located p > "
            f"{thresholds['located_region_threshold']:g} (`config.prompter_config.located_region_threshold`) and the "
            "most probable one."
        )
    )


def metrics_document(
    overall: Mapping[str, object],
    per_method: Mapping[str, Mapping[str, object]] | None = None,
    degraded: Mapping[str, Mapping[str, object]] | None = None,
    per_region: Mapping[str, Mapping[str, object]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    protocol: str = "forgerytalker",
) -> dict:
    """The content of `metrics.json`.

    Args:
        overall: result dict of the clean run (`evaluate_records`).
        per_method: method -> result dict (`breakdown_by_method`).
        degraded: degradation spec -> result dict of the run on degraded inputs.
        per_region: region -> precision/recall/F1 dict (`per_region_metrics`).
        thresholds: the evaluated model's `{"mask_threshold", "region_threshold"}` the metrics were computed
            with (`runner.model_thresholds`).
        protocol: the evaluation protocol whose conventions the document quotes (`conventions.EVALUATION_PROTOCOLS`).

    Returns:
        `{"protocol", "conventions", "overall", "paper_reference"}` plus `"thresholds"`, `"per_method"`, `"per_region"` and
        `"robustness": {"degraded", "drop"}` for the parts given.
    """
    document: dict = {"protocol": protocol, "conventions": conventions_dict(protocol), "overall": dict(overall)}
    if thresholds is not None:
        document["thresholds"] = dict(thresholds)
    if per_method is not None:
        document["per_method"] = {method: dict(result) for method, result in per_method.items()}
    if per_region is not None:
        document["per_region"] = {region: dict(result) for region, result in per_region.items()}
    if degraded:
        document["robustness"] = {
            "degraded": {spec: dict(result) for spec, result in degraded.items()},
            "drop": robustness_drops(overall, degraded),
        }
    document["paper_reference"] = PAPER_REFERENCE_ROWS
    return document


def render_markdown(document: Mapping, model_name: str = "ForgeryTalker (this run)") -> str:
    """The markdown report of a `metrics_document`: Table 2 layout, breakdowns, robustness and conventions."""
    overall = document["overall"]
    sections = [
        "# Evaluation",
        f"{overall.get('num_images', MISSING)} images. All values on the 0-100 scale; rows labelled 'Paper' "
        "are the published numbers, not this run's.",
        table2_markdown({model_name: overall}),
    ]
    if "thresholds" in document:
        sections.append(thresholds_sentence(document["thresholds"]))
    if any(overall.get(key) is not None for key in DETECTION_METRICS):
        sections += [
            "## Authentic vs forged detection",
            markdown_table({model_name: overall}, DETECTION_METRICS, "Method"),
        ]
        if overall.get("AUC_undefined"):
            sections.append(f"AUC: {overall['AUC_undefined']}.")
    if "per_method" in document:
        sections += ["## Per manipulation method", breakdown_markdown(document["per_method"])]
    if "per_region" in document:
        sections += ["## Per facial region", per_region_markdown(document["per_region"])]
    if "robustness" in document:
        runs = {"clean": overall, **document["robustness"]["degraded"]}
        sections += [
            "## Robustness",
            "Metrics on degraded inputs:",
            table2_markdown(runs, with_paper_rows=False),
            "Drop per metric (clean - degraded; positive means worse):",
            robustness_markdown(document["robustness"]["drop"]),
        ]
    protocol = document.get("protocol", "forgerytalker")
    sections += [f"## Metric conventions (protocol {protocol!r})", conventions_text(protocol)]
    return "\n\n".join(sections) + "\n"


def write_report(
    output_dir: str | Path, document: Mapping, model_name: str = "ForgeryTalker (this run)"
) -> tuple[Path, Path]:
    """Writes `metrics.json` and `metrics.md` of a `metrics_document` into `output_dir` (created if needed).

    Returns:
        The paths of the JSON and markdown files.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output_dir / "metrics.json", output_dir / "metrics.md"
    json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(document, model_name), encoding="utf-8")
    logger.info("Wrote %s and %s", json_path, markdown_path)
    return json_path, markdown_path
