"""Training throughput (samples/s) of each stage on the tiny config, on this machine's CPU; prints JSON.

Synthesizes a small dataset from two sample faces (scikit-image's astronaut, matplotlib's Grace Hopper),
converts it, and trains each stage for a few steps in this process (one Accelerate process).

    python benchmarks/bench_training.py --steps 30 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
from pathlib import Path

from PIL import Image


def make_dataset(folder: Path, samples: int) -> Path:
    from matplotlib import cbook
    from skimage import data

    from forgerytalker.data.mmtt import convert_mmtt
    from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize

    faces = folder / "faces"
    faces.mkdir()
    Image.fromarray(data.astronaut()).save(faces / "astronaut.png")
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), faces / "grace_hopper.jpg")
    synthesize(SynthesisConfig(faces, folder / "layout", samples, seed=0, max_upscale=4.0, show_progress=False))
    convert_mmtt(folder / "layout", folder / "dataset")
    return folder / "dataset"


def throughput(stage: str, dataset: Path, output_dir: Path, steps: int, batch_size: int, image_size: int) -> dict:
    from forgerytalker.training.arguments import ForgeryTalkerTrainingArguments
    from forgerytalker.training.trainer import LOG_FILE, train

    args = ForgeryTalkerTrainingArguments(
        stage=stage, dataset=str(dataset), output_dir=str(output_dir), tiny_model=True, tiny_image_size=image_size,
        validation_split=None, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
        logging_steps=5, save_steps=10 * steps, report_to_tensorboard=False,
    )
    train(args)
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
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        dataset = make_dataset(folder, args.samples)
        results = {
            stage: throughput(stage, dataset, folder / stage, args.steps, args.batch_size, args.image_size)
            for stage in ("prompter", "joint")
        }
    print(json.dumps({"benchmark": "training throughput, tiny config, 1 process (CPU)", "image_size": args.image_size,
                      **results}, indent=2))


if __name__ == "__main__":
    main()
