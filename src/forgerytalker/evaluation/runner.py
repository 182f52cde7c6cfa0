"""Runs a ForgeryTalker model over a dataset split and scores it: the loop behind `forgerytalker evaluate`.

`run_evaluation` generates a report, a mask and region probabilities for every image, streams each mask into
its pixel counts (and, with `output_dir`, into a PNG) so that memory does not grow with the masks, then
computes every metric of `forgerytalker.evaluation` (overall, per manipulation method, per facial region) and,
for each degradation, the same metrics on degraded inputs and the drop from the clean run.

Files written into `output_dir`:

- `predictions.jsonl`: one JSON object per image (see `prediction_record`).
- `masks/<image_id>.png`: the predicted mask, 0/255 grayscale at the image's original size.
- `metrics.json`, `metrics.md`: `report.metrics_document` plus `"run"` (settings) and `"skipped_images"`.
- `degraded/<name>/predictions.jsonl` and `degraded/<name>/masks/`: the same for each degradation, `<name>`
  being the spec with `:` and `+` replaced (`jpeg:75` -> `jpeg-75`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from ..regions import REGION_NAMES, regions_to_labels
from .breakdown import EvaluationRecords, breakdown_by_method, evaluate_records
from .conventions import MASK_AREA_DETECTION_THRESHOLD, REGION_DETECTION_THRESHOLD, THRESHOLD
from .degradations import Degradation, apply_degradations, parse_degradations
from .detection_metrics import mask_area_score
from .mask_metrics import MaskCounts, count_mask_pair
from .region_metrics import per_region_metrics
from .report import metrics_document, write_report
from .text_metrics import require_java

logger = logging.getLogger(__name__)

REGION_SOURCES: tuple[str, ...] = ("predicted", "ground_truth", "none")
"""Where the instruction's regions come from; the three rows of the paper's Table 3 (FPN, FPN-GT, w/o FPN)."""

DETECTION_SCORES: dict[str, float] = {
    "region": REGION_DETECTION_THRESHOLD,
    "mask_area": MASK_AREA_DETECTION_THRESHOLD,
}
"""Image-level detection score -> the threshold above which an image is called forged (`conventions.py`)."""

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "image", "mask", "caption", "regions", "method")
OUTPUT_NAMES: tuple[str, ...] = ("predictions.jsonl", "masks", "metrics.json", "metrics.md", "degraded")
"""What `run_evaluation` writes into `output_dir` (an existing one is only replaced with `overwrite=True`)."""


class UnreadableImageError(ValueError):
    """A sample's image could not be decoded; its image_id is in the message."""


@dataclass
class EvaluationSample:
    """One decoded sample of the evaluated split.

    Attributes:
        image_id: the sample's id.
        image: the RGB input image, (W, H) as stored.
        mask: ground-truth mask, bool of shape (H, W), True where forged.
        reference: the reference report.
        regions: ground-truth region names.
        method: manipulation method (`forgerytalker.data.methods`).
    """

    image_id: str
    image: Image.Image
    mask: np.ndarray
    reference: str
    regions: list[str]
    method: str


@dataclass
class PredictionCollector:
    """What one run produced per image, reduced to what the metrics need (no masks are kept)."""

    methods: dict[str, str] = field(default_factory=dict)
    predicted_reports: dict[str, str] = field(default_factory=dict)
    reference_reports: dict[str, str] = field(default_factory=dict)
    mask_counts: dict[str, MaskCounts] = field(default_factory=dict)
    region_probabilities: dict[str, list[float]] = field(default_factory=dict)
    target_regions: dict[str, list[int]] = field(default_factory=dict)
    detection_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, sample: EvaluationSample, prediction: Mapping) -> None:
        """Keeps one image's report, region probabilities, mask counts and detection scores."""
        image_id = sample.image_id
        if image_id in self.methods:
            raise ValueError(f"Image {image_id!r} appears twice in the evaluated split")
        probabilities = prediction["region_probabilities"]
        self.methods[image_id] = sample.method
        self.predicted_reports[image_id] = prediction["report"]
        self.reference_reports[image_id] = sample.reference
        self.region_probabilities[image_id] = [probabilities[name] for name in REGION_NAMES]
        self.target_regions[image_id] = regions_to_labels(sample.regions)
        mask = prediction["mask"].cpu().numpy()
        self.mask_counts[image_id] = count_mask_pair(image_id, mask, sample.mask)
        self.detection_scores[image_id] = {"region": max(probabilities.values()), "mask_area": mask_area_score(mask)}

    def to_records(self, detection_score: str = "region") -> EvaluationRecords:
        """The `EvaluationRecords` of the run, detecting forgeries with `detection_score` (a `DETECTION_SCORES` key)."""
        return EvaluationRecords(
            methods=self.methods,
            predicted_reports=self.predicted_reports,
            reference_reports=self.reference_reports,
            mask_counts=self.mask_counts,
            predicted_regions=self.region_probabilities,
            target_regions=self.target_regions,
            detection_scores={image_id: scores[detection_score] for image_id, scores in self.detection_scores.items()},
            detection_threshold=DETECTION_SCORES[detection_score],
        )


