"""What a training run keeps in `--output_dir`, and the rules that protect an earlier run's work there.

The folder follows the shared policy (`forgerytalker.output_folder`): a run records the files it wrote in the shared
manifest when it ends, holds the folder's `train` lock while it runs, and swaps `best/` in whole.

- A new run (no `--resume`) refuses a non-empty `--output_dir` unless `--overwrite_output_dir`, which deletes
  the earlier run's checkpoints, `best/`, log and settings first (its final model files are replaced when the
  new run saves its own). It replaces only a training run's folder, and only when every file in it is the run's
  own (`check_only_training_files`): a file it did not write stops it, nothing deleted.
- `--resume` continues only the run whose `training_args.json` is in the folder, with the same settings
  (`settings_changes`): resuming under other settings would mix two runs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..output_folder import (
    ForeignFilesError,
    OutputFolderError,
    Owner,
    changed_settings,
    check_no_foreign,
    check_writable,
    files_in,
    lock_name,
    read_manifest,
    recover_swap,
    sibling,
    swap_in,
    write_manifest,
)
from .arguments import ForgeryTalkerTrainingArguments
from .checkpoints import CHECKPOINTS, is_checkpoint_name
from .errors import TrainingConfigurationError

ARGS_FILE = "training_args.json"
LOG_FILE = "log.jsonl"
BEST_DIR = "best"
TRACKER_DIR = "forgerytalker"  # the run name given to accelerate's trackers (TensorBoard writes there)
OWNER = Owner("forgerytalker train", who="a training run", overwrite_flag="--overwrite_output_dir")
_STAGING = (sibling(BEST_DIR, "partial").name, sibling(BEST_DIR, "replaced").name)
EARLIER_RUN_OUTPUTS = (CHECKPOINTS, BEST_DIR, *_STAGING, LOG_FILE, ARGS_FILE, TRACKER_DIR)
"""What only a training run writes; the final model's files beside them are its own where its manifest lists them."""

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
        check_writable(output_dir)
    except OutputFolderError as error:
        raise TrainingConfigurationError(f"--output_dir: {error}") from None
    contents = sorted(path.name for path in output_dir.iterdir() if path.name != lock_name(OWNER.command)) if output_dir.is_dir() else []
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
    if contents:
        try:
            check_only_training_files(output_dir)
        except ForeignFilesError as error:
            raise TrainingConfigurationError(f"--output_dir: {error}") from None


def check_only_training_files(output_dir: Path) -> None:
    """Refuses a folder `--overwrite_output_dir` would clear that is not a training run's, or holds files the run
    did not write: those its manifest lists, and (in a folder with `training_args.json`, also one a killed run or
    an earlier version left) the `EARLIER_RUN_OUTPUTS`, under `checkpoints/` only inside a checkpoint's folder.

    Raises:
        ForeignFilesError: naming the files; nothing was deleted.
    """
    owned = read_manifest(output_dir, OWNER)
    is_run = (output_dir / ARGS_FILE).is_file()
    if owned is None and not is_run:
        raise ForeignFilesError(
            f"{output_dir} is not the folder of a training run (no {ARGS_FILE}); --overwrite_output_dir replaces only "
            "a training run's folder, nothing was deleted: choose another --output_dir"
        )

    def written_by_a_run(path: Path) -> bool:
        parts = path.relative_to(output_dir).parts
        if not is_run or parts[0] not in EARLIER_RUN_OUTPUTS:
            return is_run and owned is None
        return parts[0] != CHECKPOINTS or (len(parts) > 2 and is_checkpoint_name(parts[1]))

    check_no_foreign(output_dir, OWNER, legacy_own=written_by_a_run)


def settings_changes(saved: dict, current: dict) -> list[str]:
    """`"name: old -> new"` for each setting that differs from the saved run's, except `RESUMABLE_CHANGES` (the shared
    rule, `output_folder.changed_settings`; settings an earlier version did not record are not compared)."""
    return changed_settings(saved, current, ignore=RESUMABLE_CHANGES, only_recorded=True)


def clear_earlier_run(output_dir: Path) -> None:
    """`--overwrite_output_dir`: deletes what an earlier run wrote that the new one would mix with or rotate away."""
    for name in EARLIER_RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def replace_folder(staging: Path, final: Path) -> None:
    """Puts a fully written `staging` folder (`sibling(final, "partial")`) in place of `final` by renames
    (`output_folder.swap_in`); at every moment one complete version exists."""
    write_manifest(staging, OWNER)
    swap_in(staging, final, OWNER, legacy_own=lambda path: True)  # an earlier version's best/ has no manifest


def recover_folder(final: Path) -> None:
    """Undoes what a kill inside `replace_folder` (or while writing its staging folder) left behind."""
    staging = sibling(final, "partial")
    if staging.exists():
        shutil.rmtree(staging)
    recover_swap(final, OWNER)


def file_states(output_dir: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, modification time) of every file in `output_dir`, to tell what a save wrote."""
    return {name: _state(output_dir / name) for name in files_in(output_dir)}


def _state(path: Path) -> tuple[int, int]:
    status = path.lstat()
    return status.st_size, status.st_mtime_ns


def record_run_files(output_dir: Path, before_final_save: dict[str, tuple[int, int]]) -> None:
    """Records in the folder's manifest the files of the finished run: the `EARLIER_RUN_OUTPUTS`, what the final
    save wrote (changed since `before_final_save`), and what the manifest listed before, unchanged."""
    owned = read_manifest(output_dir, OWNER) or {}
    files = {}
    for name, size in files_in(output_dir).items():
        path = output_dir / name
        if (Path(name).parts[0] in EARLIER_RUN_OUTPUTS or before_final_save.get(name) != _state(path)
                or owned.get(name) == size):  # fmt: skip
            files[name] = size
    write_manifest(output_dir, OWNER, files)
