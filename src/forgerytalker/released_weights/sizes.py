"""The prompter and mask-decoder configs of the released weights, read from the tensors' shapes.

Everything a shape tells is read from it, so a scaled-down checkpoint with the release's key names converts as well
as the real one. What no shape tells is fixed by the release's code: attention heads (given by the caller; the
release's are 16 for Face-ViT-H/14 and 8 for the mask path), LayerNorm epsilons (1e-6 in Face-ViT, 1e-5 in the mask
path), activations (exact GELU; ReLU in the mask path), the convolution branch's strides and pooling.
"""

from __future__ import annotations

import math
import re

import torch
from transformers import SamMaskDecoderConfig

from ..configuration_forgerytalker import ForgeryTalkerPrompterConfig
from ..regions import NUM_REGIONS
from .files import CheckpointConversionError

FACE_VIT_LAYER_NORM_EPS = 1e-6
MASK_PATH_LAYER_NORM_EPS = 1e-5


def _tensor(state: dict[str, torch.Tensor], key: str, argument: str, source: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointConversionError(argument, f"{source}: missing required key {key!r}")
    return state[key]


def _layer_count(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(match.group(1)) for key in state if (match := re.fullmatch(pattern, key))}
    return max(indices) + 1 if indices else 0


def _heads(hidden_size: int, num_heads: int, argument: str, what: str) -> int:
    if num_heads < 1 or hidden_size % num_heads:
        raise CheckpointConversionError(argument, f"{num_heads} attention heads do not divide the {what}'s width {hidden_size}")
    return num_heads


def prompter_config_from_face_vit(
    state: dict[str, torch.Tensor], num_attention_heads: int, source: str, argument: str = "face_vit_checkpoint"
) -> ForgeryTalkerPrompterConfig:
    """The `conv_branch_type="pixel"` prompter config that holds a Face-ViT state dict (its own key names)."""
    patch = _tensor(state, "transformer.embeddings.patch_embeddings.weight", argument, source)
    hidden_size, num_channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    num_patches = _tensor(state, "transformer.embeddings.position_embeddings", argument, source).shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise CheckpointConversionError(argument, f"{source}: {num_patches} position embeddings do not make a square grid")
    head = _tensor(state, "head.weight", argument, source)
    if head.shape[0] != NUM_REGIONS:
        raise CheckpointConversionError(
            argument, f"{source}: 'head.weight' scores {head.shape[0]} classes, not the {NUM_REGIONS} facial regions"
        )
    num_layers = _layer_count(state, r"transformer\.encoder\.layer\.(\d+)\.attn\.query\.weight")
    first_conv = _tensor(state, "coord_conv_branch.0.conv.weight", argument, source)
    second_conv = _tensor(state, "conv_branch2.0.weight", argument, source)
    coordinate_channels = first_conv.shape[1] - num_channels
    if coordinate_channels not in (0, 4):
        raise CheckpointConversionError(
            argument,
            f"{source}: 'coord_conv_branch.0.conv.weight' reads {first_conv.shape[1]} channels; the release's "
            f"CoordConv reads the {num_channels} image channels and two pairs of coordinates",
        )
    return ForgeryTalkerPrompterConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=_heads(hidden_size, num_attention_heads, "prompter_num_heads", "Face-ViT"),
        intermediate_size=_tensor(state, "transformer.encoder.layer.0.ffn.fc1.weight", argument, source).shape[0],
        hidden_act="gelu",
        layer_norm_eps=FACE_VIT_LAYER_NORM_EPS,
        qkv_bias="transformer.encoder.layer.0.attn.query.bias" in state,
        num_conv_branch_layers=2,
        conv_kernel_sizes=[first_conv.shape[-1], second_conv.shape[-1]],
        use_coord_conv=coordinate_channels == 4,
        conv_branch_type="pixel",
    )


def dff_mask_decoder_settings(
    state: dict[str, torch.Tensor], num_attention_heads: int, source: str, argument: str = "dff_checkpoint"
) -> dict:
    """`ForgeryTalkerConfig` keyword arguments of the `"dff"` mask decoder that holds a DFF state dict's mask path."""
    hidden_size = _tensor(state, "mask_decoder.mask_tokens", argument, source).shape[-1]
    prefix = "mask_decoder.transformer.layers"
    attention_width = _tensor(state, f"{prefix}.0.cross_attn_token_to_image.q_proj.weight", argument, source).shape[0]
    if hidden_size % attention_width:
        raise CheckpointConversionError(
            argument, f"{source}: cross-attention width {attention_width} does not divide the decoder width {hidden_size}"
        )
    flat_mask = _tensor(state, "mask_decoder.output_upscaling_mlp.layers.2.weight", argument, source).shape[0]
    mask_size = math.isqrt(flat_mask)
    if mask_size * mask_size != flat_mask:
        raise CheckpointConversionError(argument, f"{source}: the upscaling head's {flat_mask} outputs are not a square mask")
    num_tokens = _tensor(state, "mask_decoder.output_hypernetworks_mlps.layers.2.weight", argument, source).shape[0]
    decoder_config = SamMaskDecoderConfig(
        hidden_size=hidden_size,
        num_attention_heads=_heads(attention_width, num_attention_heads, "mask_decoder_num_heads", "mask path"),
        mlp_dim=_tensor(state, f"{prefix}.0.mlp.lin1.weight", argument, source).shape[0],
        num_hidden_layers=_layer_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\.self_attn\.q_proj\.weight"),
        attention_downsample_rate=hidden_size // attention_width,
        hidden_act="relu",
        layer_norm_eps=MASK_PATH_LAYER_NORM_EPS,
    )
    return {
        "mask_decoder_config": decoder_config,
        "mask_decoder_type": "dff",
        "mask_prompt_length": num_tokens - 1,
        "mask_size": mask_size,
    }


__all__ = ["dff_mask_decoder_settings", "prompter_config_from_face_vit"]
