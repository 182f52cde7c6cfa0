"""Where every key of the released checkpoints goes in a ForgeryTalker state dict, and what is dropped.

Face-ViT (`LianJC/Face-ViT-MultiLabel`, a jeonsworld ViT-pytorch `VisionTransformer` with the release's convolution
branch) becomes the prompter (`conv_branch_type="pixel"`). The DFF checkpoint (`LianJC/DFF-InstructBLIP-Detection`,
LAVIS `Blip2T5Instruct`) holds the trained Q-Former and language projection, the mask path (`mask_decoder_type="dff"`)
and Face-ViT's BatchNorm statistics as they were at the end of DFF training (LAVIS loads it after the Face-ViT file,
so these win); the vision encoder and Flan-T5 are not in it (frozen, they come from the InstructBLIP base).

A rule is a pair of templates, released key → ForgeryTalker key, whose `{placeholders}` stand for the parts that
carry over (`PLACEHOLDERS` says what each may be). Rules work both ways, so an unfilled ForgeryTalker weight is
reported with the released key it needs. A key that no rule and no drop entry matches is an error.
"""

from __future__ import annotations

import re

PLACEHOLDERS = {
    "layer": r"\d+",
    "param": r"weight|bias",
    "norm_param": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "embedding": r"word_embeddings|position_embeddings",
    "kind": r"attention|crossattention",
    "qkv": r"query|key|value",
    "part": r"dense|LayerNorm",
    "intermediate": r"intermediate|intermediate_query",
    "output": r"output|output_query",
    "fc": r"fc1|fc2",
    "sam_attention": r"self_attn|cross_attn_token_to_image|cross_attn_image_to_token",
    "projection": r"q_proj|k_proj|v_proj|out_proj",
    "lin": r"lin1|lin2",
    "index": r"[1-4]",
    "head": r"output_upscaling_mlp|output_hypernetworks_mlps",
    "in_proj": r"in_proj_weight|in_proj_bias",
    "token": r"cls_token|position_embeddings",
}

_LAYER = "transformer.encoder.layer.{layer}"
FACE_VIT_KEY_RULES: tuple[tuple[str, str], ...] = (
    ("transformer.embeddings.{token}", "prompter.embeddings.{token}"),
    ("transformer.embeddings.patch_embeddings.{param}", "prompter.embeddings.patch_embeddings.projection.{param}"),
    (_LAYER + ".attention_norm.{param}", "prompter.layers.{layer}.layernorm_before.{param}"),
    (_LAYER + ".ffn_norm.{param}", "prompter.layers.{layer}.layernorm_after.{param}"),
    (_LAYER + ".attn.query.{param}", "prompter.layers.{layer}.attention.q_proj.{param}"),
    (_LAYER + ".attn.key.{param}", "prompter.layers.{layer}.attention.k_proj.{param}"),
    (_LAYER + ".attn.value.{param}", "prompter.layers.{layer}.attention.v_proj.{param}"),
    (_LAYER + ".attn.out.{param}", "prompter.layers.{layer}.attention.o_proj.{param}"),
    (_LAYER + ".ffn.{fc}.{param}", "prompter.layers.{layer}.mlp.{fc}.{param}"),
    ("transformer.encoder.encoder_norm.{param}", "prompter.layernorm.{param}"),
    ("head.{param}", "prompter.region_head.{param}"),
    # the convolution branch: Sequential(CoordConv, BatchNorm2d, LeakyReLU, MaxPool2d), Sequential(Conv2d, BatchNorm2d, ...)
    ("coord_conv_branch.0.conv.{param}", "prompter.conv_branch.0.conv.{param}"),
    ("coord_conv_branch.1.{norm_param}", "prompter.conv_branch.0.norm.{norm_param}"),
    ("conv_branch2.0.{param}", "prompter.conv_branch.1.conv.{param}"),
    ("conv_branch2.1.{norm_param}", "prompter.conv_branch.1.norm.{norm_param}"),
)

