"""Forgery-mask metrics: per-image IoU / precision / recall and dataset-level cIoU.

Each (prediction, ground truth) pair is reduced to four pixel counts (`MaskCounts`), so a stream of any length
is evaluated without holding its masks in memory; the summary is computed from the counts. The rules
(binarization, resize, empty masks) are those of `conventions.py`; predictions given as probabilities are
compared with the model's `config.mask_threshold`, passed as `threshold`.

Example:

```python
accumulator = accumulate_mask_counts(
    ((image_id, prediction, mask) for image_id, prediction, mask in stream), threshold=model.config.mask_threshold
)
accumulator.compute()  # {"IoU": ..., "Precision": ..., "Recall": ..., "cIoU": ..., "num_images": ...}
```
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import islice

import numpy as np
from PIL import Image

from .. import image_utils
from .conventions import EMPTY_UNION_IOU, METRIC_SCALE, OFFICIAL_MASK_GREY_THRESHOLD, binarize, check_image_ids

logger = logging.getLogger(__name__)

MaskLike = np.ndarray | str | os.PathLike
"""A mask given as an array of shape (H, W), or as the path of an image file or a `.npy` file holding one."""


@dataclass(frozen=True)
class MaskCounts:
    """The pixel counts of one image from which every mask metric follows.

    Attributes:
        image_id: the image's id.
        intersection: |P and G|, pixels forged in both prediction and ground truth.
        predicted: |P|, pixels forged in the (resized) prediction.
        target: |G|, pixels forged in the ground truth.
    """

    image_id: str
    intersection: int
    predicted: int
    target: int

    @property
    def union(self) -> int:
        """|P or G|."""
        return self.predicted + self.target - self.intersection

    @property
    def iou(self) -> float:
        """Per-image IoU on the 0-100 scale; `EMPTY_UNION_IOU` when both masks are empty."""
        return METRIC_SCALE * (self.intersection / self.union if self.union else EMPTY_UNION_IOU)

    @property
    def precision(self) -> float:
        """Per-image precision on the 0-100 scale; an empty prediction scores 1 if the ground truth is empty, else 0."""
        if self.predicted == 0:
            return METRIC_SCALE * float(self.target == 0)
        return METRIC_SCALE * self.intersection / self.predicted

    @property
    def recall(self) -> float:
        """Per-image recall on the 0-100 scale; an empty ground truth scores 1 if the prediction is empty, else 0."""
        if self.target == 0:
            return METRIC_SCALE * float(self.predicted == 0)
        return METRIC_SCALE * self.intersection / self.target

    def to_record(self) -> dict:
        """The counts and the per-image metrics as a plain dict (one row of a per-image table)."""
        return {
            **asdict(self),
            "union": self.union,
            "IoU": self.iou,
            "Precision": self.precision,
            "Recall": self.recall,
        }


def load_mask(mask: MaskLike) -> np.ndarray:
    """Returns a mask array: arrays as given, `.npy` files as stored, image files as a bool (H, W) map.

    Image files are read with `forgerytalker.image_utils.load_mask` (forged where any colour band > 0, alpha
    ignored): the one mask rule of the processor, the converter and these metrics.
    """
    if not isinstance(mask, (str, os.PathLike)):
        return np.asarray(mask)
    if os.fspath(mask).endswith(".npy"):
        return np.load(mask)
    return image_utils.load_mask(mask)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a mask of shape (h, w) to `size` = (H, W) by pixel-centre nearest neighbour.

    Output pixel (i, j) takes input pixel (floor((i + 0.5) * h / H), floor((j + 0.5) * w / W)); dtype is kept.
    (PIL's NEAREST and OpenCV's INTER_NEAREST_EXACT agree except where that product is an exact integer.)
    """
    height, width = size
    rows = ((np.arange(height) + 0.5) * (mask.shape[0] / height)).astype(np.intp)
    columns = ((np.arange(width) + 0.5) * (mask.shape[1] / width)).astype(np.intp)
    return mask[rows[:, None], columns[None, :]]


