"""Per-face analysis: find the faces of a photo, align each as the training data is aligned, map the answers back.

Every ForgeryTalker model is trained on aligned face crops, so a photo is analysed one face at a time:

1. dlib's HOG detector searches a copy whose longer side is `DETECTION_SIDE` pixels (at most doubled), so a
   24-megapixel photo is searched quickly; faces narrower than about `80 / scale` photo pixels are not found.
2. Each face's 68 landmarks are located on the full-resolution photo and the face is warped to the synthesizer's
   aligned crop (`forgerytalker.data.synthesis.faces`: `ffhq_crop_matrix`, `crop_face`; the one owner of that
   transform), taken from the full-resolution photo, so small faces keep all their detail.
3. The model reads all crops of a batch at once; each crop's mask probabilities go back onto the photo by the
   inverse warp (`faces.uncrop`). The photo's mask is the union of the faces' masks, 0 outside every face; its
   region probabilities are the highest over the faces, so its manipulation score is the highest face's.

`FaceOptions` are the user's choices (every face, the largest, or the whole picture; a minimum face size; what
to do with a photo without a face), the same in `forgerytalker analyze`, `forgerytalker.analyze` and the pipeline.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..regions import REGION_NAMES

FACE_MODES = ("every", "largest", "whole")
"""`every`: analyse each face; `largest`: only the largest face; `whole`: the whole picture, no detection (for
inputs that are already face crops, and for the released model's own evaluation)."""
NO_FACE_MODES = ("whole", "skip")
"""A photo without a usable face is analysed whole (with a warning) or skipped."""
DEFAULT_FACES = "every"
DEFAULT_MIN_FACE_SIZE = 32
"""Faces whose detector box is narrower than this many photo pixels are left out."""
DEFAULT_NO_FACE = "whole"
DETECTION_SIDE = 1600
"""Longer side, in pixels, of the copy that the detector searches."""
MAX_DETECTION_UPSCALE = 2.0
FACE_RESULT_KEYS = ("faces", "face_count", "face_mode", "warnings")
"""Keys a photo's pipeline result has besides the pipeline's `RESULT_KEYS`."""


@dataclass(frozen=True)
class FaceOptions:
    """How a photo's faces are analysed.

    Args:
        faces (`str`): one of `FACE_MODES`.
        min_face_size (`int`): faces whose detector box is narrower than this many photo pixels are left out.
        no_face (`str`): one of `NO_FACE_MODES`.
    """

    faces: str = DEFAULT_FACES
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    no_face: str = DEFAULT_NO_FACE

    def __post_init__(self):
        if self.faces not in FACE_MODES:
            raise ValueError(f"`faces` must be one of {', '.join(FACE_MODES)}, got {self.faces!r}")
        if self.no_face not in NO_FACE_MODES:
            raise ValueError(f"`no_face` must be one of {', '.join(NO_FACE_MODES)}, got {self.no_face!r}")
        if not isinstance(self.min_face_size, int) or self.min_face_size < 1:
            raise ValueError(f"`min_face_size` must be a positive number of pixels, got {self.min_face_size!r}")

    @classmethod
    def from_arguments(cls, faces=None, min_face_size=None, no_face=None) -> FaceOptions:
        """The options with `None` arguments left at their defaults."""
        given = {"faces": faces, "min_face_size": min_face_size, "no_face": no_face}
        return cls(**{key: value for key, value in given.items() if value is not None})


@dataclass
class FaceCrop:
    """One face of a photo, aligned.

    Attributes:
        box: the detector's box `(left, top, right, bottom)` in photo pixels.
        detection_score: the detector's score.
        matrix: float64 `(2, 3)` photo → crop transform (`ffhq_crop_matrix`).
        image: the aligned RGB crop (`faces.CROP_SIZE` square).
    """

    box: tuple[int, int, int, int]
    detection_score: float
    matrix: np.ndarray
    image: Image.Image


@dataclass
class FacePhoto:
    """A photo ready for per-face analysis.

    Attributes:
        image: the photo, RGB as displayed.
        crops: the faces to analyse, numbered in this order (1, 2, ...), left to right; empty when the photo is
            analysed whole or skipped.
        face_count: faces the detector found (`None` when not searched).
        mode: `"every"`, `"largest"` or `"whole"` (also when no usable face was found and `no_face="whole"`).
        skipped: why the photo is not analysed (no usable face and `no_face="skip"`), else `None`.
        warnings: what the analyst should know about its faces.
        regions: regions to name in the instruction for all its faces (`None`: the prompter's).
    """

    image: Image.Image
    crops: list[FaceCrop]
    face_count: int | None
    mode: str
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)
    regions: list[str] | None = None

    def model_inputs(self) -> list:
        """What the pipeline reads for this photo: its crops, the whole photo, or nothing when skipped."""
        if self.skipped is not None:
            return []
        images = [crop.image for crop in self.crops] if self.mode != "whole" else [self.image]
        if self.regions is None:
            return images
        return [{"image": image, "regions": list(self.regions)} for image in images]


