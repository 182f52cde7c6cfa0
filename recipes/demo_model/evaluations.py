"""The demo model's evaluation runs: `forgerytalker evaluate` on the held-out test identities, one output
folder (`metrics.json`, `predictions.jsonl`, `masks/`) per table row."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from .settings import RecipeSettings

logger = logging.getLogger(__name__)


def evaluate(model: Path, dataset: Path, out: Path, settings: RecipeSettings, regions: str = "predicted",
             degrade: bool = False, meteor: bool = True, max_new_tokens: int | None = None) -> dict:
    """`metrics.json` of `model` on the test split (computed once; a killed run resumes). Reports are cut at
    `max_new_tokens` (default `settings.max_new_tokens`)."""
    metrics = out / "metrics.json"
    if not metrics.is_file():
        command = [sys.executable, "-m", "forgerytalker.cli", "evaluate", "--model", str(model), "--data", str(dataset),
                   "--split", "test", "--out", str(out), "--regions", regions, "--batch-size", "16",
                   "--max-new-tokens", str(max_new_tokens or settings.max_new_tokens), "--num-threads", str(settings.workers),
                   "--no-progress", "--meteor" if meteor else "--no-meteor"]
        if degrade:
            command += [argument for spec in settings.degradations for argument in ("--degrade", spec)]
        logger.info("$ %s", " ".join(command))
        subprocess.run(command, check=True)
    return json.loads(metrics.read_text())


def predictions(run: Path) -> list[dict]:
    """The `predictions.jsonl` records of an evaluation run, in split order."""
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]
