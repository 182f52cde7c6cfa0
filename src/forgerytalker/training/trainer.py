"""The training loop: one entry point for both stages, on one process or many (Accelerate).

Every process runs the same code path: the start-up checks, the training steps, validation (each process
scores its share) and the best-model decision; only writing files is left to the main process.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..output_folder import FolderLockedError, locked, sibling
from .arguments import ForgeryTalkerTrainingArguments
from .augmentation import AugmentationSettings
from .checkpoints import TrainerState, resume_from_latest, save_checkpoint
from .data import ForgeryTalkerCollator
from .errors import TrainingConfigurationError
from .model_setup import build_model_and_processor
from .output_folder import (
    ARGS_FILE,
    BEST_DIR,
    LOG_FILE,
    OWNER,
    TRACKER_DIR,
    clear_earlier_run,
    file_states,
    record_run_files,
    recover_folder,
    replace_folder,
)
from .region_map import fit_region_map, region_map_rows
from .startup_checks import run_startup_checks
from .validation import is_improvement, validate

logger = logging.getLogger(__name__)

LOSS_NAMES = {"prompter": ("loss",), "joint": ("loss", "language_model_loss", "mask_loss", "region_loss")}


def train(args: ForgeryTalkerTrainingArguments) -> Path:
    """Runs (or resumes) one training stage; returns the folder with the final model and processor.

    Raises `TrainingConfigurationError` (on every process, before anything is written or built) for a bad
    output folder, model source, dataset or missing tool, and `UnreadableSampleError` naming the image id of a
    sample that cannot be decoded (unless `args.skip_unreadable_images`).
    """
    with contextlib.ExitStack() as held:
        return _train(args, held)


def _train(args: ForgeryTalkerTrainingArguments, held: contextlib.ExitStack) -> Path:
    """`train`; the main process holds the output folder's lock in `held` (released when the run ends)."""
    output_dir = Path(args.output_dir)
    log_with = "tensorboard" if args.report_to_tensorboard and _tensorboard_available() else None
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=log_with,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    _run(accelerator, args, output_dir, log_with, held)
    # The prepared model, optimizer and loaders (freed as `_run` returned) go before the process group does: DDP's
    # gradient reducer keeps its own reference to the group, and as the group's last owner its C++ destructor
    # joins gloo's worker threads while holding the GIL, which a worker still releasing a finished collective's
    # tensors waits for (a deadlock, seen on two CPU processes).
    accelerator.free_memory()
    accelerator.end_training()
    return output_dir


def _run(accelerator: Accelerator, args: ForgeryTalkerTrainingArguments, output_dir: Path, log_with: str | None,
         held: contextlib.ExitStack) -> None:
    """The run itself: start-up checks, the training steps with validation and checkpoints, the final model."""
    train_split, validation_split = run_startup_checks(args)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _prepare_output_dir(args, output_dir, held)
    accelerator.wait_for_everyone()
    set_seed(args.seed)
    if log_with:
        accelerator.init_trackers(TRACKER_DIR, config={k: v for k, v in dataclasses.asdict(args).items() if v is not None})

    train_split = _first(train_split, args.max_train_samples)
    validation_split = _first(validation_split, args.max_eval_samples)
    model, processor = build_model_and_processor(args, train_split["caption"] if args.stage == "joint" else [])

    loader = DataLoader(
        train_split,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=ForgeryTalkerCollator(processor, args.stage, args.skip_unreadable_images, _augmentation(args, processor),
                                         patch_grid=_patch_grid(args, model)),
        num_workers=args.dataloader_num_workers,
    )
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    module, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # Accelerate ends an accumulation at the end of the loader, so an epoch's last step may use fewer batches.
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # A prepared scheduler steps once per process at every optimizer step.
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)
    map_rows = _region_map_rows(args, model, train_split)

    state = TrainerState()
    if args.resume:
        state, record = resume_from_latest(accelerator, output_dir)
        if record:
            _log(accelerator, output_dir, record)
    logger.info("Training stage %s for %d steps (%d per epoch) on %d process(es)", args.stage, total_steps,
                steps_per_epoch, accelerator.num_processes)
    progress = tqdm(total=total_steps, initial=state.step, desc=f"train {args.stage}",
                    disable=not accelerator.is_local_main_process)
    window = _Window(tuple(name for name in LOSS_NAMES[args.stage] if not (args.mask_only and name == "language_model_loss")))
    skipped_images: set[str] = set()
    while state.step < total_steps:
        epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
        loader.set_epoch(epoch)
        # only a resumed run starts inside an epoch; every step before the epoch's last used a full accumulation
        skip = step_in_epoch * args.gradient_accumulation_steps
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            image_ids, skipped, weight = batch.pop("image_ids"), batch.pop("skipped_image_ids"), batch.pop("loss_weight")
            with accelerator.accumulate(module):
                losses = _losses(module, batch, args)
                accelerator.backward(losses["loss"] * weight)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window.add(losses if weight else None, len(image_ids), image_ids, skipped)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            progress.update(1)
            if state.step % args.logging_steps == 0 or state.step == total_steps:
                summary = window.summary(accelerator, args.log_batch_ids)
                skipped_images.update(summary.get("skipped_images", ()))
                _log(accelerator, output_dir, {"step": state.step, "epoch": epoch, "learning_rate": scheduler.get_last_lr()[0],
                                               **summary})
            if validation_split is not None and (state.step % args.eval_steps == 0 or state.step == total_steps):
                _validate_and_keep_best(accelerator, module, processor, validation_split, args, state, output_dir, map_rows)
            if state.step % args.save_steps == 0 or state.step == total_steps:
                save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if state.step >= total_steps:
                break
    progress.close()
    if skipped_images:
        logger.warning("Left out %d unreadable image(s): %s", len(skipped_images), sorted(skipped_images))
        _log(accelerator, output_dir, {"step": state.step, "unreadable_images": sorted(skipped_images)})
    if map_rows is not None and validation_split is None:  # else the last validation fitted it
        _fit_region_map(accelerator, module, processor, map_rows, args)
    _save_final(accelerator, module, processor, output_dir)


