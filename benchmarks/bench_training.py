"""Training throughput (samples/s) of each stage on the tiny config, on this machine's CPU; prints JSON.

Writes a small dataset in the converted MMTT layout (random pictures with an elliptic forged area, reports
naming one or two regions: throughput does not depend on what the pictures show) and trains each stage for
a few steps in this process (one Accelerate process). Needs only the package itself, not its test extras.

    python benchmarks/bench_training.py --steps 30 --batch-size 4
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from _machine import load_average, machine_state


def make_dataset(folder: Path, samples: int, image_size: int = 64, seed: int = 0) -> Path:
    """A `load_dataset`-able folder with a train split of `samples` random forgeries (the columns of
    `forgerytalker.data.features.MMTT_FEATURES`)."""
    from datasets import Dataset

    from forgerytalker.hub_cards.dataset_card import shard_file_name
    from forgerytalker.data.features import MMTT_FEATURES
    from forgerytalker.data.methods import METHODS
    from forgerytalker.regions import REGION_NAMES, REGION_TO_INDEX, caption_to_regions

    rng = np.random.default_rng(seed)
    rows = {name: [] for name in MMTT_FEATURES}
    for index in range(samples):
        picture = Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))
        mask = Image.new("L", (image_size, image_size))
        left, top = (int(v) for v in rng.integers(0, image_size // 2, 2))
        ImageDraw.Draw(mask).ellipse((left, top, left + image_size // 3, top + image_size // 4), fill=255)
        first, second = rng.choice(REGION_NAMES, 2, replace=False)
        caption = f"The {first} looks blurry and the skin near the {second} has an unnatural tone."
        rows["image_id"].append(f"bench-{index:05d}")
        rows["image"].append({"bytes": _png(picture), "path": None})
        rows["mask"].append({"bytes": _png(mask), "path": None})
        rows["caption"].append(caption)
        rows["regions"].append([REGION_TO_INDEX[name] for name in caption_to_regions(caption)])
        rows["method"].append(METHODS[index % 5])
        rows["source"].append("synthetic")
        rows["extra"].append("{}")
    dataset = folder / "dataset"
    Dataset.from_dict(rows, features=MMTT_FEATURES).to_parquet(str(dataset / shard_file_name("train", 0, 1)))
    return dataset


def _png(picture: Image.Image) -> bytes:
    stored = io.BytesIO()
    picture.save(stored, format="PNG")
    return stored.getvalue()


def throughput(stage: str, dataset: Path, output_dir: Path, steps: int, batch_size: int, image_size: int) -> dict:
    from accelerate.state import AcceleratorState, GradientState

    from forgerytalker.training.arguments import ForgeryTalkerTrainingArguments
    from forgerytalker.training.output_folder import LOG_FILE
    from forgerytalker.training.trainer import train

    args = ForgeryTalkerTrainingArguments(
        stage=stage, dataset=str(dataset), output_dir=str(output_dir), tiny_model=True, tiny_image_size=image_size,
        validation_split=None, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
        logging_steps=5, save_steps=10 * steps, report_to_tensorboard=False,
    )
    train(args)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    records = [json.loads(line) for line in (output_dir / LOG_FILE).read_text().splitlines()]
    rates = [record["samples_per_second"] for record in records if "samples_per_second" in record][1:]  # skip warm-up
    return {"samples_per_second": round(statistics.median(rates), 2), "steps": steps, "batch_size": batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    load_before = load_average()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        dataset = make_dataset(folder, args.samples, args.image_size)
        results = {
            stage: throughput(stage, dataset, folder / stage, args.steps, args.batch_size, args.image_size)
            for stage in ("prompter", "joint")
        }
    print(json.dumps({"benchmark": "training throughput, tiny config, 1 process (CPU)", "image_size": args.image_size,
                      "torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0], **results,
                      "machine": machine_state(load_before)},
                     indent=2))


if __name__ == "__main__":
    main()
