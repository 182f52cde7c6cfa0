"""The issue's targets for the demo model, each measured on the held-out test people (computed, never typed)."""

from __future__ import annotations

from forgerytalker.evaluation import roc_auc
from forgerytalker.evaluation.report import MISSING

from .evaluations import predictions

AUC_TARGET = 95.0
ACCURACY_TARGET = 90.0
AUTHENTIC_RECALL_TARGET = 85.0
IOU_MARGIN = 15.0
PRECISION_TARGET = 60.0
BASELINE_FACTOR = 2.0
FOLLOWS_MARGIN = 10.0
"""How much better (PLM points) a report must match its own mask's regions than another image's to count as naming them."""
ROBUSTNESS_IOU, ROBUSTNESS_AUC = 5.0, 5.0
LEAVE_ONE_OUT_AUC = 80.0
SHARPNESS_TOLERANCE = 5.0
"""The sharpness-only baseline counts as "near 0.5" within this many AUC points."""
RECIPE_MINUTES = 75
MODEL_MIB = 30


def method_auc(run, method: str) -> float | None:
    """AUC (0-100) of `method`'s test images against the authentic ones, by the region score of `run`'s records."""
    records = [record for record in predictions(run) if record["method"] in (method, "authentic")]
    labels = [record["method"] == method for record in records]
    if all(labels) or not any(labels):
        return None
    return roc_auc([record["detection_scores"]["region"] for record in records], labels)


def _row(name: str, measured: str, met: bool | None, missed_by: str = "") -> dict:
    verdict = MISSING if met is None else ("yes" if met else f"**no**{f' (short by {missed_by})' if missed_by else ''}")
    return {"target": name, "measured": measured, "met": verdict}


