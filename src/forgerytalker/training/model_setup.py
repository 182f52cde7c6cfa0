"""Building (or loading) the model and processor a training run starts from."""

from __future__ import annotations

import logging

from ..modeling_forgerytalker import ForgeryTalkerForConditionalGeneration
from ..processing_forgerytalker import ForgeryTalkerProcessor
from ..tiny import build_tiny_model_and_processor
from .arguments import ForgeryTalkerTrainingArguments

logger = logging.getLogger(__name__)


def build_model_and_processor(args: ForgeryTalkerTrainingArguments, report_texts: list[str]):
    """The model and processor named by the arguments, frozen for `args.stage`.

    `report_texts` (the training reports) give the tiny model's tokenizer its vocabulary.
    """
    if args.tiny_model:
        model, processor = build_tiny_model_and_processor(
            args.tiny_language_model, image_size=args.tiny_image_size, hidden_size=args.tiny_hidden_size,
            texts=report_texts, seed=args.seed,
        )
    elif args.instructblip_name_or_path:
        model = ForgeryTalkerForConditionalGeneration.from_instructblip(args.instructblip_name_or_path)
        processor = ForgeryTalkerProcessor.from_instructblip(args.instructblip_name_or_path)
    else:
        model = ForgeryTalkerForConditionalGeneration.from_pretrained(args.model_name_or_path)
        processor = ForgeryTalkerProcessor.from_pretrained(args.model_name_or_path)
    if args.prompter_name_or_path:
        model.load_prompter(args.prompter_name_or_path)
    model.freeze_for_stage(args.stage, args.train_vision_encoder, args.train_language_model)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if args.use_lora and args.stage == "joint":
        model = add_lora(model, args)
    return model, processor


def add_lora(model, args: ForgeryTalkerTrainingArguments):
    """LoRA adapters on the language model's attention projections only (the SAM decoder has layers of the
    same names, so the target is a regex over full module names)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=args.lora_target_modules)
    trainable_before = {name for name, p in model.named_parameters() if p.requires_grad}
    model = get_peft_model(model, config)
    # get_peft_model freezes everything but the adapters: give the stage's own parameters back their gradients.
    for name, parameter in model.named_parameters():
        if name.removeprefix("base_model.model.") in trainable_before:
            parameter.requires_grad_(True)
    logger.info("LoRA on %d modules", sum("lora_A" in name for name, _ in model.named_parameters()) )
    return model


def trainable_module(model, stage: str):
    """The module whose forward the optimizer trains: the prompter alone in stage 1, the whole model after."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.prompter if stage == "prompter" else model
