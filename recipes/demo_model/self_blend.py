"""Self-blended training images for the demo model (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended
Images", CVPR 2022): pseudo-forgeries made by blending a training face with an altered copy of itself
(`forgerytalker.data.synthesis.manipulations.SelfBlend`), so that the prompter learns what blending leaves behind
rather than the signature of the recipe's manipulation methods, and detects methods it never saw.

`synthesize_self_blend` makes them from the training split's photos (the same people, none of validation or test)
with `forgerytalker data synthesize --local-methods self_blend`; `with_self_blend` adds a number of them to a
dataset's training split.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from datasets import load_dataset

from forgerytalker.data.methods import SELF_BLEND

from .data import convert, relocated_records, synthesize
from .settings import RecipeSettings

logger = logging.getLogger(__name__)

SELF_BLEND_DIR = "data/self-blend"
SEED_OFFSET = 5
"""The self-blend synthesis runs with seed `settings.seed * 10 + SEED_OFFSET`: apart from the splits' (offsets 0-2),
so no image id is made twice."""


def synthesize_self_blend(recipe_work: Path, out: Path, settings: RecipeSettings) -> Path:
    """`settings.self_blend_samples` self-blended images of the training split's photos (`recipe_work/data/photos/
    train`, written by `data.synthesize_splits`), converted into a dataset with one train split under
    `out/data/self-blend/mmtt`; returns it. Every sample is a self-blend of 1 to `settings.self_blend_max_regions`
    regions (many regions make a mask close to the whole face hull, the paper's usual mask): no authentic image
    and no whole-face swap. The training split's face alignments are reused when `recipe_work` has them.
    Skipped when complete; an interrupted synthesis resumes."""
    dataset = out / SELF_BLEND_DIR / "mmtt"
    if (dataset / "README.md").is_file():
        return dataset
    photos = recipe_work / "data" / "photos" / "train"
    if not photos.is_dir():
        raise FileNotFoundError(f"{photos}: no training photos (run the recipe's data step first)")
    root = out / SELF_BLEND_DIR / "synthetic"
    synthesis = root / "train"
    cache = recipe_work / "data" / "synthetic" / "train" / "cache"
    if cache.is_dir() and not (synthesis / "cache").exists():
        shutil.copytree(cache, synthesis / "cache")
    synthesize(photos, synthesis, settings.self_blend_samples, settings.seed * 10 + SEED_OFFSET, settings,
               "--authentic-rate", "0", "--whole-face-rate", "0", "--local-methods", SELF_BLEND,
               "--max-regions", str(settings.self_blend_max_regions))
    convert(root, [f"train={relocated_records(synthesis, root, 'train')}"], dataset, settings)
    return dataset


def with_self_blend(dataset: Path, self_blend: Path, count: int, out: Path) -> Path:
    """A dataset folder (`load_dataset` reads it) with the splits of `dataset`, a folder of parquet shards
    `data/<split>-<i>-of-<n>.parquet` (as `forgerytalker data convert` and `data.without_method` write them), whose
    train split also holds the first `count` self-blended images of `self_blend`. `dataset`'s shards are linked,
    not copied; the self-blended images are written once as one more train shard."""
    if (out / "done").is_file():
        return out
    extra = load_dataset(str(self_blend), split="train")
    if count > len(extra):
        raise ValueError(f"{self_blend}: {len(extra)} self-blended images, {count} asked for")
    shards = sorted((dataset / "data").glob("*.parquet"))
    train = [path for path in shards if path.name.startswith("train-")]
    if not train:
        raise FileNotFoundError(f"{dataset}: no data/train-*.parquet")
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    total = len(train) + 1
    for path in shards:
        name = f"train-{train.index(path):05d}-of-{total:05d}.parquet" if path in train else path.name
        (out / "data" / name).symlink_to(path.resolve())
    features = load_dataset(str(dataset), split="train").features
    extra.select(range(count)).cast(features).to_parquet(str(out / "data" / f"train-{total - 1:05d}-of-{total:05d}.parquet"))
    (out / "done").write_text(f"{count} self-blended images from {self_blend}\n")
    return out


__all__ = ["SELF_BLEND_DIR", "synthesize_self_blend", "with_self_blend"]
