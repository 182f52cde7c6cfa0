"""Running `training/run.py` the ways the training tests run it (launched on one or two CPU processes, or in
this process) and reading what a run wrote. The runs several test files share are fixtures in conftest.py
(`stage_one`, `no_model_may_be_built`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from launching import launch_processes

from forgerytalker.training.arguments import parse_arguments


REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "training" / "run.py"


def launch(*arguments: str) -> list[str]:
    """The `accelerate launch --cpu training/run.py ...` command line of a one-process run (runs on several CPU
    processes are launched by `launching.launch_processes`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", str(RUN), *arguments]


def environment(scratch: Path, **overrides: str) -> dict[str, str]:
    """The launched run's environment; its temporary files (torch elastic's among them) go under `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(scratch), **overrides)


def run_training(*arguments: str, scratch: Path, processes: int = 1, **environ: str) -> subprocess.CompletedProcess:
    if processes == 1:
        result = subprocess.run(launch(*arguments), env=environment(scratch, **environ), cwd=REPO, capture_output=True,
                                text=True, timeout=600)
    else:
        result = launch_processes([str(RUN), *arguments], scratch, processes, **environ)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def reset_accelerate() -> None:
    """Forgets the Accelerate state of an in-process run, so the next one starts like a new program."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train_here(*arguments: str) -> Path:
    """`training/run.py ARGUMENTS` in this process (one Accelerate process), raising what the run raises."""
    from forgerytalker.training.trainer import train

    try:
        return train(parse_arguments(list(arguments)))
    finally:
        reset_accelerate()


def run_cli(*arguments: str) -> int:
    """`training/run.py`'s `main` in this process; returns its exit code."""
    spec = importlib.util.spec_from_file_location("training_run", REPO / "training" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(list(arguments))
    except SystemExit as exit:
        return exit.code
    finally:
        reset_accelerate()


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def step_records(log: list[dict]) -> dict[int, dict]:
    """The last record of each training step (a resumed run logs the steps it redoes again)."""
    return {record["step"]: record for record in log if "loss" in record}


def ids_per_epoch(steps: dict[int, dict]) -> dict[int, Counter]:
    epochs: dict[int, Counter] = {}
    for record in steps.values():
        epochs.setdefault(record["epoch"], Counter()).update(record["image_ids"])
    return epochs


def tiny(stage: str, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "training" / "configs" / f"tiny_{stage}.yaml"), "--dataset", str(dataset),
            "--output_dir", str(output_dir), *extra]


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def train_ids(dataset: Path, count: int | None = None) -> list[str]:
    from datasets import load_dataset

    ids = load_dataset(str(dataset), split="train")["image_id"]
    return ids[:count] if count else ids
