"""Reading one photo for analysis: the package's reading rule, the smallest usable size, and what to tell the analyst.

Pictures are read with `forgerytalker.image_utils` (the pixel limit is checked before decoding, the whole file
is decoded so a truncated JPEG fails, 16-bit / CMYK / transparent / EXIF-rotated pictures become 8-bit RGB as
displayed). A photo that cannot be analysed raises `ImageReadError` naming the file; one that can, but was
converted, comes with notes for the record's `warnings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from .face_crops import FacePhoto

from ..image_utils import ImageReadError, describe, open_image, to_rgb
from .inputs import PhotoInput

MIN_IMAGE_SIDE = 32
"""Photos whose shorter side is below this many pixels are refused: no face can be read at that size."""
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
        picture = open_image(source, max_pixels=max_pixels, what=name)
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


__all__ = ["MIN_IMAGE_SIDE", "Photo", "read_photo"]
