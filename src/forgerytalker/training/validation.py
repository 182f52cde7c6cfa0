"""Validation during training, on every process: the prompter's PLM, region loss and detection AUC in stage 1, the
evaluation metrics in stage 2."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class PrompterPass:
    """What a prompter says of every image of a split (`run_prompter`), in split order, on every process.

    Attributes:
        region_probs: float32 `(N, num_regions)`, the region head's probabilities.
        located_region_probs: float32 `(N, num_regions)` for a prompter with a region map, else `None`.
        patch_probs: float32 `(N, grid²)` for a prompter with a patch head, else `None`.
        region_labels: float32 `(N, num_regions)`, the true regions.
        loss_sum: the prompter's loss summed over the images (its per-batch mean times the batch size).
    """

    region_probs: np.ndarray
    located_region_probs: np.ndarray | None
    patch_probs: np.ndarray | None
    region_labels: np.ndarray
    loss_sum: float


@torch.inference_mode()
def run_prompter(prompter, image_processor, split, batch_size: int, accelerator=None,
                 skip_unreadable_images: bool = False, desc: str = "validate") -> PrompterPass:
    """Runs a `ForgeryTalkerPrompterNetwork` (in eval mode, on its own device; its training mode is restored) over
    `split`, images read without augmentation. With an `accelerator` of several processes each process reads its
    contiguous shard and the shards are gathered, so every process returns what a single process would."""
    if accelerator is not None and accelerator.num_processes > 1:
        rows = contiguous_shard(len(split), accelerator.num_processes, accelerator.process_index)
        split = split.select(rows if len(rows) else [])  # `select` checks an empty range's start too
    was_training = prompter.training
    prompter.eval()
    collator = ForgeryTalkerCollator(image_processor, "prompter", skip_unreadable_images)
    loader = DataLoader(split, batch_size=batch_size, collate_fn=collator)
    main = accelerator is None or accelerator.is_local_main_process
    config = prompter.config
    parts = {"region_probs": [], "located_region_probs": [], "patch_probs": [], "region_labels": []}
    loss_sum = 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not main):
        if not batch["image_ids"]:  # every image of the batch was unreadable
            continue
        labels = batch["region_labels"]
        output = prompter(batch["pixel_values"].to(prompter.device), region_labels=labels.to(prompter.device))
        parts["region_probs"].append(torch.sigmoid(output.region_logits))
        if output.located_region_logits is not None:
            parts["located_region_probs"].append(torch.sigmoid(output.located_region_logits))
        if output.patch_logits is not None:
            parts["patch_probs"].append(torch.sigmoid(output.patch_logits).flatten(1))
        parts["region_labels"].append(labels)
        loss_sum += float(output.loss) * len(labels)  # the loss is the batch mean of per-sample losses
    prompter.train(was_training)
    widths = {"region_probs": config.num_regions, "located_region_probs": config.num_regions,
              "patch_probs": config.patch_grid**2, "region_labels": config.num_regions}
    shard = ({name: (torch.cat(tensors).float().cpu().numpy() if tensors else np.zeros((0, widths[name]), np.float32))
              for name, tensors in parts.items()}, loss_sum)
    shards = gather_object([shard]) if accelerator is not None and accelerator.num_processes > 1 else [shard]
    gathered = {name: np.concatenate([part[0][name] for part in shards]) for name in parts}
    return PrompterPass(
        region_probs=gathered["region_probs"],
        located_region_probs=gathered["located_region_probs"] if config.has_region_map else None,
        patch_probs=gathered["patch_probs"] if config.has_patch_head else None,
        region_labels=gathered["region_labels"],
        loss_sum=sum(part[1] for part in shards),
    )


def validate_prompter(
    prompter, image_processor, split, batch_size: int, accelerator=None, skip_unreadable_images: bool = False
) -> dict[str, float]:
    """PLM (0-100), mean per-sample region loss and, where `split` has images with and without labelled regions,
    detection AUC (0-100, `roc_auc` of the highest region probability) of a `ForgeryTalkerPrompterNetwork` on `split`
    (`run_prompter`: the same on every process). The predicted regions are the flagged ones
    (`region_decision.flag_regions`, at the prompter config's thresholds).
    """
    config = prompter.config
    scored = run_prompter(prompter, image_processor, split, batch_size, accelerator, skip_unreadable_images)
    located = scored.located_region_probs
    predicted = flag_regions(
        torch.from_numpy(scored.region_probs), config.region_threshold,
        None if located is None else torch.from_numpy(located), config.located_region_threshold,
    ).numpy()
    targets = scored.region_labels
    metrics = {"PLM": positive_label_matching(predicted, targets), "region_loss": scored.loss_sum / len(targets)}
    forged = targets.any(axis=1)
    if auc_defined(forged):
        metrics["AUC"] = roc_auc(region_detection_scores(scored.region_probs), forged.astype(np.int64))
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
