"""The prompter's patch head (`patch_mask_loss_weight > 0`): one logit per patch for the manipulated share of its
cell, trained in stage 1 from the masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from training_runs import read_log, step_records, train_here

from forgerytalker import ForgeryTalkerPrompterConfig
from forgerytalker.modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork, forgery_prompter_loss
from forgerytalker.training.data import ForgeryTalkerCollator, cell_shares
from forgerytalker.training.errors import TrainingConfigurationError


def _prompter(**settings) -> ForgeryTalkerPrompterNetwork:
    torch.manual_seed(0)
    config = dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, num_conv_branch_layers=1, conv_kernel_sizes=[3])
    return ForgeryTalkerPrompterNetwork(ForgeryTalkerPrompterConfig(**{**config, **settings})).eval()


def test_the_patch_loss_joins_the_region_loss_with_its_weight():
    prompter = _prompter(patch_mask_loss_weight=0.5)
    pixels = torch.randn(3, 3, 32, 32)
    regions = torch.tensor([[1.0] + [0.0] * 20, [0.0] * 21, [0.0, 1.0] + [0.0] * 19])
    shares = torch.rand(3, 4, 4)
    output = prompter(pixels, region_labels=regions, patch_mask_labels=shares)
    assert output.patch_logits.shape == (3, 4, 4)
    region_loss = forgery_prompter_loss(output.region_logits, regions, 0.2, 1.0)
    by_hand = -(shares * F.logsigmoid(output.patch_logits) + (1 - shares) * F.logsigmoid(-output.patch_logits)).mean()
    torch.testing.assert_close(output.loss, region_loss + 0.5 * by_hand)
    torch.testing.assert_close(prompter(pixels, region_labels=regions).loss, region_loss)  # no masks: regions only
    torch.testing.assert_close(prompter(pixels, patch_mask_labels=shares).loss, 0.5 * by_hand)
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\)"):
        prompter(pixels, patch_mask_labels=shares.flatten(1))
    prompter(pixels, patch_mask_labels=shares).loss.backward()
    assert prompter.patch_head.weight.grad.abs().sum() > 0


def test_a_prompter_without_the_head_has_no_patch_logits_and_refuses_masks():
    prompter = _prompter()
    assert prompter.patch_head is None and prompter(torch.randn(1, 3, 32, 32)).patch_logits is None
    with pytest.raises(ValueError, match="patch_mask_loss_weight=0"):
        prompter(torch.randn(1, 3, 32, 32), patch_mask_labels=torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="patch_mask_loss_weight"):
        ForgeryTalkerPrompterConfig(patch_mask_loss_weight=-1.0)


def test_each_patch_logit_reads_its_own_cell_rows_first():
    """A bright cell in row 0, column 3 of the 4×4 grid gives the only positive patch logit at [0, 3] (a
    transposed or reversed layout would put it elsewhere). The blocks are removed and the patch embedding made
    to read brightness, so the logit is a known function of each cell's pixels."""
    prompter = _prompter(patch_mask_loss_weight=1.0, num_hidden_layers=0, num_conv_branch_layers=0, conv_kernel_sizes=[])
    with torch.no_grad():
        for parameter in prompter.parameters():
            parameter.zero_()
        projection = prompter.embeddings.patch_embeddings.projection
        projection.weight[0] = 1.0  # hidden channel 0: the cell's brightness; channel 1: minus it
        projection.weight[1] = -1.0
        prompter.layernorm.weight.fill_(1.0)
        prompter.patch_head.weight[0, 0] = 1.0
    pixels = torch.full((1, 3, 32, 32), -1.0)
    pixels[:, :, 0:8, 24:32] = 1.0
    logits = prompter(pixels).patch_logits[0]
    assert (logits > 0).nonzero().tolist() == [[0, 3]]


def test_cell_shares_are_each_cells_forged_fraction():
    mask = np.zeros((64, 48), dtype=bool)  # not square: the processor's resize squeezes it onto the square grid
    mask[0:16, 36:48] = True  # the whole top-right cell of a 4×4 grid
    mask[48:56, 0:12] = True  # the top half of the bottom-left cell
    expected = torch.zeros(4, 4)
    expected[0, 3], expected[3, 0] = 1.0, 0.5
    torch.testing.assert_close(cell_shares(mask, 4), expected)