_QFORMER_LAYER = "Qformer.bert.encoder.layer.{layer}"
_OUR_QFORMER_LAYER = "instructblip.qformer.encoder.layer.{layer}"
_TWO_WAY = "mask_decoder.transformer"
DFF_KEY_RULES: tuple[tuple[str, str], ...] = (
    ("query_tokens", "instructblip.query_tokens"),
    ("ln_vision.{param}", "instructblip.vision_model.post_layernorm.{param}"),
    ("Qformer.bert.embeddings.{embedding}.weight", "instructblip.qformer.embeddings.{embedding}.weight"),
    ("Qformer.bert.embeddings.LayerNorm.{param}", "instructblip.qformer.embeddings.layernorm.{param}"),
    (_QFORMER_LAYER + ".{kind}.self.{qkv}.{param}", _OUR_QFORMER_LAYER + ".{kind}.attention.{qkv}.{param}"),
    (_QFORMER_LAYER + ".{kind}.output.{part}.{param}", _OUR_QFORMER_LAYER + ".{kind}.output.{part}.{param}"),
    (_QFORMER_LAYER + ".{intermediate}.dense.{param}", _OUR_QFORMER_LAYER + ".{intermediate}.dense.{param}"),
    (_QFORMER_LAYER + ".{output}.{part}.{param}", _OUR_QFORMER_LAYER + ".{output}.{part}.{param}"),
    ("t5_proj.{param}", "instructblip.language_projection.{param}"),
    # the mask path: SAM's module names, with transformers' spelling of the layer norms and MLP layers
    ("mask_decoder.mask_tokens", "mask_decoder.mask_tokens"),
    (_TWO_WAY + ".layers.{layer}.norm{index}.{param}", _TWO_WAY + ".layers.{layer}.layer_norm{index}.{param}"),
    (_TWO_WAY + ".layers.{layer}.{sam_attention}.{projection}.{param}", _TWO_WAY + ".layers.{layer}.{sam_attention}.{projection}.{param}"),
    (_TWO_WAY + ".layers.{layer}.mlp.{lin}.{param}", _TWO_WAY + ".layers.{layer}.mlp.{lin}.{param}"),
    (_TWO_WAY + ".final_attn_token_to_image.{projection}.{param}", _TWO_WAY + ".final_attn_token_to_image.{projection}.{param}"),
    (_TWO_WAY + ".norm_final_attn.{param}", _TWO_WAY + ".layer_norm_final_attn.{param}"),
    ("mask_decoder.output_upscaling_mlp.layers.0.{param}", "mask_decoder.output_upscaling_mlp.proj_in.{param}"),
    ("mask_decoder.output_upscaling_mlp.layers.1.{param}", "mask_decoder.output_upscaling_mlp.layers.0.{param}"),
    ("mask_decoder.output_upscaling_mlp.layers.2.{param}", "mask_decoder.output_upscaling_mlp.proj_out.{param}"),
    ("mask_decoder.output_hypernetworks_mlps.layers.0.{param}", "mask_decoder.output_hypernetworks_mlp.proj_in.{param}"),
    ("mask_decoder.output_hypernetworks_mlps.layers.1.{param}", "mask_decoder.output_hypernetworks_mlp.layers.0.{param}"),
    ("mask_decoder.output_hypernetworks_mlps.layers.2.{param}", "mask_decoder.output_hypernetworks_mlp.proj_out.{param}"),
    ("cross_attention_layer.{in_proj}", "mask_decoder.prompt_attention.{in_proj}"),
    ("cross_attention_layer.out_proj.{param}", "mask_decoder.prompt_attention.out_proj.{param}"),
    ("prompt_proj.{param}", "mask_decoder.prompt_proj.{param}"),
)

FACE_VIT_PREFIX = "multi_label_classifier."
"""DFF keys under this prefix are Face-ViT keys (mapped with `FACE_VIT_KEY_RULES`); they override the Face-ViT file."""

DROPPED_DFF_KEYS: tuple[tuple[str, str], ...] = (
    (r"bert_model\..+", "the tag-gating BERT: its gated labels are never used at inference"),
    (r"gate_cross_attention_layer\..+", "tag gating: its output is never used at inference"),
    (r"trans_layer\.(weight|bias)", "tag gating: its output is never used at inference"),
    (r"fc_layer\.(weight|bias)", "tag gating: its output is never used at inference"),
    (r"seg_proj\.(weight|bias)", "a mask head the released model never calls"),
    (r"mlm_head\.(weight|bias)", "a pretraining-loss head, not used at inference"),
    (r"text_proj\.(weight|bias)", "a pretraining-loss head, not used at inference"),
    (r"Qformer\.bert\.embeddings\.position_ids", "a buffer of position indices that transformers makes itself"),
)
"""DFF keys that are dropped: a regular expression on the whole key, and why."""

REQUIRED_DFF_PREFIXES = ("instructblip.qformer.", "instructblip.language_projection.", "mask_decoder.")
"""Targets the DFF checkpoint must fill: trained in every DFF stage, so the InstructBLIP base's values would be wrong.
`query_tokens` and the vision layer norm are trained only in DFF's finetune stage; a pretrain-stage checkpoint
leaves them to the base (as LAVIS does, loading the InstructBLIP weights first)."""


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>{PLACEHOLDERS[part]})" for index, part in enumerate(parts))
    )


_FACE_VIT = tuple((_pattern(source), source, _pattern(target), target) for source, target in FACE_VIT_KEY_RULES)
_DFF = tuple((_pattern(source), source, _pattern(target), target) for source, target in DFF_KEY_RULES)
_DROPS = tuple((re.compile(pattern), reason) for pattern, reason in DROPPED_DFF_KEYS)


def _translate(rules, key: str, forward: bool) -> str | None:
    for source_pattern, source, target_pattern, target in rules:
        match = (source_pattern if forward else target_pattern).fullmatch(key)
        if match:
            return (target if forward else source).format(**match.groupdict())
    return None


def face_vit_target(key: str) -> str | None:
    """The ForgeryTalker key of a Face-ViT key, or `None` when no rule places it."""
    return _translate(_FACE_VIT, key, forward=True)


def dff_target(key: str) -> str | None:
    """The ForgeryTalker key of a DFF key (Face-ViT keys included), or `None` when no rule places it."""
    if key.startswith(FACE_VIT_PREFIX):
        return face_vit_target(key[len(FACE_VIT_PREFIX) :])
    return _translate(_DFF, key, forward=True)


def face_vit_source(target: str) -> str | None:
    """The Face-ViT key a ForgeryTalker prompter key is read from, or `None`."""
    return _translate(_FACE_VIT, target, forward=False)


def dff_source(target: str) -> str | None:
    """The DFF key a ForgeryTalker key is read from (outside the prompter), or `None`."""
    return _translate(_DFF, target, forward=False)


def dff_drop_reason(key: str) -> str | None:
    """Why a DFF key is dropped, or `None` when it is not on the list."""
    for pattern, reason in _DROPS:
        if pattern.fullmatch(key):
            return reason
    return None


__all__ = [
    "DFF_KEY_RULES",
    "DROPPED_DFF_KEYS",
    "FACE_VIT_KEY_RULES",
    "FACE_VIT_PREFIX",
    "PLACEHOLDERS",
    "REQUIRED_DFF_PREFIXES",
    "dff_drop_reason",
    "dff_source",
    "dff_target",
    "face_vit_source",
    "face_vit_target",
]
