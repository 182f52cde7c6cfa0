"""Training data: MMTT-style `datasets` splits, batched through the processor.

Images and masks stay undecoded in the dataset (`datasets.Image(decode=False)`) and are read in the collator by
`forgerytalker.image_utils`, the one rule for pictures, so an unreadable one is reported with its image id
and can be skipped.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, load_dataset
from datasets import Image as ImageFeature
from PIL import Image

from ..image_utils import load_mask, open_image, to_rgb
from ..regions import REGION_NAMES, regions_to_labels
from .augmentation import AugmentationSettings, augment_pair, flip_allowed
from .errors import TrainingConfigurationError, UnreadableSampleError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = {"prompter": ("image_id", "image", "regions"), "joint": ("image_id", "image", "regions", "caption", "mask")}
PLACEHOLDER_SIZE = 32


def load_splits(dataset: str, train_split: str, validation_split: str | None, stage: str) -> tuple[Dataset, Dataset | None]:
    """The train and validation splits of a folder or hub id, images and masks left undecoded.

    Raises `TrainingConfigurationError` naming `--dataset` when it cannot be loaded, lacks a split, or lacks a
    column the stage needs.
    """
    try:
        splits = load_dataset(dataset)
    except Exception as error:  # datasets raises many types: missing folder, offline hub, unreadable files
        raise TrainingConfigurationError(f"--dataset: {dataset!r} cannot be loaded ({type(error).__name__}: {error})") from error
    if not isinstance(splits, DatasetDict):
        raise TrainingConfigurationError(f"--dataset: {dataset!r} did not load as a dataset with splits")
    chosen = []
    for flag, name in (("--train_split", train_split), ("--validation_split", validation_split)):
        if name is None:
            chosen.append(None)
            continue
        if name not in splits:
            raise TrainingConfigurationError(f"{flag}: --dataset {dataset!r} has no split {name!r}; it has {sorted(splits)}")
        missing = [column for column in REQUIRED_COLUMNS[stage] if column not in splits[name].column_names]
        if missing:
            raise TrainingConfigurationError(f"--dataset: split {name!r} of {dataset!r} lacks the column(s) {missing}")
        chosen.append(undecoded(splits[name]))
    return chosen[0], chosen[1]


def undecoded(split: Dataset) -> Dataset:
    """`split` with its `image` (and `mask`) columns as raw `{"bytes", "path"}` values, for `ForgeryTalkerCollator`."""
    for column in ("image", "mask"):
        if column in split.column_names:
            split = split.cast_column(column, ImageFeature(decode=False))
    return split


def region_names_of(example: dict, names: tuple[str, ...] = REGION_NAMES) -> list[str]:
    """The region names of one example's `regions` class labels."""
    return [names[index] for index in example["regions"]]


class ForgeryTalkerCollator:
    """Turns a list of dataset examples (images and masks undecoded, see `undecoded`) into a model batch.

    Stage `"prompter"`: `processor` is an image processor and the batch holds `pixel_values` and
    `region_labels` `(batch, 21)`; with `patch_grid` (a prompter with a patch head), the masks are read too and
    `patch_mask_labels` `(batch, patch_grid, patch_grid)` holds the manipulated share of each cell of the image.
    Stage `"joint"`: `processor` is a `ForgeryTalkerProcessor` and the batch
    adds the reports (`labels`) and the masks.

    Besides the model inputs, a batch carries (pop them before the model call):
        image_ids (`list[str]`): the samples in the batch.
        skipped_image_ids (`list[str]`): samples left out because their image or mask cannot be decoded
            (only with `skip_unreadable_images`; otherwise such a sample raises `UnreadableSampleError`).
        loss_weight (`float`): 1.0; 0.0 when every sample was unreadable, in which case the batch is one black
            placeholder image that keeps every process's forward and backward in step (its loss counts zero).

    With `augmentation`, every image (and its mask) goes through `augmentation.augment_pair` first.
    """

    def __init__(self, processor, stage: str, skip_unreadable_images: bool = False,
                 augmentation: AugmentationSettings | None = None, patch_grid: int | None = None):
        self.processor = processor
        self.stage = stage
        self.patch_grid = patch_grid
        self.skip_unreadable_images = skip_unreadable_images
        self.augmentation = augmentation

    def __call__(self, examples: list[dict]) -> dict:
        readable, images, masks, skipped = [], [], [], []
        for example in examples:
            try:
                image, mask = self._read(example)
            except UnreadableSampleError as error:
                if not self.skip_unreadable_images:
                    raise UnreadableSampleError(f"{error}; pass --skip_unreadable_images to leave such samples out") from error
                logger.warning("%s; skipped (--skip_unreadable_images)", error)
                skipped.append(str(example["image_id"]))
                continue
            if self.augmentation is not None:
                image, mask = augment_pair(image, mask, self.augmentation, flip_allowed(example.get("caption")))
            readable.append(example)
            images.append(image)
            masks.append(mask)
        loss_weight = 1.0
        if not readable:
            loss_weight = 0.0
            readable = [{"image_id": "", "regions": [], "caption": ""}]
            images = [Image.new("RGB", (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE))]
            masks = [np.zeros((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), dtype=bool)]
        region_labels = [region_names_of(example) for example in readable]
        if self.stage == "prompter":
            batch = {
                "pixel_values": self.processor(images, return_tensors="pt")["pixel_values"],
                "region_labels": torch.tensor([regions_to_labels(names) for names in region_labels], dtype=torch.float32),
            }
            if self.patch_grid:
                batch["patch_mask_labels"] = torch.stack([cell_shares(mask, self.patch_grid) for mask in masks])
        else:
            batch = dict(self.processor(
                images=images,
                reports=[example["caption"] for example in readable],
                region_labels=region_labels,
                masks=masks,
            ))
        batch["image_ids"] = [str(example["image_id"]) for example in readable] if loss_weight else []
        batch["skipped_image_ids"] = skipped
        batch["loss_weight"] = loss_weight
        return batch

    def _read(self, example: dict):
        image_id = str(example["image_id"])
        try:
            image = to_rgb(open_image(_source(example["image"]), what=f"the image of sample {image_id!r}"))
            mask = None
            if self.stage == "joint" or self.patch_grid:
                mask = load_mask(_source(example["mask"]), what=f"the mask of sample {image_id!r}")
        except (ValueError, OSError) as error:  # ImageReadError, or to_rgb on an unusable picture
            raise UnreadableSampleError(str(error)) from error
        return image, mask


def cell_shares(mask: np.ndarray, grid: int) -> torch.Tensor:
    """float32 `(grid, grid)`: the share of each cell of a boolean `(H, W)` mask that is True, the mask divided into
    `grid` × `grid` cells as the image processor's resize to a square divides the image."""
    return F.adaptive_avg_pool2d(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None], grid)[0]


def _source(value: dict):
    """The bytes (or else the path) of an undecoded `datasets.Image` value `{"bytes", "path"}`."""
    return value["bytes"] if value.get("bytes") is not None else value["path"]
