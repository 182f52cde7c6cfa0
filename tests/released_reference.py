"""Straightforward forwards of the release's Face-ViT and DFF mask path, written from the published description.

They read the released key names directly and spell every step out (coordinate channels, strided convolutions,
BatchNorm with running statistics, 1-D adaptive average pooling of the flattened raster by its definition,
pre-LN ViT blocks with exact GELU, the two-way transformer over the 22 tokens), so that the project's modules can be
checked against them. Nothing here uses the project's code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as(state: dict, dtype: torch.dtype) -> dict:
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def coordinates(images: torch.Tensor) -> torch.Tensor:
    """`AddCoords`: two channels, the first varying down the rows, the second along the columns, `i/(n-1)*2-1`."""
    batch, _, height, width = images.shape
    rows = (torch.arange(height, dtype=images.dtype) / (height - 1) * 2 - 1)[:, None].expand(height, width)
    columns = (torch.arange(width, dtype=images.dtype) / (width - 1) * 2 - 1)[None, :].expand(height, width)
    return torch.stack([rows, columns])[None].expand(batch, -1, -1, -1)


def adaptive_mean(sequence: torch.Tensor, length: int) -> torch.Tensor:
    """`(batch, channels, n)` → `(batch, channels, length)`: window i averages [floor(i n / L), ceil((i+1) n / L))."""
    n = sequence.shape[-1]
    windows = [sequence[..., (i * n) // length : -((-(i + 1) * n) // length)].mean(-1) for i in range(length)]
    return torch.stack(windows, dim=-1)


def batch_norm(features: torch.Tensor, state: dict, prefix: str, eps: float = 1e-5) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    mean, var = state[f"{prefix}.running_mean"].view(shape), state[f"{prefix}.running_var"].view(shape)
    return (features - mean) / torch.sqrt(var + eps) * state[f"{prefix}.weight"].view(shape) + state[f"{prefix}.bias"].view(shape)


def layer_norm(x: torch.Tensor, state: dict, prefix: str, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def linear(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention over `heads` heads of already projected `(batch, tokens, width)` tensors."""
    batch, width = query.shape[0], query.shape[-1]

    def split(x):
        return x.reshape(batch, x.shape[1], heads, width // heads).transpose(1, 2)

    q, k, v = split(query), split(key), split(value)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, query.shape[1], width)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def face_vit_logits(state: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """The release's `VisionTransformer.forward` at inference: `(batch, 3, size, size)` normalised images → 21 logits."""
    state = _as(state, images.dtype)
    with_coordinates = torch.cat([images, coordinates(images)], dim=1)  # AddCoords
    with_coordinates = torch.cat([with_coordinates, coordinates(with_coordinates)], dim=1)  # CoordConv's own
    first = F.conv2d(with_coordinates, state["coord_conv_branch.0.conv.weight"], state["coord_conv_branch.0.conv.bias"], stride=2, padding=1)
    first = F.max_pool2d(F.leaky_relu(batch_norm(first, state, "coord_conv_branch.1"), 0.01), 2)
    second = F.conv2d(first, state["conv_branch2.0.weight"], state["conv_branch2.0.bias"], stride=2, padding=2)
    second = F.max_pool2d(F.relu(batch_norm(second, state, "conv_branch2.1")), 2)

    patch = state["transformer.embeddings.patch_embeddings.weight"]
    patches = F.conv2d(images, patch, state["transformer.embeddings.patch_embeddings.bias"], stride=patch.shape[-1])
    patches = patches.flatten(2).transpose(1, 2)
    cls = state["transformer.embeddings.cls_token"].expand(len(images), -1, -1)
    tokens = torch.cat([cls, patches], dim=1) + state["transformer.embeddings.position_embeddings"]
    num_patches = tokens.shape[1] - 1
    additions = [adaptive_mean(first.flatten(2), num_patches).transpose(1, 2), adaptive_mean(second.flatten(2), num_patches).transpose(1, 2)]

    num_layers = 1 + max(int(key.split(".")[3]) for key in state if key.startswith("transformer.encoder.layer."))
    for index in range(num_layers):
        if index < len(additions):
            tokens = torch.cat([tokens[:, :1], tokens[:, 1:] + additions[index]], dim=1)
        prefix = f"transformer.encoder.layer.{index}"
        normed = layer_norm(tokens, state, f"{prefix}.attention_norm", 1e-6)
        attended = attention(*(linear(normed, state, f"{prefix}.attn.{name}") for name in ("query", "key", "value")), heads)
        tokens = tokens + linear(attended, state, f"{prefix}.attn.out")
        normed = layer_norm(tokens, state, f"{prefix}.ffn_norm", 1e-6)
        tokens = tokens + linear(gelu(linear(normed, state, f"{prefix}.ffn.fc1")), state, f"{prefix}.ffn.fc2")
    tokens = layer_norm(tokens, state, "transformer.encoder.encoder_norm", 1e-6)
    return linear(tokens[:, 0], state, "head")


def _sam_attention(state: dict, prefix: str, query, key, value, heads: int) -> torch.Tensor:
    projected = [linear(x, state, f"{prefix}.{name}") for x, name in ((query, "q_proj"), (key, "k_proj"), (value, "v_proj"))]
    return linear(attention(*projected, heads), state, f"{prefix}.out_proj")


def _mlp3(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(linear(x, state, f"{prefix}.layers.0"))
    x = F.relu(linear(x, state, f"{prefix}.layers.1"))
    return linear(x, state, f"{prefix}.layers.2")


def dff_mask_logits(state: dict, vision_tokens: torch.Tensor, prompt_embeddings: torch.Tensor, heads: int) -> torch.Tensor:
    """The release's `_get_mask_prediction` before its sigmoid: `(batch, 1 + patches, width)` vision tokens and
    `(batch, 21, text_width)` prompt embeddings → `(batch, size, size)` mask logits."""
    state = _as(state, vision_tokens.dtype)
    width = vision_tokens.shape[-1]
    prompt = linear(prompt_embeddings.to(vision_tokens.dtype), state, "prompt_proj")
    w_q, w_k, w_v = state["cross_attention_layer.in_proj_weight"].split(width)
    b_q, b_k, b_v = state["cross_attention_layer.in_proj_bias"].split(width)
    patches = vision_tokens[:, 1:]
    attended = attention(prompt @ w_q.T + b_q, patches @ w_k.T + b_k, patches @ w_v.T + b_v, heads)
    attended = linear(attended, state, "cross_attention_layer.out_proj")
    tokens = torch.cat([vision_tokens[:, :1], attended], dim=1)  # (batch, 22, width)

    point = state["mask_decoder.mask_tokens"].expand(len(tokens), -1, -1)
    queries, keys, key_pe = point, tokens, tokens
    depth = 1 + max(int(key.split(".")[3]) for key in state if key.startswith("mask_decoder.transformer.layers."))
    for index in range(depth):
        prefix = f"mask_decoder.transformer.layers.{index}"
        if index == 0:
            queries = _sam_attention(state, f"{prefix}.self_attn", queries, queries, queries, heads)
        else:
            q = queries + point
            queries = queries + _sam_attention(state, f"{prefix}.self_attn", q, q, queries, heads)
        queries = layer_norm(queries, state, f"{prefix}.norm1", 1e-5)
        queries = queries + _sam_attention(state, f"{prefix}.cross_attn_token_to_image", queries + point, keys + key_pe, keys, heads)
        queries = layer_norm(queries, state, f"{prefix}.norm2", 1e-5)
        queries = queries + linear(F.relu(linear(queries, state, f"{prefix}.mlp.lin1")), state, f"{prefix}.mlp.lin2")
        queries = layer_norm(queries, state, f"{prefix}.norm3", 1e-5)
        keys = keys + _sam_attention(state, f"{prefix}.cross_attn_image_to_token", keys + key_pe, queries + point, queries, heads)
        keys = layer_norm(keys, state, f"{prefix}.norm4", 1e-5)
    final = "mask_decoder.transformer.final_attn_token_to_image"
    queries = queries + _sam_attention(state, final, queries + point, keys + key_pe, keys, heads)
    queries = layer_norm(queries, state, "mask_decoder.transformer.norm_final_attn", 1e-5)

    flat = _mlp3(state, "mask_decoder.output_upscaling_mlp", keys)  # (batch, 22, size²)
    weights = _mlp3(state, "mask_decoder.output_hypernetworks_mlps", queries)  # (batch, 1, 22)
    size = math.isqrt(flat.shape[-1])
    return (weights @ flat).view(len(tokens), size, size)
