"""Validation during training, on every process: the prompter's PLM, region loss and detection AUC in stage 1, the
evaluation metrics in stage 2."""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..evaluation.conventions import ALL_METRICS
from ..evaluation.detection_metrics import auc_defined, region_detection_scores, roc_auc
from ..evaluation.region_metrics import positive_label_matching
from ..region_decision import flag_regions
from .data import ForgeryTalkerCollator

VALIDATION_METRICS: dict[str, tuple[str, ...]] = {
    # AUC: the manipulation score (highest region probability) of authentic (no region labelled) against forged
    # images; reported only when the validation split holds both (MMTT's has no authentic image)
    "prompter": ("PLM", "region_loss", "AUC"),
    # stage 2 validates without METEOR (a Java process per call)
    "joint": tuple(name for name in ALL_METRICS if name != "METEOR"),
}
"""The metrics each stage's validation reports: the choices of `--best_metric`."""
LOWER_IS_BETTER = frozenset({"region_loss"})


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats the best so far (`None`: nothing yet)."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def contiguous_shard(length: int, num_shards: int, index: int) -> range:
    """The rows of shard `index` of `num_shards` contiguous shards, as `datasets.Dataset.shard(contiguous=True)`
    splits them, but empty where there are fewer rows than shards (where `shard` raises)."""
    size, extra = divmod(length, num_shards)
    start = size * index + min(index, extra)
    return range(start, start + size + (index < extra))


@torch.inference_mode()
def validate_prompter(
    prompter, image_processor, split, batch_size: int, accelerator=None, skip_unreadable_images: bool = False
) -> dict[str, float]:
    """PLM (0-100), mean per-sample region loss and, where `split` has images with and without labelled regions,
    detection AUC (0-100, `roc_auc` of the highest region probability) of a `ForgeryTalkerPrompterNetwork` on `split`.

    With an `accelerator` of several processes, each process scores its contiguous shard of `split` and the
    results are gathered, so every process returns the metrics a single process would. Inputs go to the
    prompter's own device; the predicted regions are the flagged ones (`region_decision.flag_regions`, at the prompter
    config's thresholds).
    """
    if accelerator is not None and accelerator.num_processes > 1:
        rows = contiguous_shard(len(split), accelerator.num_processes, accelerator.process_index)
        split = split.select(rows if len(rows) else [])  # `select` checks an empty range's start too
    was_training = prompter.training
    prompter.eval()
    collator = ForgeryTalkerCollator(image_processor, "prompter", skip_unreadable_images)
    loader = DataLoader(split, batch_size=batch_size, collate_fn=collator)
    main = accelerator is None or accelerator.is_local_main_process
    probabilities, located, targets, loss_sum = [], [], [], 0.0
    for batch in tqdm(loader, desc="validate", leave=False, disable=not main):
        if not batch["image_ids"]:  # every image of the batch was unreadable
            continue
        labels = batch["region_labels"]
        output = prompter(batch["pixel_values"].to(prompter.device), region_labels=labels.to(prompter.device))
        probabilities.append(torch.sigmoid(output.region_logits).float().cpu().numpy())
        if output.located_region_logits is not None:
            located.append(torch.sigmoid(output.located_region_logits).float().cpu().numpy())
        targets.append(labels.numpy())
        loss_sum += float(output.loss) * len(labels)  # the loss is the batch mean of per-sample losses
    prompter.train(was_training)
    config = prompter.config
    empty = np.zeros((0, config.num_regions), dtype=np.float32)
    shard = (np.concatenate(probabilities) if probabilities else empty,
             np.concatenate(targets) if targets else empty, loss_sum,
             np.concatenate(located) if located else empty)
    shards = gather_object([shard]) if accelerator is not None and accelerator.num_processes > 1 else [shard]
    probabilities = np.concatenate([part[0] for part in shards])
    targets = np.concatenate([part[1] for part in shards])
    located = np.concatenate([part[3] for part in shards]) if config.has_region_map else None
    predicted = flag_regions(
        torch.from_numpy(probabilities), config.region_threshold,
        None if located is None else torch.from_numpy(located), config.located_region_threshold,
    ).numpy()
    metrics = {"PLM": positive_label_matching(predicted, targets), "region_loss": sum(part[2] for part in shards) / len(targets)}
    forged = targets.any(axis=1)
    if auc_defined(forged):
        metrics["AUC"] = roc_auc(region_detection_scores(probabilities), forged.astype(np.int64))
    return metrics


def validate(model, processor, split, args, accelerator) -> dict[str, float]:
    """The validation metrics of the stage being trained, as one flat dict of numbers, on every process."""
    if args.stage == "prompter":
        return validate_prompter(model, processor, split, args.per_device_eval_batch_size, accelerator,
                                 args.skip_unreadable_images)
    from ..evaluation.runner import run_evaluation

    document = run_evaluation(
        model,
        processor,
        split,
        batch_size=args.per_device_eval_batch_size,
        max_new_tokens=args.generation_max_new_tokens,
        skip_unreadable_images=args.skip_unreadable_images,
        progress=accelerator.is_local_main_process,
        accelerator=accelerator,
    )
    return {name: value for name, value in document["overall"].items() if isinstance(value, (int, float))}
