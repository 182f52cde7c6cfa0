"""`max_instruction_regions`: the instruction names at most as many regions as the language model was trained on."""

from __future__ import annotations

import pytest
import torch

from forgerytalker import ForgeryTalkerConfig
from forgerytalker.tiny import build_tiny_model_and_processor


def test_the_instruction_keeps_the_most_probable_predicted_regions_up_to_the_cap(images):
    model, processor = build_tiny_model_and_processor(max_instruction_regions=2)
    model.eval()
    bias = torch.full((21,), -6.0)
    bias[[1, 4, 7, 9, 15]] = torch.tensor([1.0, 3.0, 2.0, 0.5, 4.0])  # five regions above 0.5, 15 and 4 the top two
    with torch.no_grad():
        model.prompter.region_head.weight.zero_()
        model.prompter.region_head.bias.copy_(bias)
    inputs = processor(images=images[:2])
    output = model.generate(**inputs, max_new_tokens=3)
    assert output.predicted_regions[0].nonzero().flatten().tolist() == [1, 4, 7, 9, 15]
    assert output.instruction_regions.nonzero()[:, 1].tolist() == [4, 15, 4, 15]

    model.config.max_instruction_regions = None
    assert model.generate(**inputs, max_new_tokens=3).instruction_regions.sum(-1).tolist() == [5, 5]


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="max_instruction_regions"):
        ForgeryTalkerConfig(max_instruction_regions=0)
