"""Checks of what ForgeryTalker's `forward` and `generate` are given, each failing with an error that names the argument."""

from __future__ import annotations

import torch

LANGUAGE_MODEL_INPUTS = ("input_ids", "attention_mask", "inputs_embeds")
"""The language model's inputs, which ForgeryTalker builds itself from the instruction pieces and the images."""


def refuse_language_model_inputs(kwargs: dict) -> None:
    """Drops the `None` language-model inputs that causal-LM wrappers pass; raises a `ValueError` for a tensor."""
    for name in LANGUAGE_MODEL_INPUTS:
        if kwargs.pop(name, None) is not None:
            raise ValueError(
                f"ForgeryTalker builds the language model's `{name}` from the instruction pieces; pass the "
                "processor's outputs (pixel_values, instruction_input_ids, instruction_qformer_input_ids) instead"
            )


def refuse_shift_labels(kwargs: dict) -> None:
    """Raises a `ValueError` for pre-shifted `shift_labels` (what sequence- and context-parallel trainers pass),
    which the model would otherwise ignore while training on its own shift of `labels`."""
    if kwargs.get("shift_labels") is not None:
        raise ValueError(
            "ForgeryTalker does not take `shift_labels`: it builds the language model's sequence itself (image tokens, "
            "the instruction it writes, the report), so targets cannot be shifted outside it; pass the report as `labels`"
        )


def check_batch(pixel_values: torch.Tensor, **per_sample: torch.Tensor | None) -> None:
    """Raises a `ValueError` naming the argument whose batch size differs from the images'."""
    for name, tensor in per_sample.items():
        if tensor is not None and tensor.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"`{name}` has {tensor.shape[0]} rows but there are {pixel_values.shape[0]} images")


__all__ = ["LANGUAGE_MODEL_INPUTS", "check_batch", "refuse_language_model_inputs", "refuse_shift_labels"]
