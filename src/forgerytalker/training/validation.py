"""Validation during training: the prompter's PLM in stage 1, the full evaluation metrics in stage 2."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..evaluation.region_metrics import positive_label_matching
from .data import ForgeryTalkerCollator


@torch.inference_mode()
def validate_prompter(model, processor, split, batch_size: int) -> dict[str, float]:
    """PLM (0-100) and mean region loss of the prompter on `split`."""
    model.eval()
    loader = DataLoader(split, batch_size=batch_size, collate_fn=ForgeryTalkerCollator(processor, "prompter"))
    probabilities, targets, losses = [], [], []
    for batch in loader:
        output = model.prompter(batch["pixel_values"].to(model.device), region_labels=batch["region_labels"].to(model.device))
        probabilities.append(torch.sigmoid(output.region_logits).float().cpu().numpy())
        targets.append(batch["region_labels"].numpy())
        losses.append(float(output.loss))
    threshold = model.config.prompter_config.region_threshold
    predicted = np.concatenate(probabilities) > threshold
    return {"PLM": positive_label_matching(predicted, np.concatenate(targets)), "region_loss": float(np.mean(losses))}


def validate(model, processor, split, args, accelerator=None) -> dict[str, float]:
    """The validation metrics of the stage being trained, as one flat dict of numbers.

    Stage 2 runs `run_evaluation`, which every process must call with the `accelerator`: each predicts its
    shard of the split and all get the same metrics.
    """
    if args.stage == "prompter":
        return validate_prompter(model, processor, split, args.per_device_eval_batch_size)
    from ..evaluation.runner import run_evaluation

    model.eval()
    document = run_evaluation(
        model,
        processor,
        split,
        batch_size=args.per_device_eval_batch_size,
        max_new_tokens=args.generation_max_new_tokens,
        progress=False,
        accelerator=accelerator,
    )
    return {name: value for name, value in document["overall"].items() if isinstance(value, (int, float))}
