"""The samples of an evaluated split, decoded one at a time with the one picture rule of `image_utils`.

A split is a `datasets.Dataset` with the columns of a converted MMTT dataset (`REQUIRED_COLUMNS`). Images are read
with `image_utils.open_image` + `to_rgb` (16-bit, float, CMYK, alpha, palette and EXIF orientation become 8-bit
RGB, exactly as the processor and training read them) and ground-truth masks with `image_utils.load_mask`
(forged where any colour band > 0, alpha ignored).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from .. import image_utils
from .conventions import OFFICIAL_MASK_GREY_THRESHOLD

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "image", "mask", "caption", "regions", "method")


class UnreadableImageError(ValueError):
    """A sample's image could not be decoded.

    Attributes:
        image_id: the sample whose image failed.
        reason: why (names the file or bytes, from `image_utils.ImageReadError`).
    """

    def __init__(self, image_id: str, reason: str):
        super().__init__(
            f"The image of sample {image_id!r} cannot be decoded: {reason} "
            "(leave such images out with `skip_unreadable_images=True`)"
        )
        self.image_id = image_id
        self.reason = reason

    def __reduce__(self):  # picklable, so that other processes can raise it too
        return type(self), (self.image_id, self.reason)


@dataclass
class EvaluationSample:
    """One decoded sample of the evaluated split.

    Attributes:
        image_id: the sample's id.
        image: the 8-bit RGB input image, (W, H) as stored (after its EXIF orientation).
        mask: ground-truth mask, bool of shape (H, W), True where forged.
        reference: the reference report.
        regions: ground-truth region names.
        method: manipulation method (`forgerytalker.data.methods`).
    """

    image_id: str
    image: Image.Image
    mask: np.ndarray
    reference: str
    regions: list[str]
    method: str


def check_split(dataset: Dataset) -> list[str]:
    """Checks the columns and that image ids are unique; returns the image ids in split order.

    Raises:
        ValueError: naming the missing columns, or the repeated ids (results are keyed by image id).
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"The dataset lacks the column(s) {missing}; an evaluated split needs {REQUIRED_COLUMNS}")
    image_ids = [str(image_id) for image_id in dataset["image_id"]]
    repeated = sorted(image_id for image_id, count in Counter(image_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"Image ids repeat in the evaluated split: {repeated[:10]}")
    return image_ids


def iter_samples(
    dataset: Dataset,
    skipped: list[dict] | None = None,
    indices: Sequence[int] | None = None,
    protocol: str = "forgerytalker",
) -> Iterator[EvaluationSample]:
    """Decodes the samples of a converted split one at a time.

    Args:
        dataset: a split with the columns of `forgerytalker.data.features.MMTT_FEATURES`.
        skipped: `None` raises `UnreadableImageError` at the first image that fails to decode; a list instead
            receives `{"image_id", "error"}` for each such image, which is then left out (with a warning).
            A ground-truth mask that fails to decode always raises.
        indices: the rows to decode, in this order (default: all).
        protocol: `"official"` reads ground-truth masks with the release's rule (`image_utils.load_grey_mask`,
            grey value > `OFFICIAL_MASK_GREY_THRESHOLD`; see `conventions.OFFICIAL_PROTOCOL`).
    """
    if protocol == "official":
        read_mask = functools.partial(image_utils.load_grey_mask, threshold=OFFICIAL_MASK_GREY_THRESHOLD)
    else:
        read_mask = image_utils.load_mask
    region_names = dataset.features["regions"].feature.int2str
    raw = dataset.cast_column("image", ImageFeature(decode=False)).cast_column("mask", ImageFeature(decode=False))
    if indices is not None:
        raw = raw.select(indices)
    for row in raw:
        image_id = str(row["image_id"])
        try:
            image = image_utils.to_rgb(image_utils.open_image(_source(row["image"]), what=_name(row["image"])))
        except ValueError as error:  # image_utils.ImageReadError (it names the file), or an unusable picture
            if skipped is None:
                raise UnreadableImageError(image_id, str(error)) from error
            logger.warning("The image of sample %r cannot be decoded (%s); left out of the evaluation", image_id, error)
            skipped.append({"image_id": image_id, "error": str(error)})
            continue
        try:
            mask = read_mask(_source(row["mask"]), what=_name(row["mask"]))
        except image_utils.ImageReadError as error:
            raise ValueError(f"The ground-truth mask of sample {image_id!r} cannot be decoded: {error}") from error
        yield EvaluationSample(
            image_id=image_id,
            image=image,
            mask=mask,
            reference=row["caption"],
            regions=[region_names(index) for index in row["regions"]],
            method=row["method"],
        )


def _source(value: Mapping) -> bytes | str:
    """What `image_utils.open_image` reads from a `datasets.Image(decode=False)` value (`{"bytes", "path"}`)."""
    return value["bytes"] if value["bytes"] is not None else value["path"]


def _name(value: Mapping) -> str:
    return value.get("path") or "embedded image bytes"