def resize_like_release(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Protocol "official": a boolean (h, w) prediction as the release scores it at `size` = (H, W): saved as a
    0/255 grey picture, resized with PIL's `Image.NEAREST`, forged where > `OFFICIAL_MASK_GREY_THRESHOLD`."""
    picture = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L")
    height, width = size
    return np.asarray(picture.resize((width, height), Image.NEAREST)) > OFFICIAL_MASK_GREY_THRESHOLD


def count_mask_pair(
    image_id: str, prediction: MaskLike | None, ground_truth: MaskLike, threshold: float | None = None
) -> MaskCounts:
    """Reduces one (prediction, ground truth) pair to its `MaskCounts`.

    Args:
        image_id: named in every error.
        prediction: shape (h, w); bool, integer (forged where non-zero) or probabilities in [0, 1] (forged where
            p > `threshold`); resized to the ground truth's size by nearest neighbour when it differs. `None` (a
            missing prediction) raises `ValueError`.
        ground_truth: shape (H, W) or (H, W, C), or an image file; forged where any colour band > 0
            (`image_utils.forged_pixels`).
        threshold: the model's `config.mask_threshold`; required when `prediction` holds probabilities.
    """
    if prediction is None:
        raise ValueError(f"No predicted mask for image {image_id!r}: every evaluated image needs a prediction")
    what = f"ground-truth mask of image {image_id!r}"
    try:
        target = _check_2d(image_utils.forged_pixels(load_mask(ground_truth)), what)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The {what} is unusable: {error}") from error
    predicted = binarize(
        _check_2d(load_mask(prediction), f"predicted mask of image {image_id!r}"),
        f"predicted mask of image {image_id!r}",
        threshold,
    )
    if predicted.shape != target.shape:
        predicted = resize_nearest(predicted, target.shape)
    return MaskCounts(
        image_id=image_id,
        intersection=int(np.count_nonzero(predicted & target)),
        predicted=int(np.count_nonzero(predicted)),
        target=int(np.count_nonzero(target)),
    )


def _check_2d(mask: np.ndarray, what: str) -> np.ndarray:
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"The {what} must have shape (H, W) with H, W > 0, got {mask.shape}")
    return mask


def summarize_mask_counts(counts: Iterable[MaskCounts]) -> dict[str, float | int]:
    """The mask metrics of a set of images on the 0-100 scale.

    Returns:
        `{"IoU", "Precision", "Recall"}`: means of the per-image values; `"cIoU"`: sum of intersections over sum of
        unions (`EMPTY_UNION_IOU` when every union is empty); `"num_images"`.
    """
    table = np.array([(c.intersection, c.predicted, c.target) for c in counts], dtype=np.int64).reshape(-1, 3)
    if not len(table):
        raise ValueError("No images to compute mask metrics on")
    intersection, predicted, target = table.T
    union = predicted + target - intersection
    iou = np.where(union > 0, intersection / np.maximum(union, 1), EMPTY_UNION_IOU)
    precision = np.where(predicted > 0, intersection / np.maximum(predicted, 1), target == 0)
    recall = np.where(target > 0, intersection / np.maximum(target, 1), predicted == 0)
    total_union = int(union.sum())
    ciou = intersection.sum() / total_union if total_union else EMPTY_UNION_IOU
    return {
        "IoU": METRIC_SCALE * float(iou.mean()),
        "Precision": METRIC_SCALE * float(precision.mean()),
        "Recall": METRIC_SCALE * float(recall.mean()),
        "cIoU": METRIC_SCALE * float(ciou),
        "num_images": len(table),
    }


class MaskMetricAccumulator:
    """Collects `MaskCounts` image by image; `compute()` gives the summary, `records()` the per-image rows.

    An image id may be added once only.
    """

    def __init__(self) -> None:
        self._counts: dict[str, MaskCounts] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def add(
        self, image_id: str, prediction: MaskLike | None, ground_truth: MaskLike, threshold: float | None = None
    ) -> MaskCounts:
        """Counts one pair (see `count_mask_pair`) and keeps its counts."""
        return self.add_counts(count_mask_pair(image_id, prediction, ground_truth, threshold))

    def add_counts(self, counts: MaskCounts) -> MaskCounts:
        if counts.image_id in self._counts:
            raise ValueError(f"Image {counts.image_id!r} was already evaluated")
        self._counts[counts.image_id] = counts
        return counts

    @property
    def counts(self) -> dict[str, MaskCounts]:
        """image_id -> `MaskCounts`, in the order added."""
        return dict(self._counts)

    def compute(self) -> dict[str, float | int]:
        """`summarize_mask_counts` over every image added."""
        return summarize_mask_counts(self._counts.values())

    def records(self) -> list[dict]:
        """One `MaskCounts.to_record()` dict per image, in the order added."""
        return [counts.to_record() for counts in self._counts.values()]