class FaceFinder:
    """Detects and aligns the faces of photos with the synthesizer's `FaceAligner` (dlib's detector and its
    68-point landmark model), which is loaded on first use, or in the background after `start()`.
    `shared_finder()` is the one every analysis of this process uses.
    """

    def __init__(self, min_detection_score: float = 0.2):
        self.min_detection_score = min_detection_score
        self._aligner = None
        self._lock = threading.Lock()

    def start(self) -> FaceFinder:
        """Loads dlib's models in a background thread (so that start-up does not wait for them); once."""
        if self._aligner is None and not self._lock.locked():
            threading.Thread(target=self.aligner, name="face-finder-setup", daemon=True).start()
        return self

    def aligner(self):
        with self._lock:
            if self._aligner is None:
                from ..data.synthesis.faces import FaceAligner

                self._aligner = FaceAligner(min_detection_score=self.min_detection_score)
            return self._aligner

    def __call__(self, image: Image.Image, options: FaceOptions, regions: list[str] | None = None) -> FacePhoto:
        """The faces of an RGB photo, aligned, as `options` asks."""
        if options.faces == "whole":
            return FacePhoto(image, [], None, "whole", regions=regions)
        from ..data.synthesis.faces import CROP_SIZE, FaceAlignment, crop_face, ffhq_crop_matrix

        aligner = self.aligner()
        pixels = np.asarray(image)
        scale = min(MAX_DETECTION_UPSCALE, DETECTION_SIDE / max(image.size))
        found = [(box, score) for box, score in aligner.detect(pixels, scale) if score >= self.min_detection_score]
        usable = [(box, score) for box, score in found if box[2] - box[0] >= options.min_face_size]
        warnings = []
        if len(usable) < len(found):
            small = len(found) - len(usable)
            warnings.append(f"{small} face(s) narrower than {options.min_face_size} px left out (--min-face-size)")
        if options.faces == "largest" and len(usable) > 1:
            usable = [max(usable, key=lambda item: (item[0][2] - item[0][0]) * (item[0][3] - item[0][1]))]
            warnings.append(f"{len(found)} faces found: only the largest is analysed (--faces every analyses each)")
        crops = []
        for box, score in sorted(usable, key=lambda item: (item[0][0], item[0][1])):
            points = aligner.landmarks(pixels, box)
            matrix = ffhq_crop_matrix(points, CROP_SIZE)
            alignment = FaceAlignment(
                face_id=f"face {len(crops) + 1}",
                photo="",
                matrix=tuple(matrix.ravel()),
                landmarks=tuple((points @ matrix[:, :2].T + matrix[:, 2]).ravel()),
                upscale=float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))),
            )
            crop = crop_face(pixels, alignment, CROP_SIZE).image
            crops.append(FaceCrop(tuple(int(v) for v in box), float(score), matrix, Image.fromarray(crop)))
        if crops:
            return FacePhoto(image, crops, len(found), options.faces, warnings=warnings, regions=regions)
        reason = (
            f"no face of at least {options.min_face_size} px found by dlib's face detector (faces narrower than "
            f"about {80 / scale:.0f} px are not searched for)"
        )
        if options.no_face == "skip":
            return FacePhoto(image, [], len(found), options.faces, skipped=reason, warnings=warnings + [reason])
        warnings.append(f"{reason}: the whole picture was analysed, which the model was not trained on")
        return FacePhoto(image, [], len(found), "whole", warnings=warnings, regions=regions)