def _prepare_output_dir(args: ForgeryTalkerTrainingArguments, output_dir: Path, held: contextlib.ExitStack) -> None:
    """Main process, after the start-up checks: takes the folder's lock, clears an earlier run if asked, records the
    settings."""
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        held.enter_context(locked(output_dir, OWNER.command, "--output_dir"))
    except FolderLockedError as error:
        raise TrainingConfigurationError(f"--output_dir: {error}") from None
    if args.overwrite_output_dir:
        clear_earlier_run(output_dir)
    recover_folder(output_dir / BEST_DIR)
    if not (output_dir / ARGS_FILE).is_file():
        (output_dir / ARGS_FILE).write_text(json.dumps(dataclasses.asdict(args), indent=2))


def _first(split, count: int | None):
    return split.select(range(min(count, len(split)))) if split is not None and count else split


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _augmentation(args: ForgeryTalkerTrainingArguments, processor) -> AugmentationSettings | None:
    """`--augment`'s settings, working at the model's input size."""
    if not args.augment:
        return None
    image_processor = processor if args.stage == "prompter" else processor.image_processor
    return AugmentationSettings(working_size=max(image_processor.size["height"], image_processor.size["width"]))


def _region_map_rows(args: ForgeryTalkerTrainingArguments, model, train_split):
    """Stage 1 of a prompter with a region map: the training rows it is fitted on (`training.region_map`); else
    `None`."""
    if args.stage == "prompter" and model.config.has_region_map:
        return region_map_rows(train_split, args.region_map_samples, args.seed)
    return None


def _fit_region_map(accelerator: Accelerator, module, processor, rows, args: ForgeryTalkerTrainingArguments) -> None:
    count = fit_region_map(accelerator.unwrap_model(module), processor, rows, args.per_device_eval_batch_size, accelerator,
                           args.skip_unreadable_images)
    logger.info("Fitted the region map on %d manipulated training faces", count)


def _patch_grid(args: ForgeryTalkerTrainingArguments, model) -> int | None:
    """Stage 1 of a prompter with a patch head (`patch_mask_loss_weight > 0`) trains it on the masks: the grid its
    labels need; otherwise None."""
    if args.stage == "prompter" and model.config.has_patch_head:
        return model.config.patch_grid
    return None