def pair_masks(
    predictions: Mapping[str, MaskLike], ground_truths: Iterable[tuple[str, MaskLike]]
) -> Iterator[tuple[str, MaskLike, MaskLike]]:
    """Joins predictions (image_id -> mask) to a stream of (image_id, ground truth) pairs.

    Yields (image_id, prediction, ground truth). A ground-truth image without a prediction raises at that image;
    once the stream is exhausted, predictions for images it did not contain raise too (`ImageIdMismatchError`).
    """
    seen = []
    for image_id, ground_truth in ground_truths:
        if image_id not in predictions:
            check_image_ids([image_id], [], "Predicted masks are")
        seen.append(image_id)
        yield image_id, predictions[image_id], ground_truth
    check_image_ids(seen, predictions.keys(), "Predicted masks are")


def accumulate_mask_counts(
    pairs: Iterable[tuple[str, MaskLike | None, MaskLike]],
    num_workers: int = 1,
    batch_size: int = 64,
    threshold: float | None = None,
) -> MaskMetricAccumulator:
    """Counts a stream of (image_id, prediction, ground truth) triples, reading mask files in worker processes.

    Args:
        pairs: any iterable, consumed lazily; masks may be arrays or file paths. A `None` prediction raises
            `ValueError` naming the image.
        num_workers: processes reading and counting batches that name a mask file; 1 does everything here.
            Batches of arrays only are always counted in this process: counting a 512 x 512 pair takes well
            under a millisecond, far less than sending its arrays to a worker.
        batch_size: pairs per batch. At most 2 x `num_workers` batches are in flight, which bounds the memory
            used whatever the stream's length.
        threshold: the model's `config.mask_threshold`, for predictions given as probabilities.

    Returns:
        A `MaskMetricAccumulator` holding the counts of every pair, in stream order.
    """
    accumulator = MaskMetricAccumulator()
    iterator = iter(pairs)
    batches = iter(lambda: list(islice(iterator, batch_size)), [])
    count = functools.partial(_count_batch, threshold=threshold)
    if num_workers <= 1:
        for batch in batches:
            _add_all(accumulator, count(batch))
        return accumulator
    with _worker_context().Pool(num_workers) as pool:
        in_flight: deque = deque()
        for batch in batches:
            names_a_file = any(isinstance(mask, (str, os.PathLike)) for pair in batch for mask in pair[1:])
            in_flight.append(pool.apply_async(count, (batch,)) if names_a_file else count(batch))
            while len(in_flight) > 2 * num_workers or (in_flight and isinstance(in_flight[0], list)):
                _add_all(accumulator, _result(in_flight.popleft()))
        while in_flight:
            _add_all(accumulator, _result(in_flight.popleft()))
    logger.debug("Counted %d mask pairs with %d worker processes", len(accumulator), num_workers)
    return accumulator


def _result(batch_result) -> list[MaskCounts]:
    """A batch's counts: counted here already (a list) or by a worker (an `AsyncResult`)."""
    return batch_result if isinstance(batch_result, list) else batch_result.get()


def _worker_context() -> multiprocessing.context.BaseContext:
    """Forks where possible: the workers only run numpy and PIL, and a spawned worker would spend seconds
    re-importing the package (transformers included) before counting anything."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _count_batch(batch: list[tuple[str, MaskLike | None, MaskLike]], threshold: float | None) -> list[MaskCounts]:
    return [count_mask_pair(*pair, threshold=threshold) for pair in batch]


def _add_all(accumulator: MaskMetricAccumulator, counts: list[MaskCounts]) -> None:
    for item in counts:
        accumulator.add_counts(item)
