"""Checks of MMTT records: what makes a record bad, how a bad record is reported, and where labels come from.

Every check raises `InvalidRecordError` with a stable `code` (listed in `REASONS`) and a message that names
the offending field or file. The converter runs the checks in a fixed order and reports the first failure:
fields, duplicate id, caption and labels (`check_fields`, `check_labels`), then the files (`check_mask`).

**Labels.** By default (`labels="released"`) a record's regions are its released `multilabel` vector, the
labels the paper trained on. With `labels="caption"` they are re-derived from the caption by the release's
rule (`forgerytalker.regions.caption_to_regions`, plus the release's rule for expression edits: a record whose
`attribute` is `surprised` or `angry` also gets eye, eyebrow, lip and mouth). Either way, where a record
has both, the regions on which they disagree are counted (`LabelComparison`).

**Masks.** Pixel > 0 means forged. An all-zero mask is valid (an authentic sample) only with no labelled
region; an all-zero mask with labelled regions contradicts itself and is bad (`empty_mask_with_regions`), and
so is a non-empty mask on a sample that is authentic by its `method` field or its path. A non-empty mask with
no labelled region is kept: the caption may describe the forgery without naming one of the 21 regions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..regions import NUM_REGIONS, REGION_NAMES, REGION_TO_INDEX, caption_to_regions, labels_to_regions
from .methods import AUTHENTIC

MISSING_FIELD = "missing_field"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
EMPTY_CAPTION = "empty_caption"
MULTILABEL_LENGTH = "multilabel_length"
MULTILABEL_VALUES = "multilabel_values"
UNSAFE_PATH = "unsafe_path"
AMBIGUOUS_PATH = "ambiguous_path"
MISSING_IMAGE = "missing_image"
MISSING_MASK = "missing_mask"
IMAGE_TOO_LARGE = "image_too_large"
MASK_TOO_LARGE = "mask_too_large"
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
    UNSAFE_PATH,
    AMBIGUOUS_PATH,
    MISSING_IMAGE,
    MISSING_MASK,
    IMAGE_TOO_LARGE,
    MASK_TOO_LARGE,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
    MASK_SIZE_MISMATCH,
    EMPTY_MASK_WITH_REGIONS,
    AUTHENTIC_WITH_MASK,
)

RELEASED_LABELS = "released"
CAPTION_LABELS = "caption"
LABEL_SOURCES: tuple[str, ...] = (RELEASED_LABELS, CAPTION_LABELS)

# The release's rule for its expression edits (`face_attribute_image`): these attributes change the whole
# expression, so the eyes, eyebrows, lips and mouth are labelled whatever the caption says.
EXPRESSION_ATTRIBUTES: tuple[str, ...] = ("surprised", "angry")
EXPRESSION_REGIONS: tuple[str, ...] = ("eye", "eyebrow", "lip", "mouth")

# Record field → accepted JSON types. `image_id` may be a number in hand-made files; it is used as a string.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "image_id": (str, int),
    "img_path": (str,),
    "mask_path": (str,),
    "caption": (str,),
}
MULTILABEL_FIELD = "multilabel"  # required with released labels
METHOD_FIELD = "method"  # optional: a string naming the manipulation, or null
KNOWN_FIELDS = frozenset({*REQUIRED_FIELDS, MULTILABEL_FIELD, METHOD_FIELD})
"""Fields with a column of their own; every other field of a record goes into the `extra` column."""


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


def check_fields(record: object, labels: str = RELEASED_LABELS) -> None:
    """Raises unless the record is a JSON object with every required field of an accepted type.

    `multilabel` is required with released labels; `method`, when present, must be a string or null.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecordError(MISSING_FIELD, f"record is a {type(record).__name__}, not a JSON object")
    required = dict(REQUIRED_FIELDS)
    if labels == RELEASED_LABELS:
        required[MULTILABEL_FIELD] = (list,)
    for field, types in required.items():
        if field not in record:
            raise InvalidRecordError(MISSING_FIELD, f"record has no `{field}` field")
        value = record[field]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(kind.__name__ for kind in types)
            raise InvalidRecordError(MISSING_FIELD, f"`{field}` must be {names}, got {type(value).__name__}")
    if record_image_id(record) is None:
        raise InvalidRecordError(MISSING_FIELD, "`image_id` is empty")
    method = record.get(METHOD_FIELD)
    if method is not None and not isinstance(method, str):
        raise InvalidRecordError(MISSING_FIELD, f"`method` must be a string or null, got {type(method).__name__}")


def regions_from_caption(record: Mapping) -> list[str]:
    """The regions the release's labelling rule gives a record: its caption's, plus the expression-edit rule."""
    regions = set(caption_to_regions(record["caption"]))
    attribute = record.get("attribute")
    if isinstance(attribute, str) and attribute.strip().lower() in EXPRESSION_ATTRIBUTES:
        regions.update(EXPRESSION_REGIONS)
    return [name for name in REGION_NAMES if name in regions]


@dataclasses.dataclass(frozen=True)
class LabelComparison:
    """Where a record's released `multilabel` and its caption's regions disagree (region names)."""

    released_only: tuple[str, ...]
    caption_only: tuple[str, ...]


def check_labels(record: Mapping, labels: str = RELEASED_LABELS) -> tuple[list[int], LabelComparison | None]:
    """Checks the caption and the `multilabel` vector; returns the region indices and how the two sources compare.

    Returns:
        (indices into `REGION_NAMES` of the record's regions, from `labels`; the comparison of released and
        caption regions, or None when the record has no `multilabel`).
    """
    if not record["caption"].strip():
        raise InvalidRecordError(EMPTY_CAPTION, "caption is empty")
    from_caption = regions_from_caption(record)
    multilabel = record.get(MULTILABEL_FIELD)
    released = None
    if multilabel is not None:
        if not isinstance(multilabel, list):
            raise InvalidRecordError(MISSING_FIELD, f"`multilabel` must be list, got {type(multilabel).__name__}")
        if len(multilabel) != NUM_REGIONS:
            raise InvalidRecordError(
                MULTILABEL_LENGTH, f"`multilabel` has {len(multilabel)} entries, expected {NUM_REGIONS}"
            )
        if any(isinstance(value, bool) or value not in (0, 1) for value in multilabel):
            raise InvalidRecordError(MULTILABEL_VALUES, f"`multilabel` must hold only 0 and 1, got {multilabel}")
        released = labels_to_regions(multilabel)
    chosen = released if labels == RELEASED_LABELS else from_caption
    comparison = None
    if released is not None:
        comparison = LabelComparison(
            released_only=tuple(name for name in released if name not in from_caption),
            caption_only=tuple(name for name in from_caption if name not in released),
        )
    return [REGION_TO_INDEX[name] for name in chosen], comparison


def check_mask(
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
    forged: bool,
    regions: list[int],
    method: str,
    mask_path: str,
) -> None:
    """Checks a mask against its image (same width × height, the image as displayed) and against the labelled
    regions and the method."""
    if mask_size != image_size:
        raise InvalidRecordError(
            MASK_SIZE_MISMATCH,
            f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image is {image_size[0]}x{image_size[1]}",
        )
    if not forged and regions:
        raise InvalidRecordError(
            EMPTY_MASK_WITH_REGIONS, f"mask {mask_path} is all zeros but the record labels {len(regions)} region(s)"
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
