"""`forgerytalker evaluate` and `run_evaluation` on a tiny untrained model and the synthesized fixture dataset."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgerytalker.cli import main
from forgerytalker.data.methods import METHODS
from forgerytalker.evaluation import ALL_METRICS, accumulate_mask_counts, compute_text_metrics
from forgerytalker.evaluation.report import TABLE2_COLUMNS
from forgerytalker.evaluation.runner import UnreadableImageError, mask_filename, run_evaluation
from forgerytalker.regions import REGION_NAMES

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")

SPLIT = "validation"  # 4 samples: forged and authentic, so AUC is defined


@pytest.fixture(scope="module")
def split(tiny_dataset_dir):
    from datasets import load_dataset

    return load_dataset(str(tiny_dataset_dir), split=SPLIT)


@pytest.fixture(scope="module")
def model_dir(tiny_dataset_dir, tmp_path_factory):
    """A tiny untrained model whose vocabulary covers every caption of the fixture dataset."""
    from datasets import load_dataset

    from forgerytalker.tiny import build_tiny_model_and_processor

    dataset = load_dataset(str(tiny_dataset_dir))
    texts = [caption for name in dataset for caption in dataset[name]["caption"]]
    model, processor = build_tiny_model_and_processor("llama", image_size=32, texts=texts)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def evaluate_arguments(model_dir, data_dir, out, *extra) -> list[str]:
    return ["evaluate", "--model", str(model_dir), "--data", str(data_dir), "--split", SPLIT, "--out", str(out),
            "--no-progress", *extra]


def read_predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def predicted_run(model_dir, tiny_dataset_dir, tmp_path_factory):
    """One in-process `forgerytalker evaluate` with METEOR and the prompter's regions."""
    out = tmp_path_factory.mktemp("evaluate") / "predicted"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--meteor")) == 0
    return out


def test_every_metric_is_reported(predicted_run, split):
    document = json.loads((predicted_run / "metrics.json").read_text())
    overall = document["overall"]
    for key in ALL_METRICS:  # BLEU-1..4, METEOR, ROUGE-L, CIDEr, IoU, Precision, Recall, cIoU, PLM, AUC, Accuracy
        assert is_number(overall[key]), key
    assert overall["num_images"] == len(split) == 4
    assert (overall["num_forged"], overall["num_authentic"]) == (3, 1)
    assert set(document["per_method"]) == set(split["method"])
    assert list(document["per_method"]) == [method for method in METHODS if method in set(split["method"])]
    for method, row in document["per_method"].items():
        assert row["num_images"] == split["method"].count(method)
        assert all(is_number(row[key]) for key in ALL_METRICS if key != "AUC"), method
    assert list(document["per_region"]) == list(REGION_NAMES)
    assert document["run"]["region_source"] == "predicted" and document["skipped_images"] == []
    markdown = (predicted_run / "metrics.md").read_text()
    assert "| Method | " + " | ".join(TABLE2_COLUMNS) + " | METEOR | cIoU | PLM |" in markdown
    assert "(predicted regions) |" in markdown and "## Per manipulation method" in markdown


def test_masks_and_predictions_reproduce_the_metrics(predicted_run, split):
    overall = json.loads((predicted_run / "metrics.json").read_text())["overall"]
    predictions = {record["image_id"]: record for record in read_predictions(predicted_run)}
    assert list(predictions) == split["image_id"]
    pairs = []
    for sample in split:
        record = predictions[sample["image_id"]]
        assert record["mask"] == f"masks/{mask_filename(sample['image_id'])}"
        mask = np.asarray(Image.open(predicted_run / record["mask"]))
        assert mask.shape == (sample["image"].height, sample["image"].width)
        assert set(np.unique(mask)) <= {0, 255}
        assert list(record["region_probabilities"]) != [] and set(record["region_probabilities"]) == set(REGION_NAMES)
        assert record["instruction_regions"] == record["regions"]  # predicted mode names the flagged regions
        assert record["reference"] == sample["caption"] and record["report"]
        pairs.append((sample["image_id"], mask, np.asarray(sample["mask"])))
    recounted = accumulate_mask_counts(pairs).compute()
    for key in ("IoU", "Precision", "Recall", "cIoU"):
        assert recounted[key] == pytest.approx(overall[key])
    text = compute_text_metrics({i: r["report"] for i, r in predictions.items()},
                                {i: r["reference"] for i, r in predictions.items()})
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert text[key] == pytest.approx(overall[key])


