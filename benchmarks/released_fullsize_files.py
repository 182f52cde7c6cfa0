"""Random-valued stand-ins for the authors' released files at full size (or with fewer layers), for rehearsals.

    python benchmarks/released_fullsize_files.py --out /scratch/released            # 4.8 B parameters, ~23 GB
    python benchmarks/released_fullsize_files.py --out /scratch/released-2 --layers 2

Writes what a user downloads, in the release's formats (`official-release.md` in the project's research notes):
- `instructblip-flan-t5-xl/`: `Salesforce/instructblip-flan-t5-xl`'s layout: `config.json`, float32 weights in
  sharded safetensors with `model.safetensors.index.json` (Flan-T5's LM head stored apart from its embeddings) and a
  processor folder. The tokenizers are the release's vocabularies from local copies (no network here): the Q-Former's
  BERT-base-uncased's (MiniLM's copy) plus "[DEC]", the language model's Flan-T5's (the tests' fixture) plus the
  image token; the embedding tables keep the release's 32128 and 30523 rows.
- `2111_checkpoint_best.pth`: a LAVIS runner checkpoint (`{"model", "optimizer", "config", "scaler", "epoch"}`, the
  optimizer state left out) holding a finetune-stage model dict in float32: the Q-Former, `t5_proj`, the mask path,
  `query_tokens`, `ln_vision`, all of Face-ViT under `multi_label_classifier.`, and what inference never uses
  (`bert_model`, tag gating, `seg_proj`, `mlm_head`, `text_proj`).
- `Fakeface-ViT-H_14-...-checkpoint.bin`: Face-ViT-H/14 with its CNN branch, a plain float32 state dict.

Every key and shape comes from the converter's own rules (`released_weights.key_mapping`) applied backwards to the
model the converter builds, plus the list of keys it drops, so the files are exactly what it expects. Values are
random (small normal values; positive BatchNorm variances), made one file at a time: memory holds one safetensors
shard (4 GB) or one pickle's tensors (4.7 GB for the DFF checkpoint) at once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration
from transformers import InstructBlipProcessor, T5TokenizerFast

from bench_released_memory import released_config
from forgerytalker import ForgeryTalkerForConditionalGeneration
from forgerytalker.released_weights.key_mapping import FACE_VIT_PREFIX, dff_source, face_vit_source
from forgerytalker.tiny import IMAGE_TOKEN, build_tiny_qformer_tokenizer

logger = logging.getLogger("released_fullsize_files")

FACE_VIT_NAME = "Fakeface-ViT-H_14-add_cnn_branch_3_5-add_max_pool-21_class-weight_1_02-bce_focal_dice_jaccard_loss_checkpoint.bin"
DFF_NAME = "2111_checkpoint_best.pth"
INSTRUCTBLIP_NAME = "instructblip-flan-t5-xl"
FLAN_T5_TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "flan_t5_tokenizer" / "tokenizer.json.gz"
INSTRUCTBLIP_SHARDS = 4
"""`Salesforce/instructblip-flan-t5-xl` ships its float32 weights in four safetensors shards."""
QFORMER_WIDTH, VISION_WIDTH, TEXT_WIDTH, QFORMER_VOCAB = 768, 1408, 2048, 30523
SEG_PROJ_OUTPUTS = 224 * 224


def random_like(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A cheap random tensor: integer buffers as counters/positions, variances positive, the rest N(0, 0.02) (norm
    weights around 1), so a forward pass stays finite."""
    if not dtype.is_floating_point:
        if name.endswith("position_ids"):
            return torch.arange(shape[-1]).expand(shape).contiguous()
        return torch.full(shape, 1000, dtype=dtype)
    tensor = torch.empty(shape, dtype=dtype)
    if name.endswith("running_var"):
        return tensor.uniform_(0.5, 1.5)
    tensor.normal_(0.0, 0.02)
    if len(shape) == 1 and name.endswith("weight"):
        tensor.add_(1.0)
    return tensor


def reduced_config(layers: int | None):
    """The released config, with every tower cut to its first `layers` layers when given."""
    config = released_config()
    if layers is not None:
        backbone = config.instructblip_config
        backbone.vision_config.num_hidden_layers = layers
        backbone.qformer_config.num_hidden_layers = layers
        backbone.text_config.num_layers = backbone.text_config.num_decoder_layers = layers
        config.prompter_config.num_hidden_layers = layers
        config.mask_decoder_config.num_hidden_layers = layers
    return config


def flan_t5_tokenizer() -> T5TokenizerFast:
    """Flan-T5's own tokenizer (T5's 32,000 SentencePiece pieces and 100 sentinels), from the copy the tests keep
    (`tests/fixtures/flan_t5_tokenizer`, Apache-2.0), so instructions and reports have their real lengths."""
    with gzip.open(FLAN_T5_TOKENIZER, "rt", encoding="utf-8") as file:
        return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(file.read()), extra_ids=100)


def _meta_shapes(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in module.state_dict().items()}


