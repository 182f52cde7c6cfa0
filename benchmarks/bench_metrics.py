"""Benchmark of the metric layer at MMTT's test size: text metrics on report pairs, mask metrics on mask pairs.

    python benchmarks/bench_metrics.py --pairs 12800 --meteor-pairs 2000

Text: synthetic reports of about 27 words (MMTT's mean caption length) through the PTB tokenizer, BLEU-1..4,
ROUGE-L and CIDEr (target: at most 60 s without METEOR); METEOR is timed separately on `--meteor-pairs` pairs.
Masks: 512 x 512 random-blob masks, ground truth as uint8 0/255 and predictions as float32 probabilities
(binarised at `--mask-threshold`, the model config's default unless given), counted from arrays in memory and from PNG files, with 1 and 2 processes (target: at most 30 s on two cores).
Distinct masks are drawn once (`--distinct-masks`) and cycled, so the timing is the metric's, not the drawing's.
Mask timings come with the CPU seconds spent (workers included), which stay meaningful on a busy machine.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from _machine import load_average, machine_state
from forgerytalker.configuration_forgerytalker import DEFAULT_MASK_THRESHOLD
from forgerytalker.evaluation import accumulate_mask_counts, compute_text_metrics
from forgerytalker.regions import REGION_NAMES

TEXT_TARGET_SECONDS = 60.0
MASK_TARGET_SECONDS = 30.0
ISSUES = (
    "looks blurry",
    "has an unnatural texture",
    "shows odd lighting",
    "is distorted",
    "has smeared edges",
    "is asymmetric",
    "appears too smooth",
    "has a mismatched color",
)
FILLERS = ("the", "left", "right", "slightly", "and", "while", "around", "near", "with", "visible", "artifacts")


def synthetic_report(rng: np.random.Generator, num_words: int = 27) -> str:
    """A report-like sentence sequence of about `num_words` words naming regions and issues."""
    words: list[str] = []
    while len(words) < num_words:
        words += ["The", str(rng.choice(REGION_NAMES)), *str(rng.choice(ISSUES)).split()]
        words += [str(word) for word in rng.choice(FILLERS, size=3)]
    return " ".join(words[:num_words]) + "."


def bench_text(num_pairs: int, num_meteor_pairs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    predictions = {f"{index:06d}": synthetic_report(rng) for index in range(num_pairs)}
    references = {image_id: synthetic_report(rng) for image_id in predictions}
    start = time.perf_counter()
    metrics = compute_text_metrics(predictions, references)
    seconds = time.perf_counter() - start
    meteor_ids = list(predictions)[:num_meteor_pairs]
    start = time.perf_counter()
    meteor = compute_text_metrics(
        {i: predictions[i] for i in meteor_ids}, {i: references[i] for i in meteor_ids}, with_meteor=True
    )
    meteor_seconds = time.perf_counter() - start
    return {
        "pairs": num_pairs,
        "mean_words": float(np.mean([len(report.split()) for report in predictions.values()])),
        "seconds_without_meteor": round(seconds, 2),
        "target_seconds_without_meteor": TEXT_TARGET_SECONDS,
        "meets_target": seconds <= TEXT_TARGET_SECONDS,
        "metrics": {key: round(value, 2) for key, value in metrics.items()},
        "meteor_subset": {
            "pairs": len(meteor_ids),
            "seconds_with_meteor": round(meteor_seconds, 2),
            "METEOR": round(meteor["METEOR"], 2),
        },
    }


def random_blob_masks(num_masks: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth uint8 0/255, prediction float32 probabilities) pairs of random ellipses, shape (size, size)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num_masks):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(1, 4)):
            center = tuple(int(value) for value in rng.integers(size // 8, 7 * size // 8, 2))
            axes = tuple(int(value) for value in rng.integers(size // 16, size // 4, 2))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
        shifted = np.roll(mask, tuple(int(value) for value in rng.integers(-size // 20, size // 20, 2)), axis=(0, 1))
        probabilities = cv2.GaussianBlur(shifted.astype(np.float32) / 255, (0, 0), sigmaX=size / 64)
        pairs.append((mask, np.clip(probabilities, 0.0, 1.0)))
    return pairs


def time_counts(pairs, num_workers: int, threshold: float) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (this process and its workers) and the summary of counting `pairs`."""
    start, cpu_start = time.perf_counter(), os.times()
    accumulator = accumulate_mask_counts(pairs, num_workers=num_workers, threshold=threshold)
    wall, cpu_end = time.perf_counter() - start, os.times()
    cpu = sum(cpu_end[:4]) - sum(cpu_start[:4])  # user, system, children's user, children's system
    return wall, cpu, accumulator.compute()


def bench_masks(
    num_pairs: int, size: int, num_distinct: int, workers: list[int], threshold: float, seed: int = 0
) -> dict:
    masks = random_blob_masks(num_distinct, size, seed)
    result: dict = {"pairs": num_pairs, "size": size, "threshold": threshold, "target_seconds": MASK_TARGET_SECONDS}

    def in_memory():
        for index, (ground_truth, prediction) in zip(range(num_pairs), itertools.cycle(masks)):
            yield f"{index:06d}", prediction, ground_truth

    with tempfile.TemporaryDirectory() as directory:
        files = []
        for index, (ground_truth, prediction) in enumerate(masks):
            ground_truth_path, prediction_path = (
                Path(directory, f"{index}_gt.png"),
                Path(directory, f"{index}_pred.png"),
            )
            Image.fromarray(ground_truth).save(ground_truth_path)
            Image.fromarray(((prediction > threshold) * 255).astype(np.uint8)).save(prediction_path)
            files.append((str(prediction_path), str(ground_truth_path)))

        def from_files():
            for index, (prediction, ground_truth) in zip(range(num_pairs), itertools.cycle(files)):
                yield f"{index:06d}", prediction, ground_truth

        for name, source in (("arrays_float32_predictions", in_memory), ("png_files", from_files)):
            timings, cpu_timings = {}, {}
            for num_workers in workers:
                seconds, cpu_seconds, summary = time_counts(source(), num_workers, threshold)
                timings[f"{num_workers}_process"] = round(seconds, 2)
                cpu_timings[f"{num_workers}_process"] = round(cpu_seconds, 2)
            result[name] = {
                "seconds": timings,
                "cpu_seconds": cpu_timings,
                "meets_target": min(timings.values()) <= MASK_TARGET_SECONDS,
            }
    result["metrics"] = {key: round(value, 2) for key, value in summary.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12800, help="report pairs and mask pairs (MMTT test size)")
    parser.add_argument("--meteor-pairs", type=int, default=2000, help="report pairs timed with METEOR")
    parser.add_argument("--size", type=int, default=512, help="mask height and width")
    parser.add_argument("--distinct-masks", type=int, default=256, help="distinct mask pairs drawn and cycled")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time")
    parser.add_argument(
        "--mask-threshold", type=float, default=DEFAULT_MASK_THRESHOLD, help="the model's mask threshold (config default)"
    )
    args = parser.parse_args()
    load_before = load_average()
    result = {
        "load_average_1_5_15_min": [round(value, 2) for value in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "text": bench_text(args.pairs, args.meteor_pairs),
        "masks": bench_masks(args.pairs, args.size, args.distinct_masks, args.workers, args.mask_threshold),
    }
    result["machine"] = machine_state(load_before)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
