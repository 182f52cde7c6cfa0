"""Times per-face analysis with the bundled model on real photos of 1–6 faces: batching, start-up, a busy neighbour.

- *per-face batching*: `analysis.runner.run_analysis` with the defaults (every face, figures on) over photos of
  1 to 6 faces (the `--faces` folder's portraits tiled, 256–2048 px), batch 8 against batch 1 (one face per
  `generate` call), interleaved so that both see the same load: faces/s and photos/s. Targets: both ≥ 2×.
- *start-up*: `forgerytalker analyze one.jpg` in a fresh process against the floor of any transformers model: a
  fresh process importing transformers' Auto model and processor classes and `pipeline`, and loading a BERT
  checkpoint of the bundled model's parameter count. Target: ≤ 1.1× the floor. analyze ends without the
  interpreter's teardown (about 0.9 s once torch and transformers are imported), so the floor is also timed ending
  with `os._exit(0)`: `startup_over_floor_without_teardown` compares the two at the same end.
- *busy neighbour*: the same `forgerytalker analyze FOLDER` (default threads) with and without a process spinning
  on one core. Target: ≤ 1.5× slower.

    python benchmarks/bench_faces.py --faces ../shared/faces
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from _machine import load_average, machine_state
from bench_analyze import fresh_command

from forgerytalker.analysis.api import load_analyzer
from forgerytalker.analysis.defaults import default_model
from forgerytalker.analysis.face_crops import FaceFinder, FaceOptions
from forgerytalker.analysis.inputs import collect_photos
from forgerytalker.analysis.reader_process import PhotoReaderProcess
from forgerytalker.analysis.runner import AnalysisOptions, run_analysis
from forgerytalker.analysis.writer_process import PhotoWriterProcess
from forgerytalker.image_utils import is_image_file, load_rgb

TARGETS = {"faces_per_s_batch8_over_batch1": 2.0, "photos_per_s_batch8_over_batch1": 2.0, "startup_over_floor": 1.1,
           "busy_over_quiet": 1.5}
SPINNER = "while True: pass"


def group_photos(portraits: list[Image.Image], count: int, seed: int = 0) -> list[Image.Image]:
    """`count` photos with 1 to 6 of the portraits side by side, each 256 to 680 px high, on a grey ground."""
    rng = np.random.default_rng(seed)
    photos = []
    for index in range(count):
        people = 1 + index % 6
        height = int(rng.integers(256, 680))
        chosen = [portraits[int(i)] for i in rng.integers(0, len(portraits), people)]
        scaled = [p.resize((max(1, round(p.width * height / p.height)), height)) for p in chosen]
        photo = Image.new("RGB", (min(2048, sum(p.width for p in scaled)), height), (120, 120, 120))
        left = 0
        for portrait in scaled:
            photo.paste(portrait, (left, 0))
            left += portrait.width
        photos.append(photo)
    return photos


def cpu_seconds() -> float:
    """CPU seconds (user and system, every thread) of this process and its live children (the side processes)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def timed_run(pipe, photos, out: Path, batch_size: int, max_new_tokens: int, side: tuple) -> tuple[float, int, float]:
    """Seconds of one `run_analysis` (reading and writing with the `side` processes, a `PhotoReaderProcess` and a
    `PhotoWriterProcess`, one of each for every run), the faces it analysed and the CPU seconds it used (this
    process and the side processes)."""
    reader, writer = side
    options = AnalysisOptions(batch_size=batch_size, generate_kwargs={"max_new_tokens": max_new_tokens}, faces=reader.faces)
    cpu, start = cpu_seconds(), time.perf_counter()
    records = run_analysis(pipe, photos, out, options, redo_finished=True, progress=False, reader=reader, writer=writer)
    seconds = time.perf_counter() - start
    return seconds, sum(len(record.get("face_analyses", [])) or 1 for record in records), cpu_seconds() - cpu


