"""Building (or loading) what a training run trains, and the processor that feeds it.

Stage 1 builds a `ForgeryTalkerPrompterNetwork` alone (never the InstructBLIP around it) and the image processor
stage 2 will use; stage 2 builds the whole `ForgeryTalkerForConditionalGeneration`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..configuration_forgerytalker import ForgeryTalkerPrompterConfig
from ..modeling_forgerytalker import ForgeryTalkerForConditionalGeneration
from ..paths import resolve_local_path
from ..modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork
from ..processing_forgerytalker import ForgeryTalkerProcessor
from ..tiny import build_tiny_model_and_processor, build_tiny_processor, tiny_prompter_config
from .arguments import ForgeryTalkerTrainingArguments, prompter_settings

logger = logging.getLogger(__name__)

IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


def build_model_and_processor(args: ForgeryTalkerTrainingArguments, report_texts: list[str]):
    """The trained module and its processor: `(ForgeryTalkerPrompterNetwork, image processor)` for stage 1,
    `(ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor)` frozen for stage 2.

    `report_texts` (the training reports) give the tiny model's tokenizer its vocabulary.
    """
    model, processor = build_prompter(args) if args.stage == "prompter" else build_joint_model(args, report_texts)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    model.train()  # `from_pretrained` returns a model in eval mode
    return model, processor


def build_prompter(args: ForgeryTalkerTrainingArguments):
    """A fresh prompter (`--tiny_model`, `--prompter_config` or the paper's default config) or a saved one
    (`--prompter_name_or_path`), with the image processor of `--tiny_model`, `--instructblip_name_or_path`
    or the saved prompter's folder."""
    if args.prompter_name_or_path:
        path = resolve_local_path(args.prompter_name_or_path, "prompter_name_or_path")
        prompter = ForgeryTalkerPrompterNetwork.from_pretrained(path)
    else:
        config = stage_one_prompter_config(args)
        torch.manual_seed(args.seed)
        prompter = ForgeryTalkerPrompterNetwork(config)
    prompter.requires_grad_(True)
    return prompter, stage_one_image_processor(args)


def stage_one_prompter_config(args: ForgeryTalkerTrainingArguments) -> ForgeryTalkerPrompterConfig:
    """The config of the prompter stage 1 trains: the saved one's (`--prompter_name_or_path`), `--tiny_model`'s,
    `--prompter_config`'s or the paper's default."""
    if args.prompter_name_or_path:
        return ForgeryTalkerPrompterConfig.from_pretrained(resolve_local_path(args.prompter_name_or_path, "prompter_name_or_path"))
    if args.tiny_model:
        return tiny_prompter_config(args.tiny_image_size, args.tiny_hidden_size)
    return ForgeryTalkerPrompterConfig(**prompter_settings(args.prompter_config or {}))


def stage_one_image_processor(args: ForgeryTalkerTrainingArguments):
    """The image processor stage 1 trains with: the one stage 2's processor has, so the prompter sees the same
    inputs in both stages."""
    if args.tiny_model:
        return build_tiny_processor(image_size=args.tiny_image_size).image_processor
    if args.instructblip_name_or_path:
        return ForgeryTalkerProcessor.from_instructblip(args.instructblip_name_or_path).image_processor
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(resolve_local_path(args.prompter_name_or_path, "prompter_name_or_path"))


def build_joint_model(args: ForgeryTalkerTrainingArguments, report_texts: list[str]):
    """The whole model for stage 2, with the stage-1 prompter of `--prompter_name_or_path` loaded and frozen."""
    prompter_config = None
    if args.prompter_name_or_path:
        prompter_config = ForgeryTalkerPrompterConfig.from_pretrained(
            resolve_local_path(args.prompter_name_or_path, "prompter_name_or_path")
        )
    if args.tiny_model:
        model, processor = build_tiny_model_and_processor(
            args.tiny_language_model, image_size=args.tiny_image_size, hidden_size=args.tiny_hidden_size,
            texts=report_texts, seed=args.seed,
        )
    elif args.instructblip_name_or_path:
        # the mask decoder is built for the stage-1 prompter's width
        model = ForgeryTalkerForConditionalGeneration.from_instructblip(
            args.instructblip_name_or_path, prompter_config=prompter_config
        )
        processor = ForgeryTalkerProcessor.from_instructblip(args.instructblip_name_or_path)
    else:
        model = ForgeryTalkerForConditionalGeneration.from_pretrained(args.model_name_or_path)
        processor = ForgeryTalkerProcessor.from_pretrained(args.model_name_or_path)
    if args.prompter_name_or_path:
        model.load_prompter(args.prompter_name_or_path)
    elif not args.model_name_or_path:
        logger.warning("Stage 2 without --prompter_name_or_path: the prompter keeps its random initialisation (frozen)")
    model.freeze_for_stage(args.stage, args.train_vision_encoder, args.train_language_model)
    if args.mask_only:
        # without the report loss nothing reaches the language model or the projection into it
        model.instructblip.language_projection.requires_grad_(False)
    if args.use_lora:
        model = add_lora(model, args)
    return model, processor


def check_prompter_fits(args: ForgeryTalkerTrainingArguments) -> None:
    """Stage 2: the stage-1 prompter must have the width the model's mask decoder reads (checked from configs)."""
    from .errors import TrainingConfigurationError

    path = resolve_local_path(args.prompter_name_or_path, "prompter_name_or_path")
    loaded = ForgeryTalkerPrompterConfig.from_pretrained(path)
    if args.tiny_model:
        expected, flag = tiny_prompter_config(args.tiny_image_size, args.tiny_hidden_size).hidden_size, "--tiny_hidden_size"
    elif args.model_name_or_path:
        from ..configuration_forgerytalker import ForgeryTalkerConfig

        expected = ForgeryTalkerConfig.from_pretrained(args.model_name_or_path).prompter_config.hidden_size
        flag = "--model_name_or_path"
    else:
        return  # from_instructblip builds the mask decoder for the loaded prompter
    if loaded.hidden_size != expected:
        raise TrainingConfigurationError(
            f"--prompter_name_or_path: the prompter in {path} has width {loaded.hidden_size} but the model's mask "
            f"decoder reads width {expected} ({flag})"
        )


def has_image_processor(folder: str) -> bool:
    return (Path(folder) / IMAGE_PROCESSOR_FILE).is_file()


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
    logger.info("LoRA on %d modules", sum("lora_A" in name for name, _ in model.named_parameters()))
    return model
