"""`python -m benchmarks`: every benchmark script in a fresh process, one JSON document out.

    python -m benchmarks                      # the settings the README quotes (tens of minutes on 2 cores)
    python -m benchmarks --quick              # smaller settings: a few minutes on 2 cores
    python -m benchmarks --only generate analyze --out benchmarks/latest.json
    python -m benchmarks --faces ../shared/faces --args synthesis="--num-samples 50"

Prints `{"machine": {...}, "settings": ..., "benchmarks": {name: {"command", "seconds", "result"}}}`, where `result`
is the script's own JSON; a benchmark that fails gets `"error"` (its exit status and the end of its stderr) in
place of `"result"` and the others still run; one that cannot run here (no face photos) gets `"skipped"`. Ratios
come from runs side by side in one process; absolute times on a shared machine depend on its load, which each
script records (`machine.load_average_before/after`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("benchmarks")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
STDERR_TAIL = 2000
"""Characters of a failed benchmark's stderr kept in its error."""


@dataclass(frozen=True)
class Benchmark:
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    needs_faces: bool = False
    what: str = ""


BENCHMARKS = {
    "generate": Benchmark(
        "bench_generate.py",
        ("--preset", "small", "--repeats", "5", "--num-threads", "1"),
        ("--preset", "small", "--repeats", "3", "--num-threads", "1"),
        what="ForgeryTalker.generate / InstructBLIP.generate, same weights and inputs, small preset",
    ),
    "generate_paper_proportions": Benchmark(
        "bench_generate.py",
        ("--preset", "paper-proportions", "--repeats", "5", "--num-threads", "1"),
        ("--preset", "paper-proportions", "--repeats", "3", "--num-threads", "1"),
        what="the same with the prompter 0.63 of the vision encoder (the released model's share)",
    ),
    "synthesis": Benchmark(
        "bench_synthesis.py",
        ("--num-samples", "200", "--num-workers", "2"),
        ("--num-samples", "20", "--num-workers", "2"),
        needs_faces=True,
        what="forged 512 x 512 samples per second, per method (1 worker) and mixed (1 and 2 workers)",
    ),
    "convert": Benchmark(
        "bench_convert.py",
        ("--records", "10000", "--image-size", "64"),
        ("--records", "2000", "--image-size", "64"),
        what="converting MMTT records to the Hub layout",
    ),
    "training": Benchmark(
        "bench_training.py",
        ("--steps", "30", "--batch-size", "4"),
        ("--steps", "6", "--batch-size", "4", "--samples", "16"),
        what="training samples/s per stage, tiny config, one process",
    ),
    "released_memory": Benchmark(
        "bench_released_memory.py", (), (), what="parameters and weight memory of the converted release (meta device)"
    ),
    "metrics": Benchmark(
        "bench_metrics.py",
        ("--pairs", "12800", "--meteor-pairs", "2000"),
        ("--pairs", "1000", "--meteor-pairs", "100", "--distinct-masks", "32"),
        what="text metrics on report pairs, mask metrics on 512 x 512 mask pairs",
    ),
    "analyze": Benchmark(
        "bench_analyze.py",
        ("--preset", "tiny", "--images", "32", "--repeats", "3", "--num-threads", "1"),
        ("--preset", "tiny", "--images", "16", "--repeats", "1", "--num-threads", "1"),
        what="analyze with face detection and figures (the defaults): batch 8 vs 1, loop vs generate, start-up",
    ),
    "analyze_no_files": Benchmark(
        "bench_analyze.py",
        ("--preset", "tiny", "--images", "32", "--repeats", "3", "--num-threads", "1", "--face-mode", "whole",
         "--no-overlay", "--no-startup"),
        ("--preset", "tiny", "--images", "16", "--repeats", "1", "--num-threads", "1", "--face-mode", "whole",
         "--no-overlay", "--no-startup"),
        what="the same with mask and record only",
    ),
    "analyze_small": Benchmark(
        "bench_analyze.py",
        ("--preset", "small", "--images", "32", "--repeats", "2", "--num-threads", "1", "--no-startup"),
        ("--preset", "small", "--images", "8", "--repeats", "1", "--num-threads", "1", "--no-startup", "--max-new-tokens", "20"),
        what="analyze's whole loop vs model.generate alone at the real model's proportions, batch 8",
    ),
    "faces": Benchmark(
        "bench_faces.py",
        ("--photos", "24", "--repeats", "3"),
        ("--photos", "12", "--repeats", "2"),
        needs_faces=True,
        what="per-face analysis, bundled model, real photos of 1-6 faces: batch 8 vs 1 faces/s and photos/s, start-up "
        "vs a transformers load of the same size, a busy neighbour",
    ),
    "evaluate": Benchmark(
        "bench_evaluate.py",
        ("--preset", "small", "--images", "32", "--batch-size", "8", "--num-threads", "1"),
        ("--preset", "tiny", "--images", "16", "--batch-size", "8", "--repeats", "1", "--num-threads", "1"),
        what="evaluate's prediction loop vs model.generate alone",
    ),
    "label_agreement": Benchmark(
        "bench_label_agreement.py",
        ("--captions", "20000"),
        ("--captions", "2000"),
        what="caption_to_labels against the release's labelling rule",
    ),
}


