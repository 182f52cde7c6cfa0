"""Face detection and FFHQ-style alignment of face photos to 512×512 crops with dlib's 68 landmarks.

A photo is read once, its faces are detected with dlib's HOG detector and located with the 68-point shape
predictor shipped in `face_recognition_models`, and each face is described by a `FaceAlignment`: the 2×3
similarity transform from the photo to the crop and the landmarks in crop coordinates. Alignments are small
(JSON-serialisable) so that they can be cached per photo; `AlignedFace` is the decoded crop.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...image_utils import IMAGE_SUFFIXES, is_image_file, load_rgb

logger = logging.getLogger(__name__)

CROP_SIZE = 512
# Crop side over detector box width, measured on FFHQ-style crops of frontal faces (about 1.7); used only to
# pick the detection scale, the real size check uses the landmarks.
_CROP_TO_BOX = 1.7
# dlib's HOG detector finds faces of about 80 px and larger at its native scale.
_DETECTABLE_BOX = 90.0


def landmark_model_path() -> Path:
    """Path of dlib's 68-point shape predictor inside the `face_recognition_models` package.

    The package's own `pose_predictor_model_location()` imports `pkg_resources`, which recent setuptools no
    longer ships, so the file is located without importing the package.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The 68-point landmark model needs `pip install face-recognition-models`")
    return Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class FaceAlignment:
    """Where one face of a photo lies and how it maps onto the 512×512 crop.

    Args:
        face_id (`str`): `<photo file name>#<face number>`, unique within a folder.
        photo (`str`): file name of the photo, relative to the faces folder.
        matrix (`tuple`): the 2×3 similarity transform photo → crop, row-major (6 floats).
        landmarks (`tuple`): the 68 dlib landmarks in crop pixels, `(x, y)` pairs (136 floats).
        upscale (`float`): crop pixels per photo pixel (> 1 means the face was enlarged).
    """

    face_id: str
    photo: str
    matrix: tuple[float, ...]
    landmarks: tuple[float, ...]
    upscale: float

    def to_dict(self) -> dict:
        return {
            "face_id": self.face_id,
            "photo": self.photo,
            "matrix": list(self.matrix),
            "landmarks": list(self.landmarks),
            "upscale": self.upscale,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FaceAlignment:
        return cls(data["face_id"], data["photo"], tuple(data["matrix"]), tuple(data["landmarks"]), data["upscale"])

    def landmark_array(self) -> np.ndarray:
        """Landmarks as a float32 array of shape (68, 2), `(x, y)` in crop pixels."""
        return np.asarray(self.landmarks, dtype=np.float32).reshape(68, 2)


@dataclass(frozen=True)
class AlignedFace:
    """A face cropped and aligned to `CROP_SIZE`.

    Args:
        face_id (`str`): as in `FaceAlignment`.
        image (`np.ndarray`): uint8 RGB crop of shape (512, 512, 3).
        landmarks (`np.ndarray`): float32 array of shape (68, 2), `(x, y)` in crop pixels.
    """

    face_id: str
    image: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class SkippedFace:
    """A photo, or one face in it, that yields no sample, and why."""

    photo: str
    reason: str

    def to_dict(self) -> dict:
        return {"photo": self.photo, "reason": self.reason}


def list_photos(faces_dir: Path) -> tuple[list[str], list[SkippedFace]]:
    """The picture files under `faces_dir` (searched recursively) and the other files, which are not read.

    Returns:
        (file names relative to `faces_dir`, sorted, of the files with a picture suffix
        (`forgerytalker.image_utils.IMAGE_SUFFIXES`); every other file as a `SkippedFace` with the reason).
    """
    photos, ignored = [], []
    suffixes = " ".join(sorted(IMAGE_SUFFIXES))
    for path in sorted(faces_dir.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(faces_dir).as_posix()
        if is_image_file(path):
            photos.append(name)
        else:
            ignored.append(SkippedFace(name, f"not read: not a picture file (pictures end in {suffixes})"))
    return photos, ignored


def read_photo(source: Path | bytes, max_pixels: int | None = None, what: str | None = None) -> np.ndarray:
    """Reads a photo as uint8 RGB of shape (H, W, 3) by the package's one reading rule (`image_utils.load_rgb`:
    EXIF orientation applied, 16-bit, alpha and CMYK converted); `ImageReadError` (a `ValueError`) names the
    file when it is unreadable, and `ImageTooLargeError` when it has more than `max_pixels` pixels."""
    return np.array(load_rgb(source, max_pixels=max_pixels, what=what))


def ffhq_crop_matrix(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The FFHQ alignment as a 2×3 float64 similarity transform from photo pixels to a `size` crop.

    Args:
        landmarks (`np.ndarray`): the 68 landmarks of shape (68, 2) in photo pixels.
    """
    eye_left, eye_right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (landmarks[48] + landmarks[54]) / 2 - eye_avg
    x_axis = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x_axis = x_axis / np.hypot(*x_axis) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y_axis = np.flipud(x_axis) * [-1, 1]
    center = eye_avg + eye_to_mouth * 0.1
    quad = np.float32([center - x_axis - y_axis, center - x_axis + y_axis, center + x_axis + y_axis])
    target = np.float32([[0, 0], [0, size], [size, size]])
    return cv2.getAffineTransform(quad, target).astype(np.float64)


def crop_face(photo: np.ndarray, alignment: FaceAlignment, size: int = CROP_SIZE) -> AlignedFace:
    """Warps a photo (uint8 RGB (H, W, 3)) into the aligned crop of `alignment`.

    Faces much larger than the crop are first shrunk with area interpolation so that the warp does not alias.
    """
    matrix = np.asarray(alignment.matrix, dtype=np.float64).reshape(2, 3)
    shrink = int(1 / alignment.upscale)
    if shrink >= 2:
        photo = cv2.resize(photo, (photo.shape[1] // shrink, photo.shape[0] // shrink), interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] *= shrink
    image = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return AlignedFace(alignment.face_id, image, alignment.landmark_array())


def uncrop(crop_map: np.ndarray, matrix: np.ndarray, photo_size: tuple[int, int]) -> np.ndarray:
    """Maps a per-pixel map of an aligned crop back onto the photo: the inverse of `crop_face`'s warp.

    Each photo pixel takes the (bilinearly interpolated) value of the crop at the point the photo → crop transform
    sends it to; photo pixels that fall outside the crop get 0.

    Args:
        crop_map (`np.ndarray`): float32 `(S, S)` map in the pixels of the crop.
        matrix (`np.ndarray`): the 2×3 photo → crop transform of that crop (`ffhq_crop_matrix(landmarks, S)`).
        photo_size (`tuple`): `(width, height)` of the photo.

    Returns:
        float32 `(height, width)` map in photo pixels.
    """
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return cv2.warpAffine(
        np.asarray(crop_map, dtype=np.float32),
        matrix,
        tuple(int(side) for side in photo_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def landmark_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """A detector-like box (left, top, right, bottom) around 68 landmarks (float (68, 2)): jaw sides and bottom,
    eyebrow top; used to find the landmarks again on an edited crop without running the detector."""
    left, right = landmarks[0:17, 0].min(), landmarks[0:17, 0].max()
    top, bottom = landmarks[17:27, 1].min(), landmarks[0:17, 1].max()
    return int(round(left)), int(round(top)), int(round(right)), int(round(bottom))


class FaceDetector:
    """dlib's HOG frontal-face detector, run on a copy of the photo scaled by `detection_scale`.

    Args:
        detection_scale (`float`): the photo is resized by this before detection (dlib finds faces of about
            80 px and larger at its native scale).
        min_detection_score (`float`): detector scores below this are taken for false detections.
    """

    def __init__(self, detection_scale: float = 1.0, min_detection_score: float = 0.2):
        import dlib

        self.detection_scale = detection_scale
        self.min_detection_score = min_detection_score
        self.detector = dlib.get_frontal_face_detector()

    def detect(self, photo: np.ndarray, scale: float | None = None) -> list[tuple[tuple[int, int, int, int], float]]:
        """Face boxes (left, top, right, bottom) in photo pixels with their detector scores, best first.

        Args:
            photo: uint8 RGB `(H, W, 3)`.
            scale: overrides `detection_scale` for this photo.
        """
        scale = self.detection_scale if scale is None else scale
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=interpolation)
        boxes, scores, _ = self.detector.run(small, 0, -0.5)
        found = [
            ((int(b.left() / scale), int(b.top() / scale), int(b.right() / scale), int(b.bottom() / scale)), score)
            for b, score in zip(boxes, scores)
        ]
        return sorted(found, key=lambda item: -item[1])

    def count_faces(self, photo: np.ndarray, scale: float | None = None) -> int:
        """Number of detections scoring at least `min_detection_score`."""
        return sum(score >= self.min_detection_score for _, score in self.detect(photo, scale))


class FaceAligner(FaceDetector):
    """Finds the faces of a photo and aligns them to 512×512 crops.

    Args:
        max_upscale (`float`): faces whose crop would enlarge the photo more than this are skipped.
        min_detection_score (`float`): dlib detector scores below this are taken for false detections.
        face_padding (`float`): the photo is reflect-padded by this share of its width and height on every side
            before detection and landmarking (tightly cropped faces); alignments stay in the unpadded photo's
            pixels (`crop_face` reflects at the border the same way).
    """

    def __init__(self, max_upscale: float = 2.0, min_detection_score: float = 0.2, face_padding: float = 0.0):
        import dlib

        self.face_padding = face_padding

        # Detect on a copy scaled so that the smallest face worth cropping is about `_DETECTABLE_BOX` pixels.
        super().__init__(min(2.0, _DETECTABLE_BOX * max_upscale * _CROP_TO_BOX / CROP_SIZE), min_detection_score)
        self.max_upscale = max_upscale
        self.predictor = dlib.shape_predictor(str(landmark_model_path()))

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 68 landmarks (float32 (68, 2)) of the face in `box` = (left, top, right, bottom) of a uint8 RGB image."""
        import dlib

        shape = self.predictor(image, dlib.rectangle(*box))
        return np.float32([(point.x, point.y) for point in shape.parts()])

    def align_photo(
        self, photo: bytes, photo_name: str, max_pixels: int | None = None
    ) -> tuple[list[FaceAlignment], list[SkippedFace]]:
        """Aligns every usable face of one photo (its file's bytes); unusable faces and unreadable or too large
        photos come back as skipped, with the reason."""
        try:
            photo = read_photo(photo, max_pixels, what=photo_name)
        except ValueError as error:
            return [], [SkippedFace(photo_name, str(error))]
        alignments, skipped = [], []
        pad_y, pad_x = (int(round(self.face_padding * side)) for side in photo.shape[:2])
        if pad_x or pad_y:
            photo = cv2.copyMakeBorder(photo, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT)
        for box, score in self.detect(photo):
            if score < self.min_detection_score:
                continue
            points = self.landmarks(photo, box) - np.float32([pad_x, pad_y])
            matrix = ffhq_crop_matrix(points)
            upscale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
            if upscale > self.max_upscale:
                reason = f"face at {box[:2]} too small: the crop needs {upscale:.1f}x upscaling (max {self.max_upscale}x)"
                skipped.append(SkippedFace(photo_name, reason))
                continue
            crop_points = points @ matrix[:, :2].T + matrix[:, 2]
            alignments.append(
                FaceAlignment(
                    face_id=f"{photo_name}#{len(alignments)}",
                    photo=photo_name,
                    matrix=tuple(float(v) for v in matrix.ravel()),
                    landmarks=tuple(float(v) for v in crop_points.ravel()),
                    upscale=upscale,
                )
            )
        if not alignments and not skipped:
            reason = f"no face found (faces needing over {self.max_upscale}x upscaling are not searched for)"
            skipped.append(SkippedFace(photo_name, reason))
        return alignments, skipped
