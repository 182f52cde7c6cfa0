"""The demo recipe's leave-one-method-out pieces: a stage-1 prompter's AUC on each method's images, the held-out
scores written once and read into RESULTS.md's table, and the training split with self-blended images added (the
study that tried them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from datasets import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgerytalker import ForgeryTalkerPrompterNetwork  # noqa: E402
from forgerytalker.evaluation.detection_metrics import roc_auc  # noqa: E402
from forgerytalker.tiny import tiny_prompter_config  # noqa: E402
from recipe_datasets import SIZE, parquet_folder, recipe_rows  # noqa: E402
from recipes.demo_model.leave_one_out import DETECTION_FILE, prompter_detection, score_held_out  # noqa: E402
from recipes.demo_model.report import held_out_detection  # noqa: E402
from recipes.demo_model.self_blend import with_self_blend  # noqa: E402
from transformers import BlipImageProcessor  # noqa: E402

@pytest.mark.parametrize("train_shards", [1, 2])
def test_self_blended_images_join_the_training_split_only(tmp_path, train_shards):
    dataset = parquet_folder(tmp_path / "without-face_swap", {
        "train": recipe_rows(["authentic", "classical_inpainting", "region_transplant"], "t"),
        "validation": recipe_rows(["authentic", "classical_inpainting"], "v"), "test": recipe_rows(["face_swap"], "x")}, train_shards)
    self_blend = parquet_folder(tmp_path / "self-blend", {"train": recipe_rows(["self_blend"] * 4, "s")})
    mixed = with_self_blend(dataset, self_blend, 3, tmp_path / "mixed")
    splits = load_dataset(str(mixed))
    assert splits["train"]["method"] == ["authentic", "classical_inpainting", "region_transplant"] + ["self_blend"] * 3
    assert splits["train"]["image_id"][3:] == ["s0", "s1", "s2"]
    assert splits["validation"]["image_id"] == ["v0", "v1"] and splits["test"]["image_id"] == ["x0"]
    assert with_self_blend(dataset, self_blend, 3, tmp_path / "mixed") == mixed  # written once
    with pytest.raises(ValueError, match="4 self-blended images, 5 asked for"):
        with_self_blend(dataset, self_blend, 5, tmp_path / "too-many")


def _saved_prompter(folder: Path):
    torch.manual_seed(0)
    prompter = ForgeryTalkerPrompterNetwork(tiny_prompter_config(image_size=SIZE)).eval()
    processor = BlipImageProcessor(size={"height": SIZE, "width": SIZE})
    prompter.save_pretrained(folder)
    processor.save_pretrained(folder)
    return prompter, processor


def _expected_auc(prompter, processor, rows, method: str) -> float:
    kept = [index for index, row_method in enumerate(rows["method"]) if row_method in (method, "authentic")]
    rows = rows.select(kept)
    pixels = processor(images=[image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        scores = torch.sigmoid(prompter(pixels).region_logits).max(-1).values.numpy()
    return roc_auc(scores, [row_method == method for row_method in rows["method"]])


def test_each_method_is_scored_against_the_split_s_authentic_images_only(tmp_path):
    methods = ["authentic", "face_swap", "authentic", "classical_inpainting", "face_swap", "authentic", "face_swap",
               "region_transplant", "classical_inpainting"]
    dataset = parquet_folder(tmp_path / "mmtt", {"train": recipe_rows(["authentic"], "t"), "validation": recipe_rows(methods, "v")})
    prompter, processor = _saved_prompter(tmp_path / "prompter")
    result = prompter_detection(tmp_path / "prompter", dataset, "validation", ("face_swap", "classical_inpainting", "self_blend"))
    assert list(result) == ["face_swap", "classical_inpainting", "self_blend"]
    assert [(r["num_forged"], r["num_authentic"]) for r in result.values()] == [(3, 3), (2, 3), (0, 3)]
    assert result.pop("self_blend")["AUC"] is None  # no image of it in the split: not measurable
    rows = load_dataset(str(dataset), split="validation")
    for method in result:
        assert result[method]["AUC"] == pytest.approx(_expected_auc(prompter, processor, rows, method))


def test_the_held_out_scores_are_written_once_on_the_test_split_and_fill_the_results_table(tmp_path):
    methods = ["authentic", "face_swap", "classical_inpainting", "region_transplant", "authentic", "face_swap",
               "region_transplant", "classical_inpainting", "authentic"]
    dataset = parquet_folder(tmp_path / "mmtt", {"train": recipe_rows(["authentic"], "t"), "test": recipe_rows(methods, "x")})
    prompter, processor = _saved_prompter(tmp_path / "prompter")
    runs = tmp_path / "eval"
    result = score_held_out(tmp_path / "prompter", dataset, "region_transplant", runs / "without-region_transplant")
    assert list(result["test"]) == ["region_transplant", "classical_inpainting", "face_swap"]
    rows = load_dataset(str(dataset), split="test")
    assert result["test"]["region_transplant"]["AUC"] == pytest.approx(_expected_auc(prompter, processor, rows, "region_transplant"))
    # a finished file is read back, not recomputed (a resumed recipe keeps its scores)
    stored = runs / "without-region_transplant" / DETECTION_FILE
    stored.write_text(stored.read_text().replace('"held_out": "region_transplant"', '"held_out": "kept"'))
    assert score_held_out(tmp_path / "missing", dataset, "region_transplant", runs / "without-region_transplant")["held_out"] == "kept"

    (runs / "predicted").mkdir(parents=True)
    scores = {"authentic": 0.1, "face_swap": 0.9, "classical_inpainting": 0.05, "region_transplant": 0.5}
    with open(runs / "predicted" / "predictions.jsonl", "w") as handle:
        for index, method in enumerate(methods):
            handle.write(json.dumps({"image_id": f"x{index}", "method": method, "detection_scores": {"region": scores[method]}}) + "\n")
    table, held_out_auc = held_out_detection(runs)
    assert held_out_auc == {"classical_inpainting": None, "region_transplant": result["test"]["region_transplant"]["AUC"],
                            "face_swap": None}
    assert list(table) == ["trained without region_transplant", "full model (every method)"]
    assert table["full model (every method)"] == {"classical_inpainting": 0.0, "region_transplant": 100.0, "face_swap": 100.0}
