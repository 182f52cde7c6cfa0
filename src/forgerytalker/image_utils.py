"""Reading images and masks: the one place that decides how any picture becomes 8-bit RGB, and a mask a 0/1 map.

Everything that takes a picture (the processor, training, evaluation, conversion, synthesis, `analyze`) goes
through these functions, so a 16-bit PNG, a CMYK JPEG, a transparent PNG or an EXIF-rotated phone photo is
read the same way everywhere:

- **Size limit.** `open_image` reads only the header first and refuses a picture of more than
  `max_image_pixels()` pixels (`FORGERYTALKER_MAX_IMAGE_PIXELS`, default `DEFAULT_MAX_IMAGE_PIXELS`) before
  decoding it (Pillow's own bomb check, at twice `PIL.Image.MAX_IMAGE_PIXELS`, still applies above that), so a small decompression bomb never allocates gigabytes. It then decodes the whole file, so a
  truncated JPEG fails here (Pillow's `verify()` does not notice one).
- **Colour.** `to_rgb` applies the EXIF orientation, scales 16-bit and 32-bit integer pictures to 8 bits by
  the range of their type (65535 → 255), float pictures by [0, 1], composites transparency on
  `DEFAULT_BACKGROUND` (white), and converts grayscale, palette, CMYK, YCbCr, LAB and HSV to RGB.
- **Masks.** `forged_pixels` is the mask rule: a pixel is forged where any colour band is > 0 (alpha is
  ignored); 16-bit and float masks follow the same rule.

The module imports no torch, so command-line tools can use it without paying for it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""Largest picture (width × height) decoded by default: 100 megapixels, e.g. 10000 × 10000."""
MAX_IMAGE_PIXELS_ENV = "FORGERYTALKER_MAX_IMAGE_PIXELS"
DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
"""Transparent pixels are composited on white."""

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError)


class ImageReadError(ValueError):
    """A picture could not be read; the message names the file (or `what` it was)."""


class ImageTooLargeError(ImageReadError):
    """A picture has more pixels than the limit; refused before decoding."""


def max_image_pixels() -> int:
    """The pixel limit in force: `FORGERYTALKER_MAX_IMAGE_PIXELS` if set, else `DEFAULT_MAX_IMAGE_PIXELS`."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV} must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV} must be at least 1, got {value}")
    return value


def describe(source: ImageSource, what: str | None = None) -> str:
    """How error messages name a picture: `what` if given, else its path, else "image bytes"."""
    if what:
        return what
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "image bytes"


def open_image(source: ImageSource, *, max_pixels: int | None = None, what: str | None = None) -> Image.Image:
    """Opens and fully decodes a picture, refusing one over the pixel limit before decoding it.

    Args:
        source: a path, the file's bytes, or a binary file object.
        max_pixels: the limit (width × height); `None` uses `max_image_pixels()`.
        what: how messages name the picture (default: its path).

    Returns:
        The decoded `PIL.Image.Image`, in its stored mode and orientation (see `to_rgb`).

    Raises:
        ImageTooLargeError: the header announces more than `max_pixels` pixels.
        ImageReadError: missing, empty, truncated, corrupt or not a picture.
    """
    name = describe(source, what)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # our own limit is checked below; Pillow's warning between its limit and twice it would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a folder, not a picture") from None
    except Image.DecompressionBombError as error:
        # Pillow's own check (at twice `PIL.Image.MAX_IMAGE_PIXELS`) fired first; it is above our limit too
        raise ImageTooLargeError(f"{name}: {_over_the_limit(limit)} ({error})") from error
    except _PIL_ERRORS as error:
        raise ImageReadError(f"{name}: not a readable picture ({_reason(error)})") from error
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageTooLargeError(f"{name}: {width}×{height} = {width * height:,} pixels {_over_the_limit(limit)}")
    if width == 0 or height == 0:
        image.close()
        raise ImageReadError(f"{name}: the picture is empty ({width}×{height})")
    try:
        image.load()
    except _PIL_ERRORS as error:
        image.close()
        raise ImageReadError(f"{name}: the picture cannot be decoded ({_reason(error)})") from error
    return image


def to_rgb(image, *, background: Sequence[int] = DEFAULT_BACKGROUND, apply_exif_orientation: bool = True) -> Image.Image:
    """Any picture as an 8-bit RGB `PIL.Image.Image` (module docstring for the rules).

    Args:
        image: a `PIL.Image.Image`; a NumPy array `(H, W)`, `(H, W, C)` or `(C, H, W)` with C in 1, 3, 4;
            or a torch tensor of those shapes. uint8 arrays are taken as is, uint16 scaled by 65535, other
            integer types by their largest value when it exceeds 255, float arrays by [0, 1].
        background: RGB colour that transparent pixels are composited on.
        apply_exif_orientation: turn the picture as its EXIF orientation tag says (phone photos).

    Raises:
        ValueError: an empty picture or an array of an unusable shape or type.
    """
    if not isinstance(image, Image.Image):
        image = array_to_image(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"The picture is empty ({image.width}×{image.height})")
    if apply_exif_orientation:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    elif mode == "L" and "transparency" in image.info:
        image = image.convert("LA")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, tuple(int(value) for value in background))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def array_to_image(array) -> Image.Image:
    """A NumPy array or torch tensor as a `PIL.Image.Image` (`L`, `RGB` or `RGBA`), scaled to 8 bits."""
    if hasattr(array, "detach"):  # a torch tensor; no torch import needed
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"A picture array must have shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3 or 4; got {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"The picture is empty (array of shape {array.shape})")
    pixels = _scale_to_uint8(array)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1] if pixels.ndim == 3 else 2]
    return Image.fromarray(pixels, mode=mode)


def load_rgb(source: ImageSource, *, max_pixels: int | None = None, what: str | None = None) -> Image.Image:
    """`to_rgb(open_image(source))`: a file or bytes as an 8-bit RGB picture, with `open_image`'s errors."""
    return to_rgb(open_image(source, max_pixels=max_pixels, what=what))


