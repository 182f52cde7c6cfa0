"""Reading one photo for analysis: the package's reading rule, the smallest usable size, and what to tell the analyst.

Pictures are read with `forgerytalker.image_utils` (the pixel limit is checked before decoding, the whole file
is decoded so a truncated JPEG fails, 16-bit / CMYK / transparent / EXIF-rotated pictures become 8-bit RGB as
displayed). A photo that cannot be analysed raises `ImageReadError` naming the file; one that can, but was
converted, comes with notes for the record's `warnings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from PIL import Image

from .face_crops import FacePhoto

from ..image_utils import (
    MAX_IMAGE_PIXELS_ENV,
    ImageReadError,
    ImageTooLargeError,
    describe,
    max_image_pixels,
    open_image,
    to_rgb,
)
from .inputs import PhotoInput

MIN_IMAGE_SIDE = 32
"""Photos whose shorter side is below this many pixels are refused: no face can be read at that size."""
ANALYSIS_BYTES_PER_PIXEL = 22
"""Memory one analysis takes per pixel of the photo, whatever its file format: measured with the bundled model on a
24-megapixel photo (504 MiB: the decoded RGB picture, each face's mask mapped back as float32, their union, the
binary mask). A 12 KB black-and-white PNG of 10,000 × 10,000 pixels would take 2 GiB."""
DEFAULT_MAX_ANALYSIS_BYTES = 1 << 30
"""The memory one photo's analysis may take unless a pixel limit is named (`max_pixels`, `--max-image-pixels`,
`FORGERYTALKER_MAX_IMAGE_PIXELS`): 1 GiB, so about 48 megapixels. Checked from the header, before decoding."""
_EXIF_ORIENTATION = 0x0112
_MODE_NOTES = {
    "L": "grayscale picture: analysed as RGB",
    "LA": "grayscale picture with transparency: composited on white",
    "1": "black-and-white picture: analysed as RGB",
    "P": "palette picture: analysed as RGB",
    "PA": "palette picture with transparency: composited on white",
    "RGBA": "transparent picture: composited on white",
    "CMYK": "CMYK picture: converted to RGB",
    "YCbCr": "YCbCr picture: converted to RGB",
    "LAB": "LAB picture: converted to RGB",
    "HSV": "HSV picture: converted to RGB",
    "I;16": "16-bit picture: scaled to 8 bits",
    "I;16L": "16-bit picture: scaled to 8 bits",
    "I;16B": "16-bit picture: scaled to 8 bits",
    "I;16N": "16-bit picture: scaled to 8 bits",
    "I": "32-bit integer picture: scaled to 8 bits",
    "F": "floating-point picture: scaled to 8 bits from [0, 1]",
}


@dataclass
class Photo:
    """A photo ready for the model.

    Attributes:
        image: 8-bit RGB, as displayed (EXIF orientation applied).
        name: how messages and records name it (its path, or "image" for a picture given in memory).
        notes: conversions the analyst should know about.
        found: its faces, found and aligned (`face_crops.FaceFinder`), or `None` before that.
        item: the photo of an `analyze` run it was read for (its output names), if any.
    """

    image: Image.Image
    name: str
    notes: list[str] = field(default_factory=list)
    found: FacePhoto | None = None
    item: PhotoInput | None = None


def read_photo(source, *, max_pixels: int | None = None, name: str | None = None) -> Photo:
    """A file (path or bytes) or a PIL picture as a `Photo`.

    Raises:
        ImageReadError: unreadable, empty, truncated, not a picture, over `max_pixels` (refused before decoding,
            `ImageTooLargeError`) or smaller than `MIN_IMAGE_SIDE`; the message names the file.
    """
    if isinstance(source, Image.Image):
        name = name or "image"
        picture = source
    else:
        name = name or describe(source)
        limit = analysis_pixel_limit() if max_pixels is None else max_pixels
        try:
            picture = open_image(source, max_pixels=limit, what=name)
        except ImageTooLargeError as error:
            if max_pixels is not None or os.environ.get(MAX_IMAGE_PIXELS_ENV):
                raise
            raise ImageTooLargeError(
                f"{error}; analysing {limit:,} pixels takes about {limit * ANALYSIS_BYTES_PER_PIXEL / 2**30:.1f} GiB "
                f"of memory ({ANALYSIS_BYTES_PER_PIXEL} bytes a pixel, whatever the file's size)"
            ) from None
    notes = []
    if picture.mode in _MODE_NOTES:
        notes.append(_MODE_NOTES[picture.mode])
    orientation = picture.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        notes.append(f"EXIF orientation {orientation}: turned upright before analysis")
    image = to_rgb(picture)
    if min(image.size) < MIN_IMAGE_SIDE:
        raise ImageReadError(
            f"{name}: {image.width}×{image.height} pixels is too small to analyse (the shorter side must be at "
            f"least {MIN_IMAGE_SIDE} pixels)"
        )
    return Photo(image=image, name=name, notes=notes)


def analysis_pixel_limit() -> int:
    """The pixel limit of a photo to analyse: `FORGERYTALKER_MAX_IMAGE_PIXELS` if set, else what
    `DEFAULT_MAX_ANALYSIS_BYTES` of memory allows (never above `image_utils.max_image_pixels()`)."""
    if os.environ.get(MAX_IMAGE_PIXELS_ENV):
        return max_image_pixels()
    return min(max_image_pixels(), DEFAULT_MAX_ANALYSIS_BYTES // ANALYSIS_BYTES_PER_PIXEL)


__all__ = [
    "ANALYSIS_BYTES_PER_PIXEL",
    "DEFAULT_MAX_ANALYSIS_BYTES",
    "MIN_IMAGE_SIDE",
    "Photo",
    "analysis_pixel_limit",
    "read_photo",
]