def default_faces() -> Path | None:
    """`../shared/faces` next to the repository, or next to the main checkout when this one is a git worktree."""
    roots = [REPO_ROOT]
    git = REPO_ROOT / ".git"
    if git.is_file():  # a worktree: ".git" says "gitdir: <main checkout>/.git/worktrees/<name>"
        text = git.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            roots.append(Path(text.split(":", 1)[1].strip()).resolve().parents[2])
    for root in roots:
        candidate = (root / ".." / "shared" / "faces").resolve()
        if candidate.is_dir():
            return candidate
    return None


def parse_json_output(stdout: str):
    """The script's JSON: the whole of stdout, or else the last JSON object that starts a line."""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    starts = [index for index, char in enumerate(stdout) if char == "{" and (index == 0 or stdout[index - 1] == "\n")]
    for start in reversed(starts):
        try:
            value, _ = decoder.raw_decode(stdout, start)
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("its output holds no JSON object")


def portable_command(command: list[str]) -> list[str]:
    """`command` as the document records it: the interpreter as `python`, absolute paths relative to the
    repository, so that the JSON names no folder of the machine it ran on."""
    return ["python" if argument == sys.executable else
            os.path.relpath(argument, REPO_ROOT) if os.path.isabs(argument) else argument for argument in command]


def run_one(name: str, command: list[str], timeout: float | None) -> dict:
    """Runs one benchmark script; its entry of the document."""
    logger.info("%s: %s", name, shlex.join(command))
    start = time.perf_counter()
    entry: dict = {"command": portable_command(command)}
    try:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=_child_environment()
        )
    except subprocess.TimeoutExpired:
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entry["error"] = f"timed out after {timeout:g} s"
        return entry
    entry["seconds"] = round(time.perf_counter() - start, 2)
    if completed.returncode != 0:
        entry["error"] = f"exit status {completed.returncode}: {completed.stderr[-STDERR_TAIL:].strip()}"
        return entry
    try:
        entry["result"] = parse_json_output(completed.stdout)
    except ValueError as error:
        entry["error"] = f"{error}: {completed.stdout[-STDERR_TAIL:].strip()!r}"
    return entry


def _child_environment() -> dict:
    """This process's environment with the repository's `src` first on PYTHONPATH (a checkout not installed)."""
    environment = dict(os.environ)
    paths = [str(REPO_ROOT / "src"), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment


def machine(load_before: list[float]) -> dict:
    """Cores, torch's default thread count, versions, platform, date, the load average before and now."""
    import torch

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "forgerytalker": version("forgerytalker"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _extra_arguments(pairs: list[str]) -> dict[str, list[str]]:
    extra = {}
    for pair in pairs:
        name, separator, arguments = pair.partition("=")
        if not separator or name not in BENCHMARKS:
            raise argparse.ArgumentTypeError(f"--args: expected NAME=ARGUMENTS with NAME one of {', '.join(BENCHMARKS)}, got {pair!r}")
        extra.setdefault(name, []).extend(shlex.split(arguments))
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller settings: a few minutes on 2 cores in all")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME", help=f"run these only: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, help="also write the document to this file")
    parser.add_argument("--faces", type=Path, help="face photos for the synthesis benchmark (default: ../shared/faces if it exists)")
    parser.add_argument(
        "--args", action="append", default=[], metavar="NAME=ARGUMENTS",
        help="arguments appended to one benchmark's command (repeatable), e.g. synthesis='--num-samples 50'",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one benchmark may run (default 3600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        extra = _extra_arguments(args.args)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    load_before = [round(value, 2) for value in os.getloadavg()]
    faces = args.faces or default_faces()
    results = {}
    for name in args.only or list(BENCHMARKS):
        benchmark = BENCHMARKS[name]
        arguments = list(benchmark.quick if args.quick else benchmark.full)
        if benchmark.needs_faces:
            if faces is None or not Path(faces).is_dir():
                reason = f"no face photos: pass --faces DIR ({faces or '../shared/faces'} is not a folder)"
                logger.warning("%s skipped: %s", name, reason)
                results[name] = {"skipped": reason}
                continue
            arguments = ["--faces", str(faces), *arguments]
        command = [sys.executable, str(HERE / benchmark.script), *arguments, *extra.get(name, [])]
        results[name] = {"measures": benchmark.what, **run_one(name, command, args.timeout)}
        if "error" in results[name]:
            logger.error("%s failed: %s", name, results[name]["error"].splitlines()[0])
        else:
            logger.info("%s done in %.1f s", name, results[name]["seconds"])
    document = {
        "machine": machine(load_before),
        "settings": "quick" if args.quick else "full",
        "benchmarks": results,
    }
    text = json.dumps(document, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if any("error" in entry for entry in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
