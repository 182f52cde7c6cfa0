"""Per-module precision: which weights stay in float32 when a ForgeryTalker model is loaded in half precision.

transformers applies one `dtype` to a whole model at load time; a model class can only name modules to keep in
float32 (`_keep_in_fp32_modules_strict`). `ForgeryTalkerConfig.keep_in_fp32_modules` says which, per checkpoint (the
released-weights converter records the release's mix), and this module turns it into the loader's patterns; it also
holds the warning Flan-T5 needs in float16.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch
from torch import nn

logger = logging.getLogger(__name__)


def fp32_patterns(module_names: Iterable[str]) -> set[str]:
    """The loader's patterns (regular expressions searched in each weight's name) for `module_names` and everything
    inside them: `"instructblip.qformer"` matches `instructblip.qformer.layer.0...` but not `instructblip.qformer2`.

    BatchNorm's `num_batches_tracked` is left out: the loader casts whatever a pattern matches, integers included."""
    return {rf"^{re.escape(name)}(?:$|\.(?!(?:.+\.)?num_batches_tracked$))" for name in module_names}


def check_module_names(model: nn.Module, module_names: Iterable[str]) -> None:
    """Raises `ValueError` naming each entry of `config.keep_in_fp32_modules` that names no module or weight."""
    known = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
    unknown = [name for name in module_names if name not in known]
    if unknown:
        raise ValueError(
            f"`keep_in_fp32_modules` names {unknown}, which are not modules of this model "
            "(use names as `model.named_modules()` gives them, e.g. 'prompter' or 'instructblip.qformer')"
        )


def warn_if_t5_in_float16(model: nn.Module) -> None:
    """Logs a warning when the language model is (Flan-)T5 and runs in float16, whose range its activations overflow."""
    language_model = model.instructblip.language_model
    if language_model.config.model_type == "t5" and language_model.get_input_embeddings().weight.dtype == torch.float16:
        logger.warning(
            "Flan-T5 runs in float16 here: its activations overflow float16's range (transformers keeps only its `wo` "
            "projections in float32), so reports may come out empty or garbled. Load with dtype=torch.bfloat16 (as the "
            "release runs it) or torch.float32."
        )


__all__ = ["check_module_names", "fp32_patterns", "warn_if_t5_in_float16"]
