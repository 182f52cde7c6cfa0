"""The face check of an analysis: how many faces dlib's detector finds in a photo.

The model reads the whole photo and was trained on face crops. A photo with no face, or with several, is still
analysed, but its record says so in `faces` and `warnings` (no photo is refused for its faces). Detection runs
on a copy whose longer side is `DETECTION_SIDE` pixels (at most doubled), so faces narrower than about a sixth of
the photo's longer side may be missed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DETECTION_SIDE = 512
"""Longer side, in pixels, of the copy that the detector searches."""
MAX_DETECTION_UPSCALE = 2.0


class FaceCounter:
    """Counts faces with the detector of `forgerytalker.data.synthesis.faces.FaceDetector` (dlib's HOG detector).

    Args:
        min_detection_score (`float`): detector scores below this are taken for false detections.
    """

    def __init__(self, min_detection_score: float = 0.2):
        from ..data.synthesis.faces import FaceDetector

        self.detector = FaceDetector(min_detection_score=min_detection_score)

    def __call__(self, image: Image.Image) -> int:
        """Number of faces in an RGB picture."""
        scale = min(MAX_DETECTION_UPSCALE, DETECTION_SIDE / max(image.size))
        return self.detector.count_faces(np.asarray(image), scale)


def face_warnings(faces: int | None) -> list[str]:
    """What the record says about a photo with `faces` faces (nothing for exactly one, or when not checked)."""
    if faces is None or faces == 1:
        return []
    if faces == 0:
        return [
            "no face found by dlib's face detector: the model was trained on face photos, so read this analysis "
            "with care (small faces, under about a sixth of the photo's longer side, may be missed)"
        ]
    return [f"{faces} faces found: the analysis covers the whole photo, not one face; crop each face to analyse it alone"]


__all__ = ["DETECTION_SIDE", "FaceCounter", "face_warnings"]