@pytest.mark.slow
def test_console_script_without_regions_reports_robustness(model_dir, tiny_dataset_dir, tmp_path, split):
    out = tmp_path / "none"
    command = [sys.executable, "-c", "import sys; from forgerytalker.cli import main; sys.exit(main(sys.argv[1:]))",
               *evaluate_arguments(model_dir, tiny_dataset_dir, out, "--regions", "none", "--no-meteor",
                                   "--degrade", "jpeg:75", "--degrade", "resize:0.5+blur:1.0")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| Method | CIDEr |" in result.stdout and "| resize:0.5+blur:1.0 |" in result.stdout
    document = json.loads((out / "metrics.json").read_text())
    assert document["run"]["region_source"] == "none" and document["run"]["with_meteor"] is False
    drops = document["robustness"]["drop"]
    assert list(drops) == ["jpeg:75", "resize:0.5+blur:1.0"]
    for spec, name in (("jpeg:75", "jpeg-75"), ("resize:0.5+blur:1.0", "resize-0.5_blur-1.0")):
        expected = {key for key in ALL_METRICS if key != "METEOR"}
        assert set(drops[spec]) == expected and all(is_number(value) for value in drops[spec].values())
        degraded = document["robustness"]["degraded"][spec]
        assert drops[spec]["IoU"] == pytest.approx(document["overall"]["IoU"] - degraded["IoU"])
        assert len(read_predictions(out / "degraded" / name)) == len(split)
        assert len(list((out / "degraded" / name / "masks").glob("*.png"))) == len(split)
        clean = [record["region_probabilities"] for record in read_predictions(out)]
        assert [record["region_probabilities"] for record in read_predictions(out / "degraded" / name)] != clean
    assert all(record["instruction_regions"] is None for record in read_predictions(out))


def test_ground_truth_regions_fill_the_instruction(model_dir, tiny_dataset_dir, tmp_path, split):
    out = tmp_path / "oracle"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--regions", "ground_truth", "--no-meteor")) == 0
    records = read_predictions(out)
    names = split.features["regions"].feature.int2str
    assert [record["instruction_regions"] for record in records] == [
        sorted((names(i) for i in regions), key=REGION_NAMES.index) for regions in split["regions"]
    ]
    assert "METEOR" not in json.loads((out / "metrics.json").read_text())["overall"]
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor")) == 2  # earlier outputs
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite", "--limit", "2")) == 0
    assert len(read_predictions(out)) == 2 and len(list((out / "masks").glob("*.png"))) == 2


def test_clear_errors(model_dir, tiny_dataset_dir, tmp_path, capsys):
    assert main(evaluate_arguments(tmp_path / "missing-model", tiny_dataset_dir, tmp_path / "a")) == 2
    assert "--model: no such folder" in capsys.readouterr().err
    assert main(evaluate_arguments(tiny_dataset_dir, tiny_dataset_dir, tmp_path / "b")) == 2
    assert "--model: cannot load a ForgeryTalker model" in capsys.readouterr().err
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "c")
    arguments[arguments.index("--split") + 1] = "dev"
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "--split" in error and "'dev'" in error and "train, validation, test" in error
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "d", "--degrade", "jpeg:150")) == 2
    assert "--degrade: Invalid degradation 'jpeg:150'" in capsys.readouterr().err
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "d", "--degrade", "blur:1",
                                   "--degrade", "blur:1.0")) == 2
    assert "--degrade: Degradation 'blur:1.0' is given twice" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_unreadable_image_is_named_or_skipped(model_dir, split):
    from datasets import Image as ImageFeature
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)
    broken_id = split[1]["image_id"]
    broken = split.cast_column("image", ImageFeature(decode=False)).map(
        lambda row: {"image": {"bytes": b"not an image", "path": None}} if row["image_id"] == broken_id else {}
    )
    with pytest.raises(UnreadableImageError, match=broken_id):
        run_evaluation(model, processor, broken, progress=False)
    model.train()
    document = run_evaluation(model, processor, broken, progress=False, skip_unreadable_images=True)
    assert model.training  # the caller's mode is restored (training-time validation)
    assert [item["image_id"] for item in document["skipped_images"]] == [broken_id]
    assert document["overall"]["num_images"] == len(split) - 1
