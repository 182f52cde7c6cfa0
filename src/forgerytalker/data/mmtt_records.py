"""MMTT records → validated examples with the image and mask bytes (shared by the converter and the builder).

Record paths are resolved by `mmtt_layout.resolve_record_path`; examples keep them as the records write them
(`/` separators; absolute paths inside the root made relative). Every image and mask is decoded in full by
`forgerytalker.image_utils.open_image` (a truncated file is caught, a picture over the pixel limit is refused
before decoding). Images are stored as released; the mask is checked against the image **as displayed**,
that is after its EXIF orientation, which every reader applies (`image_utils.to_rgb`, and `datasets`'
`Image` feature). A mask that carries an EXIF orientation of its own is stored with it applied.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import pyarrow as pa
from PIL.ExifTags import Base as ExifTag

from ..image_utils import ImageReadError, ImageTooLargeError, forged_pixels, open_image
from .features import MMTT_FEATURES
from .methods import AUTHENTIC, method_from_name, method_from_path
from .mmtt_layout import resolve_record_path, source_from_path
from .splits import SPLITS, assign_split
from .validation import (
    DUPLICATE_IMAGE_ID,
    IMAGE_TOO_LARGE,
    KNOWN_FIELDS,
    MASK_TOO_LARGE,
    METHOD_FIELD,
    RELEASED_LABELS,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
    BadRecord,
    InvalidRecordError,
    LabelComparison,
    check_fields,
    check_labels,
    check_mask,
    record_image_id,
)

_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclasses.dataclass(frozen=True)
class PlannedRecord:
    """A record with where it came from (`source_file`, 0-based `index`) and where it goes (`split`).

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


def plan_records(
    released: Mapping[str, tuple[str, list]], test_fraction: float | None = None
) -> dict[str, list[PlannedRecord]]:
    """Assigns every record its output split (see `forgerytalker.data.splits`) and marks duplicates.

    Args:
        released: split → (the split file's name in reports, its records), in `SPLITS` order.

    Records keep the order of their file within each split; the first record that uses an `image_id` (train
    file first, then validation, then test) keeps it and later ones are marked `duplicate_of` it. Every
    record is planned, bad or not.
    """
    planned: dict[str, list[PlannedRecord]] = {split: [] for split in SPLITS}
    first_use: dict[str, str] = {}
    for released_split, (source_file, records) in released.items():
        for index, record in enumerate(records):
            image_id = record_image_id(record)
            duplicate_of = first_use.get(image_id) if image_id is not None else None
            if image_id is not None and duplicate_of is None:
                first_use[image_id] = f"{source_file}[{index}]"
            split = assign_split(released_split, image_id, test_fraction)
            planned[split].append(PlannedRecord(record, source_file, index, image_id, split, duplicate_of))
    return {split: entries for split, entries in planned.items() if entries}


@dataclasses.dataclass(frozen=True)
class LoadedExample:
    """A valid record's example (a row of `MMTT_FEATURES`) and how its released and caption labels compare."""

    example: dict
    labels: LabelComparison | None


