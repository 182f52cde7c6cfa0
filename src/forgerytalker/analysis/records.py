"""What one analysed photo comes to: the `ForgeryAnalysis` dataclass and its JSON record.

`forgerytalker.analyze`, `forgerytalker analyze` and the demo all build a `ForgeryAnalysis` from one result of
the `forgery-analysis` pipeline (`from_pipeline_result`); `to_record` is its line in `results.jsonl` (and the
photo's own `<name>.json`). A photo that could not be analysed gets `error_record` instead, and one skipped for want of a face
`skipped_record`.

Photos are analysed one face at a time (`face_crops`): `face_analyses` has each face's box, detector score, regions
and their probabilities, report, mask confidence and manipulation score; the photo's mask is the union of the
faces', and its manipulation score the highest face's.

The image-level manipulation score is the evaluation's `"region"` detection score
(`forgerytalker.evaluation.detection_metrics.region_detection_scores`: the highest of the 21 region
probabilities), so the AUC that `forgerytalker evaluate` reports is the AUC of this number. A photo is called
manipulated when that score is above the region threshold, i.e. exactly when at least one region is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..regions import REGION_NAMES

RECORD_VERSION = 2
"""Bumped when a field of the JSON record changes meaning (2: per-face analysis, `face_analyses`)."""
MANIPULATION_SCORE_RULE = (
    "highest region probability (the 'region' detection score of forgerytalker evaluate, whose AUC it is); "
    "manipulated when above region_threshold"
)


@dataclass
class ForgeryAnalysis:
    """The analysis of one photo.

    Attributes:
        report: the written report.
        regions: the flagged regions (`forgerytalker.region_decision.flag_regions`: probability above
            `region_threshold`, or for a model with a region map the located regions), in `REGION_NAMES` order.
        region_probabilities: region → probability, all 21 regions in `REGION_NAMES` order.
        instruction_regions: the regions named in the instruction the report was written from (the prompter's,
            or the ones the analyst gave); `None` for the plain instruction.
        mask: PIL "L" image, 0/255, at the photo's size (as displayed: EXIF orientation applied).
        mask_probabilities: float32 array `(H, W)`, the forgery probability of each pixel.
        mask_confidence: the mask decoder's estimate of its mask's IoU; `None` for a model without an IoU head (the
            released DFF mask path) and for a mask emptied because the face was not called manipulated.
        mask_area_fraction: share of the photo's pixels in the mask, in [0, 1].
        mask_bbox: `[left, top, right, bottom]` of the mask in pixels (right and bottom exclusive), or `None`
            for an empty mask.
        manipulation_score: image-level score in [0, 1] (module docstring).
        manipulated: `manipulation_score > region_threshold`.
        mask_threshold, region_threshold: the thresholds used.
        located_region_probabilities, located_region_threshold: a model with a region map: region → probability that
            it holds the edit (given that the face is manipulated), and the threshold above which such a region is
            flagged (`forgerytalker.region_decision`); `None` otherwise.
        image: the file the photo came from (`None` for a picture given in memory).
        width, height: the photo's size as displayed.
        faces: number of faces dlib's detector found, or `None` when not searched (`face_mode="whole"` asked).
        face_mode: `"every"`, `"largest"`, or `"whole"` when the whole picture was analysed.
        face_analyses: one dict per analysed face, numbered from 1 (`face_crops.merge_faces`); empty for a whole
            picture.
        warnings: what the analyst should know about the input (no face, several faces, converted colours, ...).
        model: the model's name or folder.
        version: the forgerytalker version that wrote it.
    """

    report: str
    regions: list[str]
    region_probabilities: dict[str, float]
    instruction_regions: list[str] | None
    mask: Image.Image
    mask_probabilities: np.ndarray
    mask_confidence: float | None
    mask_area_fraction: float
    mask_bbox: list[int] | None
    manipulation_score: float
    manipulated: bool
    mask_threshold: float
    region_threshold: float
    located_region_probabilities: dict[str, float] | None = None
    located_region_threshold: float | None = None
    image: str | None = None
    width: int = 0
    height: int = 0
    faces: int | None = None
    face_mode: str = "whole"
    face_analyses: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: str | None = None
    version: str | None = None

    @classmethod
    def from_pipeline_result(
        cls,
        result: Mapping,
        *,
        image: str | None = None,
        warnings: list[str] | None = None,
        model: str | None = None,
    ) -> ForgeryAnalysis | None:
        """Builds the analysis from one result of the `forgery-analysis` pipeline (its `RESULT_KEYS` and
        `face_crops.FACE_RESULT_KEYS`); `None` for a photo skipped for want of a face."""
        if result.get("skipped") is not None:
            return None
        from .. import __version__
        from ..evaluation.detection_metrics import region_detection_scores

        mask = result["mask"]
        forged = np.asarray(mask) > 0
        probabilities = _probabilities(result["region_probabilities"])
        score = float(region_detection_scores([list(probabilities.values())])[0])
        region_threshold = float(result["region_threshold"])
        return cls(
            report=result["report"],
            regions=list(result["regions"]),
            region_probabilities=probabilities,
            instruction_regions=None if result["instruction_regions"] is None else list(result["instruction_regions"]),
            mask=mask,
            mask_probabilities=result["mask_probabilities"],
            mask_confidence=None if result["mask_confidence"] is None else float(result["mask_confidence"]),
            mask_area_fraction=float(forged.mean()),
            mask_bbox=mask_bounding_box(forged),
            manipulation_score=score,
            manipulated=score > region_threshold,
            mask_threshold=float(result["mask_threshold"]),
            region_threshold=region_threshold,
            located_region_probabilities=_probabilities(result.get("located_region_probabilities")),
            located_region_threshold=_float_or_none(result.get("located_region_threshold")),
            image=image,
            width=mask.width,
            height=mask.height,
            faces=result.get("face_count"),
            face_mode=result.get("face_mode", "whole"),
            face_analyses=[dict(face) for face in result.get("faces", [])],
            warnings=list(warnings or []) + list(result.get("warnings", [])),
            model=model,
            version=__version__,
        )

    def flagging_probabilities(self) -> tuple[dict[str, float], float]:
        """The per-region probabilities that decided which regions are flagged, and the threshold they were held to:
        the located ones for a model with a region map, else the region probabilities."""
        if self.located_region_probabilities is not None and self.located_region_threshold is not None:
            return self.located_region_probabilities, self.located_region_threshold
        return self.region_probabilities, self.region_threshold

    def to_record(self, outputs: Mapping[str, str] | None = None) -> dict:
        """The JSON record: every field except the two mask arrays, plus `outputs` (file kind → file name)."""
        record = {
            "record_version": RECORD_VERSION,
            "status": "ok",
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "report": self.report,
            "regions": self.regions,
            "region_probabilities": self.region_probabilities,
            "instruction_regions": self.instruction_regions,
            "mask_area_fraction": self.mask_area_fraction,
            "mask_bbox": self.mask_bbox,
            "mask_confidence": self.mask_confidence,
            "manipulation_score": self.manipulation_score,
            "manipulated": self.manipulated,
            "manipulation_score_rule": MANIPULATION_SCORE_RULE,
            "mask_threshold": self.mask_threshold,
            "region_threshold": self.region_threshold,
            "located_region_probabilities": self.located_region_probabilities,
            "located_region_threshold": self.located_region_threshold,
            "faces": self.faces,
            "face_mode": self.face_mode,
            "face_analyses": self.face_analyses,
            "warnings": self.warnings,
            "model": self.model,
            "forgerytalker_version": self.version,
        }
        if outputs is not None:
            record["outputs"] = dict(outputs)
        return record


def _probabilities(values: Mapping | None) -> dict[str, float] | None:
    return None if values is None else {name: float(values[name]) for name in REGION_NAMES}


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def error_record(image: str, error: str, model: str | None) -> dict:
    """The record of a photo that could not be analysed: the file and the reason."""
    from .. import __version__

    return {
        "record_version": RECORD_VERSION,
        "status": "error",
        "image": image,
        "error": error,
        "model": model,
        "forgerytalker_version": __version__,
    }


def skipped_record(image: str, reason: str, faces: int | None, warnings: list[str], model: str | None) -> dict:
    """The record of a photo left out for want of a usable face (`no_face="skip"`): the file and the reason."""
    from .. import __version__

    return {
        "record_version": RECORD_VERSION,
        "status": "skipped",
        "image": image,
        "reason": reason,
        "faces": faces,
        "warnings": list(warnings),
        "model": model,
        "forgerytalker_version": __version__,
    }


def mask_bounding_box(forged: np.ndarray) -> list[int] | None:
    """`[left, top, right, bottom]` (right and bottom exclusive) of the True pixels of a bool `(H, W)` map."""
    rows, columns = np.flatnonzero(forged.any(axis=1)), np.flatnonzero(forged.any(axis=0))
    if not rows.size:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1]


__all__ = [
    "MANIPULATION_SCORE_RULE",
    "RECORD_VERSION",
    "ForgeryAnalysis",
    "error_record",
    "mask_bounding_box",
    "skipped_record",
]