def write_instructblip(folder: Path, config: InstructBlipConfig) -> None:
    """The base folder: config, four float32 safetensors shards with their index, processor."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = flan_t5_tokenizer()
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    qformer_tokenizer = build_tiny_qformer_tokenizer(qformer_tokenizer="minilm")
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    config.image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config.save_pretrained(folder)
    InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": 224, "width": 224}), tokenizer, qformer_tokenizer, num_query_tokens=config.num_query_tokens
    ).save_pretrained(folder)
    with torch.device("meta"):
        shapes = _meta_shapes(InstructBlipForConditionalGeneration(config))
    # Flan-T5 (and so the hub folder) stores its LM head apart from the input embeddings, which T5's encoder and
    # decoder share (stored once)
    shapes["language_model.lm_head.weight"] = shapes["language_model.shared.weight"]
    for stack in ("encoder", "decoder"):
        shapes.pop(f"language_model.{stack}.embed_tokens.weight", None)
    sizes = {name: torch.Size(shape).numel() * dtype.itemsize for name, (shape, dtype) in shapes.items()}
    per_shard, shard, filled, index = sum(sizes.values()) / INSTRUCTBLIP_SHARDS, 1, 0, {}
    for name in shapes:
        if filled >= per_shard * shard and shard < INSTRUCTBLIP_SHARDS:
            shard += 1
        index[name] = f"model-{shard:05d}-of-{INSTRUCTBLIP_SHARDS:05d}.safetensors"
        filled += sizes[name]
    for file in sorted(set(index.values())):
        logger.info("Writing %s", file)
        save_file({name: random_like(name, *shapes[name]) for name in shapes if index[name] == file}, folder / file, metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": sum(sizes.values())}, "weight_map": index}, indent=2) + "\n"
    )


def face_vit_state(model: ForgeryTalkerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Face-ViT-H/14 with the CNN branch under the release's names (`transformer.*`, `head.*`, `coord_conv_branch.*`)."""
    shapes = _meta_shapes(model.prompter)
    return {face_vit_source(f"prompter.{name}"): random_like(name, *shapes[name]) for name in shapes}


def _dropped_keys(layers: int | None) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """What the DFF checkpoint holds that the converter drops: the tag-gating BERT (bert-base-uncased), the gate,
    `seg_proj`, the pretraining heads and the Q-Former's position ids."""
    with torch.device("meta"):
        bert = BertModel(BertConfig(num_hidden_layers=layers or 12), add_pooling_layer=True)
    shapes = {f"bert_model.{name}": value for name, value in _meta_shapes(bert).items()}
    float32 = torch.float32
    shapes.update({
        "gate_cross_attention_layer.in_proj_weight": ((3 * QFORMER_WIDTH, QFORMER_WIDTH), float32),
        "gate_cross_attention_layer.in_proj_bias": ((3 * QFORMER_WIDTH,), float32),
        "gate_cross_attention_layer.out_proj.weight": ((QFORMER_WIDTH, QFORMER_WIDTH), float32),
        "gate_cross_attention_layer.out_proj.bias": ((QFORMER_WIDTH,), float32),
        "trans_layer.weight": ((QFORMER_WIDTH, VISION_WIDTH), float32),
        "trans_layer.bias": ((QFORMER_WIDTH,), float32),
        "fc_layer.weight": ((1, QFORMER_WIDTH), float32),
        "fc_layer.bias": ((1,), float32),
        "seg_proj.weight": ((SEG_PROJ_OUTPUTS, QFORMER_WIDTH), float32),
        "seg_proj.bias": ((SEG_PROJ_OUTPUTS,), float32),
        "mlm_head.weight": ((QFORMER_VOCAB - 1, QFORMER_WIDTH), float32),
        "mlm_head.bias": ((QFORMER_VOCAB - 1,), float32),
        "text_proj.weight": ((VISION_WIDTH, TEXT_WIDTH), float32),
        "text_proj.bias": ((VISION_WIDTH,), float32),
        "Qformer.bert.embeddings.position_ids": ((1, 512), torch.int64),
    })
    return shapes


def dff_state(model: ForgeryTalkerForConditionalGeneration, face_vit: dict[str, torch.Tensor], layers: int | None) -> dict:
    """The finetune-stage model dict LAVIS saves (trainable parameters and every buffer) under the release's names."""
    state = {}
    for name, (shape, dtype) in _meta_shapes(model).items():
        source = None if name.startswith("prompter.") else dff_source(name)
        if source is not None:
            state[source] = random_like(source, shape, dtype)
    for name, (shape, dtype) in _dropped_keys(layers).items():
        state[name] = random_like(name, shape, dtype)
    # Face-ViT inside DFF: the same weights, BatchNorm statistics that drifted while DFF trained
    for name, tensor in face_vit.items():
        drifted = tensor * 1.5 + 0.05 if name.endswith(("running_mean", "running_var")) else tensor
        state[FACE_VIT_PREFIX + name] = drifted
    return state


def write_released_files(out: Path, layers: int | None = None) -> dict[str, str]:
    """Writes the three downloads into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    config = reduced_config(layers)
    write_instructblip(out / INSTRUCTBLIP_NAME, config.instructblip_config)
    with torch.device("meta"):
        model = ForgeryTalkerForConditionalGeneration(config)
    logger.info("Writing %s", FACE_VIT_NAME)
    face_vit = face_vit_state(model)
    torch.save(face_vit, out / FACE_VIT_NAME)
    logger.info("Writing %s", DFF_NAME)
    runner = {
        "model": dff_state(model, face_vit, layers),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "weight_decay": 0.05, "params": []}]},
        "config": {"run": {"training_stage": "finetune", "output_dir": "stage2_finetune_lora"}},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "epoch": 4,
    }
    del face_vit
    torch.save(runner, out / DFF_NAME)
    return {"instructblip": str(out / INSTRUCTBLIP_NAME), "dff_checkpoint": str(out / DFF_NAME), "face_vit_checkpoint": str(out / FACE_VIT_NAME)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write (outside the repository)")
    parser.add_argument("--layers", type=int, default=None, help="keep only the first N layers of every tower")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(write_released_files(args.out, args.layers)))


if __name__ == "__main__":
    main()