def _read_bytes(path: Path, stored: str, code: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidRecordError(code, f"{what} file {stored} cannot be read: {error.strerror}") from None


def _displayed_size(image: PIL.Image.Image) -> tuple[int, int]:
    """Width × height after the EXIF orientation."""
    width, height = image.size
    orientation = image.getexif().get(ExifTag.Orientation, 1)
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def _decode(data: bytes, stored: str, max_pixels: int | None, what: str) -> PIL.Image.Image:
    too_large, unreadable = (IMAGE_TOO_LARGE, UNREADABLE_IMAGE) if what == "image" else (MASK_TOO_LARGE, UNREADABLE_MASK)
    try:
        return open_image(data, max_pixels=max_pixels, what=f"{what} file {stored}")
    except ImageTooLargeError as error:
        raise InvalidRecordError(too_large, str(error)) from None
    except ImageReadError as error:
        raise InvalidRecordError(unreadable, str(error)) from None


def _encode_binary_mask(forged: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(forged.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _read_mask(data: bytes, stored: str, max_pixels: int | None) -> tuple[bytes, tuple[int, int], bool]:
    """The mask's bytes to store, its size and whether it marks any pixel.

    A grayscale (`L`) mask without EXIF orientation is stored byte for byte; any other is stored as a 0/255
    `L` PNG of its forged pixels (`image_utils.forged_pixels`), its orientation applied, so that decoding as
    `L` keeps the rule pixel > 0 = forged.
    """
    with _decode(data, stored, max_pixels, "mask") as mask:
        oriented = mask.getexif().get(ExifTag.Orientation, 1) != 1
        shown = PIL.ImageOps.exif_transpose(mask) if oriented else mask
        forged = forged_pixels(shown)
        stored_bytes = data if mask.mode == "L" and not oriented else _encode_binary_mask(forged)
        return stored_bytes, shown.size, bool(forged.any())


def _method(record: Mapping, image_path: str, forged: bool, regions: list[int]) -> str:
    """The record's `method` field (synonyms mapped, unknown names kept) if it has one; else the path's
    method, or `authentic` for an empty mask with no labelled region."""
    named = record.get(METHOD_FIELD)
    if isinstance(named, str) and named.strip():
        return method_from_name(named)
    method = method_from_path(image_path)
    if not forged and not regions:
        return AUTHENTIC
    return method


def extra_fields(record: Mapping) -> str:
    """The record's fields without a column of their own, as a JSON object (keys sorted; "{}" when none)."""
    extra = {key: value for key, value in record.items() if key not in KNOWN_FIELDS}
    return json.dumps(extra, sort_keys=True, ensure_ascii=False)


def load_example(
    planned: PlannedRecord,
    mmtt_root: str | Path,
    labels: str = RELEASED_LABELS,
    max_image_pixels: int | None = None,
) -> LoadedExample:
    """The example of a planned record, or `InvalidRecordError` from the first check it fails.

    Args:
        labels: `released` (regions from `multilabel`) or `caption` (regions from the caption; see
            `validation`).
        max_image_pixels: the pixel limit of `image_utils.open_image` (None: its default).

    Check order: fields, duplicate id, caption and labels, image then mask path, image then mask file
    decoded, mask against image, labels and method.
    """
    record = planned.record
    check_fields(record, labels)
    if planned.duplicate_of is not None:
        raise InvalidRecordError(
            DUPLICATE_IMAGE_ID, f"image_id {planned.image_id!r} is already used by {planned.duplicate_of}"
        )
    regions, comparison = check_labels(record, labels)
    mmtt_root = Path(mmtt_root)
    image_file, image_path = resolve_record_path(mmtt_root, record["img_path"], "image")
    mask_file, mask_path = resolve_record_path(mmtt_root, record["mask_path"], "mask")
    image_bytes = _read_bytes(image_file, image_path, UNREADABLE_IMAGE, "image")
    mask_bytes = _read_bytes(mask_file, mask_path, UNREADABLE_MASK, "mask")
    with _decode(image_bytes, image_path, max_image_pixels, "image") as image:
        image_size = _displayed_size(image)
    mask_bytes, mask_size, forged = _read_mask(mask_bytes, mask_path, max_image_pixels)
    method = _method(record, image_path, forged, regions)
    check_mask(image_size, mask_size, forged, regions, method, mask_path)
    example = {
        "image_id": planned.image_id,
        "image": {"bytes": image_bytes, "path": image_path},
        "mask": {"bytes": mask_bytes, "path": mask_path},
        "caption": record["caption"],
        "regions": regions,
        "method": method,
        "source": source_from_path(image_path),
        "extra": extra_fields(record),
    }
    return LoadedExample(example, comparison)


def examples_to_table(examples: Iterable[dict]) -> pa.Table:
    """An Arrow table of examples in the `MMTT_FEATURES` schema.

    Images are written as given (`bytes` and the relative `path`); `Features.encode_example` is not used
    because it drops the bytes of any image whose relative path happens to exist under the working directory.
    """
    examples = list(examples)
    columns = {name: [example[name] for example in examples] for name in MMTT_FEATURES}
    return pa.Table.from_pydict(columns, schema=MMTT_FEATURES.arrow_schema)
