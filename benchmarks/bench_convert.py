"""Benchmark of `forgerytalker data convert`: builds an MMTT-style layout of N records, converts it, prints JSON.

    python benchmarks/bench_convert.py --records 10000 --image-size 512 --num-proc 2

The layout mimics the release (`dataset/celeb512/mat_gan/...`, `dataset/FFHQ512/e4s/...`,
`dataset/FFHQ512/sdxl/...`, 9:1 train/eval files) with 1% bad records (missing masks), so that validation
and reporting are part of the measured work. Images are smooth colour fields with fine noise, which PNG
compresses about as well as MMTT's 512×512 faces (~460 KB); `--distinct-images` of them are drawn and the
records' files are hard links to them, so that building the layout stays quick (the converter still reads,
fully decodes and embeds every record's files). With `--interrupt-after` the conversion is stopped after
that many shards and resumed, and the resumed run is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
from _machine import load_average, machine_state

from forgerytalker.data import mmtt
from forgerytalker.data.mmtt import convert_mmtt
from forgerytalker.regions import caption_to_labels

FOLDERS = ("dataset/celeb512/mat_gan/samples_celeb", "dataset/FFHQ512/e4s", "dataset/FFHQ512/sdxl")
CAPTIONS = (
    "The eyes look blurred and the nose has an unnatural outline.",
    "The skin on the cheeks is too smooth and the lips are oddly shaped.",
    "The eyebrows are asymmetric; the hair near the forehead is smeared.",
)
BAD_EVERY = 100


def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    smooth = np.asarray(PIL.Image.fromarray(low).resize((size, size), PIL.Image.BICUBIC)).astype(np.float32)
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def build_layout(root: Path, num_records: int, image_size: int, distinct: int, seed: int = 0) -> int:
    """Writes `num_records` image/mask pairs (hard links to `distinct` drawn images) and the two JSON files under
    `root`; returns the bytes of one record's files on average."""
    rng = np.random.default_rng(seed)
    pool = root / "pool"
    pool.mkdir(parents=True)
    for index in range(distinct):
        PIL.Image.fromarray(_smooth_image(rng, image_size)).save(pool / f"{index}.png")
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    mask[image_size // 4 : image_size // 2, image_size // 4 : 3 * image_size // 4] = 255
    PIL.Image.fromarray(mask).save(pool / "mask.png")
    records = []
    for index in range(num_records):
        folder = FOLDERS[index % len(FOLDERS)]
        image_path, mask_path = f"{folder}/{index:06d}.png", f"{folder}/masks/{index:06d}.png"
        (root / folder / "masks").mkdir(parents=True, exist_ok=True)
        os.link(pool / f"{index % distinct}.png", root / image_path)
        if index % BAD_EVERY != BAD_EVERY - 1:
            os.link(pool / "mask.png", root / mask_path)
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
    pool_bytes = sum(path.stat().st_size for path in pool.glob("[0-9]*.png")) / distinct
    return int(pool_bytes + (pool / "mask.png").stat().st_size)


def _interrupted_then_resumed(root: Path, out: Path, args, shards: int) -> dict:
    """Stops a conversion after `shards` shards (as a kill would), then times the resumed run."""
    original, finished = mmtt._convert_shard, []

    def stop_after(task):
        if len(finished) == shards:
            raise KeyboardInterrupt
        finished.append(task.file_name)
        return original(task)

    mmtt._convert_shard = stop_after
    try:
        convert_mmtt(root, out, num_proc=1, shard_size=args.shard_size, test_fraction=1 / 9, show_progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        mmtt._convert_shard = original
    started = time.perf_counter()
    convert_mmtt(root, out, num_proc=args.num_proc, shard_size=args.shard_size, test_fraction=1 / 9, show_progress=False)
    return {"shards_done_before": shards, "resumed_seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--distinct-images", type=int, default=500)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--interrupt-after", type=int, help="also stop a conversion after this many shards and resume it")
    parser.add_argument("--workdir", help="where to build the layout (default: a temporary folder)")
    args = parser.parse_args()
    load_before = load_average()

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        root, out = Path(workdir) / "mmtt", Path(workdir) / "out"
        started = time.perf_counter()
        record_bytes = build_layout(root, args.records, args.image_size, args.distinct_images)
        built = time.perf_counter()
        cpu_before = os.times()
        result = convert_mmtt(
            root, out, num_proc=args.num_proc, shard_size=args.shard_size, test_fraction=1 / 9, show_progress=False
        )
        converted = time.perf_counter()
        cpu_after = os.times()
        output_bytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
        resumed = None
        if args.interrupt_after:
            resumed = _interrupted_then_resumed(root, Path(workdir) / "resumed", args, args.interrupt_after)

    seconds = converted - built
    cpu_seconds = (cpu_after.children_user + cpu_after.children_system + cpu_after.user + cpu_after.system) - (
        cpu_before.children_user + cpu_before.children_system + cpu_before.user + cpu_before.system
    )
    print(
        json.dumps(
            {
                "benchmark": "convert_mmtt",
                "records": args.records,
                "image_size": args.image_size,
                "mean_record_file_bytes": record_bytes,
                "num_proc": args.num_proc,
                "shard_size": args.shard_size,
                "cpu_count": os.cpu_count(),
                "layout_build_seconds": round(built - started, 2),
                "convert_seconds": round(seconds, 2),
                "convert_cpu_seconds": round(cpu_seconds, 2),
                "records_per_second": round(args.records / seconds, 1),
                "examples": result.num_examples,
                "skipped": len(result.bad_records),
                "output_bytes": output_bytes,
                "interrupted_and_resumed": resumed,
                "load_average_1min": round(os.getloadavg()[0], 2),
                "machine": machine_state(load_before),
            }
        )
    )


if __name__ == "__main__":
    main()
