"""Per-module precision (issue 21): `config.keep_in_fp32_modules` keeps named modules in float32 when a checkpoint loads
in half precision, where transformers would otherwise give every weight the one loading dtype."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import random_image

from forgerytalker import ForgeryTalkerForConditionalGeneration
from forgerytalker.configuration_forgerytalker import RELEASE_FP32_MODULES
from forgerytalker.precision import fp32_patterns
from forgerytalker.tiny import build_tiny_model_and_processor


def test_patterns_cover_a_module_and_its_weights_but_not_a_namesake_or_batchnorm_counts():
    patterns = fp32_patterns(["instructblip.qformer", "instructblip.query_tokens"])

    def kept(name):
        return any(re.search(pattern, name) for pattern in patterns)

    assert kept("instructblip.qformer.layer.0.attention.query.weight") and kept("instructblip.query_tokens")
    assert not kept("instructblip.qformer2.weight") and not kept("x.instructblip.qformer.weight")
    assert not kept("instructblip.query_tokens_extra") and not kept("instructblip.qformer.norm.num_batches_tracked")


def test_a_module_name_the_model_lacks_is_refused_by_name():
    with pytest.raises(ValueError, match=r"keep_in_fp32_modules.*'prompter\.head'"):
        build_tiny_model_and_processor("t5", keep_in_fp32_modules=["prompter", "prompter.head"])


@pytest.mark.parametrize("language_model", ["t5", "opt"])
def test_a_half_precision_load_keeps_the_named_modules_in_float32_and_trains(language_model, tmp_path):
    """Saved in float32 with the release's mix named, a bfloat16 load has only the language model in bfloat16: the
    prompter's region probabilities equal the float32 model's to the bit; forward, backward and generate run with the
    dtypes meeting at the module boundaries (an encoder-decoder and a decoder-only language model)."""
    model, processor = build_tiny_model_and_processor(language_model, keep_in_fp32_modules=list(RELEASE_FP32_MODULES))
    model.config.prompter_config.conv_branch_type = "pixel"  # the release's branch, with BatchNorm
    torch.manual_seed(0)
    model = ForgeryTalkerForConditionalGeneration(model.config)
    model.save_pretrained(tmp_path)
    mixed = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    uniform = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16, keep_in_fp32_modules=None)
    language = "instructblip.language_model."
    dtypes = {name: tensor.dtype for name, tensor in [*mixed.named_parameters(), *mixed.named_buffers()]}
    assert {dtype for name, dtype in dtypes.items() if name.startswith(language) and dtype.is_floating_point} == {torch.bfloat16}
    assert {dtype for name, dtype in dtypes.items() if not name.startswith(language) and dtype.is_floating_point} == {torch.float32}
    assert {dtype for name, dtype in dtypes.items() if name.endswith("num_batches_tracked")} == {torch.int64}

    masks = [np.ones((40, 52), dtype=np.uint8), np.zeros((30, 30), dtype=np.uint8)]
    inputs = processor(
        images=[random_image(1, 40, 52), random_image(2, 30, 30)], reports=["the nose is blurred", "fine"],
        masks=masks, return_tensors="pt",
    )
    with torch.no_grad():
        reference = model.eval().prompter(inputs["pixel_values"]).region_logits
        assert torch.equal(mixed.eval().prompter(inputs["pixel_values"]).region_logits, reference)
        assert not torch.equal(uniform.eval().prompter(inputs["pixel_values"].bfloat16()).region_logits.float(), reference)
    output = mixed.train()(**inputs)
    output.loss.backward()
    assert mixed.instructblip.qformer.embeddings.layernorm.weight.grad.dtype == torch.float32
    generated = mixed.eval().generate(
        **{key: value for key, value in inputs.items() if key not in ("labels", "masks")}, max_new_tokens=3
    )
    assert generated.pred_masks.dtype == torch.float32 and generated.sequences.shape == (2, 3)
