"""Runs a ForgeryTalker model over a dataset split and scores it: the loop behind `forgerytalker evaluate`.

`run_evaluation` generates a report, a mask and region probabilities for every image, reduces each mask to its
pixel counts (and, with `output_dir`, writes it as a PNG) so that memory does not grow with the masks, then
computes every metric of `forgerytalker.evaluation` (overall, per manipulation method, per facial region) and,
for each degradation, the same metrics on degraded inputs and the drop from the clean run.

- **Several processes.** Launched with `accelerate launch` (or given an `accelerate.Accelerator`), every process
  calls `run_evaluation`; each predicts a contiguous shard of the split, the main process gathers the records,
  scores them and writes the files, and every process returns the same document, equal to a one-process run's.
- **Thresholds from the checkpoint.** Masks are binarised at `model.config.mask_threshold`; regions are the ones the
  model flags (`region_decision.flag_regions`, from `config.prompter_config.region_threshold` and, with a region
  map, its `located_region_threshold`); the document states them ("thresholds").
- **Outputs** (with `output_dir`; see `output_folder` for the guarantees: only its own files are replaced, a run
  is swapped in only when complete, an interrupted run resumes):
  - `predictions.jsonl`: one JSON object per image (`prediction.prediction_record`), in split order;
  - `masks/<name>.png`: the predicted mask, 0/255 grayscale at the image's original size (`mask_filename`);
  - `metrics.json`, `metrics.md`: `report.metrics_document` plus "thresholds", "run" and "skipped_images";
  - `degraded/<name>/predictions.jsonl` and `degraded/<name>/masks/`: the same for each degradation, `<name>`
    being the spec with `:` and `+` replaced (`jpeg:75` -> `jpeg-75`);
  - `.forgerytalker-files.json` (the shared manifest): every file above, so that a later `overwrite` replaces only
    those.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from datasets import Dataset

from ..instruction import DATASET_REGION_SOURCES
from ..model_fingerprint import model_fingerprint
from ..regions import regions_to_labels
from .breakdown import EvaluationRecords, breakdown_by_method, evaluate_records
from .conventions import EVALUATION_PROTOCOLS, MASK_AREA_DETECTION_THRESHOLD
from .degradations import Degradation, parse_degradations
from .distributed import EvaluationProcesses
from .mask_metrics import MaskCounts
from .output_folder import (
    OutputFolder,
    RunWriter,
    complete,
    load_finished,
    prepare_output_folder,
    write_predictions,
    writing,
)
from .prediction import PredictionSettings, predict_records, records_in_order
from .region_metrics import per_region_metrics
from .report import metrics_document, write_report
from .samples import check_split
from .text_metrics import require_java

logger = logging.getLogger(__name__)

DETECTION_SCORES: tuple[str, ...] = ("region", "mask_area")
"""Image-level detection scores: the highest region probability, or the forged fraction of the predicted mask."""


def model_thresholds(model) -> dict[str, float]:
    """The thresholds the evaluated checkpoint was configured with: `{"mask_threshold", "region_threshold"}`, and
    `"located_region_threshold"` for a prompter with a region map."""
    prompter_config = model.config.prompter_config
    thresholds = {
        "mask_threshold": float(model.config.mask_threshold),
        "region_threshold": float(prompter_config.region_threshold),
    }
    if prompter_config.has_region_map:
        thresholds["located_region_threshold"] = float(prompter_config.located_region_threshold)
    return thresholds


def detection_threshold(detection_score: str, thresholds: Mapping[str, float]) -> float:
    """The score above which an image is called forged: the region threshold, or any forged pixel for masks."""
    return thresholds["region_threshold"] if detection_score == "region" else MASK_AREA_DETECTION_THRESHOLD


def run_fingerprint(model, image_ids: Sequence[str], settings: PredictionSettings) -> dict:
    """The settings that decide the predictions of a run; an unfinished run resumes only when they are equal."""
    return {
        "model": model_fingerprint(model),
        "dtype": str(model.dtype).removeprefix("torch."),
        "split": hashlib.sha256("\n".join(image_ids).encode("utf-8")).hexdigest(),
        "region_source": settings.region_source,
        "max_new_tokens": settings.max_new_tokens,
        "protocol": settings.protocol,
        **model_thresholds(model),
    }


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


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Puts `model` in eval mode for the block and restores its training mode after (training validation)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def evaluation_records(
    records: Sequence[Mapping], detection_score: str, thresholds: Mapping[str, float]
) -> EvaluationRecords:
    """The `EvaluationRecords` of a run's prediction records (`prediction.prediction_record`)."""
    return EvaluationRecords(
        methods={record["image_id"]: record["method"] for record in records},
        predicted_reports={record["image_id"]: record["report"] for record in records},
        reference_reports={record["image_id"]: record["reference"] for record in records},
        mask_counts={record["image_id"]: MaskCounts(record["image_id"], **record["mask_pixels"]) for record in records},
        # the regions the model flagged (`region_decision.flag_regions`), not its probabilities at one threshold:
        # a model with a region map names regions by their located probabilities
        predicted_regions={record["image_id"]: regions_to_labels(record["regions"]) for record in records},
        target_regions={record["image_id"]: regions_to_labels(record["target_regions"]) for record in records},
        detection_scores={record["image_id"]: record["detection_scores"][detection_score] for record in records},
        detection_threshold=detection_threshold(detection_score, thresholds),
        region_threshold=thresholds["region_threshold"],
    )