_SHARED_FINDER = FaceFinder()


def shared_finder() -> FaceFinder:
    """The process's `FaceFinder` (dlib's models are loaded once, on first use or after `start()`)."""
    return _SHARED_FINDER


def aligned_faces(image, faces: str = "every", min_face_size: int = DEFAULT_MIN_FACE_SIZE) -> list[FaceCrop]:
    """The faces of a photo, each aligned and cropped exactly as the training faces are: the model inputs that
    `forgerytalker.analyze`, `forgerytalker analyze` and the pipeline use.

    Args:
        image: the photo: a `PIL.Image.Image`, an array or a tensor (made RGB by `image_utils.to_rgb`, EXIF
            orientation applied).
        faces (`str`): `"every"` face, or only the `"largest"`.
        min_face_size (`int`): faces whose detector box is narrower than this many photo pixels are left out.

    Returns:
        `list[FaceCrop]`, left to right: each face's box and detection score in the photo, its photo → crop
        transform and its aligned crop (`image`, `faces.CROP_SIZE` square); empty when no face is found.
    """
    if faces == "whole":
        raise ValueError('`faces` must be "every" or "largest": aligned_faces finds faces ("whole" analyses the picture as it is)')
    from ..image_utils import to_rgb

    options = FaceOptions(faces=faces, min_face_size=min_face_size, no_face="skip")
    return shared_finder()(to_rgb(image), options).crops


