"""What a synthesis run makes and how: `SynthesisConfig`, with the checks of its values."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataInputError, option
from ..methods import CLASSICAL_INPAINTING, REGION_TRANSPLANT
from .faces import CROP_SIZE
from .manipulations import MANIPULATIONS


@dataclass
class SynthesisConfig:
    """What to synthesize and how.

    Args:
        faces_dir (`Path`): folder of face photos (searched recursively).
        output_dir (`Path`): where the released-layout dataset is written; not inside `faces_dir`.
        num_samples (`int`): number of samples (forged and authentic), at least 1.
        seed (`int`): fixes every sample.
        authentic_rate (`float`): share of untouched photos with an empty mask, in [0, 1].
        whole_face_rate (`float`): share of forgeries that replace the whole face (the paper's 20%), in [0, 1].
        max_regions (`int`): upper end of the number k of regions edited in a local forgery (k ∈ [1, max_regions]),
            at least 1.
        local_methods (`tuple[str, ...]`): methods drawn uniformly for local (region) forgeries; each must be
            registered in `manipulations.MANIPULATIONS`.
        eval_every (`int`): every `eval_every`-th sample goes to the eval split (0: no eval split).
        max_upscale (`float`): faces needing more enlargement than this to fill 512×512 are skipped (> 0).
        min_detection_score (`float`): dlib detections scored below this are ignored.
        face_padding (`float`): photos are reflect-padded by this share of their width and height on every side
            before detection (tightly cropped face photos, whose crop cuts through forehead and chin), in [0, 1].
        face_size (`int`): side of the written images and masks. Samples are made on the 512×512 aligned crop and
            then resized to this (area interpolation; masks: forged where at least half the area is), at least 32.
        jpeg_quality (`tuple[int, int]`, *optional*): every written image, untouched or forged, is JPEG-compressed
            (after the resize) at a quality drawn uniformly from this inclusive range by the sample's own random
            generator, and stored decoded: one chain for both classes, so compression is no shortcut. None: none.
        max_image_pixels (`int`, *optional*): photos with more pixels are skipped before decoding; None uses
            `forgerytalker.image_utils.max_image_pixels()`.
        allow_changed_faces (`bool`): resume in a folder whose samples were made from other photos (the folder
            then mixes both photo sets); by default that is refused.
        num_workers (`int`): worker processes (1: in this process).
        show_progress (`bool`): show tqdm progress bars.
    """

    faces_dir: Path
    output_dir: Path
    num_samples: int
    seed: int = 0
    authentic_rate: float = 0.1
    whole_face_rate: float = 0.2
    max_regions: int = 11
    local_methods: tuple[str, ...] = (CLASSICAL_INPAINTING, REGION_TRANSPLANT)
    eval_every: int = 10
    max_upscale: float = 2.0
    min_detection_score: float = 0.2
    face_padding: float = 0.0
    face_size: int = 512
    jpeg_quality: tuple[int, int] | None = None
    max_image_pixels: int | None = None
    allow_changed_faces: bool = False
    num_workers: int = 1
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.faces_dir, self.output_dir = Path(self.faces_dir), Path(self.output_dir)
        self.local_methods = tuple(self.local_methods)
        if self.jpeg_quality is not None:
            self.jpeg_quality = tuple(self.jpeg_quality)

    def validate(self) -> None:
        """Raises `DataInputError` naming the first field whose value cannot be used."""
        _at_least("num_samples", self.num_samples, 1)
        _at_least("max_regions", self.max_regions, 1)
        _at_least("eval_every", self.eval_every, 0)
        _at_least("num_workers", self.num_workers, 1)
        _at_least("seed", self.seed, 0)
        if self.max_image_pixels is not None:
            _at_least("max_image_pixels", self.max_image_pixels, 1)
        _at_least("face_size", self.face_size, 32)
        if self.jpeg_quality is not None and not (
            len(self.jpeg_quality) == 2 and all(isinstance(q, int) and 1 <= q <= 100 for q in self.jpeg_quality)
            and self.jpeg_quality[0] <= self.jpeg_quality[1]
        ):
            raise DataInputError(f"{option('jpeg_quality')}: must be two qualities LOW HIGH with 1 ≤ LOW ≤ HIGH ≤ 100, got {self.jpeg_quality!r}")
        for name in ("authentic_rate", "whole_face_rate", "face_padding"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise DataInputError(f"{option(name)}: must be between 0 and 1, got {value!r}")
        if not isinstance(self.max_upscale, (int, float)) or not (self.max_upscale > 0 and math.isfinite(self.max_upscale)):
            raise DataInputError(f"{option('max_upscale')}: must be a positive number, got {self.max_upscale!r}")
        if not isinstance(self.min_detection_score, (int, float)) or not math.isfinite(self.min_detection_score):
            raise DataInputError(f"{option('min_detection_score')}: must be a number, got {self.min_detection_score!r}")
        if not self.local_methods:
            raise DataInputError(f"{option('local_methods')}: name at least one method")
        unknown = [method for method in self.local_methods if method not in MANIPULATIONS]
        if unknown:
            raise DataInputError(
                f"{option('local_methods')}: no manipulation registered for {', '.join(unknown)}; registered: "
                f"{', '.join(sorted(MANIPULATIONS))}"
            )
        if not self.faces_dir.is_dir():
            raise DataInputError(f"{option('faces_dir')}: no such folder: {self.faces_dir}")
        faces, output = self.faces_dir.resolve(), self.output_dir.resolve()
        if output == faces or faces in output.parents:
            raise DataInputError(
                f"{option('output_dir')}: {self.output_dir} is inside {option('faces_dir')} {self.faces_dir}: later "
                "runs would take its forged images for face photos; choose a folder outside it"
            )

    def sample_parameters(self) -> dict:
        """The parameters that decide each sample's content (a resumed run must match them)."""
        keep = ("seed", "authentic_rate", "whole_face_rate", "max_regions", "local_methods", "eval_every")
        parameters = {key: value for key, value in asdict(self).items() if key in keep}
        parameters["local_methods"] = list(self.local_methods)
        # written only when set, so folders made before these options existed resume unchanged
        if self.face_size != CROP_SIZE:
            parameters["face_size"] = self.face_size
        if self.jpeg_quality is not None:
            parameters["jpeg_quality"] = list(self.jpeg_quality)
        return parameters

    def face_parameters(self) -> dict:
        parameters = {"max_upscale": self.max_upscale, "min_detection_score": self.min_detection_score}
        if self.face_padding:
            parameters["face_padding"] = self.face_padding
        return parameters

    def aligner_key(self) -> tuple:
        """The face parameters as a hashable key for the per-process `FaceAligner` cache."""
        return tuple(sorted(self.face_parameters().items()))


def _at_least(name: str, value, lowest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise DataInputError(f"{option(name)}: must be a whole number of at least {lowest}, got {value!r}")
