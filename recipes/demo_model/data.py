"""The demo model's data: MMTT-style samples synthesized from face photos, whole identities held out.

Photos are split, not samples: every photo (and so every person in it) lands in exactly one of train,
validation and test. The package's own commands do the work: `forgerytalker data synthesize` once per split
(each with its own seed, so image ids never collide), then `forgerytalker data convert` with one `--split`
file per split into a dataset that `datasets.load_dataset` reads.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from datasets import load_dataset

from .settings import RecipeSettings

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DATASET_DIR = "data/mmtt"


def split_photos(faces: Path, settings: RecipeSettings) -> dict[str, list[str]]:
    """`{split: [photo file name]}`: a seeded shuffle of the usable photos, the first ones held out for test and
    validation. A photo that shows several people always goes to train (it would put all of them in one held-out
    split at once), so the held-out splits have one person per photo."""
    photos = sorted(path.name for path in faces.iterdir() if path.name in settings.photo_faces)
    group = [photo for photo in photos if settings.photo_faces[photo] > 1]
    single = [photo for photo in photos if settings.photo_faces[photo] == 1]
    random.Random(settings.seed).shuffle(single)
    test, validation = single[: settings.test_photos], single[settings.test_photos : settings.test_photos + settings.validation_photos]
    train = sorted(group + single[settings.test_photos + settings.validation_photos :])
    missing = sorted(set(settings.photo_faces) - set(photos))
    if missing:
        raise FileNotFoundError(f"--faces {faces}: the recipe's photos {missing} are missing")
    return {"train": train, "validation": sorted(validation), "test": sorted(test)}


def _command(*arguments: str) -> None:
    logger.info("$ %s", " ".join(arguments))
    subprocess.run(arguments, check=True)


def synthesize_splits(faces: Path, work: Path, settings: RecipeSettings) -> Path:
    """Synthesizes each split from its own photos and converts all three into `work/data/mmtt`; returns it.

    Each step is skipped when its output is complete, so a re-run resumes (the synthesizer resumes itself).
    """
    dataset = work / DATASET_DIR
    if (dataset / "README.md").is_file():
        return dataset
    photos = split_photos(faces, settings)
    (work / "data").mkdir(parents=True, exist_ok=True)
    (work / "data" / "splits.json").write_text(json.dumps(photos, indent=1) + "\n")
    root = work / "data" / "synthetic"
    split_files = []
    for index, split in enumerate(SPLITS):
        chosen = work / "data" / "photos" / split
        chosen.mkdir(parents=True, exist_ok=True)
        for photo in photos[split]:
            link = chosen / photo
            if not link.exists():
                os.symlink((faces / photo).resolve(), link)
        out = root / split
        _command(
            sys.executable, "-m", "forgerytalker.cli", "data", "synthesize", "--faces", str(chosen), "--out", str(out),
            "--num-samples", str(settings.samples[split]), "--seed", str(settings.seed * 10 + index), "--eval-every", "0",
            "--max-upscale", str(settings.max_upscale), "--max-regions", str(settings.max_regions), "--num-workers", str(settings.workers), "--no-progress",
        )
        split_files.append(f"{split}={_relocated_records(out, root, split)}")
    _command(
        sys.executable, "-m", "forgerytalker.cli", "data", "convert", "--mmtt-root", str(root), "--out", str(dataset),
        *[argument for split_file in split_files for argument in ("--split", split_file)],
        "--num-proc", str(settings.workers), "--no-progress",
    )
    return dataset


def _relocated_records(synthesis_out: Path, root: Path, split: str) -> Path:
    """The split's records with paths relative to the common `root` (the synthesis folder is `root/<split>`),
    written as `root/<split>.json`."""
    prefix = synthesis_out.relative_to(root).as_posix()
    records = json.loads((synthesis_out / "train-mutilabel-simple.json").read_text())
    for record in records:
        record["img_path"] = f"{prefix}/dataset/{record['img_path']}"
        record["mask_path"] = f"{prefix}/dataset/{record['mask_path']}"
    path = root / f"{split}.json"
    path.write_text(json.dumps(records) + "\n")
    return path


def source_faces(work: Path) -> dict[str, dict]:
    """`{image_id: {"face": face id, "landmarks": 68×2 list in 512×512 crop pixels, "method": ...}}` for every
    synthesized sample, from the synthesizer's per-sample records and its face-alignment cache."""
    root = work / "data" / "synthetic"
    faces: dict[str, dict] = {}
    for split in SPLITS:
        out = root / split
        landmarks = {}
        for cache in (out / "cache" / "faces").glob("*.json"):
            for face in json.loads(cache.read_text())["faces"]:
                landmarks[face["face_id"]] = face["landmarks"]
        for sample in (out / "samples").glob("syn*.json"):
            record = json.loads(sample.read_text())
            face = record["source_face"]
            faces[sample.stem] = {"face": face, "landmarks": landmarks[face], "method": record["method"], "split": split}
    return faces


def without_method(dataset: Path, method: str, work: Path) -> Path:
    """A copy of `dataset` whose train and validation splits leave out `method` (the test split is kept whole),
    for leave-one-manipulation-out training; written once as parquet files that `load_dataset` reads."""
    out = work / "data" / f"without-{method}"
    if (out / "done").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    splits = load_dataset(str(dataset))
    for split, rows in splits.items():
        if split != "test":
            rows = rows.filter(lambda value: value != method, input_columns="method")
        rows.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    (out / "done").write_text(method + "\n")
    return out


__all__ = ["DATASET_DIR", "SPLITS", "source_faces", "split_photos", "synthesize_splits", "without_method"]
