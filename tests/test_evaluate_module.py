"""The `evaluate`-library module gives the numbers of `forgerytalker evaluate` on the same predictions, offline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from forgerytalker.cli import main
from forgerytalker.evaluate_modules import FORGERYTALKER_METRIC
from forgerytalker.regions import REGION_NAMES, regions_to_labels

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")
SPLIT = "validation"  # forged and authentic images, so AUC is defined


@pytest.fixture(scope="module")
def evaluated(tiny_dataset_dir, tmp_path_factory):
    """`forgerytalker evaluate` of a tiny model on the fixture dataset: (its folder, metrics.json, predictions)."""
    from datasets import load_dataset

    from forgerytalker.tiny import build_tiny_model_and_processor

    texts = [caption for split in load_dataset(str(tiny_dataset_dir)).values() for caption in split["caption"]]
    model, processor = build_tiny_model_and_processor("llama", texts=texts, seed=1)
    model_dir = tmp_path_factory.mktemp("metric-model")
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    out = tmp_path_factory.mktemp("metric-evaluate") / "run"
    arguments = ["evaluate", "--model", str(model_dir), "--data", str(tiny_dataset_dir), "--split", SPLIT, "--out", str(out)]
    assert main([*arguments, "--no-progress", "--no-meteor", "--max-new-tokens", "8"]) == 0
    document = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return out, document, predictions


def inputs(evaluated, tiny_dataset_dir):
    """The `evaluate` inputs of the run: predictions from predictions.jsonl and masks/, references from the dataset."""
    from datasets import load_dataset

    out, document, predictions = evaluated
    split = {row["image_id"]: row for row in load_dataset(str(tiny_dataset_dir), split=SPLIT)}
    names = load_dataset(str(tiny_dataset_dir), split=SPLIT).features["regions"].feature.int2str
    predicted = [
        {
            "report": record["report"],
            "mask": str(out / record["mask"]),
            "region_probabilities": [record["region_probabilities"][name] for name in REGION_NAMES],
        }
        for record in predictions
    ]
    references = [
        {
            "report": split[record["image_id"]]["caption"],
            "mask": split[record["image_id"]]["mask"],
            "regions": regions_to_labels([names(index) for index in split[record["image_id"]]["regions"]]),
            "method": split[record["image_id"]]["method"],
        }
        for record in predictions
    ]
    return document, predicted, references


def assert_same_numbers(ours: dict, theirs: dict, keys) -> None:
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


def test_the_evaluate_module_equals_forgerytalker_evaluate(evaluated, tiny_dataset_dir):
    import evaluate

    document, predicted, references = inputs(evaluated, tiny_dataset_dir)
    overall = document["overall"]
    region_threshold = document["thresholds"]["region_threshold"]
    metric = evaluate.load(FORGERYTALKER_METRIC)
    result = metric.compute(predictions=predicted, references=references, region_threshold=region_threshold)
    numbers = [key for key, value in overall.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    assert {"BLEU-4", "CIDEr", "IoU", "cIoU", "PLM", "AUC", "Accuracy"} <= set(numbers)
    assert_same_numbers(result, overall, numbers)

    groups = {
        "text": ([p["report"] for p in predicted], [r["report"] for r in references], {}, ("BLEU-1", "ROUGE-L", "CIDEr")),
        "masks": ([p["mask"] for p in predicted], [r["mask"] for r in references], {}, ("IoU", "Precision", "Recall", "cIoU")),
        "regions": (
            [p["region_probabilities"] for p in predicted], [r["regions"] for r in references],
            {"region_threshold": region_threshold}, ("PLM",),
        ),
        "detection": (
            [max(p["region_probabilities"]) for p in predicted], [int(r["method"] != "authentic") for r in references],
            {"threshold": region_threshold}, ("AUC", "Accuracy"),
        ),
    }
    for name, (predictions, targets, kwargs, keys) in groups.items():
        group = evaluate.load(FORGERYTALKER_METRIC, name)
        assert_same_numbers(group.compute(predictions=predictions, references=targets, **kwargs), overall, keys)


def test_batches_added_one_at_a_time_give_the_same_numbers(evaluated, tiny_dataset_dir):
    import evaluate

    document, predicted, references = inputs(evaluated, tiny_dataset_dir)
    masks = evaluate.load(FORGERYTALKER_METRIC, "masks")
    for prediction, reference in zip(predicted, references):
        masks.add(predictions=np.asarray(Image.open(prediction["mask"])), references=reference["mask"])
    assert_same_numbers(masks.compute(), document["overall"], ("IoU", "Precision", "Recall", "cIoU"))


def test_probabilities_without_their_threshold_are_refused(evaluated, tiny_dataset_dir):
    import evaluate

    _, predicted, references = inputs(evaluated, tiny_dataset_dir)
    regions = evaluate.load(FORGERYTALKER_METRIC, "regions")
    with pytest.raises(ValueError, match="threshold"):
        regions.compute(predictions=[p["region_probabilities"] for p in predicted], references=[r["regions"] for r in references])
