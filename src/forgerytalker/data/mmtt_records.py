"""Released MMTT records → validated examples with the image and mask bytes (shared by converter and builder).

Paths in the released JSON files (`img_path`, `mask_path`) are relative to the MMTT root, the folder that
holds the JSON files, and start with the image root folder `dataset/` (e.g.
`dataset/celeb512/mat_gan/samples_celeb/20936.png`). Paths that do not start with `dataset/` are read as
relative to the image root itself (`synthetic/face_swap/x.png` → `MMTT_ROOT/dataset/synthetic/face_swap/x.png`).
Examples keep the paths as the records write them.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import PIL.Image
import pyarrow as pa

from .features import MMTT_FEATURES
from .methods import method_from_path
from .splits import RELEASED_SPLIT_FILES, SPLITS, assign_split
from .validation import (
    DUPLICATE_IMAGE_ID,
    MISSING_IMAGE,
    MISSING_MASK,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
    BadRecord,
    InvalidRecordError,
    check_fields,
    check_labels,
    check_mask,
    record_image_id,
)

IMAGE_ROOT_NAME = "dataset"
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@dataclasses.dataclass(frozen=True)
class PlannedRecord:
    """A released record with where it came from and where it goes.

    `duplicate_of` names the earlier record (`file[index]`) that already uses this `image_id`, if any.
    """

    record: object
    source_file: str
    index: int
    image_id: str | None
    split: str
    duplicate_of: str | None = None

    def bad(self, error: InvalidRecordError) -> BadRecord:
        return BadRecord(self.split, self.source_file, self.index, self.image_id, error.code, error.message)


def read_released_records(mmtt_root: str | Path) -> dict[str, list]:
    """The record lists of the released JSON files, keyed by released split (`train`, `validation`)."""
    mmtt_root = Path(mmtt_root)
    records = {}
    for split, file_name in RELEASED_SPLIT_FILES.items():
        path = mmtt_root / file_name
        if not path.is_file():
            expected = ", ".join(RELEASED_SPLIT_FILES.values())
            raise FileNotFoundError(
                f"{path} does not exist; an MMTT root holds {expected} and the `dataset/` image folder"
            )
        with path.open(encoding="utf-8") as file:
            loaded = json.load(file)
        if not isinstance(loaded, list):
            raise ValueError(f"{path} must hold a JSON list of records, got a {type(loaded).__name__}")
        records[split] = loaded
    return records


def plan_records(released: dict[str, list], test_fraction: float | None = None) -> dict[str, list[PlannedRecord]]:
    """Assigns every released record its output split (see `forgerytalker.data.splits`) and marks duplicates.

    Records keep the order of their file within each split; the first record that uses an `image_id` (train
    file first) keeps it and later ones are marked `duplicate_of` it. Every record is planned, bad or not.
    """
    planned: dict[str, list[PlannedRecord]] = {split: [] for split in SPLITS}
    first_use: dict[str, str] = {}
    for released_split, records in released.items():
        source_file = RELEASED_SPLIT_FILES[released_split]
        for index, record in enumerate(records):
            image_id = record_image_id(record)
            duplicate_of = first_use.get(image_id) if image_id is not None else None
            if image_id is not None and duplicate_of is None:
                first_use[image_id] = f"{source_file}[{index}]"
            split = assign_split(released_split, image_id, test_fraction)
            planned[split].append(PlannedRecord(record, source_file, index, image_id, split, duplicate_of))
    return {split: entries for split, entries in planned.items() if entries}


def source_from_path(relative_path: str) -> str:
    """The top image folder of a path under the image root: `dataset/celeb512/...` → `celeb512`."""
    parts = PurePosixPath(relative_path.replace("\\", "/")).parts
    if len(parts) > 2 and parts[0] == IMAGE_ROOT_NAME:
        return parts[1]
    return parts[0] if len(parts) > 1 else ""


def _describe_pil_error(error: Exception) -> str:
    """PIL's message without the in-memory file's address, which would differ between runs."""
    if isinstance(error, PIL.UnidentifiedImageError):
        return "not an image format Pillow recognises"
    return str(error) or type(error).__name__


def resolve_path(mmtt_root: Path, relative_path: str) -> Path:
    """The file a record path names: under the MMTT root if it starts with `dataset/`, else under the image root."""
    parts = PurePosixPath(relative_path.replace("\\", "/")).parts
    base = mmtt_root if parts[:1] == (IMAGE_ROOT_NAME,) else mmtt_root / IMAGE_ROOT_NAME
    return base / relative_path


def _read_file(mmtt_root: Path, relative_path: str, missing_code: str, what: str) -> bytes:
    path = resolve_path(mmtt_root, relative_path)
    if not path.is_file():
        raise InvalidRecordError(missing_code, f"{what} file {relative_path} does not exist")
    return path.read_bytes()


def _image_size(data: bytes, relative_path: str) -> tuple[int, int]:
    """Width × height of an image, after checking that its file is a complete image (PIL `verify`)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.verify()
    except _PIL_ERRORS as error:
        raise InvalidRecordError(
            UNREADABLE_IMAGE, f"image file {relative_path} cannot be read: {_describe_pil_error(error)}"
        ) from error
    return size