def _losses(module, batch: dict, args: ForgeryTalkerTrainingArguments) -> dict[str, torch.Tensor]:
    """The loss to optimise (`"loss"`) and its parts, for the stage's forward pass.

    Stage 2 names `--train_region_source`'s regions in the instruction; `--mask_only` drops the report labels,
    so only the mask loss trains.
    """
    if args.stage == "prompter":
        output = module(pixel_values=batch["pixel_values"], region_labels=batch["region_labels"],
                        patch_mask_labels=batch.get("patch_mask_labels"))
        return {"loss": output.loss}
    if args.mask_only:
        batch = {name: value for name, value in batch.items() if name != "labels"}
    output = module(**batch, region_source=args.train_region_source)
    return {"loss": output.loss, "language_model_loss": output.language_model_loss, "mask_loss": output.mask_loss,
            "region_loss": output.region_loss}


class _Window:
    """Losses, sample count, ids and skipped ids since the last log line."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.reset()

    def reset(self):
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.batches = 0
        self.samples = 0
        self.image_ids: list[str] = []
        self.skipped: list[str] = []
        self.started = time.perf_counter()

    def add(self, losses: dict | None, samples: int, image_ids: list[str], skipped: list[str]):
        """One micro-batch; `losses` is `None` for a placeholder batch (all its images unreadable)."""
        if losses is not None:
            self.sums += torch.tensor([float(losses[name].detach()) for name in self.names], dtype=torch.float64)
            self.batches += 1
        self.samples += samples
        self.image_ids += image_ids
        self.skipped += skipped

    def summary(self, accelerator: Accelerator, with_ids: bool) -> dict:
        """Mean losses over the window's batches on all processes (a collective: every process calls it)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        totals = torch.cat([self.sums, torch.tensor([self.batches, self.samples], dtype=torch.float64)]).to(accelerator.device)
        skipped = self.skipped
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="sum")
            skipped = gather_object(skipped)
        totals = totals.tolist()
        batches, samples = totals[-2], totals[-1]
        # `None` when every batch of the window was an unreadable-image placeholder
        record = {name: (value / batches if batches else None) for name, value in zip(self.names, totals)}
        record["samples_per_second"] = samples / elapsed
        if with_ids:
            record["image_ids"] = self.image_ids  # the main process's share of the batches
        if skipped:
            record["skipped_images"] = sorted(set(skipped))
        self.reset()
        return record


def _log(accelerator: Accelerator, output_dir: Path, record: dict) -> None:
    if not accelerator.is_main_process:
        return
    with (output_dir / LOG_FILE).open("a") as log:
        log.write(json.dumps(record) + "\n")
    scalars = {key: value for key, value in record.items() if isinstance(value, (int, float)) and key != "step"}
    if accelerator.trackers:
        accelerator.log(scalars, step=record["step"])


def _validate_and_keep_best(accelerator, module, processor, split, args, state: TrainerState, output_dir: Path,
                            map_rows=None) -> None:
    """Validation on every process (after fitting the region map on `map_rows`, if given); the main process's result
    decides the best model for all of them."""
    if map_rows is not None:
        _fit_region_map(accelerator, module, processor, map_rows, args)
    model = accelerator.unwrap_model(module)
    metrics = validate(model, processor, split, args, accelerator)  # restores the training mode
    metrics = broadcast_object_list([metrics], from_process=0)[0]
    _log(accelerator, output_dir, {"step": state.step, "validation": metrics})
    value = metrics.get(args.best_metric)
    if value is None:
        raise ValueError(f"--best_metric {args.best_metric!r} is not among this validation's metrics {sorted(metrics)}")
    if is_improvement(args.best_metric, value, state.best_metric):
        state.best_metric, state.best_step = float(value), state.step
        if accelerator.is_main_process:
            staging = sibling(output_dir / BEST_DIR, "partial")
            _save_model(model, processor, staging)
            replace_folder(staging, output_dir / BEST_DIR)
        logger.info("New best %s = %.4f at step %d", args.best_metric, value, state.step)
    accelerator.wait_for_everyone()


def _save_model(model, processor, folder: Path) -> None:
    """`save_pretrained` of the model (LoRA merged into a copy) and its processor, loadable by AutoModel (and, for
    a stage-1 prompter, by `--prompter_name_or_path`)."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _save_final(accelerator: Accelerator, module, processor, output_dir: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        before = file_states(output_dir)
        _save_model(accelerator.unwrap_model(module), processor, output_dir)
        record_run_files(output_dir, before)
        logger.info("Saved the final model and processor to %s", output_dir)
    accelerator.wait_for_everyone()
