"""Trivial baselines on the demo model's test images, scored by the package's own metric code.

- masks: the empty mask; the whole face (the convex hull of the face's 68 dlib landmarks and a forehead line,
  `forgerytalker.data.synthesis.landmark_regions.face_mask`);
- regions (PLM): always the most frequent region set of the forged training samples, and always the
  regions that at least half of the forged training samples name;
- reports: always the most frequent training report;
- detection: the sharpness of the image alone (variance of its Laplacian), scored as "forged" both ways; near 0.5
  AUC shows that the shared resize and JPEG chain leaves no sharpness shortcut.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from datasets import load_dataset

from forgerytalker.data.synthesis.landmark_regions import face_mask
from forgerytalker.evaluation import EvaluationRecords, count_mask_pair, evaluate_records, roc_auc
from forgerytalker.image_utils import load_mask
from forgerytalker.regions import REGION_NAMES, regions_to_labels

from .data import source_faces
from .evaluations import predictions



def _region_names(labels: list[int]) -> tuple[str, ...]:
    return tuple(REGION_NAMES[index] for index in labels)


def _laplacian_variance(image) -> float:
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def compute_baselines(work: Path, dataset: Path, model_run: Path) -> dict[str, dict]:
    """`{baseline name: metric dict}` on the images of `model_run` (an evaluation run of the test split), written
    to `work/eval/baselines.json`."""
    out = work / "eval" / "baselines.json"
    if out.is_file():
        return json.loads(out.read_text())
    records = predictions(model_run)
    methods = {record["image_id"]: record["method"] for record in records}
    references = {record["image_id"]: record["reference"] for record in records}
    targets = {record["image_id"]: regions_to_labels(record["target_regions"]) for record in records}

    train = load_dataset(str(dataset), split="train")
    forged_sets = [_region_names(labels) for labels, method in zip(train["regions"], train["method"]) if method != "authentic"]
    most_frequent_set = Counter(forged_sets).most_common(1)[0][0]
    region_counts = Counter(name for names in forged_sets for name in names)
    majority_regions = tuple(name for name in REGION_NAMES if region_counts[name] >= len(forged_sets) / 2)
    most_frequent_report = Counter(train["caption"]).most_common(1)[0][0]

    test = load_dataset(str(dataset), split="test")
    test_masks = {row["image_id"]: load_mask(row["mask"]["bytes"]) for row in test.cast_column("mask", test.features["mask"].__class__(decode=False))}
    faces = source_faces(work)
    empty, whole_face = {}, {}
    for image_id in methods:
        truth = test_masks[image_id]
        empty[image_id] = count_mask_pair(image_id, np.zeros_like(truth), truth)
        landmarks = np.asarray(faces[image_id]["landmarks"], dtype=np.float32).reshape(68, 2)
        whole_face[image_id] = count_mask_pair(image_id, face_mask(landmarks, truth.shape[0]), truth)

    def constant(names) -> dict[str, list[int]]:
        return {image_id: regions_to_labels(list(names)) for image_id in methods}

    baselines = {
        "Empty mask": evaluate_records(EvaluationRecords(methods, mask_counts=empty)),
        "Whole face (landmarks)": evaluate_records(EvaluationRecords(methods, mask_counts=whole_face)),
        f"Most frequent region set ({', '.join(most_frequent_set)})": evaluate_records(
            EvaluationRecords(methods, predicted_regions=constant(most_frequent_set), target_regions=targets)),
        f"Regions named by half the forgeries ({', '.join(majority_regions) or 'none'})": evaluate_records(
            EvaluationRecords(methods, predicted_regions=constant(majority_regions), target_regions=targets)),
        "Most frequent training report": evaluate_records(
            EvaluationRecords(methods, predicted_reports={image_id: most_frequent_report for image_id in methods},
                              reference_reports=references), with_meteor=True),
    }
    baselines["Most frequent training report"]["report"] = most_frequent_report
    sharpness = [_laplacian_variance(row["image"]) for row in test if row["image_id"] in methods]
    forged = [row["method"] != "authentic" for row in test if row["image_id"] in methods]
    baselines["Sharpness only (variance of the Laplacian)"] = {"AUC": roc_auc(sharpness, forged)}
    out.write_text(json.dumps(baselines, indent=1) + "\n")
    return baselines
