"""Times the prediction loop of `forgerytalker evaluate` against `model.generate` alone; prints JSON.

Both use the same tiny model (`forgerytalker.tiny`), the same images and the same batches, interleaved in one
process so that both see the same machine load:

- *generate*: the batches are decoded and preprocessed beforehand; only the `model.generate` calls are timed.
- *loop*: `forgerytalker.evaluation.prediction.predict_records` with a `RunWriter`, as `evaluate` runs it: PNG
  decoding of image and mask, preprocessing, `generate`, post-processing at the original size, pixel counts,
  mask PNG and record writing.

Target: loop <= 1.15x generate (decoding, resizing and writing are not the bottleneck). The images are generated
here (smooth random "faces" with elliptic masks, stored as PNG at MMTT's 512 x 512), so no test extras are needed.

    python benchmarks/bench_evaluate.py --preset small --images 32 --batch-size 8 --num-threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from _machine import load_average, machine_state
from forgerytalker.data.features import MMTT_FEATURES
from forgerytalker.evaluation.output_folder import RunWriter, prepare_output_folder
from forgerytalker.evaluation.prediction import PredictionSettings, predict_records
from forgerytalker.evaluation.runner import model_thresholds
from forgerytalker.evaluation.samples import iter_samples
from forgerytalker.tiny import build_tiny_model_and_processor

TARGET_RATIO = 1.15


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_split(count: int, size: int, seed: int = 0) -> Dataset:
    """`count` samples with the columns of a converted MMTT split: smooth colour images and elliptic masks."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(-1, 1, size)[:, None]
    columns = np.linspace(-1, 1, size)[None, :]
    samples = {name: [] for name in MMTT_FEATURES}
    for index in range(count):
        centre, radius = rng.uniform(-0.4, 0.4, 2), rng.uniform(0.1, 0.4, 2)
        inside = ((rows - centre[0]) / radius[0]) ** 2 + ((columns - centre[1]) / radius[1]) ** 2 < 1
        shading = 0.5 + 0.3 * np.cos(3 * rows + rng.uniform(0, 6)) * np.cos(3 * columns + rng.uniform(0, 6))
        image = shading[..., None] * rng.uniform(80, 255, 3) + rng.normal(0, 8, (size, size, 3))
        samples["image_id"].append(f"bench-{index:05d}")
        samples["image"].append({"bytes": png(np.clip(image, 0, 255).astype(np.uint8)), "path": None})
        samples["mask"].append({"bytes": png(inside.astype(np.uint8) * 255), "path": None})
        samples["caption"].append("the left eye looks blurry and the skin around the nose is too smooth")
        samples["regions"].append([0, 4, 15])
        samples["method"].append("face_swap")
        samples["source"].append("synthetic")
        samples["extra"].append("{}")  # MMTT_FEATURES' column for the record's other fields
    return Dataset.from_dict(samples, features=MMTT_FEATURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--photo-size", type=int, default=512, help="side of the stored images (MMTT: 512)")
    parser.add_argument(
        "--preset",
        choices=("tiny", "small"),
        default="small",
        help="small: bench_generate.py's model with the real model's proportions (224 px, the language model "
        "dominating); tiny: --image-size/--hidden-size",
    )
    parser.add_argument("--image-size", type=int, default=64, help="the tiny preset's input side")
    parser.add_argument("--hidden-size", type=int, default=64, help="the tiny preset's width")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    load_before = load_average()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    dataset = synthetic_split(args.images, args.photo_size)
    texts = list(dataset["caption"])
    if args.preset == "small":
        from bench_generate import build  # the proportions of the real model, scaled to a CPU (same folder)

        model, processor = build("small")
    else:
        model, processor = build_tiny_model_and_processor(
            "llama", image_size=args.image_size, hidden_size=args.hidden_size, texts=texts
        )
    model.eval()
    settings = PredictionSettings("predicted", args.max_new_tokens, model_thresholds(model)["mask_threshold"], args.batch_size)
    indices = list(range(len(dataset)))

    samples = list(iter_samples(dataset))
    batches = [
        processor(images=[sample.image for sample in samples[start : start + args.batch_size]])
        for start in range(0, len(samples), args.batch_size)
    ]

    def pure_generate() -> float:
        seconds = 0.0
        for inputs in batches:
            start = time.perf_counter()
            with torch.inference_mode():
                model.generate(**inputs, region_source="predicted", max_new_tokens=args.max_new_tokens)
            seconds += time.perf_counter() - start
        return seconds

    def evaluation_loop() -> float:
        with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as folder:
            prepared = prepare_output_folder(folder, {"bench": True}, overwrite=True)
            writer = RunWriter(prepared, None, 0)
            start = time.perf_counter()
            records = predict_records(model, processor, dataset, indices, settings, writer=writer, progress=False)
            seconds = time.perf_counter() - start
            writer.close()
        assert len(records) == len(indices)
        return seconds

    pure_generate(), evaluation_loop()  # warm-up
    loop_times, generate_times = [], []
    for _ in range(args.repeats):
        loop_times.append(evaluation_loop())
        generate_times.append(pure_generate())
    loop, generate = statistics.median(loop_times), statistics.median(generate_times)
    print(json.dumps({
        "benchmark": "evaluate prediction loop vs pure model.generate (same model, images and batches)",
        "images": args.images,
        "batch_size": args.batch_size,
        "photo_size": args.photo_size,
        "preset": args.preset,
        "model_image_size": model.config.prompter_config.image_size,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15_min": [round(value, 2) for value in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "machine": machine_state(load_before),
        "loop_seconds_median": round(loop, 4),
        "generate_seconds_median": round(generate, 4),
        "ratio": round(loop / generate, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": loop / generate <= TARGET_RATIO,
    }, indent=2))


if __name__ == "__main__":
    main()
