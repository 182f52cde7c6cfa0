"""What the `forgerytalker evaluate` tests share: the command line of a run on the fixture dataset and readers
of what it wrote. The tiny model and the split it evaluates are fixtures in conftest.py (`model_dir`, `split`)."""

from __future__ import annotations

import json
from pathlib import Path


SPLIT = "validation"  # 4 samples: forged and authentic, so AUC is defined


def evaluate_arguments(model_dir, data_dir, out, *extra) -> list[str]:
    return ["evaluate", "--model", str(model_dir), "--data", str(data_dir), "--split", SPLIT, "--out", str(out),
            "--no-progress", *extra]


def read_predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def output_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
