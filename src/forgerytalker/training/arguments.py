"""Training arguments: a YAML file gives the defaults, command-line flags override them."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from ..modeling_forgerytalker import TRAINING_STAGES

BEST_METRIC_DEFAULTS = {"prompter": "PLM", "joint": "CIDEr"}


@dataclass
class ForgeryTalkerTrainingArguments:
    """Everything one training run needs; see `training/configs/*.yaml` for the paper's settings."""

    stage: str = field(metadata={"help": "prompter (stage 1: the FPN alone) or joint (stage 2: Q-Former + mask decoder)"})
    dataset: str = field(metadata={"help": "a folder or hub id that datasets.load_dataset reads (MMTT features)"})
    output_dir: str = field(metadata={"help": "where checkpoints, logs and the final model go"})

    # where the model comes from (exactly one of the three)
    model_name_or_path: str | None = field(default=None, metadata={"help": "a ForgeryTalker checkpoint, e.g. stage 1's output"})
    instructblip_name_or_path: str | None = field(default=None, metadata={"help": "build ForgeryTalker around this InstructBLIP"})
    tiny_model: bool = field(default=False, metadata={"help": "build a tiny untrained model offline (CPU runs, tests)"})
    tiny_image_size: int = 32
    tiny_hidden_size: int = 32
    tiny_language_model: str = "llama"
    prompter_name_or_path: str | None = field(default=None, metadata={"help": "a stage-1 prompter to load before training"})

    # data
    train_split: str = "train"
    validation_split: str | None = "validation"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    dataloader_num_workers: int = 0

    # optimisation
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; overrides num_train_epochs when > 0"})
    max_grad_norm: float = 1.0
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16"})
    gradient_checkpointing: bool = False
    seed: int = 42

    # what trains in stage 2
    train_vision_encoder: bool = False
    train_language_model: bool = False
    use_lora: bool = field(default=False, metadata={"help": "LoRA adapters on the language model's projections (peft)"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = field(
        default=r"instructblip\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|q|k|v|o)",
        metadata={"help": "regex over module names; it must not match the SAM decoder's q_proj/k_proj/v_proj"},
    )

    # checkpoints, validation, logs
    save_steps: int = 500
    save_total_limit: int = field(default=2, metadata={"help": "how many of the latest checkpoints to keep"})
    eval_steps: int = 500
    logging_steps: int = 10
    best_metric: str | None = field(default=None, metadata={"help": "validation metric that picks the best model"})
    generation_max_new_tokens: int = 60
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    log_batch_ids: bool = field(default=False, metadata={"help": "write each step's image ids to the log"})
    report_to_tensorboard: bool = True

    def __post_init__(self):
        if self.stage not in TRAINING_STAGES:
            raise ValueError(f"--stage must be one of {TRAINING_STAGES}, got {self.stage!r}")
        sources = [self.model_name_or_path, self.instructblip_name_or_path, self.tiny_model or None]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("Give exactly one of --model_name_or_path, --instructblip_name_or_path or --tiny_model")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.use_lora and self.train_language_model:
            raise ValueError("--use_lora trains adapters on a frozen language model; drop --train_language_model")
        if self.best_metric is None:
            self.best_metric = BEST_METRIC_DEFAULTS[self.stage]


def parse_arguments(argv: list[str] | None = None) -> ForgeryTalkerTrainingArguments:
    """`--config FILE.yaml` supplies defaults; every field is also a `--flag` that overrides the file."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", type=str, help="a YAML file with any of the arguments below")
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = HfArgumentParser(ForgeryTalkerTrainingArguments, parents=[config_parser])
    if config_args.config:
        path = Path(config_args.config)
        if not path.is_file():
            parser.error(f"--config: no such file: {path}")
        settings = yaml.safe_load(path.read_text()) or {}
        fields = {action.dest: action for action in parser._actions}
        unknown = set(settings) - set(fields)
        if unknown:
            parser.error(f"--config {path}: unknown settings {sorted(unknown)}")
        parser.set_defaults(**settings)
        for name in settings:
            fields[name].required = False
    arguments = parser.parse_args_into_dataclasses(args=remaining)[0]
    arguments.output_dir = os.path.abspath(os.path.expanduser(arguments.output_dir))
    return arguments