def forged_pixels(mask) -> np.ndarray:
    """The mask rule: a boolean `(H, W)` map, True where any colour band is > 0 (alpha ignored).

    Args:
        mask: a `PIL.Image.Image` of any mode, or an array `(H, W)`, `(H, W, C)` (C in 1, 3, 4; the 4th is
            alpha) or `(1, H, W)`, of any numeric or bool type; a torch tensor of those shapes.
    """
    if isinstance(mask, Image.Image):
        if mask.mode == "P":
            mask = mask.convert("RGBA")
        bands = mask.getbands()
        array = np.asarray(mask)
        if array.ndim == 3:
            colour = [index for index, band in enumerate(bands) if band not in ("A", "a")]
            return (array[..., colour] > 0).any(axis=-1)
        return array > 0
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] != 1:
        array = array[0]
    if array.ndim == 3:
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"A mask array must have shape (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}")
        array = array[..., :3] if array.shape[-1] == 4 else array
        return (array > 0).any(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"A mask array must have shape (H, W) or (H, W, C); got {array.shape}")
    return array > 0


def load_mask(source: ImageSource, *, max_pixels: int | None = None, what: str | None = None) -> np.ndarray:
    """`forged_pixels(open_image(source))`: a mask file or bytes as a boolean `(H, W)` map."""
    with open_image(source, max_pixels=max_pixels, what=what) as mask:
        return forged_pixels(mask)


def grey_above(mask: Image.Image, threshold: int) -> np.ndarray:
    """A second mask rule, for reproducing the authors' released evaluation only (protocol "official" of
    `forgerytalker.evaluate`): True where the picture's 8-bit grey value (PIL `convert("L")`, ITU-R 601-2 luma of
    the colour bands; alpha ignored) is above `threshold`. Everything else uses `forged_pixels`."""
    return np.asarray(mask.convert("L")) > threshold


def load_grey_mask(
    source: ImageSource, threshold: int, *, max_pixels: int | None = None, what: str | None = None
) -> np.ndarray:
    """`grey_above(open_image(source), threshold)`: a mask file or bytes as a boolean `(H, W)` map."""
    with open_image(source, max_pixels=max_pixels, what=what) as mask:
        return grey_above(mask, threshold)


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values to uint8 by the range of their type: uint16 / 65535, floats in [0, 1], bools to 0/255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("A float picture holds NaN or infinite values")
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype == np.uint16 or array.dtype.itemsize == 2:
            top = 65535.0
        else:
            # 32-bit integer pictures (PIL mode "I") usually hold 16-bit data; use the type a value needs
            largest = int(array.max()) if array.size else 0
            top = 255.0 if largest <= 255 else 65535.0 if largest <= 65535 else float(np.iinfo(array.dtype).max)
        return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    raise ValueError(f"Unsupported picture dtype {array.dtype}")


def _over_the_limit(limit: int) -> str:
    return (
        f"is over the limit of {limit:,} pixels (refused before decoding; raise it with {MAX_IMAGE_PIXELS_ENV} or "
        "the command's --max-image-pixels)"
    )


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        # Pillow's own text names the file object (`<_io.BytesIO object at 0x...>`), which differs between runs
        return "not a picture format Pillow recognises"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a path has the suffix of a picture format Pillow reads (by extension; content is checked later)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".gif", ".jfif"}
)
"""File suffixes that folder scans (synthesis, `analyze`) take as pictures."""


__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS_ENV",
    "ImageReadError",
    "ImageTooLargeError",
    "array_to_image",
    "forged_pixels",
    "is_image_file",
    "load_mask",
    "load_rgb",
    "max_image_pixels",
    "open_image",
    "to_rgb",
]