def iter_samples(dataset: Dataset, skipped: list[dict] | None = None) -> Iterator[EvaluationSample]:
    """Decodes the samples of a converted split one at a time.

    Args:
        dataset: a split with the columns of `forgerytalker.data.features.MMTT_FEATURES`.
        skipped: `None` raises `UnreadableImageError` at the first image that fails to decode; a list instead
            receives `{"image_id", "error"}` for each such image, which is then left out (with a warning).
            A ground-truth mask that fails to decode always raises.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"The dataset lacks the column(s) {missing}; an evaluated split needs {REQUIRED_COLUMNS}")
    region_names = dataset.features["regions"].feature.int2str
    raw = dataset.cast_column("image", ImageFeature(decode=False)).cast_column("mask", ImageFeature(decode=False))
    for row in raw:
        image_id = str(row["image_id"])
        try:
            image = _decode_image(row["image"]).convert("RGB")
        except Exception as error:  # PIL raises many types for corrupt files
            message = f"The image of sample {image_id!r} cannot be decoded: {error}"
            if skipped is None:
                raise UnreadableImageError(message + " (skip such images with skip_unreadable_images=True)") from error
            logger.warning("%s; left out of the evaluation", message)
            skipped.append({"image_id": image_id, "error": str(error)})
            continue
        try:
            mask = np.asarray(_decode_image(row["mask"]).convert("L")) > 0
        except Exception as error:
            raise ValueError(f"The ground-truth mask of sample {image_id!r} cannot be decoded: {error}") from error
        yield EvaluationSample(
            image_id=image_id,
            image=image,
            mask=mask,
            reference=row["caption"],
            regions=[region_names(index) for index in row["regions"]],
            method=row["method"],
        )


def _decode_image(value: Mapping) -> Image.Image:
    """A fully loaded PIL image from a `datasets.Image(decode=False)` value (`{"bytes", "path"}`)."""
    image = Image.open(io.BytesIO(value["bytes"])) if value["bytes"] is not None else Image.open(value["path"])
    image.load()
    return image


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    return iter(lambda: list(islice(iterator, size)), [])


def predict_batches(
    model,
    processor,
    samples: Iterable[EvaluationSample],
    *,
    region_source: str = "predicted",
    degradations: Sequence[Degradation] = (),
    batch_size: int = 8,
    max_new_tokens: int = 60,
) -> Iterator[tuple[EvaluationSample, dict]]:
    """Runs `model.generate` over `samples`, `batch_size` images at a time.

    Each image is degraded (`apply_degradations`) before the processor. Yields `(sample, prediction)` with
    `prediction` as `processor.post_process_generation` gives it: `report`, `regions`, `region_probabilities`,
    `instruction_regions`, `mask` (bool (H, W) at the image's size, forged where p > `THRESHOLD`) and
    `mask_confidence`.
    """
    for batch in _batched(samples, batch_size):
        images = [apply_degradations(sample.image, degradations) for sample in batch]
        region_labels = [sample.regions for sample in batch] if region_source == "ground_truth" else None
        inputs = processor(images=images, region_labels=region_labels).to(model.device)
        with torch.inference_mode():
            outputs = model.generate(**inputs, region_source=region_source, max_new_tokens=max_new_tokens)
        target_sizes = [(image.height, image.width) for image in images]
        predictions = processor.post_process_generation(outputs, target_sizes=target_sizes, mask_threshold=THRESHOLD)
        yield from zip(batch, predictions)


def mask_filename(image_id: str) -> str:
    """`<image_id>.png`, with characters unsafe in file names percent-encoded (`a/b` -> `a%2Fb.png`)."""
    return quote(image_id, safe="") + ".png"


def prediction_record(
    sample: EvaluationSample, prediction: Mapping, collector: PredictionCollector, mask_path: str
) -> dict:
    """One line of `predictions.jsonl`: the prediction, its reference, detection scores and mask metrics (0-100)."""
    counts = collector.mask_counts[sample.image_id]
    return {
        "image_id": sample.image_id,
        "method": sample.method,
        "report": prediction["report"],
        "reference": sample.reference,
        "regions": prediction["regions"],
        "region_probabilities": prediction["region_probabilities"],
        "instruction_regions": prediction["instruction_regions"],
        "target_regions": sample.regions,
        "mask": mask_path,
        "mask_confidence": prediction["mask_confidence"],
        "detection_scores": collector.detection_scores[sample.image_id],
        "IoU": counts.iou,
        "Precision": counts.precision,
        "Recall": counts.recall,
    }


def predict_split(
    model,
    processor,
    dataset: Dataset,
    *,
    region_source: str,
    degradations: Sequence[Degradation] = (),
    batch_size: int = 8,
    max_new_tokens: int = 60,
    output_dir: Path | None = None,
    skipped: list[dict] | None = None,
    progress: bool = True,
    description: str = "evaluate",
) -> PredictionCollector:
    """Predicts every sample of `dataset` into a `PredictionCollector`; writes predictions and masks with `output_dir`.

    `skipped` is as in `iter_samples`.
    """
    collector = PredictionCollector()
    predictions = predict_batches(
        model,
        processor,
        iter_samples(dataset, skipped),
        region_source=region_source,
        degradations=degradations,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )
    bar = tqdm(predictions, total=len(dataset), desc=description, unit="image", disable=not progress)
    if output_dir is None:
        for sample, prediction in bar:
            collector.add(sample, prediction)
        return collector
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    with open(output_dir / "predictions.jsonl", "w", encoding="utf-8") as lines:
        for sample, prediction in bar:
            collector.add(sample, prediction)
            mask_path = f"masks/{mask_filename(sample.image_id)}"
            Image.fromarray(prediction["mask"].cpu().numpy().astype(np.uint8) * 255).save(output_dir / mask_path)
            record = prediction_record(sample, prediction, collector, mask_path)
            lines.write(json.dumps(record, ensure_ascii=False) + "\n")
    return collector


def degradation_name(spec: str) -> str:
    """The folder name of a degradation spec: `jpeg:75` -> `jpeg-75`, `resize:0.5+jpeg:75` -> `resize-0.5_jpeg-75`."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", spec.replace("+", "_"))