def targets_table(main: dict, document: dict, ablation: dict, baselines: dict, mask_only: dict, consistency: dict,
                  leave_one_out_auc: dict[str, float | None], minutes: float, mebibytes: float) -> list[dict]:
    """One row per target of the issue: what it asks, what was measured, met or by how much it was missed."""
    auc, accuracy = main.get("AUC"), main.get("Accuracy")
    authentic_recall = document["per_method"].get("authentic", {}).get("Accuracy")
    whole_face = baselines["Whole face (landmarks)"]["IoU"]
    region_baseline = max(row["PLM"] for row in baselines.values() if "PLM" in row)
    report_baseline = baselines["Most frequent training report"]["CIDEr"]
    sharpness = baselines["Sharpness only (variance of the Laplacian)"]["AUC"]
    text_keys = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
    ordering = all(ablation["ground_truth"][k] >= ablation["predicted"][k] >= ablation["none"][k] for k in text_keys)
    orders = "; ".join(f"{k} {ablation['ground_truth'][k]:.2f} / {ablation['predicted'][k]:.2f} / {ablation['none'][k]:.2f}"
                       for k in text_keys)
    drops = document.get("robustness", {}).get("drop", {})
    rows = [
        _row(f"detection AUC ≥ {AUC_TARGET / 100:.2f}", "-" if auc is None else f"{auc / 100:.3f}",
             None if auc is None else auc >= AUC_TARGET, "" if auc is None else f"{(AUC_TARGET - auc) / 100:.3f}"),
        _row(f"accuracy at the shipped threshold ≥ {ACCURACY_TARGET / 100:.2f}", f"{accuracy / 100:.3f}",
             accuracy >= ACCURACY_TARGET, f"{(ACCURACY_TARGET - accuracy) / 100:.3f}"),
        _row(f"authentic recall at the shipped threshold ≥ {AUTHENTIC_RECALL_TARGET / 100:.2f}",
             "-" if authentic_recall is None else f"{authentic_recall / 100:.3f}",
             None if authentic_recall is None else authentic_recall >= AUTHENTIC_RECALL_TARGET,
             "" if authentic_recall is None else f"{(AUTHENTIC_RECALL_TARGET - authentic_recall) / 100:.3f}"),
        _row(f"IoU ≥ whole-face baseline + {IOU_MARGIN:g}", f"{main['IoU']:.2f} vs {whole_face:.2f} + {IOU_MARGIN:g}",
             main["IoU"] >= whole_face + IOU_MARGIN, f"{whole_face + IOU_MARGIN - main['IoU']:.2f} points"),
        _row("IoU above the mask-only model", f"{main['IoU']:.2f} vs {mask_only['IoU']:.2f}", main["IoU"] > mask_only["IoU"],
             f"{mask_only['IoU'] - main['IoU']:.2f} points"),
        _row(f"mask precision ≥ {PRECISION_TARGET:g}", f"{main['Precision']:.2f}", main["Precision"] >= PRECISION_TARGET,
             f"{PRECISION_TARGET - main['Precision']:.2f} points"),
        _row(f"PLM ≥ {BASELINE_FACTOR:g}× the best most-frequent-regions baseline", f"{main['PLM']:.2f} vs {BASELINE_FACTOR:g} × {region_baseline:.2f}",
             main["PLM"] >= BASELINE_FACTOR * region_baseline, f"{BASELINE_FACTOR * region_baseline - main['PLM']:.2f} points"),
        _row(f"CIDEr ≥ {BASELINE_FACTOR:g}× the most-frequent-report baseline", f"{main['CIDEr']:.2f} vs {BASELINE_FACTOR:g} × {report_baseline:.2f}",
             main["CIDEr"] >= BASELINE_FACTOR * report_baseline, f"{BASELINE_FACTOR * report_baseline - main['CIDEr']:.2f} points"),
        _row("ground-truth ≥ predicted ≥ no regions (report metrics)", orders, ordering),
        _row("≥ 50 % distinct reports", f"{consistency['distinct_reports']} distinct of {consistency['forged_images']}",
             consistency["distinct_reports"] >= consistency["forged_images"] / 2),
        _row(f"reports name their own mask's regions (≥ {FOLLOWS_MARGIN:g} PLM points above another image's mask)",
             f"{consistency['report_vs_own_mask_PLM']:.2f} vs {consistency['report_vs_other_images_mask_PLM']:.2f}",
             consistency["report_vs_own_mask_PLM"] >= consistency["report_vs_other_images_mask_PLM"] + FOLLOWS_MARGIN),
        _row("no report repeats a region", f"{consistency['reports_repeating_a_region']} of {consistency['forged_images']} do",
             consistency["reports_repeating_a_region"] == 0),
    ]
    for degradation, drop in drops.items():
        iou_drop, auc_drop = drop.get("IoU"), drop.get("AUC")
        met = iou_drop is not None and iou_drop <= ROBUSTNESS_IOU and (auc_drop is None or auc_drop <= ROBUSTNESS_AUC)
        rows.append(_row(f"{degradation}: costs ≤ {ROBUSTNESS_IOU:g} IoU points and ≤ {ROBUSTNESS_AUC / 100:.2f} AUC",
                         f"drops: IoU {iou_drop:.2f} points, AUC {(auc_drop or 0) / 100:.3f}", met))
    for method, value in leave_one_out_auc.items():
        rows.append(_row(f"trained without {method}: its AUC ≥ {LEAVE_ONE_OUT_AUC / 100:.2f}",
                         "-" if value is None else f"{value / 100:.3f}", None if value is None else value >= LEAVE_ONE_OUT_AUC,
                         "" if value is None else f"{(LEAVE_ONE_OUT_AUC - value) / 100:.3f}"))
    rows += [
        _row("sharpness-only baseline near 0.5 (no shortcut)", f"AUC {sharpness / 100:.3f}",
             abs(sharpness - 50) <= SHARPNESS_TOLERANCE),
        _row(f"whole recipe ≤ {RECIPE_MINUTES} minutes on two cores", f"{minutes:.0f} minutes", minutes <= RECIPE_MINUTES,
             f"{minutes - RECIPE_MINUTES:.0f} minutes"),
        _row(f"bundled model ≤ {MODEL_MIB} MiB", f"{mebibytes:.1f} MiB", mebibytes <= MODEL_MIB),
    ]
    return rows


def repeats_a_region(report: str) -> bool:
    """Whether a report names one region (a word of `REGION_WORD_FORMS`: its name or plural) more than once."""
    import re

    from forgerytalker.regions import REGION_WORD_FORMS

    words = re.findall(r"[a-z]+", report.lower())
    return any(sum(word in forms for word in words) > 1 for forms in REGION_WORD_FORMS.values())

