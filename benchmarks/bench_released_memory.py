"""Weight memory of the converted release (`forgerytalker convert-checkpoint`), counted on the meta device.

    python benchmarks/bench_released_memory.py

Builds the full-size model the converter writes (InstructBLIP-Flan-T5-XL: EVA ViT-g/14, BERT-base Q-Former with the
"[DEC]" token, Flan-T5-XL with its own LM head; Face-ViT-H/14 with the pixel conv branch; the DFF mask path) without
allocating any weight, and prints JSON: parameters per part and the bytes of the weights in float32, bfloat16 and
the release's own mix (Flan-T5 in bfloat16, the rest in float32). Activations, the beam search's cache and the CUDA
context come on top (a few GB at batch size 1 with 5 beams).
"""

from __future__ import annotations

import json
import platform

import torch
from transformers import SamMaskDecoderConfig

from _machine import load_average, machine_state
from forgerytalker import ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, ForgeryTalkerPrompterConfig
from forgerytalker.configuration_forgerytalker import PAPER_INSTRUCTBLIP_CONFIG

GIB = 1024**3


def released_config() -> ForgeryTalkerConfig:
    face_vit = ForgeryTalkerPrompterConfig(
        image_size=224, patch_size=14, hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
        intermediate_size=5120, layer_norm_eps=1e-6, conv_kernel_sizes=[3, 5], conv_branch_type="pixel",
    )
    mask_path = SamMaskDecoderConfig(
        hidden_size=1408, num_attention_heads=8, mlp_dim=2048, num_hidden_layers=2, attention_downsample_rate=2,
        hidden_act="relu", layer_norm_eps=1e-5,
    )
    return ForgeryTalkerConfig(
        instructblip_config=PAPER_INSTRUCTBLIP_CONFIG, prompter_config=face_vit, mask_decoder_config=mask_path,
        mask_decoder_type="dff", mask_prompt_length=21, mask_size=224,
    )


def main() -> None:
    load_before = load_average()
    with torch.device("meta"):
        model = ForgeryTalkerForConditionalGeneration(released_config())
        # transformers 5 builds T5 with its LM head tied to the embeddings and unties them when, as in Flan-T5's
        # checkpoint, both are stored with different values: the converted model has its own head
        language_model = model.instructblip.language_model
        language_model.lm_head.weight = torch.nn.Parameter(torch.empty_like(language_model.shared.weight))
    backbone = model.instructblip
    parts = {
        "vision_encoder": backbone.vision_model,
        "qformer": backbone.qformer,
        "language_model": backbone.language_model,
        "prompter": model.prompter,
        "mask_decoder": model.mask_decoder,
    }
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    counts["query_tokens_and_projection"] = backbone.query_tokens.numel() + sum(
        p.numel() for p in backbone.language_projection.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(counts.values()), (total, counts)
    rest = total - counts["language_model"]
    print(json.dumps({
        "parameters": {**counts, "total": total},
        "weights_gib": {
            "float32": round(4 * total / GIB, 2),
            "bfloat16": round(2 * total / GIB, 2),
            "release_mix_t5_bf16_rest_fp32": round((2 * counts["language_model"] + 4 * rest) / GIB, 2),
        },
        "torch": torch.__version__,
        "architecture": platform.machine(),
        "machine": machine_state(load_before),
    }, indent=2))


if __name__ == "__main__":
    main()
