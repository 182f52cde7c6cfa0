"""Benchmark of `forgerytalker data convert`: builds a synthetic MMTT layout of N records, converts it, prints JSON.

    python benchmarks/bench_convert.py --records 10000 --num-proc 2

The layout mimics the release (`dataset/celeb512/mat_gan/...`, `dataset/FFHQ512/e4s/...`,
`dataset/FFHQ512/sdxl/...`, 9:1 train/eval files) with small noise images, and 1% bad records (missing
masks) so that validation and reporting are part of the measured work. The target is 10k records in
at most 120 seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

from forgerytalker.data.mmtt import convert_mmtt
from forgerytalker.regions import caption_to_labels

FOLDERS = ("dataset/celeb512/mat_gan/samples_celeb", "dataset/FFHQ512/e4s", "dataset/FFHQ512/sdxl")
CAPTIONS = (
    "The eyes look blurred and the nose has an unnatural outline.",
    "The skin on the cheeks is too smooth and the lips are oddly shaped.",
    "The eyebrows are asymmetric; the hair line near the forehead is smeared.",
)
BAD_EVERY = 100


def build_layout(root: Path, num_records: int, image_size: int, seed: int = 0) -> None:
    """Writes `num_records` image/mask pairs and the two JSON files under `root`."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(num_records):
        folder = FOLDERS[index % len(FOLDERS)]
        image_path, mask_path = f"{folder}/{index:06d}.png", f"{folder}/masks/{index:06d}.png"
        (root / folder / "masks").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(root / image_path)
        if index % BAD_EVERY != BAD_EVERY - 1:
            mask = np.zeros((image_size, image_size), dtype=np.uint8)
            mask[image_size // 4 : image_size // 2, image_size // 4 : 3 * image_size // 4] = 255
            PIL.Image.fromarray(mask).save(root / mask_path)
        caption = CAPTIONS[index % len(CAPTIONS)]
        records.append(
            {
                "image_id": f"{index:06d}",
                "img_path": image_path,
                "mask_path": mask_path,
                "caption": caption,
                "multilabel": caption_to_labels(caption),
            }
        )
    split_at = num_records * 9 // 10
    (root / "train-mutilabel-simple.json").write_text(json.dumps(records[:split_at]))
    (root / "eval-mutilabel-simple.json").write_text(json.dumps(records[split_at:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        root, out = Path(workdir) / "mmtt", Path(workdir) / "out"
        started = time.perf_counter()
        build_layout(root, args.records, args.image_size)
        built = time.perf_counter()
        result = convert_mmtt(root, out, num_proc=args.num_proc, shard_size=args.shard_size, test_fraction=1 / 9)
        converted = time.perf_counter()
        output_bytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())

    seconds = converted - built
    print(
        json.dumps(
            {
                "benchmark": "convert_mmtt",
                "records": args.records,
                "image_size": args.image_size,
                "num_proc": args.num_proc,
                "shard_size": args.shard_size,
                "layout_build_seconds": round(built - started, 2),
                "convert_seconds": round(seconds, 2),
                "records_per_second": round(args.records / seconds, 1),
                "examples": result.num_examples,
                "skipped": len(result.bad_records),
                "output_bytes": output_bytes,
                "target_seconds": 120,
                "within_target": seconds <= 120,
            }
        )
    )


if __name__ == "__main__":
    main()
