"""Checks of released MMTT records: what makes a record bad, and how a bad record is reported.

Every check raises `InvalidRecordError` with a stable `code` (listed in `REASONS`) and a message that names
the offending field or file. The converter runs the checks in a fixed order and reports the first failure:
fields, duplicate id, caption and labels (`check_fields`, `check_labels`), then the files (`check_mask`).

Masks: pixel > 0 means forged. An all-zero mask is valid (an authentic sample) only with a caption that names
no region; an all-zero mask whose caption names regions contradicts itself and is bad
(`empty_mask_with_regions`), and so is a non-empty mask on a sample whose path says `authentic`.
A non-empty mask with a caption that names no region is kept: the caption may describe the forgery
without naming one of the 21 regions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..regions import NUM_REGIONS, REGION_TO_INDEX, caption_to_regions, labels_to_regions
from .methods import AUTHENTIC

MISSING_FIELD = "missing_field"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
EMPTY_CAPTION = "empty_caption"
MULTILABEL_LENGTH = "multilabel_length"
MULTILABEL_VALUES = "multilabel_values"
MULTILABEL_CAPTION_MISMATCH = "multilabel_caption_mismatch"
MISSING_IMAGE = "missing_image"
MISSING_MASK = "missing_mask"
UNREADABLE_IMAGE = "unreadable_image"
UNREADABLE_MASK = "unreadable_mask"
MASK_SIZE_MISMATCH = "mask_size_mismatch"
EMPTY_MASK_WITH_REGIONS = "empty_mask_with_regions"
AUTHENTIC_WITH_MASK = "authentic_with_mask"
REASONS: tuple[str, ...] = (
    MISSING_FIELD,
    DUPLICATE_IMAGE_ID,
    EMPTY_CAPTION,
    MULTILABEL_LENGTH,
    MULTILABEL_VALUES,
    MULTILABEL_CAPTION_MISMATCH,
    MISSING_IMAGE,
    MISSING_MASK,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
    MASK_SIZE_MISMATCH,
    EMPTY_MASK_WITH_REGIONS,
    AUTHENTIC_WITH_MASK,
)

# Released field → accepted JSON types. `image_id` may be a number in hand-made files; it is used as a string.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "image_id": (str, int),
    "img_path": (str,),
    "mask_path": (str,),
    "caption": (str,),
    "multilabel": (list,),
}


class InvalidRecordError(ValueError):
    """A record failed a check; `code` is one of `REASONS`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """One skipped record: where it was (`source_file`, 0-based `index`), the split it was bound for, and why."""

    split: str
    source_file: str
    index: int
    image_id: str | None
    reason: str
    message: str

    def describe(self) -> str:
        return f"{self.source_file}[{self.index}] (image_id={self.image_id!r}, split {self.split}): {self.message}"


def record_image_id(record: object) -> str | None:
    """The record's `image_id` as a string, or None when it has no usable one."""
    if not isinstance(record, Mapping):
        return None
    image_id = record.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, (str, int)) or str(image_id) == "":
        return None
    return str(image_id)


def check_fields(record: object) -> None:
    """Raises unless the record is a JSON object with every `REQUIRED_FIELDS` entry of an accepted type."""
    if not isinstance(record, Mapping):
        raise InvalidRecordError(MISSING_FIELD, f"record is a {type(record).__name__}, not a JSON object")
    for field, types in REQUIRED_FIELDS.items():
        if field not in record:
            raise InvalidRecordError(MISSING_FIELD, f"record has no `{field}` field")
        value = record[field]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(kind.__name__ for kind in types)
            raise InvalidRecordError(MISSING_FIELD, f"`{field}` must be {names}, got {type(value).__name__}")
    if record_image_id(record) is None:
        raise InvalidRecordError(MISSING_FIELD, "`image_id` is empty")


def check_labels(caption: str, multilabel: list, trust_multilabel: bool = False) -> list[int]:
    """Checks the caption and its `multilabel` vector; returns the indices of the labelled regions.

    The vector must have 21 entries of 0 or 1 and, unless `trust_multilabel`, equal the caption's whole-word
    region mentions (`forgerytalker.regions.caption_to_regions`), as the released annotations were derived.
    """
    if not caption.strip():
        raise InvalidRecordError(EMPTY_CAPTION, "caption is empty")
    if len(multilabel) != NUM_REGIONS:
        raise InvalidRecordError(
            MULTILABEL_LENGTH, f"`multilabel` has {len(multilabel)} entries, expected {NUM_REGIONS}"
        )
    if any(isinstance(value, bool) or value not in (0, 1) for value in multilabel):
        raise InvalidRecordError(MULTILABEL_VALUES, f"`multilabel` must hold only 0 and 1, got {multilabel}")
    labelled = labels_to_regions(multilabel)
    named = caption_to_regions(caption)
    if labelled != named and not trust_multilabel:
        raise InvalidRecordError(
            MULTILABEL_CAPTION_MISMATCH,
            f"`multilabel` marks {labelled} but the caption names {named}",
        )
    return [REGION_TO_INDEX[name] for name in labelled]


def check_mask(
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
    forged: bool,
    regions: list[int],
    method: str,
    mask_path: str,
) -> None:
    """Checks a mask against its image (same width × height) and against the caption's regions and the method."""
    if mask_size != image_size:
        raise InvalidRecordError(
            MASK_SIZE_MISMATCH,
            f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image is {image_size[0]}x{image_size[1]}",
        )
    if not forged and regions:
        raise InvalidRecordError(
            EMPTY_MASK_WITH_REGIONS, f"mask {mask_path} is all zeros but the caption names {len(regions)} region(s)"
        )
    if forged and method == AUTHENTIC:
        raise InvalidRecordError(AUTHENTIC_WITH_MASK, f"mask {mask_path} marks forged pixels on an authentic sample")


class BadRecordError(ValueError):
    """Raised in strict mode at the first bad record; `bad_record` says which record, where and why."""

    def __init__(self, bad_record: BadRecord):
        super().__init__(bad_record)
        self.bad_record = bad_record

    def __str__(self) -> str:
        return f"bad MMTT record {self.bad_record.describe()}"
