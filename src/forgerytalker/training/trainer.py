"""The training loop: one entry point for both stages, on one process or many (Accelerate)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .arguments import ForgeryTalkerTrainingArguments
from .data import ForgeryTalkerCollator, load_splits
from .model_setup import build_model_and_processor, trainable_module
from .validation import validate

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"
BEST_DIR = "best"


@dataclasses.dataclass
class TrainerState:
    """What a checkpoint must remember besides model, optimizer, scheduler and RNG states."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint is complete once renamed from its `.tmp` folder)."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    complete = [path for path in folder.iterdir() if path.name.startswith("step-") and (path / STATE_FILE).is_file()]
    return sorted(complete, key=lambda path: int(path.name.removeprefix("step-")))


def train(args: ForgeryTalkerTrainingArguments) -> Path:
    """Runs (or resumes) one training stage; returns the folder with the final model and processor."""
    output_dir = Path(args.output_dir)
    log_with = "tensorboard" if args.report_to_tensorboard and _tensorboard_available() else None
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=log_with,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    if log_with:
        accelerator.init_trackers("forgerytalker", config={k: v for k, v in dataclasses.asdict(args).items() if v is not None})

    train_split, validation_split = load_splits(args.dataset, args.train_split, args.validation_split)
    train_split = _first(train_split, args.max_train_samples)
    validation_split = _first(validation_split, args.max_eval_samples)
    model, processor = build_model_and_processor(args, train_split["caption"])
    module = trainable_module(model, args.stage)

    loader = DataLoader(
        train_split,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=ForgeryTalkerCollator(processor, args.stage),
        num_workers=args.dataloader_num_workers,
    )
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
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

    state = _resume(accelerator, output_dir) if args.resume else TrainerState()
    logger.info("Training stage %s for %d steps (%d per epoch) on %d process(es)", args.stage, total_steps,
                steps_per_epoch, accelerator.num_processes)
    progress = tqdm(total=total_steps, initial=state.step, desc=f"train {args.stage}", disable=not accelerator.is_local_main_process)
    window = _Window()
    while state.step < total_steps:
        consumed = state.step * args.gradient_accumulation_steps
        epoch, skip = divmod(consumed, len(loader))
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            image_ids = batch.pop("image_ids")
            with accelerator.accumulate(module):
                losses = _losses(module, batch, args.stage)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window.add(losses, len(image_ids) * accelerator.num_processes, image_ids)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            progress.update(1)
            if state.step % args.logging_steps == 0 or state.step == total_steps:
                _log(accelerator, output_dir, {"step": state.step, "epoch": epoch, "learning_rate": scheduler.get_last_lr()[0],
                                               **window.summary(accelerator, args.log_batch_ids)})
            if validation_split is not None and (state.step % args.eval_steps == 0 or state.step == total_steps):
                _validate_and_keep_best(accelerator, model, processor, validation_split, args, state, output_dir)
            if state.step % args.save_steps == 0 or state.step == total_steps:
                _save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if state.step >= total_steps:
                break
    progress.close()
    _save_final(accelerator, model, processor, output_dir)
    accelerator.end_training()
    return output_dir


def _first(split, count: int | None):
    return split.select(range(min(count, len(split)))) if split is not None and count else split


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _losses(module, batch: dict, stage: str) -> dict[str, torch.Tensor]:
    """The loss to optimise (`"loss"`) and its parts, for the stage's forward pass."""
    if stage == "prompter":
        output = module(pixel_values=batch["pixel_values"], region_labels=batch["region_labels"])
        return {"loss": output.loss, "region_loss": output.loss}
    output = module(**batch)
    return {"loss": output.loss, "language_model_loss": output.language_model_loss, "mask_loss": output.mask_loss,
            "region_loss": output.region_loss}


class _Window:
    """Losses, sample count and ids since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums: dict[str, float] = {}
        self.batches = 0
        self.samples = 0
        self.image_ids: list[str] = []
        self.started = time.perf_counter()

    def add(self, losses: dict, samples: int, image_ids: list[str]):
        for name, value in losses.items():
            if value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.batches += 1
        self.samples += samples
        self.image_ids += image_ids

    def summary(self, accelerator: Accelerator, with_ids: bool) -> dict:
        """Mean losses over the window and all processes (a collective: every process calls it)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        names = sorted(self.sums)
        means = torch.tensor([self.sums[name] / self.batches for name in names], device=accelerator.device)
        means = accelerator.reduce(means, reduction="mean") if accelerator.num_processes > 1 else means
        record = dict(zip(names, means.tolist()))
        record["samples_per_second"] = self.samples / elapsed
        if with_ids:
            record["image_ids"] = self.image_ids  # the main process's share of the batches
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


def _validate_and_keep_best(accelerator, model, processor, split, args, state: TrainerState, output_dir: Path) -> None:
    base = accelerator.unwrap_model(model)
    if args.stage != "prompter" or accelerator.is_main_process:  # stage 2: every process evaluates its shard
        metrics = validate(base, processor, split, args, accelerator)
    if accelerator.is_main_process:
        base.train()
        _log(accelerator, output_dir, {"step": state.step, "validation": metrics})
        value = metrics.get(args.best_metric)
        if value is None:
            raise ValueError(f"--best_metric {args.best_metric!r} is not among the validation metrics {sorted(metrics)}")
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step = float(value), state.step
            _save_model(base, processor, output_dir / BEST_DIR)
            logger.info("New best %s = %.4f at step %d", args.best_metric, value, state.step)
    accelerator.wait_for_everyone()
    # every process keeps the same best-so-far, so the checkpoints they write agree
    shared = broadcast_object_list([dataclasses.asdict(state)], from_process=0)
    state.best_metric, state.best_step = shared[0]["best_metric"], shared[0]["best_step"]


def _save_model(model, processor, folder: Path) -> None:
    """`save_pretrained` of the model (LoRA merged into a copy) and its processor, loadable by AutoModel."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, state: TrainerState, keep: int) -> None:
    """`accelerator.save_state` into a `.tmp` folder that is renamed when complete, so a killed run never
    leaves a checkpoint that looks whole; older checkpoints beyond `keep` are removed."""
    final = output_dir / CHECKPOINTS / f"step-{state.step:08d}"
    partial = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _resume(accelerator: Accelerator, output_dir: Path) -> TrainerState:
    checkpoints = checkpoint_dirs(output_dir)
    if not checkpoints:
        logger.warning("--resume: no checkpoint in %s yet, starting from the beginning", output_dir / CHECKPOINTS)
        return TrainerState()
    latest = checkpoints[-1]
    accelerator.load_state(str(latest))
    state = TrainerState(**json.loads((latest / STATE_FILE).read_text()))
    logger.info("Resumed from %s (step %d)", latest, state.step)
    return state


def _save_final(accelerator: Accelerator, model, processor, output_dir: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(accelerator.unwrap_model(model), processor, output_dir)
        logger.info("Saved the final model and processor to %s", output_dir)
    accelerator.wait_for_everyone()
