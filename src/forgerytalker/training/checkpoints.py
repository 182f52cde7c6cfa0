"""Checkpoints of a training run: written so that a kill never leaves one that looks whole, found so that an
incomplete or damaged one is never resumed from.

A checkpoint is `checkpoints/step-N/`: `accelerator.save_state` (model, optimizer, scheduler, each process's
RNG state) written into `step-N.tmp/`, then `trainer_state.json` (the trainer's own state, the size of every
file and torch's CPU thread count), then the rename. `complete_checkpoints` accepts only a folder of that exact
name whose state file reads and whose files are all there at their recorded sizes; anything else (a `.tmp`
folder from a run killed while saving, whatever it holds; a truncated or partly copied checkpoint) is skipped
with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from accelerate.utils import load as accelerate_load

from .errors import TrainingConfigurationError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
RNG_STATE_FILE = "random_states_{}.pkl"  # accelerate's name for process i's RNG state
_CHECKPOINT_NAME = re.compile(r"step-(\d+)")
_PARTIAL_SUFFIX = ".tmp"


@dataclasses.dataclass
class TrainerState:
    """What a checkpoint must remember besides model, optimizer, scheduler and RNG states."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None


def is_checkpoint_name(name: str) -> bool:
    """Whether `name` is a checkpoint folder's name, finished (`step-N`) or being written (`step-N.tmp`)."""
    return _CHECKPOINT_NAME.fullmatch(name.removesuffix(_PARTIAL_SUFFIX)) is not None


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or `None` if it is one."""
    match = _CHECKPOINT_NAME.fullmatch(folder.name)
    if match is None:
        if folder.name.endswith(_PARTIAL_SUFFIX):
            return "not a finished checkpoint (a run was killed while writing it)"
        return "not a checkpoint name"
    try:
        saved = json.loads((folder / STATE_FILE).read_text())
        state, files = TrainerState(**saved["state"]), dict(saved["files"])
    except FileNotFoundError:
        return f"it has no {STATE_FILE}"
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"its {STATE_FILE} cannot be read ({type(error).__name__}: {error})"
    if state.step != int(match.group(1)):
        return f"its {STATE_FILE} is for step {state.step}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes instead of {size}"
    return None


def complete_checkpoints(output_dir: Path, warn: bool = False) -> list[Path]:
    """The complete checkpoints of a run, oldest first; with `warn`, each skipped folder is logged."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    complete = []
    for path in sorted(folder.iterdir()):
        problem = checkpoint_problem(path)
        if problem is None:
            complete.append(path)
        elif warn:
            logger.warning("Ignoring %s: %s", path, problem)
    return sorted(complete, key=lambda path: int(_CHECKPOINT_NAME.fullmatch(path.name).group(1)))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: TrainerState, keep: int) -> None:
    """Writes checkpoint `step-<state.step>` (see the module docstring) and removes complete ones beyond `keep`.

    Every process calls it.
    """
    final = output_dir / CHECKPOINTS / f"step-{state.step:08d}"
    partial = final.with_name(final.name + _PARTIAL_SUFFIX)
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {str(path.relative_to(partial)): path.stat().st_size for path in sorted(partial.rglob("*")) if path.is_file()}
        saved = {"state": dataclasses.asdict(state), "files": files, "torch_threads": torch.get_num_threads()}
        (partial / STATE_FILE).write_text(json.dumps(saved))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_from_latest(accelerator: Accelerator, output_dir: Path) -> tuple[TrainerState, dict | None]:
    """Loads the latest complete checkpoint into the prepared objects; every process calls it.

    Returns the trainer state and a record for the log (`None` when there is no checkpoint yet):
    `{"resumed_from": folder, "step": N, "reproducible": bool}`. `reproducible` is False (a warning says why;
    the run goes on) when some process's RNG state could not be restored, so that its random draws differ from
    an uninterrupted run's, or when a CPU process runs with another number of torch threads than the run that
    wrote the checkpoint, so that its sums are split differently and the weights drift from an uninterrupted
    run's in the last digits. A checkpoint that passes the completeness checks but cannot be loaded is a
    `TrainingConfigurationError` naming it.
    """
    checkpoints = complete_checkpoints(output_dir, warn=accelerator.is_main_process)
    if accelerator.is_main_process:
        for partial in (output_dir / CHECKPOINTS).glob(f"step-*{_PARTIAL_SUFFIX}"):
            shutil.rmtree(partial)
    if not checkpoints:
        logger.warning("--resume: no complete checkpoint in %s yet, starting from the beginning", output_dir / CHECKPOINTS)
        return TrainerState(), None
    latest = checkpoints[-1]
    try:
        accelerator.load_state(str(latest))
    except Exception as error:  # accelerate and torch raise many types for damaged files
        raise TrainingConfigurationError(
            f"--resume: checkpoint {latest} cannot be loaded ({type(error).__name__}: {error}); delete it to resume "
            "from the one before"
        ) from error
    saved = json.loads((latest / STATE_FILE).read_text())
    state = TrainerState(**saved["state"])
    problem = _rng_state_problem(latest / RNG_STATE_FILE.format(accelerator.process_index))
    if problem:
        logger.warning(
            "%s: %s; training continues, but the run is no longer reproducible: its random draws from step %d on "
            "differ from an uninterrupted run's", latest, problem, state.step,
        )
    drift = _thread_count_problem(saved.get("torch_threads"), accelerator)
    if drift:
        logger.warning("%s: %s; training continues, but the run is no longer reproducible", latest, drift)
    exact = problem is None and drift is None
    reproducible = all(gather_object([exact])) if accelerator.num_processes > 1 else exact
    logger.info("Resumed from %s (step %d)", latest, state.step)
    return state, {"resumed_from": str(latest.relative_to(output_dir)), "step": state.step, "reproducible": reproducible}


def _rng_state_problem(path: Path) -> str | None:
    """Why the RNG state in `path` was not restored by `load_state` (which only logs such a failure), or `None`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of a damaged file
            states = accelerate_load(path)
        restored = (
            random.getstate() == states["random_state"]
            and _same_numpy_state(np.random.get_state(), states["numpy_random_seed"])
            and torch.equal(torch.get_rng_state(), states["torch_manual_seed"])
        )
    except Exception as error:  # a damaged pickle raises anything
        return f"the random-number state {path.name} cannot be read ({type(error).__name__})"
    return None if restored else f"the random-number state {path.name} was not restored"


def _thread_count_problem(saved: int | None, accelerator: Accelerator) -> str | None:
    """Why this CPU process's arithmetic differs from that of the run that wrote the checkpoint, or `None`.

    The CPU kernels split their sums over torch's intra-op threads, so another thread count rounds differently.
    `saved` is `None` for a checkpoint written before the count was recorded.
    """
    current = torch.get_num_threads()
    if saved is None or accelerator.device.type != "cpu" or saved == current:
        return None
    return (f"it was written by a run with {saved} torch CPU thread(s) and this one has {current}, so the weights "
            f"drift from an uninterrupted run's in the last digits (OMP_NUM_THREADS={saved} resumes it exactly)")


def _same_numpy_state(current: tuple, saved: tuple) -> bool:
    return len(current) == len(saved) and all(np.array_equal(a, b) for a, b in zip(current, saved))
