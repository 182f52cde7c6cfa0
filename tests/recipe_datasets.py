"""Small MMTT-layout datasets for the demo recipe's tests: rows of given methods, written as a parquet folder that
`load_dataset` reads like the recipe's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image

from forgerytalker.data.features import MMTT_FEATURES

SIZE = 32


def _mask(method: str, rng: np.random.Generator) -> Image.Image:
    """Empty for an authentic image, else a random rectangle."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if method != "authentic":
        top, left = rng.integers(0, SIZE // 2, 2)
        height, width = rng.integers(SIZE // 4, SIZE // 2 + 1, 2)
        mask[top : top + height, left : left + width] = 255
    return Image.fromarray(mask)


def recipe_rows(methods: list[str], prefix: str, captions: list[str] | None = None) -> Dataset:
    """One row per method: random SIZE x SIZE pixels, its mask (`_mask`), region 0 for a forged image, ids
    `prefix` + index, `captions` (default: empty)."""
    rng = np.random.default_rng(len(prefix) + len(methods))
    images = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in methods]
    masks = [_mask(method, rng) for method in methods]
    return Dataset.from_dict({
        "image_id": [f"{prefix}{index}" for index in range(len(methods))], "image": images, "mask": masks,
        "caption": captions or ["" for _ in methods], "regions": [[] if method == "authentic" else [0] for method in methods],
        "method": methods, "source": ["synthetic"] * len(methods), "extra": ["{}"] * len(methods),
    }, features=MMTT_FEATURES)


def parquet_folder(folder: Path, splits: dict[str, Dataset], train_shards: int = 1) -> Path:
    """Writes each split (the train split in `train_shards` files) to `folder`/data; returns `folder`."""
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        shards = train_shards if split == "train" else 1
        for index in range(shards):
            piece = rows.shard(shards, index, contiguous=True)
            piece.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet"))
    return folder