def crop_window(matrix: np.ndarray, crop_size: int, photo_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`(left, top, right, bottom)` (right and bottom exclusive) of the photo pixels that a `crop_size` crop with
    photo → crop transform `matrix` can cover, clipped to the photo."""
    inverse = np.linalg.inv(np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [crop_size, 0, 1], [0, crop_size, 1], [crop_size, crop_size, 1]], dtype=np.float64)
    points = corners @ inverse.T
    left, top = np.floor(points.min(axis=0)).astype(int) - 1
    right, bottom = np.ceil(points.max(axis=0)).astype(int) + 2
    width, height = photo_size
    return max(0, left), max(0, top), max(min(width, right), max(0, left)), max(min(height, bottom), max(0, top))


def answers_per_photo(
    photos: Iterable[tuple[object, list]], run: Callable[[Iterator], Iterable[dict]]
) -> Iterator[tuple[object, list[dict]]]:
    """Runs all photos' model inputs through `run` as one stream (so that a batch takes the faces of several photos)
    and gives each photo back with its inputs' answers.

    Args:
        photos: `(photo, its model inputs)` pairs, read lazily (`FacePhoto.model_inputs`; none for a skipped photo).
        run: the model: a stream of inputs in, one answer per input out, in order (a pipeline call).

    Yields:
        `(photo, answers)` in the order of `photos`, each as soon as its last answer is in.
    """
    pending: deque[tuple[object, int]] = deque()

    def inputs():
        for photo, items in photos:
            pending.append((photo, len(items)))
            yield from items

    answers: list[dict] = []
    for answer in run(inputs()):
        answers.append(answer)
        while pending and len(answers) >= pending[0][1]:
            photo, count = pending.popleft()
            yield photo, answers[:count]
            del answers[:count]
    while pending:
        yield pending.popleft()[0], []


def face_score(result: dict) -> float:
    """A face's manipulation score: the `"region"` detection score (the highest region probability)."""
    from ..evaluation.detection_metrics import region_detection_scores

    return float(region_detection_scores([[result["region_probabilities"][name] for name in REGION_NAMES]])[0])


def _highest_over_faces(faces: list[dict], key: str) -> dict[str, float] | None:
    """Each region's highest probability of `key` over the faces (`None` when the model gives none)."""
    if faces[0][key] is None:
        return None
    return {name: max(face[key][name] for face in faces) for name in REGION_NAMES}


def merge_faces(photo: FacePhoto, results: list[dict]) -> dict:
    """The photo's pipeline result from its faces' results (one per crop, or the whole photo's).

    Returns:
        The pipeline's `RESULT_KEYS` for the photo (mask and mask probabilities at the photo's size; regions, their
        probabilities and the report of all faces together, see the module docstring) plus `FACE_RESULT_KEYS`:
        `faces` (per face: `face` number, `box`, `detection_score`, `manipulation_score`, `report`, `regions`,
        `region_probabilities`, `located_region_probabilities`, `instruction_regions`, `mask_confidence`, `matrix` (photo → crop, 6 floats),
        `crop_size`), `face_count`, `face_mode` and `warnings`. A skipped photo has `skipped` (the reason) and no
        analysis.
    """
    extra = {"face_count": photo.face_count, "face_mode": photo.mode, "warnings": list(photo.warnings)}
    if photo.skipped is not None:
        return {"skipped": photo.skipped, "faces": [], **extra}
    if photo.mode == "whole":
        return {**results[0], "faces": [], **extra}
    from ..data.synthesis.faces import uncrop

    width, height = photo.image.size
    probabilities = np.zeros((height, width), dtype=np.float32)
    forged = np.zeros((height, width), dtype=bool)
    faces = []
    for number, (crop, result) in enumerate(zip(photo.crops, results), start=1):
        # only the window of the photo that the crop covers is warped (a large photo's faces are small in it)
        left, top, right, bottom = crop_window(crop.matrix, crop.image.width, (width, height))
        window = np.asarray(crop.matrix, dtype=np.float64).copy()
        window[:, 2] += window[:, :2] @ [left, top]
        on_photo = uncrop(result["mask_probabilities"], window, (right - left, bottom - top))
        np.maximum(probabilities[top:bottom, left:right], on_photo, out=probabilities[top:bottom, left:right])
        forged[top:bottom, left:right] |= on_photo > result["mask_threshold"]
        faces.append(
            {
                "face": number,
                "box": list(crop.box),
                "detection_score": crop.detection_score,
                "manipulation_score": face_score(result),
                **{key: result[key] for key in ("report", "regions", "region_probabilities", "located_region_probabilities",
                                                "instruction_regions")},
                "mask_confidence": result["mask_confidence"],
                "matrix": [float(value) for value in crop.matrix.ravel()],
                "crop_size": crop.image.width,
            }
        )
    top = max(range(len(faces)), key=lambda index: faces[index]["manipulation_score"])
    region_probabilities = _highest_over_faces(faces, "region_probabilities")
    flagged = {name for face in faces for name in face["regions"]}
    report = faces[0]["report"] if len(faces) == 1 else "\n".join(f"Face {f['face']}: {f['report']}" for f in faces)
    return {
        "report": report,
        "regions": [name for name in REGION_NAMES if name in flagged],
        "region_probabilities": region_probabilities,
        "instruction_regions": results[top]["instruction_regions"],
        "mask": Image.fromarray(forged.astype(np.uint8) * 255),
        "mask_probabilities": probabilities,
        "mask_confidence": results[top]["mask_confidence"],
        "mask_threshold": results[top]["mask_threshold"],
        "region_threshold": results[top]["region_threshold"],
        "located_region_probabilities": _highest_over_faces(faces, "located_region_probabilities"),
        "located_region_threshold": results[top]["located_region_threshold"],
        "faces": faces,
        **extra,
    }


__all__ = [
    "DEFAULT_FACES",
    "DEFAULT_MIN_FACE_SIZE",
    "DEFAULT_NO_FACE",
    "FACE_MODES",
    "FACE_RESULT_KEYS",
    "NO_FACE_MODES",
    "FaceCrop",
    "FaceFinder",
    "FaceOptions",
    "FacePhoto",
    "answers_per_photo",
    "crop_window",
    "face_score",
    "merge_faces",
    "shared_finder",
]
