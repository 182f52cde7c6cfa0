"""The ForgeryTalker mask decoder (paper §4.4): SAM's two-way transformer over fused backbone features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.modeling_sam import SamAttention, SamMaskDecoder

from .configuration_forgerytalker import ForgeryTalkerConfig


def grid_positional_embedding(channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Fixed 2-D sine/cosine encoding of a patch grid, `(channels, height, width)`.

    Half of the channels encode the row, half the column; `channels` must be a multiple of 4.
    """
    if channels % 4:
        raise ValueError(f"The mask decoder's hidden_size must be a multiple of 4, got {channels}")
    quarter = channels // 4
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(quarter, device=like.device, dtype=torch.float32) / quarter
    )
    rows = torch.arange(height, device=like.device, dtype=torch.float32)[:, None] * frequencies
    columns = torch.arange(width, device=like.device, dtype=torch.float32)[:, None] * frequencies
    row_code = torch.cat([rows.sin(), rows.cos()], dim=-1)[:, None, :].expand(height, width, 2 * quarter)
    column_code = torch.cat([columns.sin(), columns.cos()], dim=-1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([row_code, column_code], dim=-1).permute(2, 0, 1).to(like.dtype)


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """`(batch, height * width, channels)` patch tokens of a square grid → `(batch, channels, height, width)`."""
    batch_size, num_tokens, channels = tokens.shape
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"Expected patch tokens of a square grid, got {num_tokens} tokens")
    return tokens.transpose(1, 2).reshape(batch_size, channels, side, side)


