"""The prompter's pretrained MobileNetV2 branch: torchvision's names, strict loading, one checkpoint."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from forgerytalker import ForgeryTalkerPrompterNetwork, ForgeryTalkerForConditionalGeneration
from forgerytalker import modeling_forgerytalker_mobilenet_v2 as mobilenet_v2
from forgerytalker.modeling_forgerytalker_mobilenet_v2 import (
    CPU_IMAGES_PER_CALL,
    MobileNetV2,
    MobileNetV2Features,
    block_channels,
    block_stride,
    copy_pretrained_blocks,
    load_torchvision_mobilenet_v2,
)
from forgerytalker.tiny import build_tiny_processor, tiny_config

# A few of the names in torchvision's `mobilenet_v2-b0353104.pth` (314 tensors in all), with their shapes.
TORCHVISION_NAMES = {
    "features.0.0.weight": (32, 3, 3, 3),
    "features.0.1.running_var": (32,),
    "features.1.conv.0.0.weight": (32, 1, 3, 3),
    "features.1.conv.1.weight": (16, 32, 1, 1),
    "features.2.conv.0.0.weight": (96, 16, 1, 1),
    "features.2.conv.3.num_batches_tracked": (),
    "features.13.conv.2.weight": (96, 576, 1, 1),
    "features.18.0.weight": (1280, 320, 1, 1),
    "classifier.1.weight": (1000, 1280),
}


def torchvision_style_file(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with every name and shape of torchvision's MobileNetV2 file, saved like it."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: (torch.rand(value.shape, generator=generator) + 0.5 if value.is_floating_point() else value.clone())
             for name, value in MobileNetV2().state_dict().items()}
    torch.save(state, path)
    return state


def test_the_network_has_torchvisions_parameter_names_and_strides():
    state = MobileNetV2().state_dict()
    assert len(state) == 314
    for name, shape in TORCHVISION_NAMES.items():
        assert tuple(state[name].shape) == shape, name
    assert [(block_channels(n), block_stride(n)) for n in (1, 4, 7, 14, 18)] == [(32, 2), (24, 4), (32, 8), (96, 16), (320, 32)]


def test_a_torchvision_state_dict_loads_strictly_and_the_branch_keeps_its_blocks(tmp_path):
    state = torchvision_style_file(tmp_path / "mobilenet_v2.pth")
    pretrained = load_torchvision_mobilenet_v2(tmp_path / "mobilenet_v2.pth")
    assert torch.equal(pretrained.state_dict()["features.13.conv.2.weight"], state["features.13.conv.2.weight"])

    model, processor = _tiny_model()
    branch = model.prompter.conv_branch[0].backbone
    copy_pretrained_blocks(branch, pretrained)
    assert torch.equal(branch.state_dict()["features.6.conv.1.0.weight"], state["features.6.conv.1.0.weight"])
    assert "features.7.conv.0.0.weight" not in branch.state_dict()

    damaged = dict(state)
    damaged.pop("classifier.1.bias")
    torch.save(damaged, tmp_path / "damaged.pth")
    with pytest.raises(RuntimeError, match="classifier.1.bias"):
        load_torchvision_mobilenet_v2(tmp_path / "damaged.pth")


def _tiny_model():
    processor = build_tiny_processor(image_size=64)
    config = tiny_config(processor.tokenizer, qformer_vocab_size=len(processor.qformer_tokenizer), image_size=64)
    config.prompter_config.conv_branch_type = "mobilenet_v2"
    config.prompter_config.pretrained_branch_blocks = 7
    torch.manual_seed(0)
    return ForgeryTalkerForConditionalGeneration(config), processor


def test_one_checkpoint_with_the_branch_saves_and_loads_through_the_auto_classes(tmp_path):
    model, processor = _tiny_model()
    pretrained = MobileNetV2()
    with torch.no_grad():
        for value in pretrained.state_dict().values():
            if value.is_floating_point():
                value.uniform_(0.5, 1.5)
    copy_pretrained_blocks(model.prompter.conv_branch[0].backbone, pretrained)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    loaded = AutoModel.from_pretrained(tmp_path / "model").eval()
    model.eval()
    assert type(loaded) is ForgeryTalkerForConditionalGeneration
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.prompter(pixels).region_logits, model.prompter(pixels).region_logits)
    assert ForgeryTalkerPrompterNetwork(loaded.config.prompter_config).conv_branch[0].backbone.frozen


def test_a_frozen_branch_keeps_its_weights_and_statistics_while_the_prompter_trains():
    model, _ = _tiny_model()
    model.freeze_for_stage("prompter")
    prompter = model.prompter.train()
    assert not any(parameter.requires_grad for parameter in prompter.conv_branch[0].backbone.parameters())
    assert prompter.conv_branch[0].projection.weight.requires_grad
    backbone = prompter.conv_branch[0].backbone
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    labels = torch.zeros(2, 21)
    labels[0, 3] = 1
    prompter(torch.randn(2, 3, 64, 64), region_labels=labels).loss.backward()
    assert not backbone.training
    assert all(parameter.grad is None for parameter in backbone.parameters())
    assert prompter.conv_branch[0].projection.weight.grad is not None
    assert all(torch.equal(before[name], value) for name, value in backbone.state_dict().items())


def test_outside_training_the_branch_folds_its_batchnorms_and_reads_cpu_images_in_pairs(monkeypatch):
    torch.manual_seed(0)
    branch = MobileNetV2Features(6)
    for module in branch.modules():  # BatchNorm statistics and affine weights other than the initial ones
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    images = torch.randn(2 * CPU_IMAGES_PER_CALL + 1, 3, 64, 48)  # pairs and one left over, not square
    calls = []
    folded = mobilenet_v2.run_folded

    def counted(modules, features, *shared):
        if modules is branch.features:
            calls.append(len(features))
        return folded(modules, features, *shared)

    monkeypatch.setattr(mobilenet_v2, "run_folded", counted)
    with torch.no_grad():
        batched = branch.eval()(images)
        # the blocks as modules, each BatchNorm a pass of its own, one image at a time
        alone = torch.cat([branch.features(image[None]) for image in images])
    assert calls == [CPU_IMAGES_PER_CALL, CPU_IMAGES_PER_CALL, 1]
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    calls.clear()
    trained = branch.train()(images)  # training normalises with the whole batch's statistics, unfolded
    assert calls == []
    torch.testing.assert_close(trained, branch.features(images), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(trained, batched, atol=1e-3)
