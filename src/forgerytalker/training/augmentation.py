"""Training-time augmentation of a face image and its forgery mask together.

Geometric changes (a random crop of 80–100% of the side, a horizontal flip) move the image and the mask alike;
photometric ones (colour jitter, a downscale and upscale, JPEG re-encoding) touch the image only, because a
forgery stays where it is when a photo is recompressed or resized. None of the 21 region names is left- or
right-sided, so a flip keeps every label true; a report that says "left" or "right" would not be, so such an
image is never flipped (`flip_allowed`).

Randomness comes from torch's global generator, which `accelerate` saves with every checkpoint, so a resumed
run draws the same augmentations.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class AugmentationSettings:
    """How strong each augmentation is, and how often it is applied.

    Args:
        min_crop: the smallest crop side, as a fraction of the image side.
        flip_probability: chance of a horizontal flip.
        jitter: brightness, contrast and saturation are each scaled by a factor in `[1 - jitter, 1 + jitter]`.
        resize_probability, min_resize: chance of shrinking the image to a factor in `[min_resize, 1]` of its
            side and enlarging it back (a resized photo's blur).
        jpeg_probability, jpeg_quality: chance of a JPEG round trip, at a quality in `jpeg_quality`.
        working_size: the longest side images are brought to first (the model's input size is enough; it keeps
            the photometric steps cheap); `None` keeps the original size.
    """

    min_crop: float = 0.8
    flip_probability: float = 0.5
    jitter: float = 0.2
    resize_probability: float = 0.3
    min_resize: float = 0.5
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)
    working_size: int | None = None


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _chance(probability: float) -> bool:
    return float(torch.rand(())) < probability


_SIDED = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def flip_allowed(report: str | None) -> bool:
    """Whether a mirrored image still fits `report`: not when the report names a side."""
    return not (report and _SIDED.search(report))


def augment_pair(
    image: Image.Image,
    mask: np.ndarray | None,
    settings: AugmentationSettings = AugmentationSettings(),
    allow_flip: bool = True,
) -> tuple[Image.Image, np.ndarray | None]:
    """One random augmentation of an RGB `image` and its boolean `mask` of shape `(height, width)` (or `None`);
    no flip unless `allow_flip`.

    Returns the new image and mask; the mask keeps the image's size and stays boolean (nearest neighbour).
    """
    if mask is not None and mask.shape != (image.height, image.width):
        raise ValueError(f"the mask is {mask.shape[1]}×{mask.shape[0]} but its image is {image.width}×{image.height}")
    mask_image = None if mask is None else Image.fromarray(mask.astype(np.uint8) * 255)

    side = _uniform(settings.min_crop, 1.0)
    width, height = round(image.width * side), round(image.height * side)
    left = int(_uniform(0, image.width - width + 1))
    top = int(_uniform(0, image.height - height + 1))
    box = (left, top, left + width, top + height)
    image = image.crop(box)
    mask_image = None if mask_image is None else mask_image.crop(box)
    if settings.working_size is not None and max(image.size) > settings.working_size:
        scale = settings.working_size / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        mask_image = None if mask_image is None else mask_image.resize(size, Image.NEAREST)
    if _chance(settings.flip_probability) and allow_flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        mask_image = None if mask_image is None else mask_image.transpose(Image.FLIP_LEFT_RIGHT)

    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(_uniform(1 - settings.jitter, 1 + settings.jitter))
    if _chance(settings.resize_probability):
        factor = _uniform(settings.min_resize, 1.0)
        small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(small, Image.BILINEAR).resize(image.size, Image.BILINEAR)
    if _chance(settings.jpeg_probability):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(_uniform(*settings.jpeg_quality)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image, None if mask_image is None else np.asarray(mask_image) > 0


__all__ = ["AugmentationSettings", "augment_pair", "flip_allowed"]
