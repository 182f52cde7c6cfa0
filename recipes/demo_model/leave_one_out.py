"""Leave one manipulation method out: does the detector find a method it never saw?

For each method M, a stage-1 prompter is trained (`leave_one_out_fraction` of the main model's stage-1 steps, from
the same initial prompter) on the training split without M, its best checkpoint chosen on the validation split
without M, so nothing about M is seen before the test. The image-level manipulation score of every ForgeryTalker
model is its prompter's highest region probability (stage 2 keeps the prompter frozen), so the prompter alone is
the detector under test: `prompter_detection` scores it on each method's test images against the untouched test
images. The other methods' AUCs show how much it learnt at all within its budget.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import load_dataset
from transformers import AutoImageProcessor

from forgerytalker import ForgeryTalkerPrompterNetwork
from forgerytalker.data.methods import AUTHENTIC
from forgerytalker.evaluation.detection_metrics import auc_defined, forged_labels, roc_auc

from .calibration import highest_region_probabilities

LEAVE_ONE_OUT_METHODS = ("classical_inpainting", "region_transplant", "face_swap")
DETECTION_FILE = "detection.json"


def held_out_first(method: str) -> tuple[str, ...]:
    """`LEAVE_ONE_OUT_METHODS` with `method` first: the order a held-out detector's AUCs are reported in."""
    return (method, *(other for other in LEAVE_ONE_OUT_METHODS if other != method))


def prompter_detection(prompter_dir: Path, dataset: Path, split: str, methods: tuple[str, ...]) -> dict[str, dict]:
    """Detection of each method's images of `split` against the split's authentic images by the stage-1 prompter in
    `prompter_dir` (its score: the highest region probability), each image scored once.

    Returns:
        `{method: {"AUC": 0-100, "num_forged": int, "num_authentic": int}}` in the order of `methods`; the AUC is
        `None` where the split has no image of the method or no authentic image.
    """
    rows = load_dataset(str(dataset), split=split)
    rows = rows.filter(lambda value: value in (*methods, AUTHENTIC), input_columns="method")
    prompter = ForgeryTalkerPrompterNetwork.from_pretrained(prompter_dir).eval()
    scores = highest_region_probabilities(prompter, AutoImageProcessor.from_pretrained(prompter_dir), rows)
    row_methods = rows["method"]
    authentic = [index for index, method in enumerate(row_methods) if method == AUTHENTIC]
    results = {}
    for method in methods:
        chosen = [index for index, row_method in enumerate(row_methods) if row_method == method] + authentic
        labels = forged_labels([row_methods[index] for index in chosen])
        # a tiny split (`--quick`) may lack a method or authentic images
        results[method] = {"AUC": roc_auc(scores[chosen], labels) if auc_defined(labels) else None,
                           "num_forged": int(labels.sum()), "num_authentic": len(authentic)}
    return results


def score_held_out(prompter_dir: Path, dataset: Path, method: str, out: Path) -> dict:
    """`prompter_detection` on the test split, the held-out `method` first, written to `out/detection.json` once
    (a finished file is read back): `{"held_out": method, "prompter": str, "test": {method: {...}}}`."""
    path = out / DETECTION_FILE
    if path.is_file():
        return json.loads(path.read_text())
    test = prompter_detection(prompter_dir, dataset, "test", held_out_first(method))
    result = {"held_out": method, "prompter": prompter_dir.name, "test": test}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


__all__ = ["DETECTION_FILE", "LEAVE_ONE_OUT_METHODS", "held_out_first", "prompter_detection", "score_held_out"]