def forgery_mask_loss(
    mask_logits: torch.Tensor,
    iou_scores: torch.Tensor | None,
    masks: torch.Tensor,
    threshold: float,
    dice_weight: float,
    iou_weight: float,
) -> torch.Tensor:
    """Binary cross-entropy on logits + Dice + the IoU head's mean-squared error, averaged over the batch.

    Args:
        mask_logits: `(batch_size, 1, height, width)` decoder logits (sigmoid is applied here once).
        iou_scores: `(batch_size, 1)` the decoder's estimate of its mask's IoU; `None` for a decoder without an IoU
            head (the `"dff"` one), which leaves the IoU term out.
        masks: `(batch_size, 1, H, W)` or `(batch_size, H, W)` 0/1 ground truth; logits are resized to it.
        threshold: probability above which a pixel counts as forged when measuring the real IoU.
        dice_weight: weight of the soft Dice term (smoothed by 1 so empty ground truth is well defined).
        iou_weight: weight of the IoU head's regression onto the real IoU of the thresholded mask.
    """
    target = masks.to(mask_logits.dtype)
    if target.dim() == 3:
        target = target[:, None]
    logits = F.interpolate(mask_logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = torch.sigmoid(logits).flatten(1)
    flat_target = target.flatten(1)
    dice = 1 - (2 * (probabilities * flat_target).sum(-1) + 1) / (probabilities.sum(-1) + flat_target.sum(-1) + 1)
    if iou_scores is None:
        return bce + dice_weight * dice.mean()
    with torch.no_grad():
        predicted = probabilities > threshold
        truth = flat_target > 0.5
        intersection = (predicted & truth).sum(-1).float()
        union = (predicted | truth).sum(-1).float()
        real_iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    iou_loss = F.mse_loss(iou_scores[:, 0].float(), real_iou)
    return bce + dice_weight * dice.mean() + iou_weight * iou_loss


class ForgeryTalkerMaskDecoder(nn.Module):
    """Predicts the forgery mask from vision, Q-Former and prompter features.

    1. The Q-Former's query outputs attend to the prompter's fused tokens (cross attention with the FPN's
       regional evidence, paper §4.4); the result is the decoder's prompt tokens.
    2. The vision encoder's patch grid is the image embedding; the prompter's patch grid, resized to it, is
       added as a dense prompt; a fixed 2-D sine/cosine encoding gives the grid positions.
    3. SAM's two-way transformer and convolutional upscaling produce mask logits at 4× the patch grid, and
       SAM's IoU head a confidence for the mask.

    SAM's modules (`decoder`, a `SamMaskDecoder` with one mask token) are run here one by one rather than through
    `SamMaskDecoder.forward`, which reads its output tokens' `.weight` directly: under an accelerate device map
    that offloads the decoder, weights only arrive when a module's own forward runs.
    """

    def __init__(self, config: ForgeryTalkerConfig):
        super().__init__()
        decoder_config = config.mask_decoder_config
        hidden_size = decoder_config.hidden_size
        backbone = config.instructblip_config
        self.vision_projection = nn.Linear(backbone.vision_config.hidden_size, hidden_size)
        self.qformer_projection = nn.Linear(backbone.qformer_config.hidden_size, hidden_size)
        self.prompter_projection = nn.Linear(config.prompter_config.hidden_size, hidden_size)
        self.prompt_fusion = SamAttention(decoder_config, downsample_rate=1)
        self.prompt_fusion_layer_norm = nn.LayerNorm(hidden_size, eps=decoder_config.layer_norm_eps)
        self.decoder = SamMaskDecoder(decoder_config)

    def forward(
        self, vision_hidden_states: torch.Tensor, qformer_query_output: torch.Tensor, prompter_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            vision_hidden_states: `(batch, 1 + grid², vision_hidden)` vision encoder output (class token first).
            qformer_query_output: `(batch, num_query_tokens, qformer_hidden)` the Q-Former's query outputs.
            prompter_hidden_states: `(batch, 1 + prompter_grid², prompter_hidden)` the prompter's fused tokens.

        Returns:
            mask_logits `(batch, 1, 4 * grid, 4 * grid)` and iou_scores `(batch, 1)`.
        """
        image_embeddings = tokens_to_grid(self.vision_projection(vision_hidden_states[:, 1:]))
        prompter_tokens = self.prompter_projection(prompter_hidden_states)
        prompt_tokens = self.qformer_projection(qformer_query_output)
        # SAM's attention works on (batch, point_batch, tokens, channels)
        attended, _ = self.prompt_fusion(query=prompt_tokens[:, None], key=prompter_tokens[:, None], value=prompter_tokens[:, None])
        prompt_tokens = self.prompt_fusion_layer_norm(prompt_tokens + attended[:, 0])

        dense_prompt = tokens_to_grid(prompter_tokens[:, 1:])
        if dense_prompt.shape[-2:] != image_embeddings.shape[-2:]:
            dense_prompt = F.interpolate(dense_prompt, size=image_embeddings.shape[-2:], mode="bilinear", align_corners=False)
        batch_size, channels, height, width = image_embeddings.shape
        positions = grid_positional_embedding(channels, height, width, image_embeddings).expand(batch_size, -1, -1, -1)
        return self._decode(image_embeddings + dense_prompt, positions, prompt_tokens)

    def _decode(
        self, image_embeddings: torch.Tensor, positions: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask decoding for one prompt set and one mask per image.

        Args:
            image_embeddings: `(batch, channels, height, width)` the image grid with the dense prompt added.
            positions: `(batch, channels, height, width)` its positional encoding.
            prompt_tokens: `(batch, num_prompt_tokens, channels)` the sparse prompt.
        """
        decoder = self.decoder
        batch_size, channels, height, width = image_embeddings.shape
        first = torch.zeros(1, dtype=torch.long, device=image_embeddings.device)
        output_tokens = torch.cat([decoder.iou_token(first), decoder.mask_tokens(first)]).to(prompt_tokens.dtype)
        tokens = torch.cat([output_tokens.expand(batch_size, -1, -1), prompt_tokens], dim=1)[:, None]
        queries, image_tokens = decoder.transformer(
            point_embeddings=tokens,
            image_embeddings=image_embeddings,
            image_positional_embeddings=positions,
            attention_similarity=None,
        )
        iou_token, mask_token = queries[:, 0, 0], queries[:, 0, 1]
        grid = image_tokens[:, 0].transpose(1, 2).reshape(batch_size, channels, height, width)
        upscaled = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(grid)))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled))
        weights = decoder.output_hypernetworks_mlps[0](mask_token)
        mask_logits = torch.einsum("bc,bchw->bhw", weights, upscaled)[:, None]
        return mask_logits, decoder.iou_prediction_head(iou_token)


__all__ = ["ForgeryTalkerMaskDecoder", "forgery_mask_loss", "grid_positional_embedding"]