def score_runs(
    clean: Sequence[Mapping],
    degraded: Mapping[str, Sequence[Mapping]],
    thresholds: Mapping[str, float],
    *,
    with_meteor: bool = False,
    detection_score: str = "region",
    protocol: str = "forgerytalker",
) -> dict:
    """The metrics document of a clean run and its degraded runs (prediction records, in split order); it quotes
    the conventions of `protocol`."""
    if not clean:
        raise ValueError("No image of the split could be evaluated")
    records = evaluation_records(clean, detection_score, thresholds)
    image_ids = list(records.methods)
    document = metrics_document(
        evaluate_records(records, with_meteor),
        per_method=breakdown_by_method(records, with_meteor),
        degraded={
            spec: evaluate_records(evaluation_records(run, detection_score, thresholds), with_meteor)
            for spec, run in degraded.items()
        },
        per_region=per_region_metrics(
            np.stack([records.predicted_regions[i] for i in image_ids]),
            np.stack([records.target_regions[i] for i in image_ids]),
            thresholds["region_threshold"],
        ),
        thresholds=thresholds,
        protocol=protocol,
    )
    return document


def _predict_shard(
    model,
    processor,
    dataset: Dataset,
    image_ids: Sequence[str],
    shard: range,
    settings: PredictionSettings,
    degradations: Sequence[Degradation],
    spec: str | None,
    folder: OutputFolder | None,
    process_index: int,
    skip_unreadable_images: bool,
    progress: bool,
) -> dict:
    """This process's part of one run: finished predictions found in `folder`, then the rest of its shard."""
    finished = load_finished(folder, spec, (image_ids[i] for i in shard)) if folder is not None else {}
    if finished:
        logger.info("Resuming %s: %d of %d images already predicted", spec or "the clean run", len(finished), len(shard))
    todo = [index for index in shard if image_ids[index] not in finished]
    skipped: list[dict] | None = [] if skip_unreadable_images else None
    writer = RunWriter(folder, spec, process_index) if folder is not None else None
    try:
        records = predict_records(
            model,
            processor,
            dataset,
            todo,
            settings,
            degradations=degradations,
            writer=writer,
            skipped=skipped,
            progress=progress,
            description=spec or "evaluate",
        )
    finally:
        if writer is not None:
            writer.close()
    return {"records": [*finished.values(), *records], "skipped": skipped or []}


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
    output_dir: str | None = None,
    progress: bool = True,
    detection_score: str = "region",
    protocol: str = "forgerytalker",
    skip_unreadable_images: bool = False,
    overwrite: bool = False,
    model_name: str | None = None,
    run_info: Mapping[str, object] | None = None,
    accelerator=None,
) -> dict:
    """Evaluates `model` on one split: reports, masks, regions, detection, per-method rows and robustness.

    Every process of a multi-process run must call it (module docstring); each returns the same document.

    Args:
        model: a `ForgeryTalkerForConditionalGeneration` (or one wrapped by `accelerator.prepare`); run in eval
            mode, its training mode restored after. Its config's `mask_threshold` and
            `prompter_config.region_threshold` binarise masks and regions.
        processor: its `ForgeryTalkerProcessor`.
        dataset: one split (`datasets.Dataset`) with the columns of a converted MMTT dataset; the same on every
            process (each predicts its own shard of it).
        region_source: "predicted", "ground_truth" (the FPN-GT oracle) or "none" (no prompter): paper Table 3.
        degradations: robustness specs, e.g. `["jpeg:75", "resize:0.5", "blur:1.0"]`; each is one more run on
            degraded inputs (`a+b` composes two degradations in one run).
        batch_size: images per `generate` call.
        max_new_tokens: longest report, in tokens.
        with_meteor: also compute METEOR (a Java process of about 5 s per metric row: overall, each method,
            each degradation).
        output_dir: where to write predictions, masks and reports (module docstring); `None` writes nothing. On
            several processes it must be a folder all of them can reach (each writes its shard's masks).
        progress: show tqdm progress bars (the main process's shard).
        detection_score: image-level score for authentic-vs-forged detection: "region" (highest region
            probability) or "mask_area" (forged fraction of the predicted mask).
        protocol: "forgerytalker" (the rules of `conventions.CONVENTIONS`) or "official" (the mask rules of the
            authors' released evaluation, `conventions.OFFICIAL_PROTOCOL`: masks thresholded at the model's
            resolution and resized with PIL's nearest neighbour, ground truths forged where grey > 127).
        skip_unreadable_images: leave out images that fail to decode (listed under "skipped_images") instead of
            raising `UnreadableImageError`.
        overwrite: replace the outputs of an earlier finished run in `output_dir` (only the files its manifest
            lists, and only once this run is complete), or discard an unfinished run made with other settings.
        model_name: label of this run's row in `metrics.md` (default: "ForgeryTalker (<region_source> regions)").
        run_info: extra settings to record under "run" (e.g. the model path and dataset name).
        accelerator: the `accelerate.Accelerator` of the calling process (training); without one, a run
            started by `accelerate launch` with several processes is detected through `accelerate.PartialState`.

    Returns:
        The metrics document (`report.metrics_document`): "overall", "per_method", "per_region",
        "robustness" (with degradations), "thresholds", "conventions", "paper_reference", plus "run" and
        "skipped_images".

    Raises:
        JavaNotFoundError: Java is missing on any process (checked before anything is predicted).
        OutputFolderError: `output_dir` cannot be used (`output_folder.prepare_output_folder`).
        UnreadableImageError: an image failed to decode (without `skip_unreadable_images`).
    """
    if region_source not in DATASET_REGION_SOURCES:
        raise ValueError(f"`region_source` must be one of {', '.join(DATASET_REGION_SOURCES)}, got {region_source!r}")
    if detection_score not in DETECTION_SCORES:
        raise ValueError(f"`detection_score` must be one of {', '.join(DETECTION_SCORES)}, got {detection_score!r}")
    if protocol not in EVALUATION_PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {', '.join(EVALUATION_PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"`batch_size` and `max_new_tokens` must be at least 1, got {batch_size}, {max_new_tokens}")
    degraded_runs = parse_degradation_specs(degradations)
    image_ids = check_split(dataset)
    processes = EvaluationProcesses(accelerator)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    processes.all_succeed(require_java, "The report metrics (PTB tokenizer)")
    thresholds = model_thresholds(model)
    settings = PredictionSettings(region_source, max_new_tokens, thresholds["mask_threshold"], batch_size, protocol)
    folder = None
    with contextlib.ExitStack() as held:  # the output folder's lock, held by the main process until the end
        if output_dir is not None:
            folder = processes.on_main(
                lambda: prepare_output_folder(output_dir, run_fingerprint(model, image_ids, settings), overwrite, held)
            )
        shard = processes.shard(len(image_ids), batch_size)
        runs: dict[str | None, list[Degradation]] = {None: [], **degraded_runs}
        gathered: dict[str | None, dict] = {}
        started = time.perf_counter()
        with eval_mode(model):
            for spec, run_degradations in runs.items():
                parts = processes.all_succeed(
                    _predict_shard,
                    model,
                    processor,
                    dataset,
                    image_ids,
                    shard,
                    settings,
                    run_degradations,
                    spec,
                    folder,
                    processes.process_index,
                    skip_unreadable_images,
                    progress and processes.is_main_process,
                )
                gathered[spec] = {
                    "records": [record for part in parts for record in part["records"]],
                    "skipped": [item for part in parts for item in part["skipped"]],
                }
        logger.info("Predicted %d images x %d runs in %.1f s", len(image_ids), len(runs), time.perf_counter() - started)
        run = {
            **(run_info or {}),
            "region_source": region_source,
            "protocol": protocol,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "degradations": list(degraded_runs),
            "with_meteor": with_meteor,
            "detection_score": detection_score,
            "detection_threshold": detection_threshold(detection_score, thresholds),
            "num_processes": processes.num_processes,
            "torch_threads": torch.get_num_threads(),
            "dtype": str(model.dtype).removeprefix("torch."),
        }
        return processes.on_main(
            _score_and_write,
            gathered,
            image_ids,
            thresholds,
            run,
            folder,
            with_meteor=with_meteor,
            detection_score=detection_score,
            protocol=protocol,
            model_name=model_name or f"ForgeryTalker ({region_source} regions)",
        )


def _score_and_write(
    gathered: Mapping[str | None, Mapping],
    image_ids: Sequence[str],
    thresholds: Mapping[str, float],
    run: Mapping[str, object],
    folder: OutputFolder | None,
    *,
    with_meteor: bool,
    detection_score: str,
    protocol: str,
    model_name: str,
) -> dict:
    """On the main process: puts every run's records in split order, scores them, writes and installs the files."""
    ordered = {spec: records_in_order(part["records"], image_ids) for spec, part in gathered.items()}
    for spec, part in gathered.items():
        covered = {item["image_id"] for item in part["skipped"]} | {record["image_id"] for record in ordered[spec]}
        missing = [image_id for image_id in image_ids if image_id not in covered]
        if missing:
            raise RuntimeError(f"No prediction was made for image(s) {missing[:10]} ({spec or 'clean run'})")
    clean = ordered.pop(None)
    document = score_runs(
        clean, ordered, thresholds, with_meteor=with_meteor, detection_score=detection_score, protocol=protocol
    )
    document["run"] = dict(run)
    position = {image_id: index for index, image_id in enumerate(image_ids)}
    document["skipped_images"] = sorted(gathered[None]["skipped"], key=lambda item: position[item["image_id"]])
    if folder is not None:
        with writing(folder):
            write_predictions(folder, None, clean)
            for spec, records in ordered.items():
                write_predictions(folder, spec, records)
            write_report(folder.staged, document, model_name)
            complete(folder)
    return document
