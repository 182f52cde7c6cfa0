"""Full-size rehearsal of the released model: write random-valued release files, convert, load, run (hours of disk
and RAM work; not part of `python -m benchmarks` nor of the tests).

    python benchmarks/bench_released_fullsize.py --scratch /big/disk/scratch --faces ../shared/faces \
        --out benchmarks/released_fullsize.json [--steps write convert load offload pipeline precision]

Each step runs as a user would, in its own process, and records its wall time and peak resident memory (the
process's `ru_maxrss`, from `os.wait4`):
- `write`: the release's three downloads at full size (`released_fullsize_files.py`);
- `convert`: `forgerytalker convert-checkpoint ... --dtype bfloat16 --uniform-dtype` into sharded safetensors (every
  weight in bfloat16); `convert_mix`: the same without `--uniform-dtype`, the default (all but Flan-T5 in float32);
- `load` / `load_mix`: `AutoModel.from_pretrained(out, dtype=torch.bfloat16)` of either conversion;
- `offload`: the same with `device_map="auto"` and a RAM limit that forces disk offload;
- `pipeline`: `pipeline("forgery-analysis", model=out, dtype=torch.bfloat16)` on one photo with the release's
  generation settings and `max_new_tokens=8` (seconds per image), then with one new token (seconds per new token
  from the difference);
- `precision`: a copy with the first 2 layers of every tower, converted in float32, run in float32, in bfloat16 with
  the release's mix the converter records (only Flan-T5 in bfloat16) and wholly in bfloat16: region probabilities,
  mask probabilities, mask and the first report tokens compared with float32.
Results are merged into `--out` after every step (a step that fails records its error), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from _machine import load_average, machine_state

HERE = Path(__file__).resolve().parent
GIB = 1024**3
STEPS = ("write", "convert", "load", "offload", "pipeline", "precision", "convert_mix", "load_mix")
PRECISION_LAYERS = 2
OFFLOAD_RAM = "3GiB"
"""The `max_memory` of the offload step: a third of the bf16 weights, so most of them go to disk."""
TOLERANCES = {"region_probability": 0.02, "mask_probability": 0.02, "mask_pixels_differing": 0.01, "first_tokens_equal": 4}
"""bf16 vs fp32 on the depth-reduced copy: largest absolute difference of a region probability and of a mask
probability, share of mask pixels that differ, and how many first report tokens must be the same."""


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _watch_anonymous(pid: int, peak: list[int]) -> None:
    """Polls the process's anonymous resident memory (`RssAnon`: what the kernel cannot drop, unlike the pages of
    memory-mapped files that `ru_maxrss` also counts) every 0.2 s, keeping the largest in `peak[0]` (bytes)."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return
        peak[0] = max(peak[0], int(fields.get("RssAnon", "0 kB").split()[0]) * 1024)
        time.sleep(0.2)


def measured(command: list[str], log: Path) -> dict:
    """Runs `command` with its output appended to `log`; wall seconds, peak RSS (GiB), exit status, stdout's last JSON."""
    start, peak_anonymous = time.perf_counter(), [0]
    with log.open("a") as stderr, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as process:
        watcher = threading.Thread(target=_watch_anonymous, args=(process.pid, peak_anonymous), daemon=True)
        watcher.start()
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    result = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 2),
              "peak_anonymous_rss_gib": round(peak_anonymous[0] / GIB, 2), "exit_status": process.returncode}
    lines = [line for line in output.splitlines() if line.startswith("{") and line.endswith("}")]
    if lines:
        result["output"] = json.loads(lines[-1])
    return result


def _peak_rss() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)


