"""The prediction loop of an evaluation: `model.generate` over the samples, with the work around it overlapped.

While `generate` runs on one batch, a background thread decodes, degrades and preprocesses the next batches
(`prefetched_batches`), and a small thread pool reduces each finished image to its pixel counts, encodes its mask
PNG and records it (`predict_records`). So decoding, resizing and writing take no time between `generate` calls;
`benchmarks/bench_evaluate.py` measures the loop against `generate` alone.

One record per image (a line of `predictions.jsonl`, `prediction_record`) holds everything the metrics need,
so records from several processes, or from an interrupted run, are scored exactly like those of one run.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..regions import REGION_NAMES
from .degradations import Degradation, apply_degradations
from .detection_metrics import mask_area_score
from .mask_metrics import count_mask_pair, resize_like_release
from .output_folder import RunWriter
from .samples import EvaluationSample, iter_samples

logger = logging.getLogger(__name__)

PREFETCHED_BATCHES = 2
"""Batches decoded and preprocessed ahead of `generate`."""
OUTPUT_THREADS = 2
"""Threads counting, encoding and writing finished masks."""


@dataclass(frozen=True)
class PredictionSettings:
    """What decides a prediction (besides the model and the image).

    Attributes:
        region_source: "predicted", "ground_truth" or "none": where the instruction's regions come from.
        max_new_tokens: longest report, in tokens.
        mask_threshold: the model's `config.mask_threshold`: a pixel is forged where p > this.
        batch_size: images per `generate` call (batched results equal one-at-a-time results).
        protocol: "forgerytalker" or "official" (`conventions.EVALUATION_PROTOCOLS`): how masks are binarised
            and resized.
    """

    region_source: str
    max_new_tokens: int
    mask_threshold: float
    batch_size: int = 8
    protocol: str = "forgerytalker"


@dataclass
class PreparedBatch:
    """A batch ready for `generate`: its samples, the processor's inputs and each (degraded) image's (H, W)."""

    samples: list[EvaluationSample]
    inputs: Mapping
    sizes: list[tuple[int, int]]


def prefetched_batches(
    processor,
    samples: Iterable[EvaluationSample],
    settings: PredictionSettings,
    degradations: Sequence[Degradation],
    lock: threading.Lock,
) -> Iterator[PreparedBatch]:
    """Yields `PreparedBatch`es built in a background thread, up to `PREFETCHED_BATCHES` ahead.

    An error in the thread (an unreadable image) is raised here, at the batch it concerns; closing the iterator
    stops the thread. `lock` serialises the processor's tokenizers with other threads using them.
    """
    ready: queue.Queue = queue.Queue(maxsize=PREFETCHED_BATCHES)
    stop = threading.Event()
    finished = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            iterator = iter(samples)
            while batch := list(islice(iterator, settings.batch_size)):
                images = [apply_degradations(sample.image, degradations) for sample in batch]
                regions = [sample.regions for sample in batch] if settings.region_source == "ground_truth" else None
                with lock:
                    inputs = processor(images=images, region_labels=regions)
                if not put(PreparedBatch(batch, inputs, [(image.height, image.width) for image in images])):
                    return
            put(finished)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)

    thread = threading.Thread(target=produce, name="evaluation-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def generate_batches(
    model,
    processor,
    samples: Iterable[EvaluationSample],
    settings: PredictionSettings,
    degradations: Sequence[Degradation] = (),
    lock: threading.Lock | None = None,
) -> Iterator[tuple[PreparedBatch, Mapping]]:
    """Runs `model.generate` over `samples`, `settings.batch_size` images at a time, on inputs prefetched in the
    background (`prefetched_batches`); yields each `PreparedBatch` with the model's generation output.

    `lock` is the one the caller holds while it uses the processor's tokenizers in other threads.
    """
    lock = lock or threading.Lock()
    with contextlib.closing(prefetched_batches(processor, samples, settings, degradations, lock)) as batches:
        for batch in batches:
            inputs = batch.inputs.to(device=model.device, dtype=model.dtype)  # floating inputs only
            with torch.inference_mode():
                outputs = model.generate(
                    **inputs, region_source=settings.region_source, max_new_tokens=settings.max_new_tokens
                )
            yield batch, outputs


def post_process(processor, batch: PreparedBatch, outputs, settings: PredictionSettings, lock: threading.Lock) -> list[dict]:
    """`processor.post_process_generation` of one batch: masks at each image's size, forged where
    p > `settings.mask_threshold`.

    Protocol "official" thresholds the masks at the model's resolution and resizes them to each ground truth's
    size as the release does (`mask_metrics.resize_like_release`).
    """
    if settings.protocol != "official":
        with lock:
            return processor.post_process_generation(outputs, target_sizes=batch.sizes, mask_threshold=settings.mask_threshold)
    with lock:
        predictions = processor.post_process_generation(outputs, mask_threshold=settings.mask_threshold)
    for sample, prediction in zip(batch.samples, predictions):
        prediction["mask"] = torch.from_numpy(resize_like_release(prediction["mask"].cpu().numpy(), sample.mask.shape))
    return predictions


def predict_batches(
    model,
    processor,
    samples: Iterable[EvaluationSample],
    settings: PredictionSettings,
    degradations: Sequence[Degradation] = (),
) -> Iterator[tuple[EvaluationSample, dict]]:
    """Runs `model.generate` over `samples` and yields `(sample, prediction)`, one image at a time.

    Each image is degraded (`apply_degradations`) before the processor. `prediction` is what
    `processor.post_process_generation` gives: `report`, `regions`, `region_probabilities`,
    `instruction_regions`, `mask` (bool (H, W) at the image's size, forged where p > `settings.mask_threshold`)
    and `mask_confidence`.
    """
    lock = threading.Lock()
    with contextlib.closing(generate_batches(model, processor, samples, settings, degradations, lock)) as generated:
        for batch, outputs in generated:
            yield from zip(batch.samples, post_process(processor, batch, outputs, settings, lock))


def prediction_record(sample: EvaluationSample, prediction: Mapping, mask: np.ndarray, mask_path: str | None) -> dict:
    """One line of `predictions.jsonl`: the prediction, its reference, detection scores and mask metrics.

    Args:
        sample: the evaluated sample.
        prediction: its `post_process_generation` entry.
        mask: `prediction["mask"]` as a bool (H, W) array.
        mask_path: the mask file relative to the run's folder (`None` when no files are written).

    `mask_pixels` holds the pixel counts every mask metric follows from (cIoU included); `IoU`, `Precision` and
    `Recall` are this image's values on the 0-100 scale.
    """
    counts = count_mask_pair(sample.image_id, mask, sample.mask)
    probabilities = prediction["region_probabilities"]
    return {
        "image_id": sample.image_id,
        "method": sample.method,
        "report": prediction["report"],
        "reference": sample.reference,
        "regions": prediction["regions"],
        "region_probabilities": probabilities,
        **({} if prediction.get("located_region_probabilities") is None else {"located_region_probabilities": prediction["located_region_probabilities"]}),
        "instruction_regions": prediction["instruction_regions"],
        "target_regions": sample.regions,
        "mask": mask_path,
        "mask_confidence": prediction["mask_confidence"],
        "detection_scores": {"region": max(probabilities[name] for name in REGION_NAMES), "mask_area": mask_area_score(mask)},
        "mask_pixels": {"intersection": counts.intersection, "predicted": counts.predicted, "target": counts.target},
        "IoU": counts.iou,
        "Precision": counts.precision,
        "Recall": counts.recall,
    }


def _finish_batch(
    processor, batch: PreparedBatch, outputs, settings: PredictionSettings, lock: threading.Lock, writer: RunWriter | None
) -> list[dict]:
    """Post-processes one generated batch and counts, writes and records each image (its mask first, then its
    record, so that a recorded prediction always has its mask file)."""
    records = []
    for sample, prediction in zip(batch.samples, post_process(processor, batch, outputs, settings, lock)):
        mask = prediction["mask"].cpu().numpy()
        mask_path = writer.write_mask(sample.image_id, mask) if writer is not None else None
        record = prediction_record(sample, prediction, mask, mask_path)
        if writer is not None:
            writer.append(record)
        records.append(record)
    return records


def predict_records(
    model,
    processor,
    dataset: Dataset,
    indices: Sequence[int],
    settings: PredictionSettings,
    *,
    degradations: Sequence[Degradation] = (),
    writer: RunWriter | None = None,
    skipped: list[dict] | None = None,
    progress: bool = True,
    description: str = "evaluate",
) -> list[dict]:
    """Predicts the rows `indices` of `dataset`; returns their `prediction_record`s, in order.

    Only `generate` runs in the calling thread: decoding and preprocessing run ahead in a background thread, and
    post-processing, counting and writing (with `writer`: each mask PNG and its record as soon as they are
    done) in `OUTPUT_THREADS` threads. `skipped` is as in `samples.iter_samples`.
    """
    records: list[dict] = []
    lock = threading.Lock()
    samples = iter_samples(dataset, skipped, indices, settings.protocol)
    bar = tqdm(total=len(indices), desc=description, unit="image", disable=not progress)
    pending: deque[Future] = deque()

    def collect(future: Future) -> None:
        finished = future.result()
        records.extend(finished)
        bar.update(len(finished))

    with (
        contextlib.closing(generate_batches(model, processor, samples, settings, degradations, lock)) as generated,
        ThreadPoolExecutor(OUTPUT_THREADS, thread_name_prefix="evaluation-output") as pool,
    ):
        try:
            for batch, outputs in generated:
                pending.append(pool.submit(_finish_batch, processor, batch, outputs, settings, lock, writer))
                while pending and (pending[0].done() or len(pending) > OUTPUT_THREADS):
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        finally:
            bar.close()  # on an error, leaving the pool still finishes (and records) the batches generated
    return records


def records_in_order(records: Iterable[Mapping], image_ids: Sequence[str]) -> list[dict]:
    """`records` sorted in split order (`image_ids`); raises if an id has two records or an unknown id."""
    by_id: dict[str, dict] = {}
    for record in records:
        if record["image_id"] in by_id:
            raise ValueError(f"Image {record['image_id']!r} was predicted twice")
        by_id[record["image_id"]] = dict(record)
    order = {image_id: index for index, image_id in enumerate(image_ids)}
    unknown = sorted(set(by_id) - set(order))
    if unknown:
        raise ValueError(f"Predictions for image(s) outside the evaluated split: {unknown[:10]}")
    return sorted(by_id.values(), key=lambda record: order[record["image_id"]])
