"""Hand-written miniatures of MMTT-style folders and the helpers the `forgerytalker data convert` tests share
(their fixtures, `mmtt_root` and `offline_hf_cache`, are in conftest.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image

from forgerytalker.cli import convert_data as convert_cli
from forgerytalker.regions import caption_to_labels, regions_to_labels

SIZE = 32
REPOSITORY = Path(__file__).resolve().parents[1]


def save_picture(path: Path, array: np.ndarray, mode: str, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, mode=mode).save(path, **options)


def noise_pixels(seed: int, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(root: Path, relative: str, seed: int, size: int = SIZE) -> str:
    save_picture(root / relative, noise_pixels(seed, size, size), "RGB")
    return relative


def mask_pixels(forged: bool = True, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    if forged:
        mask[4:12, 8:20] = 255
    return mask


def write_mask(root: Path, relative: str, forged: bool = True, size: int = SIZE, mode: str = "L") -> str:
    mask = mask_pixels(forged, size, size)
    if mode == "RGB":
        mask = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)], axis=-1)
    save_picture(root / relative, mask, mode)
    return relative


def make_record(image_id, img_path, mask_path, caption, multilabel=None, **extra) -> dict:
    labels = caption_to_labels(caption) if multilabel is None else multilabel
    return {
        "image_id": image_id,
        "img_path": img_path,
        "mask_path": mask_path,
        "caption": caption,
        "multilabel": labels,
        **extra,
    }


def write_records(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


MAT = "dataset/celeb512/mat_gan/samples_celeb"
E4S = "dataset/FFHQ512/e4s_swap"
SDXL = "dataset/FFHQ512/sdxl_inpaint"
SYNTHETIC = "dataset/synthetic"
EYES_NOSE = "The eyes look blurred and the nose has an unnatural outline."
NO_REGION = "No sign of manipulation is visible."

# (split, image_id, reason) of every bad record of the miniature, in report order.
EXPECTED_SKIPPED = [
    ("train", "missing_image", "missing_image"),
    ("train", "missing_mask", "missing_mask"),
    ("train", "small_mask", "mask_size_mismatch"),
    ("train", "short_multilabel", "multilabel_length"),
    ("train", "empty_caption", "empty_caption"),
    ("train", "empty_mask", "empty_mask_with_regions"),
    ("train", "mat_0001", "duplicate_image_id"),
    ("train", "authentic_masked", "authentic_with_mask"),
    ("train", "no_caption", "missing_field"),
    ("train", "broken_image", "unreadable_image"),
    ("validation", "eval_missing_mask", "missing_mask"),
]
GOOD_TRAIN_IDS = ["mat_0001", "e4s_0002", "authentic_0003", "relabelled", "mat_0004", "mat_0005"]
GOOD_VALIDATION_IDS = ["sdxl_0100", "synthetic_0101"]


def write_released_miniature(root: Path) -> Path:
    """The released layout in miniature under `root`: a `dataset/` image root and the two JSON files, holding
    the good records `GOOD_TRAIN_IDS` / `GOOD_VALIDATION_IDS` and the bad ones of `EXPECTED_SKIPPED`."""


    def pair(folder: str, name: str, seed: int, **mask_options) -> tuple[str, str]:
        return write_image(root, f"{folder}/{name}.png", seed), write_mask(root, f"{folder}/masks/{name}.png", **mask_options)

    train = [
        make_record("mat_0001", *pair(MAT, "0001", 1), EYES_NOSE),
        make_record("e4s_0002", *pair(E4S, "0002", 2, mode="RGB"), "Skin on the cheeks is too smooth; the jaw blurs."),
        make_record("authentic_0003", *pair(f"{SYNTHETIC}/authentic", "authentic_0003", 3, forged=False), NO_REGION),
        make_record("missing_image", f"{MAT}/absent.png", write_mask(root, f"{MAT}/masks/absent.png"), EYES_NOSE),
        make_record("missing_mask", write_image(root, f"{MAT}/lonely.png", 4), f"{MAT}/masks/lonely.png", EYES_NOSE),
        make_record("small_mask", *pair(MAT, "small", 5, size=16), EYES_NOSE),
        make_record("short_multilabel", *pair(MAT, "short", 6), EYES_NOSE, [1] * 20),
        make_record("relabelled", *pair(MAT, "relabelled", 7), EYES_NOSE, regions_to_labels(["lip"])),
        make_record("empty_caption", *pair(MAT, "empty", 8), "  ", [0] * 21),
        make_record("empty_mask", *pair(MAT, "blank", 9, forged=False), EYES_NOSE),
        make_record("mat_0001", *pair(MAT, "again", 10), EYES_NOSE),
        make_record("authentic_masked", *pair(f"{SYNTHETIC}/authentic", "authentic_masked", 11), NO_REGION),
        {
            "image_id": "no_caption",
            "img_path": f"{MAT}/0001.png",
            "mask_path": f"{MAT}/masks/0001.png",
            "multilabel": [0] * 21,
        },
        make_record("broken_image", f"{MAT}/broken.png", write_mask(root, f"{MAT}/masks/broken.png"), EYES_NOSE),
        make_record("mat_0004", *pair(MAT, "0004", 12), "The lips are too red."),
        make_record("mat_0005", *pair(MAT, "0005", 13), "Teeth look fused."),
    ]
    (root / f"{MAT}/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    validation = [
        make_record("sdxl_0100", *pair(SDXL, "0100", 100), "The left eyebrow is thinner than the right one."),
        make_record(
            "synthetic_0101",
            *pair(f"{SYNTHETIC}/diffusion_inpainting", "synthetic_0101", 101),
            "The mouth and the chin are smeared.",
        ),
        make_record("eval_missing_mask", write_image(root, f"{SDXL}/0102.png", 102), f"{SDXL}/masks/0102.png", EYES_NOSE),
    ]
    for record in validation:
        record["instance_id"] = record["image_id"]
    for key in ("img_path", "mask_path"):  # the synthesizer writes paths relative to the image root
        validation[1][key] = validation[1][key].removeprefix("dataset/")
    write_records(root / "train-mutilabel-simple.json", train)
    write_records(root / "eval-mutilabel-simple.json", validation)
    return root


def folder_files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()
    }


def run_convert_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", "--no-progress", *argv])
    return args.func(args)


def load_converted(out: Path, split: str | None = None):
    import datasets

    return datasets.load_dataset(str(out), split=split)