def generate_only(pipe, crops: list[Image.Image], batch_size: int, max_new_tokens: int) -> float:
    """Seconds of `model.generate` alone over the aligned crops (preprocessed beforehand): the ceiling of batching."""
    batches = [pipe.processor(images=crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs in batches:
            pipe.model.generate(**inputs, max_new_tokens=max_new_tokens)
    return time.perf_counter() - start


def floor_checkpoint(folder: Path, parameters: int) -> int:
    """Saves a BERT of about `parameters` parameters; returns its count."""
    from transformers import BertConfig, BertModel

    hidden, vocab = 256, 5000
    layers = max(1, round((parameters - vocab * hidden) / (12 * hidden * hidden)))
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=4 * hidden)
    model = BertModel(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True, help="folder of real face photos (portraits)")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads in the batching runs")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--startup", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    load_before = load_average()
    finder = FaceFinder()
    pictures = [load_rgb(path) for path in sorted(args.faces.iterdir()) if is_image_file(path)]
    portraits = [picture for picture in pictures if len(finder(picture, FaceOptions()).crops) == 1]  # one face each
    pipe = load_analyzer(None, device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as scratch, PhotoReaderProcess() as reader, PhotoWriterProcess() as writer:
        scratch = Path(scratch)
        (scratch / "photos").mkdir()
        for index, photo in enumerate(group_photos(portraits, args.photos)):
            photo.save(scratch / "photos" / f"group_{index:02d}.jpg", quality=92)
        photos = collect_photos([str(scratch / "photos")])
        timed_run(pipe, photos[:2], scratch / "warm-up", 8, args.max_new_tokens, (reader, writer))
        runs, generate = {1: [], 8: []}, {1: [], 8: []}
        crops = [crop.image for photo in photos for crop in finder(load_rgb(photo.path), FaceOptions()).crops]
        for _ in range(args.repeats):
            for batch_size in (1, 8):
                runs[batch_size].append(timed_run(pipe, photos, scratch / f"out{batch_size}", batch_size, args.max_new_tokens, (reader, writer)))
                generate[batch_size].append(generate_only(pipe, crops, batch_size, args.max_new_tokens))
        faces = runs[1][0][1]
        rate = {size: (faces / statistics.median(s for s, _, _ in r), len(photos) / statistics.median(s for s, _, _ in r))
                for size, r in runs.items()}
        # CPU seconds per wall second: near the machine's cores, a run is bound by the CPU work it does, which
        # batching shrinks only in the model
        busy = {size: statistics.median(cpu / s for s, _, cpu in r) for size, r in runs.items()}
        cpu_per_face = {size: statistics.median(cpu for _, _, cpu in r) / faces for size, r in runs.items()}
        result = {
            "photos": len(photos),
            "faces": faces,
            "photo_sizes": [list(Image.open(p.path).size) for p in photos],
            "max_new_tokens": args.max_new_tokens,
            "num_threads": args.num_threads,
            "faces_per_s": {"batch_1": round(rate[1][0], 2), "batch_8": round(rate[8][0], 2)},
            "photos_per_s": {"batch_1": round(rate[1][1], 2), "batch_8": round(rate[8][1], 2)},
            "faces_per_s_batch8_over_batch1": round(rate[8][0] / rate[1][0], 2),
            "photos_per_s_batch8_over_batch1": round(rate[8][1] / rate[1][1], 2),
            "cpu_busy_cores": {f"batch_{size}": round(value, 2) for size, value in busy.items()},
            "cpu_ms_per_face": {f"batch_{size}": round(1000 * value, 1) for size, value in cpu_per_face.items()},
            "generate_only_faces_per_s": {size: round(len(crops) / statistics.median(t), 2) for size, t in generate.items()},
            "generate_only_batch8_over_batch1": round(statistics.median(generate[1]) / statistics.median(generate[8]), 2),
        }
        if args.startup:
            parameters = floor_checkpoint(scratch / "floor", sum(p.numel() for p in pipe.model.parameters()))
            floor_code = ("from transformers import AutoModel, AutoProcessor, pipeline; "
                          f"AutoModel.from_pretrained({str(scratch / 'floor')!r})")
            one = str(photos[0].path)
            analyze = [sys.executable, "-m", "forgerytalker.cli", "analyze", one, "--no-progress",
                       "--max-new-tokens", str(args.max_new_tokens)]
            floor, startup, bare_floor = [], [], []

            def wall_seconds(command: list[str]) -> float:  # every fresh process shares one bytecode cache
                return fresh_command(command, scratch / "bytecode")[0]

            for index in range(args.repeats + 1):  # interleaved; the first pair warms the file cache
                floor.append(wall_seconds([sys.executable, "-c", floor_code]))
                # analyze ends without the interpreter's teardown (`forgerytalker.process_exit`): the floor so ended too
                bare_floor.append(wall_seconds([sys.executable, "-c", floor_code + "; import os; os._exit(0)"]))
                startup.append(wall_seconds([*analyze, "--out", str(scratch / f"one{index}")]))
            folder = [sys.executable, "-m", "forgerytalker.cli", "analyze", str(scratch / "photos"), "--no-progress",
                      "--batch-size", "8", "--max-new-tokens", str(args.max_new_tokens), "--overwrite"]
            quiet = wall_seconds([*folder, "--out", str(scratch / "quiet")])
            spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
            try:
                busy = wall_seconds([*folder, "--out", str(scratch / "busy")])
            finally:
                spinner.kill()
                spinner.wait()
            result.update({
                "startup_s": round(min(startup[1:]), 2),
                "floor_s": round(min(floor[1:]), 2),
                "startup_over_floor": round(min(startup[1:]) / min(floor[1:]), 2),
                "floor_without_teardown_s": round(min(bare_floor[1:]), 2),
                "startup_over_floor_without_teardown": round(min(startup[1:]) / min(bare_floor[1:]), 2),
                "floor_checkpoint": f"BertModel, {parameters / 1e6:.1f} M parameters (the bundled model: "
                                    f"{sum(p.numel() for p in pipe.model.parameters()) / 1e6:.1f} M)",
                "startup_note": "fastest of the runs after the first; analyze includes one photo's detection, "
                                "generation and files, the floor only the load; analyze ends without the "
                                "interpreter's teardown, the floor with it (floor_s) and without (os._exit)",
                "busy_neighbour_s": {"quiet": round(quiet, 2), "one_core_spinning": round(busy, 2)},
                "busy_over_quiet": round(busy / quiet, 2),
            })
    result["model"] = "bundled default model (" + Path(default_model()).name + ")"
    result["targets"] = TARGETS
    result["machine"] = machine_state(load_before)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
