"""Polygon masks of facial regions from dlib's 68 landmarks, named with the MMTT region vocabulary.

The 68-point scheme: jaw 0–16, eyebrows 17–21 and 22–26, nose bridge 27–30, nostrils 31–35, eyes 36–41 and
42–47, outer lip 48–59, inner lip 60–67. Landmarks give twelve of the 21 MMTT regions: eye, pupil, eyebrow,
nose, lip, mouth, tooth (only when the mouth is open and shows something bright), cheek, forehead, chin, jaw
and skin. Sizes scale with the distance between the eye centres, so the masks fit any crop size.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...regions import REGION_NAMES

_FROM_LANDMARKS = {"eye", "pupil", "lip", "mouth", "nose", "cheek", "forehead", "chin", "jaw", "eyebrow", "tooth", "skin"}
LANDMARK_REGIONS: tuple[str, ...] = tuple(name for name in REGION_NAMES if name in _FROM_LANDMARKS)
EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
EYEBROWS = (tuple(range(17, 22)), tuple(range(22, 27)))
OUTER_LIP = tuple(range(48, 60))
INNER_LIP = tuple(range(60, 68))
# Cheek polygons (jaw side, mouth corner, nostril, lower eyelid) for the image-left and image-right cheek.
CHEEKS = ((1, 2, 3, 4, 48, 31, 40, 41, 36), (15, 14, 13, 12, 54, 35, 47, 46, 45))
CHIN = (6, 7, 8, 9, 10, 55, 56, 57, 58, 59)
MIN_REGION_PIXELS = 40


def _fill(polygons: list[np.ndarray], size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(p).astype(np.int32) for p in polygons], 1)
    return canvas.astype(bool)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    radius = max(1, int(round(radius)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _shrink(points: np.ndarray, factor: float) -> np.ndarray:
    center = points.mean(0)
    return center + (points - center) * factor


def face_geometry(landmarks: np.ndarray) -> tuple[float, np.ndarray]:
    """The eye-centre distance in pixels and the unit vector pointing up the face (chin → nose bridge)."""
    eye_distance = float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))
    up = landmarks[27] - landmarks[8]
    return eye_distance, up / np.linalg.norm(up)


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """The face outline (jaw line and a forehead line above the eyebrows), float32 of shape (27, 2)."""
    eye_distance, up = face_geometry(landmarks)
    forehead_top = landmarks[26:16:-1] + up * 0.75 * eye_distance
    return np.concatenate([landmarks[0:17], forehead_top]).astype(np.float32)


def face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Bool mask (size, size) of the whole face: the convex hull of `face_outline`."""
    hull = cv2.convexHull(face_outline(landmarks))
    return _fill([hull[:, 0]], size)


def _teeth_visible(landmarks: np.ndarray, image: np.ndarray, inner_mouth: np.ndarray, face: np.ndarray) -> bool:
    """Whether the mouth is open and its inside is about as bright as the face (teeth, not a dark gap)."""
    opening = np.mean([np.linalg.norm(landmarks[a] - landmarks[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    width = np.linalg.norm(landmarks[54] - landmarks[48])
    if opening < 0.08 * width or inner_mouth.sum() < MIN_REGION_PIXELS:
        return False
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(gray[inner_mouth].mean()) >= 0.75 * float(gray[face].mean())


def region_masks(landmarks: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the regions the landmarks can give, each inside the face.

    Args:
        landmarks (`np.ndarray`): float32 of shape (68, 2), `(x, y)` pixels of `image`.
        image (`np.ndarray`): uint8 RGB of shape (S, S, 3); only read to tell whether teeth show.

    Returns:
        `dict[str, np.ndarray]`: region name (from `LANDMARK_REGIONS`) → bool mask of shape (S, S), for the
        regions with at least `MIN_REGION_PIXELS` pixels, in `LANDMARK_REGIONS` order.
    """
    size = image.shape[0]
    eye_distance, up = face_geometry(landmarks)
    face = face_mask(landmarks, size)
    eyes = _fill([landmarks[list(eye)] for eye in EYES], size)
    mouth_area = _fill([landmarks[list(OUTER_LIP)]], size)
    inner_mouth = _fill([landmarks[list(INNER_LIP)]], size)
    eyebrow_canvas = np.zeros((size, size), np.uint8)
    thickness = max(2, int(round(0.2 * eye_distance)))
    cv2.polylines(eyebrow_canvas, [np.round(landmarks[list(b)]).astype(np.int32) for b in EYEBROWS], False, 1, thickness)

    pupil_canvas = np.zeros((size, size), np.uint8)
    for eye in EYES:
        points = landmarks[list(eye)]
        opening = (np.linalg.norm(points[1] - points[5]) + np.linalg.norm(points[2] - points[4])) / 2
        radius = min(0.55 * opening, 0.2 * np.linalg.norm(points[3] - points[0]))
        center = np.round(points.mean(0)).astype(int)
        cv2.circle(pupil_canvas, (int(center[0]), int(center[1])), max(1, int(round(radius))), 1, -1)

    nostrils = landmarks[31:36]
    wings = np.stack([nostrils[0] + (nostrils[0] - nostrils[2]) * 0.35, nostrils[4] + (nostrils[4] - nostrils[2]) * 0.35])
    nose = _fill([cv2.convexHull(np.concatenate([landmarks[27:36], wings]).astype(np.float32))[:, 0]], size)
    brow_line = landmarks[17:27]
    forehead = _fill([np.concatenate([brow_line + up * 0.15 * eye_distance, brow_line[::-1] + up * 0.7 * eye_distance])], size)
    jaw_canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(jaw_canvas, [np.round(landmarks[2:15]).astype(np.int32)], False, 1, max(2, int(round(0.35 * eye_distance))))
    mouth = _dilate(mouth_area, 0.08 * eye_distance)

    masks = {
        "eye": _dilate(eyes, 0.06 * eye_distance),
        "pupil": pupil_canvas.astype(bool) & eyes,
        "lip": mouth_area & ~inner_mouth,
        "mouth": mouth,
        "nose": nose,
        "cheek": _fill([_shrink(landmarks[list(c)], 0.8) for c in CHEEKS], size),
        "forehead": forehead,
        "chin": _fill([landmarks[list(CHIN)]], size) & ~mouth,
        "jaw": jaw_canvas.astype(bool),
        "eyebrow": eyebrow_canvas.astype(bool),
        "tooth": inner_mouth if _teeth_visible(landmarks, image, inner_mouth, face) else np.zeros_like(face),
        "skin": face & ~_dilate(eyes | eyebrow_canvas.astype(bool) | mouth_area, 0.08 * eye_distance),
    }
    masks = {name: mask & face for name, mask in masks.items()}
    return {name: masks[name] for name in LANDMARK_REGIONS if masks[name].sum() >= MIN_REGION_PIXELS}
