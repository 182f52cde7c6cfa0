"""Input degradations for robustness runs: `jpeg:QUALITY`, `resize:FACTOR` and `blur:SIGMA`.

Every degradation is deterministic and keeps the image's size, so ground-truth masks still align:

- `jpeg:75`: re-encodes as JPEG at quality 75 (1-100) in memory; the result is RGB (L for grayscale input).
- `resize:0.5`: down-scales by the factor (0 < factor < 1, bicubic with antialiasing), then back up to the
  original size (bicubic).
- `blur:1.0`: Gaussian blur with standard deviation sigma > 0 pixels (OpenCV, kernel size from sigma,
  reflected borders).

Specs compose in the order given: `apply_degradations(image, parse_degradations(["resize:0.5", "jpeg:75"]))`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

SPEC_HELP = "expected jpeg:<quality, integer 1-100>, resize:<factor, 0 < f < 1> or blur:<sigma, > 0>"


@dataclass(frozen=True)
class Degradation:
    """One degradation; build it with `parse_degradation`.

    Attributes:
        kind: "jpeg", "resize" or "blur".
        value: JPEG quality (int), resize factor or blur sigma (float).
    """

    kind: str
    value: int | float

    @property
    def spec(self) -> str:
        """The canonical spec string, e.g. "jpeg:75" or "blur:1.0" (used as the name of a robustness run)."""
        return f"{self.kind}:{self.value!r}"

    def __call__(self, image: Image.Image) -> Image.Image:
        """Returns the degraded copy of a PIL image (same size; modes other than L, RGB and RGBA become RGB)."""
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return _APPLY[self.kind](image, self.value)


def parse_degradation(spec: str) -> Degradation:
    """Parses "jpeg:75", "resize:0.5" or "blur:1.0"; raises `ValueError` naming the spec when it is invalid."""
    kind, separator, text = spec.strip().lower().partition(":")
    if not separator or kind not in _APPLY:
        raise ValueError(f"Invalid degradation {spec!r}: {SPEC_HELP}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"Invalid degradation {spec!r}: {text!r} is not a number; {SPEC_HELP}") from None
    valid = {
        "jpeg": value.is_integer() and 1 <= value <= 100,
        "resize": 0 < value < 1,
        "blur": math.isfinite(value) and value > 0,
    }[kind]
    if not valid:
        raise ValueError(f"Invalid degradation {spec!r}: value {text!r} out of range; {SPEC_HELP}")
    return Degradation(kind, int(value) if kind == "jpeg" else value)


def parse_degradations(specs: Iterable[str]) -> list[Degradation]:
    """Parses each spec (see `parse_degradation`)."""
    return [parse_degradation(spec) for spec in specs]


def apply_degradations(image: Image.Image, degradations: Sequence[Degradation]) -> Image.Image:
    """Applies the degradations one after the other; the result has the input's size."""
    for degradation in degradations:
        image = degradation(image)
    return image


def _jpeg(image: Image.Image, quality: float) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("L" if image.mode == "L" else "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.copy()


def _resize(image: Image.Image, factor: float) -> Image.Image:
    small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(small, Image.Resampling.BICUBIC).resize(image.size, Image.Resampling.BICUBIC)


def _blur(image: Image.Image, sigma: float) -> Image.Image:
    pixels = np.asarray(image)
    return Image.fromarray(
        cv2.GaussianBlur(pixels, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    )


_APPLY = {"jpeg": _jpeg, "resize": _resize, "blur": _blur}
