"""Tiny stand-ins for the authors' released files, with their key names, written the way the release writes them.

Key names and layouts follow the published code (`NattyLianJc/Generating-Attribution-Reports`: jeonsworld's ViT with
the release's conv branch in `vit/models/modeling.py`, LAVIS `Blip2T5Instruct` in
`lavis/models/blip2_models/blip2_t5_instruct.py`, the LAVIS Q-Former, the SAM-style `MaskDecoder` and
`TwoWayTransformer`, the runner's `_save_checkpoint`), at tiny widths, with random values. They are written here
from that description, not from the converter's rules.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

from forgerytalker.instruction import DFF_INSTRUCTION_WORDING
from forgerytalker.tiny import IMAGE_TOKEN, build_tiny_language_tokenizer, build_tiny_qformer_tokenizer

IMAGE_SIZE = 32
VISION_WIDTH = 48  # EVA's 1408
QFORMER_WIDTH = 32  # 768
TEXT_WIDTH = 40  # Flan-T5-XL's 2048
NUM_QUERY_TOKENS = 4
QFORMER_LAYERS = 2  # cross-attention every 2nd layer, as released
QFORMER_POSITIONS = 128  # the instruction with all 21 regions fits (512 in BERT)
FACE_VIT = {"hidden": 24, "layers": 3, "mlp": 48, "patch": 8, "heads": 4}  # ViT-H/14: 1280, 32, 5120, 14, 16
MASK_PATH = {"heads": 4, "mlp": 64, "depth": 2, "downsample": 2, "mask_size": 16, "prompt_length": 21}  # 8, 2048, 2, 2, 224, 21
NUM_CLASSES = 21


def _wording_texts() -> list[str]:
    return [DFF_INSTRUCTION_WORDING[name] for name in ("instruction_prefix", "instruction_suffix", "empty_regions_instruction")]


def write_instructblip_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny InstructBLIP-Flan-T5 folder in `Salesforce/instructblip-flan-t5-xl`'s layout (model + processor).

    Like Flan-T5's, its LM head is not the input embeddings (transformers 5 builds T5 tied and unties on loading a
    checkpoint that holds both with different values)."""
    tokenizer = build_tiny_language_tokenizer(_wording_texts(), "t5")
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    qformer_tokenizer = build_tiny_qformer_tokenizer(_wording_texts())
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH, num_hidden_layers=2,
                           num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8),
        qformer_config=dict(vocab_size=len(qformer_tokenizer), hidden_size=QFORMER_WIDTH, num_hidden_layers=QFORMER_LAYERS,
                            num_attention_heads=4, intermediate_size=2 * QFORMER_WIDTH, cross_attention_frequency=2,
                            encoder_hidden_size=VISION_WIDTH, max_position_embeddings=QFORMER_POSITIONS),
        text_config=dict(model_type="t5", d_model=TEXT_WIDTH, d_kv=10, d_ff=2 * TEXT_WIDTH, num_layers=2, num_decoder_layers=2,
                         num_heads=4, vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                         feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=8),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(seed)
    InstructBlipForConditionalGeneration(config).save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    weights["language_model.lm_head.weight"] = torch.randn_like(weights["language_model.shared.weight"])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    processor = InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer, qformer_tokenizer,
        num_query_tokens=NUM_QUERY_TOKENS,
    )
    processor.save_pretrained(folder)
    return folder


def _batch_norm(prefix: str, channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.bias": 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.running_mean": 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.running_var": 0.5 + torch.rand(channels, generator=generator),
        f"{prefix}.num_batches_tracked": torch.tensor(1000),
    }


