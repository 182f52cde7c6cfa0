"""The demo recipe's self-blend pieces: the training split with self-blended images added, and the held-out method's
validation AUC of a stage-1 prompter."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgerytalker import ForgeryTalkerPrompterNetwork  # noqa: E402
from forgerytalker.data.features import MMTT_FEATURES  # noqa: E402
from forgerytalker.evaluation.detection_metrics import roc_auc  # noqa: E402
from forgerytalker.tiny import tiny_prompter_config  # noqa: E402
from recipes.demo_model.self_blend import held_out_validation_auc, with_self_blend  # noqa: E402
from transformers import BlipImageProcessor  # noqa: E402

SIZE = 32


def _rows(methods: list[str], prefix: str) -> Dataset:
    rng = np.random.default_rng(len(prefix) + len(methods))
    images = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in methods]
    masks = [Image.fromarray(np.full((SIZE, SIZE), 0 if method == "authentic" else 255, np.uint8)) for method in methods]
    return Dataset.from_dict({
        "image_id": [f"{prefix}{index}" for index in range(len(methods))], "image": images, "mask": masks,
        "caption": ["" for _ in methods], "regions": [[] if method == "authentic" else [0] for method in methods],
        "method": methods, "source": ["synthetic"] * len(methods), "extra": ["{}"] * len(methods),
    }, features=MMTT_FEATURES)


def _parquet_folder(folder: Path, splits: dict[str, Dataset], train_shards: int = 1) -> Path:
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        shards = train_shards if split == "train" else 1
        for index in range(shards):
            piece = rows.shard(shards, index, contiguous=True)
            piece.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet"))
    return folder


@pytest.mark.parametrize("train_shards", [1, 2])
def test_self_blended_images_join_the_training_split_only(tmp_path, train_shards):
    dataset = _parquet_folder(tmp_path / "without-face_swap", {
        "train": _rows(["authentic", "classical_inpainting", "region_transplant"], "t"),
        "validation": _rows(["authentic", "classical_inpainting"], "v"), "test": _rows(["face_swap"], "x")}, train_shards)
    self_blend = _parquet_folder(tmp_path / "self-blend", {"train": _rows(["self_blend"] * 4, "s")})
    mixed = with_self_blend(dataset, self_blend, 3, tmp_path / "mixed")
    splits = load_dataset(str(mixed))
    assert splits["train"]["method"] == ["authentic", "classical_inpainting", "region_transplant"] + ["self_blend"] * 3
    assert splits["train"]["image_id"][3:] == ["s0", "s1", "s2"]
    assert splits["validation"]["image_id"] == ["v0", "v1"] and splits["test"]["image_id"] == ["x0"]
    assert with_self_blend(dataset, self_blend, 3, tmp_path / "mixed") == mixed  # written once
    with pytest.raises(ValueError, match="4 self-blended images, 5 asked for"):
        with_self_blend(dataset, self_blend, 5, tmp_path / "too-many")


def test_the_held_out_auc_scores_the_method_against_authentic_validation_images_only(tmp_path):
    methods = ["authentic", "face_swap", "authentic", "classical_inpainting", "face_swap", "authentic", "face_swap"]
    dataset = _parquet_folder(tmp_path / "mmtt", {"train": _rows(["authentic"], "t"), "validation": _rows(methods, "v")})
    torch.manual_seed(0)
    prompter = ForgeryTalkerPrompterNetwork(tiny_prompter_config(image_size=SIZE)).eval()
    processor = BlipImageProcessor(size={"height": SIZE, "width": SIZE})
    prompter.save_pretrained(tmp_path / "prompter")
    processor.save_pretrained(tmp_path / "prompter")
    result = held_out_validation_auc(tmp_path / "prompter", dataset, "face_swap")
    assert (result["num_forged"], result["num_authentic"]) == (3, 3)
    kept = [index for index, method in enumerate(methods) if method in ("face_swap", "authentic")]
    rows = load_dataset(str(dataset), split="validation").select(kept)
    pixels = processor(images=[image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        scores = torch.sigmoid(prompter(pixels).region_logits).max(-1).values.numpy()
    assert result["AUC"] == pytest.approx(roc_auc(scores, [method == "face_swap" for method in rows["method"]]))
