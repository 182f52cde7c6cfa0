"""Face manipulations that fill a mask, keyed by the method name they record.

A manipulation takes an aligned face, a bool mask and a random generator (and, when it needs one, a donor
face aligned to the same template) and returns the generated image; the pipeline keeps the generated pixels
inside the mask only. Learned inpainters (MAT, SDXL, ...) plug in the same way:

```python
class MyDiffusionInpainter:
    method = DIFFUSION_INPAINTING
    needs_donor = False

    def __call__(self, face, mask, rng, donor=None):
        return my_pipeline(face.image, mask, seed=int(rng.integers(2**31)))

register_manipulation(MyDiffusionInpainter())
```
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from ..methods import CLASSICAL_INPAINTING, FACE_SWAP, REGION_TRANSPLANT, SELF_BLEND
from .faces import AlignedFace
from .landmark_regions import face_geometry, face_outline


class Manipulation(Protocol):
    """What the pipeline calls: `method` is recorded with the sample, `needs_donor` asks for a second face."""

    method: str
    needs_donor: bool

    def __call__(
        self, face: AlignedFace, mask: np.ndarray, rng: np.random.Generator, donor: AlignedFace | None = None
    ) -> np.ndarray:
        """Returns the generated uint8 RGB image (S, S, 3) for `face.image` (S, S, 3) and a bool `mask` (S, S)."""


def clone_center(mask: np.ndarray) -> tuple[int, int]:
    """The `center` for `cv2.seamlessClone` that keeps a source aligned with the destination under a uint8 mask."""
    x, y, w, h = cv2.boundingRect(mask)
    return x + (w - 1) // 2, y + (h - 1) // 2


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, scale: float = 0.5) -> np.ndarray:
    """Poisson-blends uint8 RGB `source` into `target` (both (S, S, 3)) under a bool mask (S, S).

    Poisson blending adds a smooth membrane to the source so that it meets the target at the mask edge; the
    membrane is solved by `cv2.seamlessClone` at `scale` resolution (4× faster at half size) and added to the
    full-resolution source. The clone mask keeps a margin from the border (OpenCV needs one) and is passed
    as a copy, because `cv2.seamlessClone` writes into its mask argument.
    """
    size = source.shape[1], source.shape[0]
    small_size = int(size[0] * scale), int(size[1] * scale)
    small_source = cv2.resize(source, small_size, interpolation=cv2.INTER_AREA)
    small_target = cv2.resize(target, small_size, interpolation=cv2.INTER_AREA)
    clone_mask = np.zeros(small_size[::-1], np.uint8)
    small_mask = cv2.resize(mask.astype(np.uint8), small_size, interpolation=cv2.INTER_NEAREST)
    clone_mask[2:-2, 2:-2] = small_mask[2:-2, 2:-2] * 255
    if not clone_mask.any():
        return target.copy()
    cloned = cv2.seamlessClone(small_source, small_target, clone_mask.copy(), clone_center(clone_mask), cv2.NORMAL_CLONE)
    membrane = cloned.astype(np.float32) - small_source.astype(np.float32)
    membrane = cv2.resize(membrane, size, interpolation=cv2.INTER_LINEAR)
    return np.clip(source.astype(np.float32) + membrane, 0, 255).round().astype(np.uint8)


class ClassicalInpainting:
    """OpenCV inpainting (Telea or Navier–Stokes, chosen at random) at a reduced resolution, upsampled.

    Inpainting cost grows with the masked area, so the working resolution is at most half the crop and small
    enough that at most `max_working_pixels` pixels are filled; the fill is smooth at any resolution.

    Args:
        max_working_pixels (`int`): masked pixels to fill at the working resolution, at most.
        radius (`int`): the inpainting neighbourhood in working pixels.
    """

    method = CLASSICAL_INPAINTING
    needs_donor = False

    def __init__(self, max_working_pixels: int = 6000, radius: int = 3):
        self.max_working_pixels = max_working_pixels
        self.radius = radius

    def __call__(self, face, mask, rng, donor=None):
        size = face.image.shape[1], face.image.shape[0]
        algorithm = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
        scale = min(0.5, float(np.sqrt(self.max_working_pixels / max(int(mask.sum()), 1))))
        small = cv2.resize(face.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask.astype(np.uint8) * 255, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
        filled = cv2.inpaint(small, (small_mask > 0).astype(np.uint8), self.radius, algorithm)
        return cv2.resize(filled, size, interpolation=cv2.INTER_CUBIC)


class RegionTransplant:
    """Pastes the masked regions of another face, aligned on the landmarks near the mask, with Poisson blending."""

    method = REGION_TRANSPLANT
    needs_donor = True

    def __call__(self, face, mask, rng, donor=None):
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        box = np.array([x, y, x + w - 1, y + h - 1], np.float32)
        margin = 0.25 * face_geometry(face.landmarks)[0]
        near = np.all((face.landmarks >= box[:2] - margin) & (face.landmarks <= box[2:] + margin), axis=1)
        indices = np.flatnonzero(near) if near.sum() >= 3 else np.arange(len(face.landmarks))
        matrix, _ = cv2.estimateAffinePartial2D(donor.landmarks[indices], face.landmarks[indices], method=cv2.LMEDS)
        if matrix is None:
            matrix = np.float64([[1, 0, 0], [0, 1, 0]])
        size = face.image.shape[1], face.image.shape[0]
        warped = cv2.warpAffine(donor.image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return poisson_blend(warped, face.image, mask)


def mesh_triangles(points: np.ndarray, size: int) -> np.ndarray:
    """Delaunay triangles (int array (T, 3) of point indices) of float32 points (N, 2) inside a size×size image."""
    subdivision = cv2.Subdiv2D((0, 0, size, size))
    inside = np.clip(points, 0, size - 1)
    for x, y in inside:
        subdivision.insert((float(x), float(y)))
    triangles = []
    for triangle in subdivision.getTriangleList().reshape(-1, 3, 2):
        if np.any(triangle < 0) or np.any(triangle >= size):
            continue
        distances = np.linalg.norm(inside[None, :, :] - triangle[:, None, :], axis=2)
        triangles.append(distances.argmin(1))
    return np.array(triangles, np.int64).reshape(-1, 3)


def warp_mesh(source: np.ndarray, source_points: np.ndarray, target_points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp of uint8 `source` (S, S, 3) moving `source_points` onto `target_points` ((N, 2) each)."""
    size = source.shape[0]
    warped = np.zeros_like(source)
    for triangle in triangles:
        target = target_points[triangle].astype(np.float32)
        x, y, w, h = cv2.boundingRect(np.round(target).astype(np.int32))
        x, y = max(x, 0), max(y, 0)
        w, h = min(w, size - x), min(h, size - y)
        if w <= 0 or h <= 0:
            continue
        matrix = cv2.getAffineTransform(source_points[triangle].astype(np.float32), target - np.float32([x, y]))
        patch = cv2.warpAffine(source, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        inside = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(inside, np.round(target - [x, y]).astype(np.int32), 1)
        region = warped[y : y + h, x : x + w]
        region[inside > 0] = patch[inside > 0]
    return warped


def match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shifts uint8 RGB `source` so its Lab mean and spread under a bool mask match `target`'s (all (S, S, ...)).

    Only the mask's bounding box of the result is recoloured; the rest is `source` unchanged.
    """
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    box = slice(y, y + h), slice(x, x + w)
    inside = mask[box]
    source_lab = cv2.cvtColor(source[box], cv2.COLOR_RGB2LAB).astype(np.float32)
    target_lab = cv2.cvtColor(target[box], cv2.COLOR_RGB2LAB).astype(np.float32)
    source_mean, source_std = source_lab[inside].mean(0), source_lab[inside].std(0) + 1e-3
    target_mean, target_std = target_lab[inside].mean(0), target_lab[inside].std(0)
    shifted = (source_lab - source_mean) * (target_std / source_std) + target_mean
    recoloured = source.copy()
    recoloured[box] = cv2.cvtColor(np.clip(shifted, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return recoloured


class FaceSwap:
    """Whole-face swap: the donor face is mesh-warped onto the target's landmarks and blended in.

    A stand-in for E4S: the donor's 68 landmarks and forehead line are triangulated and each triangle is warped
    to the target's geometry; the result is blended by Poisson cloning or by colour transfer and a feathered
    alpha (chosen at random), inside the mask only.
    """

    method = FACE_SWAP
    needs_donor = True

    def __call__(self, face, mask, rng, donor=None):
        size = face.image.shape[0]
        target_points = np.concatenate([face.landmarks, face_outline(face.landmarks)[17:]])
        source_points = np.concatenate([donor.landmarks, face_outline(donor.landmarks)[17:]])
        warped = warp_mesh(donor.image, source_points, target_points, mesh_triangles(target_points, size))
        covered = warped.any(axis=2) & mask
        if rng.random() < 0.5:
            return poisson_blend(warped, face.image, covered)
        recoloured = match_colour(warped, face.image, covered)
        eye_distance = face_geometry(face.landmarks)[0]
        feather = max(3, int(0.15 * eye_distance)) | 1
        alpha = cv2.GaussianBlur(cv2.erode(covered.astype(np.float32), np.ones((feather, feather))), (feather, feather), 0)
        blended = recoloured * alpha[..., None] + face.image * (1 - alpha[..., None])
        return np.round(blended).astype(np.uint8)


class SelfBlend:
    """A self-blended image (after Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR
    2022): the face blended with a slightly altered copy of itself, so that the only traces are the generic ones
    of blending (a colour or sharpness step, a doubled edge where the copy is shifted, a soft seam), not the
    signature of one generator.

    The copy gets a colour change (a brightness step of at least `min_brightness_step` levels, plus random
    per-channel gains, saturation and contrast), then either a blur or an unsharp mask, then a small scale and
    shift about the mask's centre. It is alpha-blended into the face through the mask eroded and blurred by a
    random width (the blur band) at a random blend ratio, so the alpha is zero outside the mask and every pixel
    it changes lies inside it.

    Args:
        max_shift (`float`): largest shift of the copy, as a share of the eye distance, in each direction.
        max_scale_change (`float`): the copy is scaled by 1 ± up to this.
        blend_ratios (`tuple[float, ...]`): the blend ratio is drawn from these (repeats weight a value).
        max_band (`float`): widest blur band (erosion, then a Gaussian of the same width), as a share of the
            eye distance.
        min_brightness_step (`float`): smallest brightness change of the copy, in 0-255 levels.
    """

    method = SELF_BLEND
    needs_donor = False

    def __init__(self, max_shift: float = 0.06, max_scale_change: float = 0.05,
                 blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0), max_band: float = 0.2,
                 min_brightness_step: float = 8.0):
        self.max_shift = max_shift
        self.max_scale_change = max_scale_change
        self.blend_ratios = tuple(blend_ratios)
        self.max_band = max_band
        self.min_brightness_step = min_brightness_step

    def altered_copy(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The face's colour- and sharpness-changed copy: float32 RGB (S, S, 3) in [0, 255], not yet moved."""
        copy = image.astype(np.float32)
        step = rng.uniform(self.min_brightness_step, 2.5 * self.min_brightness_step) * rng.choice([-1.0, 1.0])
        gains = rng.uniform(0.92, 1.08, size=3).astype(np.float32)
        contrast = rng.uniform(0.85, 1.15)
        mean = copy.mean(axis=(0, 1), keepdims=True)
        copy = (copy - mean) * contrast + mean
        grey = copy.mean(axis=2, keepdims=True)
        copy = grey + (copy - grey) * rng.uniform(0.8, 1.25)  # saturation
        copy = copy * gains + step
        sigma = rng.uniform(0.8, 2.0)
        blurred = cv2.GaussianBlur(copy, (0, 0), sigma)
        copy = blurred if rng.random() < 0.5 else copy + rng.uniform(0.5, 1.5) * (copy - blurred)  # blur or sharpen
        return np.clip(copy, 0, 255)

    def blend_alpha(self, mask: np.ndarray, eye_distance: float, rng: np.random.Generator) -> np.ndarray:
        """float32 (S, S) in [0, 1]: the mask eroded and blurred over a random band (at most half the mask's
        inscribed radius, so a small region keeps a core), times the blend ratio; zero outside `mask`."""
        inscribed = float(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3).max())
        band = int(round(min(rng.uniform(0.25, 1.0) * self.max_band * eye_distance, 0.5 * inscribed)))
        if band < 1:  # a mask too thin for a band: blend it whole, unblurred
            inner = mask.astype(np.float32)
        else:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
            inner = cv2.GaussianBlur(cv2.erode(mask.astype(np.uint8), kernel).astype(np.float32), (2 * band + 1, 2 * band + 1), 0)
        ratio = self.blend_ratios[int(rng.integers(len(self.blend_ratios)))]
        return inner * mask * np.float32(ratio)

    def __call__(self, face, mask, rng, donor=None):
        eye_distance = face_geometry(face.landmarks)[0]
        copy = self.altered_copy(face.image, rng)
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        centre = (x + w / 2.0, y + h / 2.0)
        matrix = cv2.getRotationMatrix2D(centre, 0.0, 1.0 + rng.uniform(-self.max_scale_change, self.max_scale_change))
        matrix[:, 2] += rng.uniform(-self.max_shift, self.max_shift, size=2) * eye_distance
        size = face.image.shape[1], face.image.shape[0]
        moved = cv2.warpAffine(copy, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        alpha = self.blend_alpha(mask, eye_distance, rng)[..., None]
        blended = moved * alpha + face.image.astype(np.float32) * (1 - alpha)
        return np.clip(np.round(blended), 0, 255).astype(np.uint8)


MANIPULATIONS: dict[str, Manipulation] = {}


def register_manipulation(manipulation: Manipulation) -> None:
    """Makes a manipulation available to the pipeline under its `method` (replacing one of the same method)."""
    MANIPULATIONS[manipulation.method] = manipulation


for _manipulation in (ClassicalInpainting(), RegionTransplant(), FaceSwap(), SelfBlend()):
    register_manipulation(_manipulation)