def face_vit_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """jeonsworld's `VisionTransformer(img_size=IMAGE_SIZE, num_classes=21)` with the release's conv branch."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.2 * torch.randn(*shape, generator=generator)

    hidden, mlp, patch = FACE_VIT["hidden"], FACE_VIT["mlp"], FACE_VIT["patch"]
    num_patches = (IMAGE_SIZE // patch) ** 2
    state = {
        "transformer.embeddings.position_embeddings": rand(1, num_patches + 1, hidden),
        "transformer.embeddings.cls_token": rand(1, 1, hidden),
        "transformer.embeddings.patch_embeddings.weight": rand(hidden, 3, patch, patch),
        "transformer.embeddings.patch_embeddings.bias": rand(hidden),
    }
    for layer in range(FACE_VIT["layers"]):
        prefix = f"transformer.encoder.layer.{layer}"
        for norm in ("attention_norm", "ffn_norm"):
            state[f"{prefix}.{norm}.weight"] = 1 + rand(hidden)
            state[f"{prefix}.{norm}.bias"] = rand(hidden)
        for projection in ("query", "key", "value", "out"):
            state[f"{prefix}.attn.{projection}.weight"] = rand(hidden, hidden)
            state[f"{prefix}.attn.{projection}.bias"] = rand(hidden)
        state[f"{prefix}.ffn.fc1.weight"], state[f"{prefix}.ffn.fc1.bias"] = rand(mlp, hidden), rand(mlp)
        state[f"{prefix}.ffn.fc2.weight"], state[f"{prefix}.ffn.fc2.bias"] = rand(hidden, mlp), rand(hidden)
    state["transformer.encoder.encoder_norm.weight"] = 1 + rand(hidden)
    state["transformer.encoder.encoder_norm.bias"] = rand(hidden)
    state["head.weight"], state["head.bias"] = rand(NUM_CLASSES, hidden), rand(NUM_CLASSES)
    # AddCoords (3 → 5 channels), then CoordConv adds the two coordinates again: 7 input channels
    state["coord_conv_branch.0.conv.weight"], state["coord_conv_branch.0.conv.bias"] = rand(hidden, 7, 3, 3), rand(hidden)
    state.update(_batch_norm("coord_conv_branch.1", hidden, generator))
    state["conv_branch2.0.weight"], state["conv_branch2.0.bias"] = rand(hidden, hidden, 5, 5), rand(hidden)
    state.update(_batch_norm("conv_branch2.1", hidden, generator))
    return state


def _linear(state: dict, prefix: str, out_features: int, in_features: int, generator: torch.Generator) -> None:
    state[f"{prefix}.weight"] = 0.2 * torch.randn(out_features, in_features, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(out_features, generator=generator)


def _layer_norm(state: dict, prefix: str, width: int, generator: torch.Generator) -> None:
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(width, generator=generator)


def qformer_state_dict(qformer_vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """LAVIS `BertLMHeadModel` (`cls=None`, no pooler) under `Qformer.`, its text layers kept (instruction input)."""
    state = {
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(qformer_vocab_size, QFORMER_WIDTH, generator=generator),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(QFORMER_POSITIONS, QFORMER_WIDTH, generator=generator),
        "Qformer.bert.embeddings.position_ids": torch.arange(QFORMER_POSITIONS)[None],
    }
    _layer_norm(state, "Qformer.bert.embeddings.LayerNorm", QFORMER_WIDTH, generator)
    for layer in range(QFORMER_LAYERS):
        prefix = f"Qformer.bert.encoder.layer.{layer}"
        kinds = ["attention", "crossattention"] if layer % 2 == 0 else ["attention"]
        for kind in kinds:
            source_width = VISION_WIDTH if kind == "crossattention" else QFORMER_WIDTH
            _linear(state, f"{prefix}.{kind}.self.query", QFORMER_WIDTH, QFORMER_WIDTH, generator)
            _linear(state, f"{prefix}.{kind}.self.key", QFORMER_WIDTH, source_width, generator)
            _linear(state, f"{prefix}.{kind}.self.value", QFORMER_WIDTH, source_width, generator)
            _linear(state, f"{prefix}.{kind}.output.dense", QFORMER_WIDTH, QFORMER_WIDTH, generator)
            _layer_norm(state, f"{prefix}.{kind}.output.LayerNorm", QFORMER_WIDTH, generator)
        for suffix in ("", "_query"):
            _linear(state, f"{prefix}.intermediate{suffix}.dense", 2 * QFORMER_WIDTH, QFORMER_WIDTH, generator)
            _linear(state, f"{prefix}.output{suffix}.dense", QFORMER_WIDTH, 2 * QFORMER_WIDTH, generator)
            _layer_norm(state, f"{prefix}.output{suffix}.LayerNorm", QFORMER_WIDTH, generator)
    return state


def mask_path_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`mask_decoder` (MaskDecoder + TwoWayTransformer), `cross_attention_layer` and `prompt_proj`."""
    width, inner = VISION_WIDTH, VISION_WIDTH // MASK_PATH["downsample"]
    state = {"mask_decoder.mask_tokens": 0.5 * torch.randn(1, 1, width, generator=generator)}

    def attention(prefix: str, internal: int) -> None:
        for projection in ("q_proj", "k_proj", "v_proj"):
            _linear(state, f"{prefix}.{projection}", internal, width, generator)
        _linear(state, f"{prefix}.out_proj", width, internal, generator)

    for layer in range(MASK_PATH["depth"]):
        prefix = f"mask_decoder.transformer.layers.{layer}"
        attention(f"{prefix}.self_attn", width)
        attention(f"{prefix}.cross_attn_token_to_image", inner)
        attention(f"{prefix}.cross_attn_image_to_token", inner)
        _linear(state, f"{prefix}.mlp.lin1", MASK_PATH["mlp"], width, generator)
        _linear(state, f"{prefix}.mlp.lin2", width, MASK_PATH["mlp"], generator)
        for norm in range(1, 5):
            _layer_norm(state, f"{prefix}.norm{norm}", width, generator)
    attention("mask_decoder.transformer.final_attn_token_to_image", inner)
    _layer_norm(state, "mask_decoder.transformer.norm_final_attn", width, generator)
    heads = {"output_upscaling_mlp": MASK_PATH["mask_size"] ** 2, "output_hypernetworks_mlps": MASK_PATH["prompt_length"] + 1}
    for name, outputs in heads.items():
        _linear(state, f"mask_decoder.{name}.layers.0", width, width, generator)
        _linear(state, f"mask_decoder.{name}.layers.1", width, width, generator)
        _linear(state, f"mask_decoder.{name}.layers.2", outputs, width, generator)
    state["cross_attention_layer.in_proj_weight"] = 0.2 * torch.randn(3 * width, width, generator=generator)
    state["cross_attention_layer.in_proj_bias"] = 0.1 * torch.randn(3 * width, generator=generator)
    _linear(state, "cross_attention_layer.out_proj", width, width, generator)
    _linear(state, "prompt_proj", width, TEXT_WIDTH, generator)
    return state


