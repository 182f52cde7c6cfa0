"""Measurements of visible flaws in a forged face, region by region, read from the forged image only.

Four kinds of flaw, each scored so that 1.0 is about where a careful viewer starts to see it:

- `blur`: the region's high-frequency energy (mean |Laplacian|) is low compared with the untouched part of the face.
- `colour`: the CIE-Lab mean just inside the mask edge differs from the mean just outside it (ΔE).
- `seam`: the gradient along the mask edge is stronger than the gradient on either side of it.
- `geometry`: the landmarks found on the forged image are asymmetric (eye sizes, eyebrow heights, mouth tilt,
  nose or chin off the midline).

The mask and region layout are the synthesis' own (where it edited); every pixel value read is of the forged image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .landmark_regions import EYEBROWS, EYES, face_geometry

FLAW_KINDS = ("blur", "colour", "seam", "geometry")
# Texture of a region relative to plain face surface in untouched photos: facial features carry more detail.
FEATURE_REGIONS = frozenset({"eye", "pupil", "eyebrow", "lip", "mouth", "tooth", "nose"})
_EXPECTED_TEXTURE = {True: 1.5, False: 1.0}
_BLUR_VISIBLE_FACTOR = 1.8  # texture this many times below the expected level reads as blurred
_COLOUR_VISIBLE_DELTA_E = 7.0
_SEAM_VISIBLE_RATIO = 1.8
_MIN_BAND_PIXELS = 30


@dataclass
class RegionFlaws:
    """Flaw scores of one region (1.0 ≈ just visible) and what they point at.

    Args:
        scores (`dict[str, float]`): flaw kind (from `FLAW_KINDS`) → score; kinds that could not be measured are absent.
        colour_shift (`str`): for `colour`, the dominant Lab direction: "darker", "brighter", "redder", "greener",
            "yellower" or "bluer".
        geometry (`str`): for `geometry`, which asymmetry: "eye_size", "eyebrow_height", "tilt", "off_centre".
    """

    scores: dict[str, float] = field(default_factory=dict)
    colour_shift: str = ""
    geometry: str = ""

    def strongest(self) -> tuple[str, float]:
        kind = max(self.scores, key=lambda k: (self.scores[k], -FLAW_KINDS.index(k)))
        return kind, self.scores[kind]

    def to_dict(self) -> dict:
        rounded = {kind: round(float(score), 3) for kind, score in self.scores.items()}
        return {"scores": rounded, "colour_shift": self.colour_shift, "geometry": self.geometry}


def edge_distances(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (float32 (H, W)) of each pixel of a bool mask (H, W) to the outside, and of each outside pixel
    to the mask (0 elsewhere): thresholding them gives bands along the mask edge."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    return inside, outside


def _neighbourhood(region: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of a bool mask grown by `margin` pixels, as slices."""
    x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
    return slice(max(y - margin, 0), y + h + margin), slice(max(x - margin, 0), x + w + margin)