def parse_degradation_specs(specs: Iterable[str]) -> dict[str, list[Degradation]]:
    """Canonical spec -> degradations of each robustness run; `a+b` composes `a` then `b` in one run.

    Raises `ValueError` naming an invalid spec (see `degradations.parse_degradation`) or a repeated one.
    """
    runs: dict[str, list[Degradation]] = {}
    for spec in specs:
        degradations = parse_degradations(spec.split("+"))
        canonical = "+".join(degradation.spec for degradation in degradations)
        if canonical in runs:
            raise ValueError(f"Degradation {spec!r} is given twice")
        runs[canonical] = degradations
    return runs


def prepare_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Creates `output_dir`; raises `FileExistsError` if it holds outputs of a run, unless `overwrite` removes them."""
    output_dir = Path(output_dir)
    existing = [output_dir / name for name in OUTPUT_NAMES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds evaluation outputs ({', '.join(path.name for path in existing)}); "
            "choose another folder or overwrite them"
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Puts `model` in eval mode for the block and restores its training mode after (training validation)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def score_runs(
    clean: PredictionCollector,
    degraded: Mapping[str, PredictionCollector],
    *,
    with_meteor: bool = False,
    detection_score: str = "region",
) -> dict:
    """The metrics document of a clean run and its degraded runs: overall, per method, per region, robustness."""
    if not clean.methods:
        raise ValueError("No image of the split could be evaluated")
    records = clean.to_records(detection_score)
    image_ids = list(clean.methods)
    return metrics_document(
        evaluate_records(records, with_meteor),
        per_method=breakdown_by_method(records, with_meteor),
        degraded={
            spec: evaluate_records(collector.to_records(detection_score), with_meteor)
            for spec, collector in degraded.items()
        },
        per_region=per_region_metrics(
            np.stack([clean.region_probabilities[i] for i in image_ids]),
            np.stack([clean.target_regions[i] for i in image_ids]),
        ),
    )


def run_evaluation(
    model,
    processor,
    dataset: Dataset,
    *,
    region_source: str = "predicted",
    degradations: Iterable[str] = (),
    batch_size: int = 8,
    max_new_tokens: int = 60,
    with_meteor: bool = False,
    output_dir: str | Path | None = None,
    progress: bool = True,
    detection_score: str = "region",
    skip_unreadable_images: bool = False,
    overwrite: bool = False,
    model_name: str | None = None,
    run_info: Mapping[str, object] | None = None,
) -> dict:
    """Evaluates `model` on one split: reports, masks, regions, detection, per-method rows and robustness.

    Args:
        model: a `ForgeryTalkerForConditionalGeneration`; run in eval mode (its training mode is restored after).
        processor: its `ForgeryTalkerProcessor`.
        dataset: one split (`datasets.Dataset`) with the columns of a converted MMTT dataset.
        region_source: "predicted", "ground_truth" (the FPN-GT oracle) or "none" (no prompter): paper Table 3.
        degradations: robustness specs, e.g. `["jpeg:75", "resize:0.5", "blur:1.0"]`; each is one more run on
            degraded inputs (`a+b` composes two degradations in one run).
        batch_size: images per `generate` call.
        max_new_tokens: longest report, in tokens.
        with_meteor: also compute METEOR (a Java process of about 5 s per metric row: overall, each method,
            each degradation).
        output_dir: where to write predictions, masks and reports (module docstring); `None` writes nothing.
        progress: show tqdm progress bars.
        detection_score: image-level score for authentic-vs-forged detection: "region" (highest region
            probability) or "mask_area" (forged fraction of the predicted mask).
        skip_unreadable_images: leave out images that fail to decode (listed under "skipped_images") instead of
            raising `UnreadableImageError`.
        overwrite: replace the outputs of an earlier run in `output_dir`.
        model_name: label of this run's row in `metrics.md` (default: "ForgeryTalker (<region_source> regions)").
        run_info: extra settings to record under "run" (e.g. the model path and dataset name).

    Returns:
        The metrics document (`report.metrics_document`): "overall", "per_method", "per_region",
        "robustness" (with degradations), "conventions", "paper_reference", plus "run" and "skipped_images".
    """
    if region_source not in REGION_SOURCES:
        raise ValueError(f"`region_source` must be one of {', '.join(REGION_SOURCES)}, got {region_source!r}")
    if detection_score not in DETECTION_SCORES:
        raise ValueError(f"`detection_score` must be one of {', '.join(DETECTION_SCORES)}, got {detection_score!r}")
    degraded_runs = parse_degradation_specs(degradations)
    require_java("The report metrics (PTB tokenizer)")
    output_dir = prepare_output_dir(output_dir, overwrite) if output_dir is not None else None
    settings = {"region_source": region_source, "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    predict = functools.partial(predict_split, model, processor, dataset, **settings, progress=progress)
    skipped: list[dict] = []
    with eval_mode(model):
        started = time.perf_counter()
        clean = predict(output_dir=output_dir, skipped=skipped if skip_unreadable_images else None)
        logger.info("Predicted %d images in %.1f s", len(clean.methods), time.perf_counter() - started)
        degraded = {
            spec: predict(
                degradations=runs,
                output_dir=output_dir / "degraded" / degradation_name(spec) if output_dir is not None else None,
                skipped=[] if skip_unreadable_images else None,
                description=spec,
            )
            for spec, runs in degraded_runs.items()
        }
    document = score_runs(clean, degraded, with_meteor=with_meteor, detection_score=detection_score)
    document["run"] = {
        **(run_info or {}),
        **settings,
        "degradations": list(degraded_runs),
        "with_meteor": with_meteor,
        "detection_score": detection_score,
        "detection_threshold": DETECTION_SCORES[detection_score],
    }
    document["skipped_images"] = skipped
    if output_dir is not None:
        write_report(output_dir, document, model_name or f"ForgeryTalker ({region_source} regions)")
    return document
