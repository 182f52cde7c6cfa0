"""The mask decoder of the authors' released DFF checkpoint (`mask_decoder_type="dff"`).

Not the paper's decoder (`ForgeryTalkerMaskDecoder`): it has no spatial grid at all. The region-name prompt
attends to the vision patches; with the vision class token that makes `mask_prompt_length + 1` tokens, over which
SAM's two-way transformer runs as if they were a one-column image, with the tokens as their own positional
encoding; two MLP heads then give a flat `mask_size`×`mask_size` mask. The weights keep the release's layout:
transformers' `SamTwoWayTransformer` has the same modules as the SAM code the release carries.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamFeedForward, SamTwoWayTransformer

from .configuration_forgerytalker import ForgeryTalkerConfig


class ForgeryTalkerDffMaskDecoder(nn.Module):
    """Predicts the forgery mask from the vision encoder's tokens and the embedded region-name prompt.

    1. `prompt_proj` maps the prompt's language-model embeddings to the vision width; `prompt_attention` (one
       multi-head attention, no padding mask: padding positions take part, as released) lets them attend to the
       vision patches.
    2. The vision class token and the attended prompt make the decoder's `mask_prompt_length + 1` tokens.
    3. SAM's two-way transformer runs one mask token against them (the tokens are both the "image" and its
       positional encoding); `output_hypernetworks_mlp` turns the mask token into one weight per token and
       `output_upscaling_mlp` every token into a flat mask; their product is the mask's logits.
    """

    def __init__(self, config: ForgeryTalkerConfig):
        super().__init__()
        decoder_config = config.mask_decoder_config
        hidden_size = decoder_config.hidden_size
        self.mask_size = config.mask_size
        self.prompt_proj = nn.Linear(config.get_text_config().hidden_size, hidden_size)
        self.prompt_attention = nn.MultiheadAttention(hidden_size, decoder_config.num_attention_heads, batch_first=True)
        self.mask_tokens = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.transformer = SamTwoWayTransformer(decoder_config)
        self.output_upscaling_mlp = SamFeedForward(hidden_size, hidden_size, config.mask_size**2, 3)
        self.output_hypernetworks_mlp = SamFeedForward(hidden_size, hidden_size, config.mask_prompt_length + 1, 3)

    def forward(self, vision_hidden_states: torch.Tensor, prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, None]:
        """
        Args:
            vision_hidden_states: `(batch, 1 + num_patches, hidden)` vision encoder output (class token first,
                after its final layer norm).
            prompt_embeddings: `(batch, mask_prompt_length, text_hidden)` the language model's input embeddings of
                the mask prompt's ids.

        Returns:
            mask_logits `(batch, 1, mask_size, mask_size)` and `None` (the decoder has no IoU head).
        """
        prompt = self.prompt_proj(prompt_embeddings.to(self.prompt_proj.weight.dtype))
        patches = vision_hidden_states[:, 1:].to(prompt.dtype)
        attended, _ = self.prompt_attention(prompt, patches, patches, need_weights=False)
        tokens = torch.cat([vision_hidden_states[:, :1].to(prompt.dtype), attended], dim=1)
        batch_size, num_tokens, hidden_size = tokens.shape
        # SAM's transformer reads (batch, channels, height, width) images: a column of `num_tokens` "pixels"
        image = tokens.transpose(1, 2)[..., None]
        mask_token = self.mask_tokens.expand(batch_size, -1, -1)[:, None]
        queries, keys = self.transformer(
            point_embeddings=mask_token,
            image_embeddings=image,
            image_positional_embeddings=image,
            attention_similarity=None,
        )
        flat_masks = self.output_upscaling_mlp(keys[:, 0])  # (batch, num_tokens, mask_size²)
        weights = self.output_hypernetworks_mlp(queries[:, 0])  # (batch, 1, num_tokens)
        mask_logits = (weights @ flat_masks).view(batch_size, 1, self.mask_size, self.mask_size)
        return mask_logits, None


__all__ = ["ForgeryTalkerDffMaskDecoder"]