def test_the_stage_one_collator_gives_the_cell_shares_of_each_mask(tiny_dataset_dir):
    from datasets import load_dataset

    from forgerytalker.image_utils import load_mask
    from forgerytalker.tiny import build_tiny_processor
    from forgerytalker.training.data import undecoded

    examples = list(undecoded(load_dataset(str(tiny_dataset_dir), split="train")))
    image_processor = build_tiny_processor().image_processor
    batch = ForgeryTalkerCollator(image_processor, "prompter", patch_grid=4)(examples)
    assert batch["patch_mask_labels"].shape == (len(examples), 4, 4)
    for example, shares in zip(examples, batch["patch_mask_labels"]):
        mask = load_mask(example["mask"]["bytes"] if example["mask"]["bytes"] is not None else example["mask"]["path"])
        torch.testing.assert_close(shares, cell_shares(mask, 4))
        assert bool(shares.any()) == bool(example["regions"])  # authentic faces: no forged cell
    assert "patch_mask_labels" not in ForgeryTalkerCollator(image_processor, "prompter")(examples[:2])


def _stage_one(tiny_dataset_dir, tmp_path, weight: float, dataset=None, region_map: bool = False, extra=()):
    from forgerytalker.tiny import build_tiny_processor
    from transformers import InstructBlipProcessor

    processor = build_tiny_processor()
    instructblip = tmp_path / "instructblip"
    InstructBlipProcessor(processor.image_processor, processor.tokenizer, processor.qformer_tokenizer,
                          num_query_tokens=4).save_pretrained(instructblip)
    prompter_config = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "intermediate_size": 48, "num_conv_branch_layers": 1, "conv_kernel_sizes": [3],
                       "patch_mask_loss_weight": weight, "region_map": region_map}
    output_dir = tmp_path / f"stage-one-{weight}"
    train_here("--stage", "prompter", "--output_dir", str(output_dir), "--prompter_config", json.dumps(prompter_config),
               "--dataset", str(dataset or tiny_dataset_dir), "--instructblip_name_or_path", str(instructblip),
               "--max_steps", "3", "--per_device_train_batch_size", "4", "--validation_split", "none",
               "--learning_rate", "0.003", "--logging_steps", "1", "--seed", "0", *extra)
    return output_dir


def test_stage_one_trains_the_patch_head_from_the_masks_and_saves_it(tiny_dataset_dir, tmp_path):
    with_head = _stage_one(tiny_dataset_dir, tmp_path, 2.0)
    without = _stage_one(tiny_dataset_dir, tmp_path, 0.0)
    # the same seed, data and order: only the patch term (about 2 × ln 2 at the start) differs
    first_with, first_without = (step_records(read_log(folder))[1]["loss"] for folder in (with_head, without))
    assert first_with > first_without + 0.5
    loaded = ForgeryTalkerPrompterNetwork.from_pretrained(with_head)
    assert loaded.config.patch_mask_loss_weight == 2.0 and loaded.patch_head is not None
    assert "patch_head.weight" in load_file(with_head / "model.safetensors")
    assert ForgeryTalkerPrompterNetwork.from_pretrained(without).patch_head is None


def test_a_patch_head_needs_a_dataset_with_masks(tiny_dataset_dir, tmp_path):
    from datasets import load_dataset

    without_masks = tmp_path / "no-masks"
    for split in ("train", "validation"):
        rows = load_dataset(str(tiny_dataset_dir), split=split).remove_columns("mask")
        rows.to_parquet(str(without_masks / f"{split}.parquet"))
    with pytest.raises(TrainingConfigurationError, match="no 'mask' column.*patch_mask_loss_weight=1.0"):
        _stage_one(tiny_dataset_dir, tmp_path, 1.0, dataset=without_masks)
    assert not (tmp_path / "stage-one-1.0").exists()  # refused before anything was written
