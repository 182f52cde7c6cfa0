"""What a training run keeps in `--output_dir`, and the rules that protect an earlier run's work there.

- A new run (no `--resume`) refuses a non-empty `--output_dir` unless `--overwrite_output_dir`, which deletes
  the earlier run's checkpoints, `best/`, log and settings first (its final model files are replaced when the
  new run saves its own).
- `--resume` continues only the run whose `training_args.json` is in the folder, with the same settings
  (`settings_changes`): resuming under other settings would mix two runs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..data.errors import DataInputError
from ..data.output_folders import check_output_folder
from .arguments import ForgeryTalkerTrainingArguments
from .checkpoints import CHECKPOINTS
from .errors import TrainingConfigurationError

ARGS_FILE = "training_args.json"
LOG_FILE = "log.jsonl"
BEST_DIR = "best"
TRACKER_DIR = "forgerytalker"  # the run name given to accelerate's trackers (TensorBoard writes there)
_STAGING_SUFFIXES = (".tmp", ".old")
EARLIER_RUN_OUTPUTS = (
    CHECKPOINTS, BEST_DIR, *(BEST_DIR + suffix for suffix in _STAGING_SUFFIXES), LOG_FILE, ARGS_FILE, TRACKER_DIR
)

RESUMABLE_CHANGES = frozenset({
    "resume", "overwrite_output_dir", "output_dir", "logging_steps", "log_batch_ids", "report_to_tensorboard",
    "dataloader_num_workers", "save_steps", "save_total_limit",
    # what the error of a run stopped by an unreadable image advises; the samples before it were all readable
    "skip_unreadable_images",
})
"""Settings a resumed run may change: they affect neither the weights nor the validation."""


def check_output_dir(args: ForgeryTalkerTrainingArguments) -> None:
    """Refuses an `--output_dir` the run would damage or mix with another run (module docstring). Writes nothing."""
    output_dir = Path(args.output_dir)
    try:  # a file, a folder under a file, or one that cannot be written to
        check_output_folder(output_dir, "output_dir")
    except DataInputError as error:
        raise TrainingConfigurationError(error.render({"output_dir": "--output_dir"})) from None
    contents = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    if args.resume:
        saved = output_dir / ARGS_FILE
        if saved.is_file():
            changes = settings_changes(json.loads(saved.read_text()), dataclasses.asdict(args))
            if changes:
                raise TrainingConfigurationError(
                    f"--resume: the run in {output_dir} was started with other settings ({'; '.join(changes)}); resume "
                    "it with its own settings, or start a new run in another --output_dir"
                )
        elif contents:
            raise TrainingConfigurationError(f"--resume: {output_dir} holds no training run (no {ARGS_FILE}) but is not empty")
        return
    if contents and not args.overwrite_output_dir:
        shown = ", ".join(contents[:6]) + (", ..." if len(contents) > 6 else "")
        raise TrainingConfigurationError(
            f"--output_dir: {output_dir} is not empty ({shown}); pass --resume to continue the run there, "
            "--overwrite_output_dir to replace it, or choose another folder"
        )


def settings_changes(saved: dict, current: dict) -> list[str]:
    """`"name: old -> new"` for each setting that differs from the saved run's, except `RESUMABLE_CHANGES`."""
    changes = []
    for name, value in current.items():
        if name in RESUMABLE_CHANGES or name not in saved:
            continue
        if saved[name] != value:
            changes.append(f"{name}: {saved[name]!r} -> {value!r}")
    return changes


def clear_earlier_run(output_dir: Path) -> None:
    """`--overwrite_output_dir`: deletes what an earlier run wrote that the new one would mix with or rotate away."""
    for name in EARLIER_RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def replace_folder(staging: Path, final: Path) -> None:
    """Puts a fully written `staging` folder in place of `final`; at every moment one complete version exists
    (`final`, or `final.old` until `recover_folder` puts it back)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def recover_folder(final: Path) -> None:
    """Undoes what a kill inside `replace_folder` (or while writing its staging folder) left behind."""
    staging, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    if staging.exists():
        shutil.rmtree(staging)
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)