def unused_heads_state_dict(qformer_vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What the release trains or keeps but never uses at inference: tag gating, seg_proj, mlm_head, text_proj."""
    state = {
        "bert_model.embeddings.word_embeddings.weight": torch.randn(30, QFORMER_WIDTH, generator=generator),
        "bert_model.encoder.layer.0.attention.self.query.weight": torch.randn(QFORMER_WIDTH, QFORMER_WIDTH, generator=generator),
        "gate_cross_attention_layer.in_proj_weight": torch.randn(3 * QFORMER_WIDTH, QFORMER_WIDTH, generator=generator),
        "gate_cross_attention_layer.in_proj_bias": torch.randn(3 * QFORMER_WIDTH, generator=generator),
    }
    _linear(state, "gate_cross_attention_layer.out_proj", QFORMER_WIDTH, QFORMER_WIDTH, generator)
    _linear(state, "trans_layer", QFORMER_WIDTH, VISION_WIDTH, generator)
    _linear(state, "fc_layer", 1, QFORMER_WIDTH, generator)
    _linear(state, "seg_proj", IMAGE_SIZE * IMAGE_SIZE, QFORMER_WIDTH, generator)
    _linear(state, "mlm_head", qformer_vocab_size - 1, QFORMER_WIDTH, generator)
    _linear(state, "text_proj", VISION_WIDTH, TEXT_WIDTH, generator)
    return state


def dff_state_dict(qformer_vocab_size: int, face_vit: dict[str, torch.Tensor], stage: str = "finetune", seed: int = 2) -> dict:
    """The model dict LAVIS saves: the trainable parameters of `stage` plus every buffer.

    `"finetune"`: everything but the vision encoder and T5 (Face-ViT included, with BatchNorm statistics that drifted
    during DFF training); `"pretrain"`: no `query_tokens`, `ln_vision` nor tag-gating BERT, and of Face-ViT only the
    buffers.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {**qformer_state_dict(qformer_vocab_size, generator), **mask_path_state_dict(generator)}
    _linear(state, "t5_proj", TEXT_WIDTH, QFORMER_WIDTH, generator)
    state.update(unused_heads_state_dict(qformer_vocab_size, generator))
    drifted = {key: value.clone() for key, value in face_vit.items()}
    for key in drifted:
        if key.endswith(("running_mean", "running_var")):
            drifted[key] = drifted[key] * 1.5 + 0.05
    if stage == "finetune":
        state["query_tokens"] = torch.randn(1, NUM_QUERY_TOKENS, QFORMER_WIDTH, generator=generator)
        _layer_norm(state, "ln_vision", VISION_WIDTH, generator)
        kept = drifted
    else:
        state = {key: value for key, value in state.items() if not key.startswith("bert_model.")}
        kept = {key: value for key, value in drifted.items() if key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    state.update({f"multi_label_classifier.{key}": value for key, value in kept.items()})
    return state


def runner_checkpoint(model_state: dict) -> dict:
    """LAVIS `RunnerBase._save_checkpoint`'s object around a model dict."""
    first = next(iter(model_state.values()))
    return {
        "model": model_state,
        "optimizer": {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(first)}},
                      "param_groups": [{"lr": 1e-5, "weight_decay": 0.05, "params": [0]}]},
        "config": {"run": {"training_stage": "finetune", "output_dir": "stage2_finetune_lora"}},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "epoch": 4,
    }


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 floating tensors, as the authors' cleaned-up uploads."""
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def write_released_files(folder: Path, dff_form: str = "runner", dff_dtype: str = "float32", stage: str = "finetune") -> dict[str, Path]:
    """Writes a tiny InstructBLIP folder, Face-ViT `.bin` and DFF `.pth` into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    instructblip = write_instructblip_folder(folder / "instructblip-flan-t5")
    qformer_vocab_size = InstructBlipConfig.from_pretrained(instructblip).qformer_config.vocab_size
    face_vit = face_vit_state_dict()
    face_vit_path = folder / "Fakeface-ViT-H_14-tiny_checkpoint.bin"
    torch.save(face_vit, face_vit_path)
    model_state = dff_state_dict(qformer_vocab_size, face_vit, stage)
    if dff_dtype == "float16":
        model_state = half(model_state)
    dff_path = folder / "2111_checkpoint_best.pth"
    torch.save(runner_checkpoint(model_state) if dff_form == "runner" else model_state, dff_path)
    return {"instructblip": instructblip, "face_vit": face_vit_path, "dff": dff_path}


def convert(files: dict[str, Path], out: Path, **kwargs):
    """`convert_released_checkpoint` of `write_released_files`' files, with the tiny release's head counts."""
    from forgerytalker.released_weights import convert_released_checkpoint

    heads = {"prompter_num_heads": FACE_VIT["heads"], "mask_decoder_num_heads": MASK_PATH["heads"]}
    return convert_released_checkpoint(files["instructblip"], files["dff"], files["face_vit"], out, **heads, **kwargs)