def child(step: str, args: argparse.Namespace) -> dict:
    """The work of one step, in the measured process; returns what it prints as JSON."""
    import torch
    from transformers import AutoModel, pipeline

    import forgerytalker  # noqa: F401  (registers the model, processor and pipeline)
    from forgerytalker.released_weights import DFF_GENERATION_SETTINGS

    torch.set_num_threads(args.threads)
    if step in ("load", "load_mix"):
        start = time.perf_counter()
        model = AutoModel.from_pretrained(args.model, dtype=torch.bfloat16)
        loaded, rss_loaded = time.perf_counter() - start, _peak_rss()
        # the weights are memory-mapped and read when first used: touching each one gives the RSS inference needs
        start = time.perf_counter()
        checksum = sum(float(tensor.float().sum()) for tensor in model.state_dict().values())
        return {"load_seconds": round(loaded, 1), "peak_rss_after_load_gib": rss_loaded,
                "seconds_to_read_every_weight": round(time.perf_counter() - start, 1), "finite": checksum == checksum,
                "parameters": model.num_parameters(),
                "language_model_parameters": model.instructblip.language_model.num_parameters(), "dtypes": sorted({str(p.dtype) for p in model.parameters()})}
    if step == "offload":
        start = time.perf_counter()
        model = AutoModel.from_pretrained(
            args.model, dtype=torch.bfloat16, device_map="auto", max_memory={"cpu": OFFLOAD_RAM},
            offload_folder=str(args.scratch / "offload"),
        )
        devices = {}
        for device in model.hf_device_map.values():
            devices[str(device)] = devices.get(str(device), 0) + 1
        return {"load_seconds": round(time.perf_counter() - start, 1), "max_memory": {"cpu": OFFLOAD_RAM},
                "modules_per_device": devices}
    photo = str(sorted(path for path in Path(args.faces).glob("*.jpg"))[0])
    settings = {**DFF_GENERATION_SETTINGS, "max_new_tokens": 8}
    if step == "pipeline":
        start = time.perf_counter()
        analyzer = pipeline("forgery-analysis", model=args.model, dtype=torch.bfloat16)
        loaded = time.perf_counter() - start
        timings = {}
        # the first call reads the memory-mapped weights from disk; then one forced new token and eight, warm
        for name, overrides in (("first_image", {}), ("one_new_token", {"min_new_tokens": 1, "max_new_tokens": 1}),
                                ("eight_new_tokens", {"min_new_tokens": 8, "max_new_tokens": 8})):
            start = time.perf_counter()
            analyzer(photo, **{**settings, **overrides})
            timings[name] = time.perf_counter() - start
        return {"photo": Path(photo).name, "load_seconds": round(loaded, 1), "generation": settings,
                "seconds_per_image_first_call": round(timings["first_image"], 1),
                "seconds_per_image_warm_8_new_tokens": round(timings["eight_new_tokens"], 1),
                "seconds_per_image_warm_1_new_token": round(timings["one_new_token"], 1),
                "seconds_per_new_token": round((timings["eight_new_tokens"] - timings["one_new_token"]) / 7, 2),
                "peak_rss_gib": _peak_rss()}
    if step == "precision":
        # the converted config records the release's mix, which a bfloat16 load keeps; `keep_in_fp32_modules=None`
        # loads every weight in bfloat16
        runs = {"float32": (torch.float32, {}), "bfloat16": (torch.bfloat16, {}),
                "bfloat16_uniform": (torch.bfloat16, {"keep_in_fp32_modules": None})}
        results, tokens = {}, {}
        for name, (dtype, model_kwargs) in runs.items():
            analyzer = pipeline("forgery-analysis", model=args.model, dtype=dtype, model_kwargs=model_kwargs)
            results[name] = analyzer(photo, **settings)
            # the generated ids themselves: random weights generate ids the stand-in tokenizer cannot spell
            inputs = analyzer.preprocess(photo)
            inputs.pop("target_size")
            inputs["pixel_values"] = inputs["pixel_values"].to(analyzer.model.dtype)  # as the pipeline passes them
            with torch.inference_mode():
                tokens[name] = analyzer.model.generate(**inputs, **settings).sequences[0].tolist()
        compared = {}
        for name in ("bfloat16", "bfloat16_uniform"):
            full, half = results["float32"], results[name]
            same = next((index for index, pair in enumerate(zip(tokens["float32"], tokens[name])) if pair[0] != pair[1]),
                        min(len(tokens["float32"]), len(tokens[name])))
            masks = [torch.tensor(list(result["mask"].getdata())) for result in (full, half)]
            measured_values = {
                "region_probability": max(abs(full["region_probabilities"][region] - half["region_probabilities"][region]) for region in full["region_probabilities"]),
                "mask_probability": float(abs(full["mask_probabilities"] - half["mask_probabilities"]).max()),
                "mask_pixels_differing": float((masks[0] != masks[1]).float().mean()),
                "first_tokens_equal": same,
            }
            within = {key: (value >= TOLERANCES[key] if key == "first_tokens_equal" else value <= TOLERANCES[key])
                      for key, value in measured_values.items()}
            compared[name] = {"measured": measured_values, "within_tolerance": within}
        return {"layers_per_tower": PRECISION_LAYERS, "photo": Path(photo).name, "tolerances": TOLERANCES,
                "against_float32": compared, "regions": {name: result["regions"] for name, result in results.items()},
                "tokens": tokens}
    raise ValueError(step)