def colour_shift(lab: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> tuple[float, str]:
    """ΔE between the mean Lab colour of two bool masks of a float32 Lab image (H, W, 3), and its main direction."""
    delta = lab[inside].mean(0) - lab[outside].mean(0)
    names = (("brighter", "darker"), ("redder", "greener"), ("yellower", "bluer"))
    axis = int(np.argmax(np.abs(delta) * [1.0, 1.5, 1.5]))
    return float(np.linalg.norm(delta)), names[axis][0 if delta[axis] > 0 else 1]


def landmark_asymmetry(landmarks: np.ndarray) -> dict[str, tuple[str, float]]:
    """Per region, its geometric oddity as (kind, score) from 68 landmarks (float32 (68, 2)) of the forged image.

    Scores are relative asymmetries (1.0 ≈ visible): eye-area ratio, eyebrow-height difference over the eye
    distance, mouth tilt against the eye line in degrees, nose-tip and chin offsets from the eye midline.
    """
    eye_distance, _ = face_geometry(landmarks)
    eye_centres = [landmarks[list(eye)].mean(0) for eye in EYES]
    eye_areas = [cv2.contourArea(landmarks[list(eye)].astype(np.float32)) for eye in EYES]
    eye_ratio = max(eye_areas) / max(min(eye_areas), 1.0)
    brow_heights = [np.linalg.norm(landmarks[list(b)].mean(0) - c) for b, c in zip(EYEBROWS, eye_centres)]
    eye_axis = (eye_centres[1] - eye_centres[0]) / eye_distance
    mouth_axis = landmarks[54] - landmarks[48]
    cross = eye_axis[0] * mouth_axis[1] - eye_axis[1] * mouth_axis[0]
    tilt = abs(np.degrees(np.arctan2(cross, np.dot(eye_axis, mouth_axis))))
    midpoint = (eye_centres[0] + eye_centres[1]) / 2

    def offset(index: int) -> float:
        return abs(float(np.dot(landmarks[index] - midpoint, eye_axis))) / eye_distance

    mouth = ("tilt", tilt / 6.0)
    return {
        "eye": ("eye_size", (eye_ratio - 1.0) / 0.5),
        "eyebrow": ("eyebrow_height", abs(brow_heights[0] - brow_heights[1]) / eye_distance / 0.12),
        "mouth": mouth,
        "lip": mouth,
        "nose": ("off_centre", offset(30) / 0.15),
        "chin": ("off_centre", offset(8) / 0.15),
        "jaw": ("off_centre", offset(8) / 0.15),
    }


def measure_regions(
    forged: np.ndarray,
    mask: np.ndarray,
    regions: dict[str, np.ndarray],
    face: np.ndarray,
    forged_landmarks: np.ndarray | None,
) -> dict[str, RegionFlaws]:
    """Flaw scores of each region of a forged face.

    Args:
        forged (`np.ndarray`): uint8 RGB forged image of shape (S, S, 3).
        mask (`np.ndarray`): bool forgery mask of shape (S, S).
        regions (`dict[str, np.ndarray]`): region name → bool mask (S, S); each should overlap `mask`.
        face (`np.ndarray`): bool mask (S, S) of the whole face.
        forged_landmarks (`np.ndarray`, *optional*): float32 (68, 2) landmarks found on `forged`; without them
            no geometry is measured.

    Returns:
        `dict[str, RegionFlaws]` with the same keys as `regions`.
    """
    gray = cv2.cvtColor(forged, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lab = cv2.cvtColor(forged.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    detail = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3))
    gradient = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    width = max(3, forged.shape[0] // 100)
    inside_distance, outside_distance = edge_distances(mask)
    inner_band, outer_band = mask & (inside_distance <= width), ~mask & (outside_distance <= width)
    line = (mask & (inside_distance <= 1.5)) | (~mask & (outside_distance <= 1.5))
    untouched = face & ~mask & (outside_distance > 2 * width)
    if untouched.sum() < 50 * _MIN_BAND_PIXELS:
        around_face = edge_distances(face | mask)[1]
        untouched = (around_face > 0) & (around_face <= 6 * width)
    reference = max(float(detail[untouched].mean()), 1e-3)
    asymmetry = landmark_asymmetry(forged_landmarks) if forged_landmarks is not None else {}

    measured = {}
    for name, region in regions.items():
        flaws = RegionFlaws()
        expected = _EXPECTED_TEXTURE[name in FEATURE_REGIONS]
        edited = region & mask
        texture = float(detail[edited].mean()) / reference if edited.any() else 1.0
        flaws.scores["blur"] = expected / max(texture, 1e-3) / _BLUR_VISIBLE_FACTOR
        box = _neighbourhood(region, 4 * width)
        inside, outside = inner_band[box], outer_band[box]
        if inside.sum() >= _MIN_BAND_PIXELS and outside.sum() >= _MIN_BAND_PIXELS:
            delta_e, flaws.colour_shift = colour_shift(lab[box], inside, outside)
            flaws.scores["colour"] = delta_e / _COLOUR_VISIBLE_DELTA_E
            bands = float(gradient[box][(inside | outside) & ~line[box]].mean())
            flaws.scores["seam"] = float(gradient[box][line[box]].mean()) / max(bands, 1e-3) / _SEAM_VISIBLE_RATIO
        if name in asymmetry:
            flaws.geometry, flaws.scores["geometry"] = asymmetry[name]
        measured[name] = flaws
    return measured
