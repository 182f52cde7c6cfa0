"""Synthesis throughput: forged 512×512 samples per second per core, overall and per method.

    python benchmarks/bench_synthesis.py --faces ../shared/faces --num-samples 200 --num-workers 2

Faces are aligned first (timed apart, as `align_s_per_photo`, and cached); then each configuration is
synthesized into a fresh folder. Per-method runs and one mixed run use one worker, the other mixed run
`--num-workers`. Per-core figures divide by the number of workers; the load average at the end tells whether
other jobs shared the cores. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _machine import load_average, machine_state
from forgerytalker.data.methods import AUTHENTIC, CLASSICAL_INPAINTING, FACE_SWAP, REGION_TRANSPLANT
from forgerytalker.data.synthesis.pipeline import SynthesisConfig, align_folder, synthesize

# method → the settings that make every sample use it
PER_METHOD = {
    CLASSICAL_INPAINTING: dict(authentic_rate=0.0, whole_face_rate=0.0, local_methods=(CLASSICAL_INPAINTING,)),
    REGION_TRANSPLANT: dict(authentic_rate=0.0, whole_face_rate=0.0, local_methods=(REGION_TRANSPLANT,)),
    FACE_SWAP: dict(authentic_rate=0.0, whole_face_rate=1.0),
    AUTHENTIC: dict(authentic_rate=1.0),
}


def timed_run(faces: Path, cache: Path, scratch: Path, name: str, num_samples: int, workers: int, **settings) -> dict:
    output_dir = scratch / name
    shutil.copytree(cache, output_dir / "cache")
    config = SynthesisConfig(faces, output_dir, num_samples, num_workers=workers, show_progress=False, **settings)
    start = time.perf_counter()
    summary = synthesize(config)
    seconds = time.perf_counter() - start
    return {
        "samples": num_samples,
        "workers": workers,
        "seconds": round(seconds, 2),
        "samples_per_s": round(num_samples / seconds, 2),
        "samples_per_s_per_core": round(num_samples / seconds / workers, 2),
        "methods": summary["counts"]["methods"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--num-samples", type=int, default=200, help="samples per run")
    parser.add_argument("--num-workers", type=int, default=2, help="workers of the mixed run")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        start = time.perf_counter()
        aligned = align_folder(SynthesisConfig(args.faces, scratch / "align", 1, show_progress=False))
        faces, num_photos = aligned.faces, len(aligned.photos)
        align_seconds = time.perf_counter() - start
        cache = scratch / "align" / "cache"
        result = {
            "cpu_count": os.cpu_count(),
            "photos": num_photos,
            "usable_faces": len(faces),
            "align_s_per_photo": round(align_seconds / num_photos, 3),
            "per_method_1_worker": {
                method: timed_run(args.faces, cache, scratch, method, args.num_samples, 1, **settings)
                for method, settings in PER_METHOD.items()
            },
            "mixed_1_worker": timed_run(args.faces, cache, scratch, "mixed-1", args.num_samples, 1),
            "mixed": timed_run(args.faces, cache, scratch, "mixed", args.num_samples, args.num_workers),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "machine": machine_state(load_before),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