def convert_command(sources: dict, out: Path, dtype: str, uniform: bool = False) -> list[str]:
    return [sys.executable, "-m", "forgerytalker.cli", "convert-checkpoint", "--instructblip", sources["instructblip"],
            "--dff-checkpoint", sources["dff_checkpoint"], "--face-vit-checkpoint", sources["face_vit_checkpoint"],
            "--out", str(out), "--dtype", dtype, "--overwrite", *(["--uniform-dtype"] if uniform else [])]


def run_step(step: str, args: argparse.Namespace, results: dict) -> dict:
    from released_fullsize_files import DFF_NAME, FACE_VIT_NAME, INSTRUCTBLIP_NAME

    scratch, log = args.scratch, args.scratch / "rehearsal.log"
    released = scratch / "released"
    converted = scratch / ("converted-mix" if step.endswith("_mix") else "converted-bf16")
    def sources(folder: Path) -> dict:
        return {"instructblip": str(folder / INSTRUCTBLIP_NAME), "dff_checkpoint": str(folder / DFF_NAME),
                "face_vit_checkpoint": str(folder / FACE_VIT_NAME)}

    me = [sys.executable, str(Path(__file__).resolve())]
    writer = [sys.executable, str(HERE / "released_fullsize_files.py")]
    if step == "write":
        result = measured([*writer, "--out", str(released)], log)
        result.pop("output", None)  # the paths written, which are this machine's
        result["download_gib"] = {path.name: round((folder_bytes(path) if path.is_dir() else path.stat().st_size) / GIB, 2)
                                  for path in sorted(released.iterdir())}
        result["download_gib"]["total"] = round(folder_bytes(released) / GIB, 2)
        return result
    if step in ("convert", "convert_mix"):
        result = measured(convert_command(sources(released), converted, "bfloat16", uniform=step == "convert"), log)
        if converted.exists():
            result["converted_gib"] = round(folder_bytes(converted) / GIB, 2)
            result["weight_files"] = sorted(file.name for file in converted.glob("*.safetensors"))
        result["target_peak_rss_gib"] = round(result.get("converted_gib", 0) + 2, 2)
        return result
    if step in ("load", "offload", "pipeline", "load_mix"):
        result = measured([*me, "--child", step, "--model", str(converted), "--scratch", str(scratch), "--faces", args.faces,
                           "--threads", str(args.threads)], log)
        conversion = results.get("convert_mix" if step == "load_mix" else "convert", {})
        if step in ("load", "load_mix") and "converted_gib" in conversion:
            result["target_peak_rss_gib"] = round(1.2 * conversion["converted_gib"], 2)
        shutil.rmtree(scratch / "offload", ignore_errors=True)
        return result
    if step == "precision":
        reduced, reduced_converted = scratch / "released-2-layers", scratch / "converted-2-layers-fp32"
        preparation = {
            "write": measured([*writer, "--out", str(reduced), "--layers", str(PRECISION_LAYERS)], log),
            "convert_float32": measured(convert_command(sources(reduced), reduced_converted, "float32"), log),
        }
        for part in preparation.values():
            part.pop("output", None)
        result = measured([*me, "--child", step, "--model", str(reduced_converted), "--scratch", str(scratch), "--faces", args.faces,
                          "--threads", str(args.threads)], log)
        return {**result, "preparation": preparation}
    raise ValueError(step)


def _cpu() -> dict:
    """The CPU's model name and whether it has bfloat16 instructions (which decide bf16's speed on a CPU)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return {"cpu": names[0] if names else platform.processor(), "avx512_bf16": " avx512_bf16" in info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, required=True, help="folder for the full-size files (~35 GB free needed)")
    parser.add_argument("--faces", required=True, help="folder of face photos; the first .jpg is analysed")
    parser.add_argument("--out", type=Path, default=HERE / "released_fullsize.json", help="results JSON (merged step by step)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    args.scratch.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    steps = results.setdefault("steps", {})
    for step in args.steps:
        load_before = load_average()
        print(f"{time.strftime('%H:%M:%S')} {step}", file=sys.stderr, flush=True)
        try:
            steps[step] = run_step(step, args, steps)
        except Exception as error:  # recorded, so that the steps already measured are kept
            steps[step] = {"error": repr(error)}
        steps[step]["machine"] = machine_state(load_before)
        results["platform"] = {"python": platform.python_version(), "architecture": platform.machine(), **_cpu(),
                               "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)}
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({step: steps[step]}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
