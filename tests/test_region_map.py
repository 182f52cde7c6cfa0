"""The prompter's region map (`region_map_loss_weight > 0`): which regions of a manipulated face hold the edit, read
from the patch head's probabilities, and the one rule (`region_decision.flag_regions`) that turns it into flagged
regions for `generate`, the instruction, post-processing, evaluation and calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_patch_head import _prompter, _stage_one

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerPrompterConfig
from forgerytalker.evaluation.runner import evaluation_records, model_thresholds
from forgerytalker.modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork, region_map_loss
from forgerytalker.region_decision import flag_regions
from forgerytalker.regions import REGION_NAMES
from forgerytalker.tiny import build_tiny_processor, tiny_config, tiny_prompter_config
from forgerytalker.training.arguments import parse_arguments
from forgerytalker.training.trainer import parameter_groups


def _regions(*indices: int) -> torch.Tensor:
    labels = torch.zeros(21)
    labels[list(indices)] = 1
    return labels


def test_the_map_learns_on_manipulated_samples_only_and_leaves_the_patch_head_alone():
    prompter = _prompter(patch_mask_loss_weight=1.0, region_map_loss_weight=0.5)
    pixels = torch.randn(3, 3, 32, 32)
    labels = torch.stack([_regions(0, 4), _regions(), _regions(6)])
    output = prompter(pixels, region_labels=labels)
    located = output.located_region_logits
    assert located.shape == (3, 21)
    torch.testing.assert_close(located, prompter.region_map(torch.sigmoid(output.patch_logits).flatten(1)))
    forged = [0, 2]  # the untouched face says nothing of where an edit lies
    by_hand = F.binary_cross_entropy_with_logits(located[forged], labels[forged])
    torch.testing.assert_close(region_map_loss(located, labels), by_hand)
    without_map = _prompter(patch_mask_loss_weight=1.0)
    without_map.load_state_dict({k: v for k, v in prompter.state_dict().items() if not k.startswith("region_map.")})
    torch.testing.assert_close(output.loss, without_map(pixels, region_labels=labels).loss + 0.5 * by_hand)

    prompter.zero_grad()
    region_map_loss(prompter(pixels).located_region_logits, labels).backward()
    assert prompter.region_map.weight.grad.abs().sum() > 0
    assert prompter.patch_head.weight.grad is None  # detached: the map does not pull the patch head its way

    untouched = torch.zeros(2, 21)
    loss = region_map_loss(prompter(pixels[:2]).located_region_logits, untouched)
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_a_region_map_needs_a_patch_head_and_a_threshold_inside_zero_one():
    with pytest.raises(ValueError, match="needs a patch head"):
        ForgeryTalkerPrompterConfig(region_map_loss_weight=1.0)
    with pytest.raises(ValueError, match="located_region_threshold"):
        ForgeryTalkerPrompterConfig(located_region_threshold=1.0)
    assert _prompter(patch_mask_loss_weight=1.0).region_map is None
    assert _prompter(patch_mask_loss_weight=1.0)(torch.randn(1, 3, 32, 32)).located_region_logits is None


def test_flagged_regions_follow_the_map_only_for_a_face_called_manipulated():
    region_probs = torch.tensor([[0.9, 0.8, 0.7, *[0.6] * 18], [0.05, 0.04, *[0.01] * 19], [0.3, *[0.2] * 20]])
    located = torch.tensor([[0.1, 0.2, 0.9, 0.7, *[0.0] * 17], [0.9, 0.9, *[0.9] * 19], [0.1, 0.3, 0.2, *[0.0] * 18]])
    flagged = flag_regions(region_probs, 0.25, located, 0.5)
    assert flagged[0].nonzero().flatten().tolist() == [2, 3]  # the located ones, not the region head's top three
    assert flagged[1].sum() == 0  # untouched: nothing, however the map reads it
    assert flagged[2].nonzero().flatten().tolist() == [1]  # manipulated, none above 0.5: the most probable one
    assert flag_regions(region_probs, 0.25)[0].sum() == 21  # without a map: the region head's rule
    with pytest.raises(ValueError, match="located_region_threshold"):
        flag_regions(region_probs, 0.25, located)


def _tiny_model_with_map(**config_kwargs):
    processor = build_tiny_processor()
    config = tiny_config(processor.tokenizer, qformer_vocab_size=len(processor.qformer_tokenizer), **config_kwargs)
    prompter = tiny_prompter_config().to_dict()
    prompter.update(patch_mask_loss_weight=1.0, region_map_loss_weight=1.0, located_region_threshold=0.5, region_threshold=0.3)
    config.prompter_config = ForgeryTalkerPrompterConfig(**prompter)
    torch.manual_seed(0)
    model = ForgeryTalkerForConditionalGeneration(config).eval()
    model.generation_config.update(max_new_tokens=3, do_sample=False, num_beams=1)
    located_bias = torch.full((21,), -4.0)
    located_bias[[2, 5, 9]] = torch.tensor([3.0, 1.0, 2.0])  # three located regions: 2 first, then 9, then 5
    with torch.no_grad():
        model.prompter.region_map.weight.zero_()
        model.prompter.region_map.bias.copy_(located_bias)
        model.prompter.region_head.weight.zero_()
        model.prompter.region_head.bias.copy_(torch.linspace(2.0, -2.0, 21))  # manipulated; its top regions 0, 1, 2
    return model, processor


def test_generate_flags_and_names_the_located_regions_and_post_processing_says_so(images, tmp_path):
    model, processor = _tiny_model_with_map(max_instruction_regions=2)
    inputs = processor(images=images[:2])
    output = model.generate(**inputs)
    assert output.predicted_regions.nonzero()[:, 1].tolist() == [2, 5, 9, 2, 5, 9]
    assert output.instruction_regions.nonzero()[:, 1].tolist() == [2, 9, 2, 9]  # capped by located probability
    assert output.located_region_threshold == 0.5
    result = processor.post_process_generation(output)[0]
    assert result["regions"] == [REGION_NAMES[i] for i in (2, 5, 9)]
    assert result["instruction_regions"] == [REGION_NAMES[2], REGION_NAMES[9]]
    assert result["located_region_probabilities"][REGION_NAMES[2]] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert processor.post_process_generation(output, located_region_threshold=0.8)[0]["regions"] == [REGION_NAMES[2], REGION_NAMES[9]]
    assert processor.post_process_generation(output, region_threshold=0.95)[0]["regions"] == []  # not manipulated

    model.save_pretrained(tmp_path / "with-map")
    processor.save_pretrained(tmp_path / "with-map")
    assert "prompter.region_map.weight" in load_file(tmp_path / "with-map" / "model.safetensors")
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path / "with-map").eval()
    assert loaded.config.prompter_config.has_region_map
    torch.testing.assert_close(loaded.generate(**inputs).predicted_regions, output.predicted_regions)
    assert model_thresholds(loaded) == {"mask_threshold": model.config.mask_threshold, "region_threshold": 0.3,
                                        "located_region_threshold": 0.5}


def test_evaluation_scores_the_flagged_regions_not_the_region_probabilities_at_one_threshold():
    probabilities = {name: 0.9 for name in REGION_NAMES}  # every region above the region threshold
    record = {"image_id": "a", "method": "face_swap", "report": "r", "reference": "r",
              "mask_pixels": {"intersection": 0, "predicted": 0, "target": 0}, "regions": ["nose"],
              "region_probabilities": probabilities, "target_regions": ["nose"],
              "detection_scores": {"region": 0.9, "mask_area": 0.0}}
    records = evaluation_records([record], "region", {"mask_threshold": 0.5, "region_threshold": 0.5})
    labels = np.asarray(records.predicted_regions["a"])
    assert labels.sum() == 1 and labels[REGION_NAMES.index("nose")] == 1


def test_the_map_gets_its_own_learning_rate_in_stage_one():
    prompter = _prompter(patch_mask_loss_weight=1.0, region_map_loss_weight=1.0)
    base = ["--stage", "prompter", "--output_dir", "unused", "--dataset", "unused", "--learning_rate", "0.001"]
    groups = parameter_groups(prompter, parse_arguments([*base, "--region_map_learning_rate", "0.03"]))
    assert [group.get("lr") for group in groups] == [None, 0.03]
    assert {id(p) for p in groups[1]["params"]} == {id(prompter.region_map.weight), id(prompter.region_map.bias)}
    assert len(groups[0]["params"]) + 2 == sum(1 for p in prompter.parameters() if p.requires_grad)
    assert len(parameter_groups(prompter, parse_arguments(base))) == 1


def test_stage_one_trains_the_region_map_and_saves_it(tiny_dataset_dir, tmp_path):
    output_dir = _stage_one(tiny_dataset_dir, tmp_path, 1.0, region_map_loss_weight=1.0,
                            extra=("--region_map_learning_rate", "0.05"))
    loaded = ForgeryTalkerPrompterNetwork.from_pretrained(output_dir)
    assert loaded.config.has_region_map
    torch.manual_seed(0)
    initial = ForgeryTalkerPrompterNetwork(loaded.config)
    saved = load_file(output_dir / "model.safetensors")
    assert not torch.allclose(saved["region_map.weight"], initial.region_map.weight)
    assert json.loads((output_dir / "config.json").read_text())["region_map_loss_weight"] == 1.0
