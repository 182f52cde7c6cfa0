"""Times `forgerytalker analyze`: batch 1 vs batch 8, its whole loop vs `model.generate` alone, start-up, `--help`.

- *images/s*: `analysis.runner.run_analysis` (what the command runs: decoding, face detection and alignment,
  `generate`, post-processing, mask PNG, heatmap figure, record) over `--images` drawn 256 px faces (which dlib
  does not find: each is read whole, after the search), at batch 1 and at batch 8. `bench_faces.py` times real
  photos with the bundled model.
  Target: batch 8 >= 2.5x batch 1 with the tiny model.
- *overhead*: the same loop at batch 8 against `model.generate` alone on the same images and batches (decoded and
  preprocessed beforehand), interleaved so that both see the same load. Target: loop <= 1.15x generate.
- *start-up*: `forgerytalker analyze one.png` in a fresh process (import, model load, one photo, files).
  Target: <= 5 s. The first start compiles forgerytalker's bytecode (reported apart); the median is over the
  starts after it. *help*: `forgerytalker --help` in a fresh process. Target: <= 1 s.

    python benchmarks/bench_analyze.py --preset tiny --images 32 --num-threads 1
    python benchmarks/bench_analyze.py --preset tiny --images 32 --num-threads 1 --face-mode whole --no-overlay
    python benchmarks/bench_analyze.py --preset small --images 32 --num-threads 1    # real proportions, slower
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import load_average, machine_state
from bench_generate import build

from forgerytalker.analysis.api import load_analyzer
from forgerytalker.analysis.face_crops import FACE_MODES, FaceOptions
from forgerytalker.analysis.inputs import collect_photos
from forgerytalker.analysis.reader_process import PhotoReaderProcess
from forgerytalker.analysis.runner import AnalysisOptions, run_analysis
from forgerytalker.analysis.writer_process import PhotoWriterProcess
from forgerytalker.demo.examples import draw_face

TARGETS = {"batch8_over_batch1": 2.5, "loop_over_generate": 1.15, "startup_s": 5.0, "help_s": 1.0}


def analyse(pipe, photos, out: Path, batch_size: int, side: tuple, overlay: bool, generate_kwargs: dict) -> float:
    """Seconds of one `run_analysis`, reading and writing with the `side` processes (a `PhotoReaderProcess` and a
    `PhotoWriterProcess`, one of each for every run, as one command has)."""
    reader, writer = side
    start = time.perf_counter()
    options = AnalysisOptions(batch_size=batch_size, faces=reader.faces, draw_overlay=overlay, generate_kwargs=generate_kwargs)
    run_analysis(pipe, photos, out, options, redo_finished=True, progress=False, reader=reader, writer=writer)
    return time.perf_counter() - start


def generate_only(model, processor, images, batch_size: int, generate_kwargs: dict) -> float:
    batches = [processor(images=images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs in batches:
            model.generate(**inputs, **generate_kwargs)
    return time.perf_counter() - start


def fresh_process(*arguments: str, bytecode_cache: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `forgerytalker ARGUMENTS` in a new interpreter (`fresh_command`)."""
    return fresh_command([sys.executable, "-m", "forgerytalker.cli", *arguments], bytecode_cache)


def fresh_command(command: list[str], bytecode_cache: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `command`, a new Python process whose bytecode is cached under `bytecode_cache` (CPU
    seconds stay meaningful on a loaded machine, where the wall time waits for a core).

    An installed package ships compiled bytecode and an editable one writes it on first import; a machine that sets
    PYTHONDONTWRITEBYTECODE (as these do) would make every start compile forgerytalker's modules again. The cache
    is kept in a folder of its own, so the first start compiles and the later ones measure what a user waits for.
    """
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    cpu_before = _children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return time.perf_counter() - start, _children_cpu_seconds() - cpu_before


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--face-mode", choices=FACE_MODES, default="every", help="--faces of analyze (default: every)")
    parser.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--startup", action=argparse.BooleanOptionalAction, default=True,
        help="also time start-up and --help in fresh processes (default: on)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, help="longest report, for both loops (default: the checkpoint's, 100 for small)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    load_before = load_average()
    generation = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    with (
        tempfile.TemporaryDirectory(prefix="bench-analyze-") as scratch,
        PhotoReaderProcess(FaceOptions(args.face_mode)) as reader,
        PhotoWriterProcess() as writer,
    ):
        scratch = Path(scratch)
        model, processor = build(args.preset)
        model.save_pretrained(scratch / "model")
        processor.save_pretrained(scratch / "model")
        (scratch / "faces").mkdir()
        for index in range(args.images):
            draw_face(index).save(scratch / "faces" / f"face_{index:03d}.png")
        photos = collect_photos([str(scratch / "faces")])
        pipe = load_analyzer(scratch / "model", device="cpu")
        images = [draw_face(index) for index in range(args.images)]
        analyse(pipe, photos[:4], scratch / "warm-up", 2, (reader, writer), args.overlay, generation)
        batch1, batch8, generate8 = [], [], []
        for repeat in range(args.repeats):
            batch1.append(analyse(pipe, photos, scratch / "out1", 1, (reader, writer), args.overlay, generation))
            batch8.append(analyse(pipe, photos, scratch / "out8", 8, (reader, writer), args.overlay, generation))
            generate8.append(generate_only(pipe.model, processor, images, 8, generation))
        one = str(scratch / "faces" / "face_000.png")
        threads = ["--num-threads", str(args.num_threads), "--no-progress"]
        cache = scratch / "bytecode"
        startup = [
            fresh_process("analyze", one, "--model", str(scratch / "model"), "--out", str(scratch / f"one{i}"), *threads,
                          bytecode_cache=cache)
            for i in range(args.repeats + 1 if args.startup else 0)
        ]
        help_times = [fresh_process("--help", bytecode_cache=cache) for _ in range(args.repeats if args.startup else 0)]
    median = statistics.median
    rate1, rate8 = args.images / median(batch1), args.images / median(batch8)
    result = {
        "preset": args.preset,
        "images": args.images,
        "face_mode": args.face_mode,
        "overlay": args.overlay,
        "max_new_tokens": args.max_new_tokens,
        "analyze_images_per_s": {"batch_1": round(rate1, 2), "batch_8": round(rate8, 2)},
        "batch8_over_batch1": round(rate8 / rate1, 2),
        "analyze_batch8_s": round(median(batch8), 3),
        "generate_batch8_s": round(median(generate8), 3),
        "generate_batch8_images_per_s": round(args.images / median(generate8), 2),
        "loop_over_generate": round(median(batch8) / median(generate8), 3),
        "startup_s": round(median(wall for wall, _ in startup[1:]), 2) if startup else None,
        "startup_cpu_s": round(median(cpu for _, cpu in startup[1:]), 2) if startup else None,
        "startup_runs_s": [round(wall, 2) for wall, _ in startup[1:]],
        "startup_first_s_compiling_bytecode": round(startup[0][0], 2) if startup else None,
        "startup_model": "the benchmark's own saved model (no bundled default model ships yet)",
        "help_s": round(median(wall for wall, _ in help_times), 2) if help_times else None,
        "targets": TARGETS,
        "machine": machine_state(load_before),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
