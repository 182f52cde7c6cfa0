"""What ForgeryTalker's `forward` and `generate` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

from .modeling_forgerytalker_prompter import ForgeryTalkerPrompterOutput


@dataclass
class ForgeryTalkerOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        `language_model_loss + config.mask_loss_weight * mask_loss` over the parts whose targets were given
        (paper Eq. 7). The prompter is trained on its own in stage 1, so `region_loss` is not part of it.
    language_model_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        Cross-entropy of the report tokens (paper Eq. 6).
    mask_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `masks` is given):
        Binary cross-entropy on mask logits + Dice + the IoU head's regression loss (no IoU term for the `"dff"`
        mask decoder).
    region_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `region_labels` is given):
        The prompter's ½(ω-BCE + Dice) loss, reported for monitoring.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Language-model logits.
    pred_masks (`torch.FloatTensor` of shape `(batch_size, 1, mask_height, mask_width)`):
        Mask logits at 4× the vision patch grid (`config.mask_size` square for the `"dff"` mask decoder); see
        `ForgeryTalkerProcessor.post_process_masks`.
    iou_scores (`torch.FloatTensor` of shape `(batch_size, 1)`, *optional*):
        The mask decoder's estimate of its mask's IoU (a confidence for the mask); `None` for the `"dff"` mask
        decoder, which has no IoU head.
    region_logits (`torch.FloatTensor` of shape `(batch_size, num_regions)`):
        The prompter's logits for each facial region.
    instruction_regions (`torch.LongTensor` of shape `(batch_size, num_regions)`, *optional*):
        The 0/1 regions named in each sample's instruction; `None` for the plain (`"none"`) instruction.
    vision_outputs (`BaseModelOutputWithPooling`):
        The vision encoder's outputs (`hidden_states` / `attentions` when asked).
    qformer_outputs (`BaseModelOutputWithPoolingAndCrossAttentions`):
        The Q-Former's outputs (`hidden_states` / `attentions` / `cross_attentions` when asked).
    language_model_outputs (`CausalLMOutputWithPast` or `Seq2SeqLMOutput`):
        The language model's outputs (`hidden_states` / `attentions` when asked).
    prompter_outputs ([`ForgeryTalkerPrompterOutput`]):
        The prompter's outputs (`hidden_states` / `attentions` when asked).
    mask_decoder_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Attention weights of every attention layer of the mask decoder (prompt fusion, two-way blocks, final
        token-to-image attention), in call order; they need `attn_implementation="eager"`.
    """

    loss: torch.FloatTensor | None = None
    language_model_loss: torch.FloatTensor | None = None
    mask_loss: torch.FloatTensor | None = None
    region_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    region_logits: torch.FloatTensor | None = None
    instruction_regions: torch.LongTensor | None = None
    vision_outputs: ModelOutput | None = None
    qformer_outputs: ModelOutput | None = None
    language_model_outputs: ModelOutput | None = None
    prompter_outputs: ForgeryTalkerPrompterOutput | None = None
    mask_decoder_attentions: tuple[torch.FloatTensor, ...] | None = None

    def to_tuple(self) -> tuple:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in super().to_tuple())


@dataclass
class ForgeryTalkerGenerationOutput(ModelOutput):
    r"""
    sequences (`torch.LongTensor` of shape `(batch_size * num_return_sequences, report_length)`):
        The generated report tokens only: neither the instruction nor the decoder's start token (decode with
        `processor.batch_decode`). Row `i * num_return_sequences + j` is image `i`'s `j`-th report.
    pred_masks (`torch.FloatTensor` of shape `(batch_size, 1, mask_height, mask_width)`):
        Mask logits at 4× the vision patch grid (`config.mask_size` square for the `"dff"` mask decoder); with
        `config.empty_untouched_masks`, the lowest value of the dtype for an image not called manipulated.
    iou_scores (`torch.FloatTensor` of shape `(batch_size, 1)`, *optional*):
        The mask decoder's estimate of its mask's IoU (`None` for the `"dff"` mask decoder; NaN for a mask emptied
        by `config.empty_untouched_masks`).
    region_logits (`torch.FloatTensor` of shape `(batch_size, num_regions)`):
        The prompter's logits.
    region_probs (`torch.FloatTensor` of shape `(batch_size, num_regions)`):
        `sigmoid(region_logits)`: per-region probability of manipulation.
    located_region_probs (`torch.FloatTensor` of shape `(batch_size, num_regions)`, *optional*):
        A prompter with a region map: per-region probability of holding the edit, given that the face is
        manipulated (`None` otherwise).
    predicted_regions (`torch.LongTensor` of shape `(batch_size, num_regions)`):
        0/1: the flagged regions (`forgerytalker.region_decision.flag_regions`: without a region map, those whose
        probability exceeds `region_threshold`).
    instruction_regions (`torch.LongTensor` of shape `(batch_size, num_regions)`, *optional*):
        The regions named in the instruction the report was written from (`None` for the plain instruction).
    mask_threshold (`float`):
        The model's mask threshold (`config.mask_threshold`); post-processing uses it unless told otherwise.
    region_threshold (`float`):
        The region threshold that made `predicted_regions` (`config.region_threshold`).
    located_region_threshold (`float`):
        The located-region threshold (`config.prompter_config.located_region_threshold`; used with a region map).
    scores, logits (`tuple(torch.FloatTensor)`, *optional*, with `return_dict_in_generate=True` and `output_scores` / `output_logits`):
        One `(batch_size * num_beams_or_return_sequences, vocab_size)` tensor per generated token, as the
        language model's `generate` returns them; entry `t` belongs to column `t` of `sequences`.
    sequences_scores (`torch.FloatTensor` of shape `(batch_size * num_return_sequences,)`, *optional*):
        Beam search: the final score of each returned report.
    beam_indices (`torch.LongTensor`, *optional*):
        Beam search: the beam each token of each report came from.
    attentions, hidden_states (`tuple(tuple(torch.FloatTensor))`, *optional*, decoder-only language models):
        With `return_dict_in_generate=True` and `output_attentions` / `output_hidden_states`: the language model's,
        one tuple per generation step (the first step covers the image tokens and the instruction).
    encoder_attentions, encoder_hidden_states, decoder_attentions, cross_attentions, decoder_hidden_states (*optional*, encoder-decoder language models):
        The same for an encoder-decoder language model (T5), as its `generate` returns them.
    past_key_values ([`~cache_utils.Cache`], *optional*):
        The language model's cache after the last step (`return_dict_in_generate=True`, `use_cache=True`).
    """

    sequences: torch.LongTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    iou_scores: torch.FloatTensor | None = None
    region_logits: torch.FloatTensor | None = None
    region_probs: torch.FloatTensor | None = None
    located_region_probs: torch.FloatTensor | None = None
    predicted_regions: torch.LongTensor | None = None
    instruction_regions: torch.LongTensor | None = None
    mask_threshold: float | None = None
    region_threshold: float | None = None
    located_region_threshold: float | None = None
    scores: tuple[torch.FloatTensor, ...] | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None
    sequences_scores: torch.FloatTensor | None = None
    beam_indices: torch.LongTensor | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    encoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    decoder_hidden_states: tuple | None = None
    past_key_values: Any | None = None


__all__ = ["ForgeryTalkerGenerationOutput", "ForgeryTalkerOutput"]