def _forged_pixels(mask: PIL.Image.Image) -> np.ndarray:
    """Boolean (H, W) map of the mask's forged pixels: any colour band > 0 (alpha ignored)."""
    if mask.mode == "P":
        mask = mask.convert("RGBA")
    array = np.asarray(mask)
    if array.ndim == 2:
        return array > 0
    colour_bands = [index for index, band in enumerate(mask.getbands()) if band != "A"]
    return (array[..., colour_bands] > 0).any(axis=-1)


def _encode_binary_mask(forged: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(forged.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _read_mask(data: bytes, relative_path: str) -> tuple[bytes, tuple[int, int], bool]:
    """The mask's bytes to store, its size and whether it marks any pixel.

    A grayscale (`L`) mask is stored byte for byte; any other mode is stored as a 0/255 `L` PNG of its forged
    pixels, so that decoding as `L` keeps the rule pixel > 0 = forged.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as mask:
            mask.load()
            forged = _forged_pixels(mask)
            stored = data if mask.mode == "L" else _encode_binary_mask(forged)
            return stored, mask.size, bool(forged.any())
    except _PIL_ERRORS as error:
        raise InvalidRecordError(
            UNREADABLE_MASK, f"mask file {relative_path} cannot be read: {_describe_pil_error(error)}"
        ) from error


def load_example(planned: PlannedRecord, mmtt_root: str | Path, trust_multilabel: bool = False) -> dict:
    """The example of a planned record, or `InvalidRecordError` from the first check it fails.

    With `trust_multilabel`, `regions` are the released `multilabel` even where the caption names others.

    Check order: fields, duplicate id, caption and labels, image then mask file present, image then mask file
    readable, mask against image and regions.
    """
    record = planned.record
    check_fields(record)
    if planned.duplicate_of is not None:
        raise InvalidRecordError(
            DUPLICATE_IMAGE_ID, f"image_id {planned.image_id!r} is already used by {planned.duplicate_of}"
        )
    regions = check_labels(record["caption"], record["multilabel"], trust_multilabel)
    mmtt_root = Path(mmtt_root)
    image_path, mask_path = record["img_path"], record["mask_path"]
    image_bytes = _read_file(mmtt_root, image_path, MISSING_IMAGE, "image")
    mask_bytes = _read_file(mmtt_root, mask_path, MISSING_MASK, "mask")
    image_size = _image_size(image_bytes, image_path)
    mask_bytes, mask_size, forged = _read_mask(mask_bytes, mask_path)
    method = method_from_path(image_path)
    check_mask(image_size, mask_size, forged, regions, method, mask_path)
    return {
        "image_id": planned.image_id,
        "image": {"bytes": image_bytes, "path": image_path},
        "mask": {"bytes": mask_bytes, "path": mask_path},
        "caption": record["caption"],
        "regions": regions,
        "method": method,
        "source": source_from_path(image_path),
    }


def examples_to_table(examples: Iterable[dict]) -> pa.Table:
    """An Arrow table of examples in the `MMTT_FEATURES` schema.

    Images are written as given (`bytes` and the relative `path`); `Features.encode_example` is not used
    because it drops the bytes of any image whose relative path happens to exist under the working directory.
    """
    examples = list(examples)
    columns = {name: [example[name] for example in examples] for name in MMTT_FEATURES}
    return pa.Table.from_pydict(columns, schema=MMTT_FEATURES.arrow_schema)
