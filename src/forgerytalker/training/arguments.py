"""Training arguments: a YAML file gives the defaults, command-line flags override them.

Everything that can be checked from the arguments alone is checked here, when they are built, so a bad value
stops the run before any model, dataset or process group exists (`parse_arguments` exits with code 2 and
names the flag). Checks that need the file system, the dataset or installed tools are in `startup_checks`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, SchedulerType

from ..configuration_forgerytalker import ForgeryTalkerPrompterConfig
from ..instruction import DATASET_REGION_SOURCES
from ..modeling_forgerytalker import TRAINING_STAGES
from ..tiny import LANGUAGE_MODELS
from .errors import TrainingConfigurationError
from .validation import VALIDATION_METRICS

BEST_METRIC_DEFAULTS = {"prompter": "PLM", "joint": "CIDEr"}
LOCAL_PATH_ARGUMENTS = ("dataset", "model_name_or_path", "instructblip_name_or_path", "prompter_name_or_path")


@dataclass
class ForgeryTalkerTrainingArguments:
    """Everything one training run needs; see `training/configs/*.yaml` for the paper's settings."""

    stage: str = field(metadata={"help": "prompter (stage 1: the FPN alone) or joint (stage 2: Q-Former + mask decoder)"})
    dataset: str = field(metadata={"help": "a folder or hub id that datasets.load_dataset reads (MMTT features)"})
    output_dir: str = field(metadata={"help": "where checkpoints, logs and the final model go"})

    # where the model comes from
    model_name_or_path: str | None = field(default=None, metadata={"help": "stage 2: a ForgeryTalker checkpoint to continue"})
    instructblip_name_or_path: str | None = field(
        default=None,
        metadata={"help": "stage 2: build ForgeryTalker around this InstructBLIP; stage 1: only its image processor is read"},
    )
    tiny_model: bool = field(default=False, metadata={"help": "build a tiny untrained model offline (CPU runs, tests)"})
    tiny_image_size: int = 32
    tiny_hidden_size: int = 32
    tiny_language_model: str = "llama"
    prompter_name_or_path: str | None = field(
        default=None, metadata={"help": "a stage-1 output: stage 2 loads it into the model, stage 1 continues from it"}
    )
    prompter_config: str | None = field(
        default=None,
        metadata={"help": "stage 1: ForgeryTalkerPrompterConfig settings, a JSON file or inline JSON (default: the paper's)"},
    )

    # data
    train_split: str = "train"
    validation_split: str | None = field(default="validation", metadata={"help": "'' or none: no validation"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    region_map_samples: int = field(
        default=2000,
        metadata={"help": "stage 1, a prompter with a region map: how many training faces (drawn with --seed, read "
                          "without augmentation) the map is fitted on at each validation"},
    )
    dataloader_num_workers: int = 0
    augment: bool = field(
        default=False,
        metadata={"help": "random crops, flips, colour jitter, resizing and JPEG on the training images (masks follow)"},
    )
    skip_unreadable_images: bool = field(
        default=False, metadata={"help": "leave out samples whose image or mask cannot be decoded (logged and counted)"}
    )

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
    train_region_source: str | None = field(
        default=None,
        metadata={"help": "stage 2: regions the instruction names while training: predicted (the prompter's) or "
                          "ground_truth (teacher forcing); default: the model config's region_source"},
    )
    mask_only: bool = field(
        default=False, metadata={"help": "stage 2 without the report loss: trains the mask path alone (a baseline)"}
    )
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
    resume: bool = field(default=False, metadata={"help": "continue from the last complete checkpoint in output_dir"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "start afresh in an output_dir that holds an earlier run (its checkpoints, best/ and log are deleted)"},
    )
    log_batch_ids: bool = field(default=False, metadata={"help": "write each step's image ids to the log"})
    report_to_tensorboard: bool = True

    def __post_init__(self):
        if self.validation_split is not None and self.validation_split.strip().lower() in ("", "none"):
            self.validation_split = None
        for name in LOCAL_PATH_ARGUMENTS:
            value = getattr(self, name)
            if value and os.path.exists(os.path.expanduser(value)):
                setattr(self, name, os.path.abspath(os.path.expanduser(value)))
        self.output_dir = os.path.abspath(os.path.expanduser(self.output_dir))
        _check_choices(self)
        _check_numbers(self)
        _check_model_sources(self)
        if self.best_metric is None:
            self.best_metric = BEST_METRIC_DEFAULTS[self.stage]
        if self.best_metric not in VALIDATION_METRICS[self.stage]:
            raise TrainingConfigurationError(
                f"--best_metric: {self.best_metric!r} is not a stage-{self.stage} validation metric; choose one of "
                f"{list(VALIDATION_METRICS[self.stage])}"
            )
        if self.resume and self.overwrite_output_dir:
            raise TrainingConfigurationError(
                "--resume continues the run in --output_dir, --overwrite_output_dir replaces it: give one"
            )


def _check_choices(args: ForgeryTalkerTrainingArguments) -> None:
    choices = {
        "stage": TRAINING_STAGES,
        "mixed_precision": ("no", "fp16", "bf16"),
        "lr_scheduler_type": tuple(kind.value for kind in SchedulerType),
        "tiny_language_model": LANGUAGE_MODELS,
        "train_region_source": (None, *DATASET_REGION_SOURCES),
    }
    for name, allowed in choices.items():
        if getattr(args, name) not in allowed:
            names = ", ".join(choice for choice in allowed if choice is not None)
            raise TrainingConfigurationError(f"--{name}: must be one of {names}; got {getattr(args, name)!r}")


def _check_numbers(args: ForgeryTalkerTrainingArguments) -> None:
    at_least_one = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "save_steps",
                    "save_total_limit", "eval_steps", "region_map_samples", "logging_steps", "generation_max_new_tokens", "lora_r", "lora_alpha")
    for name in at_least_one:
        if getattr(args, name) < 1:
            raise TrainingConfigurationError(f"--{name}: must be at least 1, got {getattr(args, name)}")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise TrainingConfigurationError(
                f"--{name}: must be at least 1 (or left out for the whole split), got {getattr(args, name)}"
            )
    for name in ("weight_decay", "warmup_steps", "max_grad_norm", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            raise TrainingConfigurationError(f"--{name}: must not be negative, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise TrainingConfigurationError(f"--learning_rate: must be positive, got {args.learning_rate}")
    if not 0 <= args.lora_dropout < 1:
        raise TrainingConfigurationError(f"--lora_dropout: must lie in [0, 1), got {args.lora_dropout}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise TrainingConfigurationError(
            f"--max_steps: must be at least 1, or -1 to train for --num_train_epochs; got {args.max_steps}"
        )
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise TrainingConfigurationError(f"--num_train_epochs: must be positive, got {args.num_train_epochs}")
    for name in ("tiny_image_size", "tiny_hidden_size"):
        if getattr(args, name) < 4 or getattr(args, name) % 4:
            raise TrainingConfigurationError(f"--{name}: must be a positive multiple of 4, got {getattr(args, name)}")


def _check_model_sources(args: ForgeryTalkerTrainingArguments) -> None:
    if args.stage == "prompter":
        if args.model_name_or_path:
            raise TrainingConfigurationError(
                "--model_name_or_path: stage 1 trains the prompter alone; build one (--prompter_config, --tiny_model) "
                "or continue a saved one (--prompter_name_or_path)"
            )
        if args.prompter_config is not None and (args.tiny_model or args.prompter_name_or_path):
            raise TrainingConfigurationError(
                "--prompter_config: give it alone, not with --tiny_model or --prompter_name_or_path"
            )
        if args.tiny_model and args.instructblip_name_or_path:
            raise TrainingConfigurationError(
                "--tiny_model: the tiny prompter has its own image processor; drop --instructblip_name_or_path"
            )
        if args.prompter_config is not None:
            prompter_settings(args.prompter_config)
        for flag, given in (("train_region_source", args.train_region_source is not None), ("mask_only", args.mask_only)):
            if given:
                raise TrainingConfigurationError(f"--{flag}: a stage-2 setting; stage 1 trains the prompter alone")
        return
    sources = [args.model_name_or_path, args.instructblip_name_or_path, args.tiny_model or None]
    if sum(source is not None for source in sources) != 1:
        raise TrainingConfigurationError("--model_name_or_path, --instructblip_name_or_path, --tiny_model: give exactly one")
    if args.prompter_config is not None:
        raise TrainingConfigurationError(
            "--prompter_config: stage 2 takes its prompter from --prompter_name_or_path (a stage-1 output)"
        )
    if args.mask_only and (args.train_language_model or args.use_lora):
        raise TrainingConfigurationError(
            "--mask_only: without the report loss the language model gets no gradient; drop --train_language_model "
            "and --use_lora"
        )
    if args.use_lora and args.train_language_model:
        raise TrainingConfigurationError(
            "--use_lora: it trains adapters on a frozen language model; drop --train_language_model"
        )


def prompter_settings(value: str | dict) -> dict:
    """The `ForgeryTalkerPrompterConfig` keyword arguments of `--prompter_config` (inline JSON, a JSON file, or
    the mapping a YAML config gives), checked by building the config."""
    if isinstance(value, dict):
        settings = value
    else:
        text = value.strip()
        if not text.startswith("{"):
            path = Path(text).expanduser()
            if not path.is_file():
                raise TrainingConfigurationError(f"--prompter_config: no such file: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as error:
            raise TrainingConfigurationError(f"--prompter_config: not valid JSON ({error})") from None
    if not isinstance(settings, dict):
        raise TrainingConfigurationError(f"--prompter_config: must be a JSON object of settings, got {type(settings).__name__}")
    known = set(ForgeryTalkerPrompterConfig().to_dict())
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TrainingConfigurationError(f"--prompter_config: unknown settings {unknown}")
    settings = {key: value for key, value in settings.items() if key not in ("model_type", "transformers_version")}
    try:
        ForgeryTalkerPrompterConfig(**settings)
    except (TypeError, ValueError) as error:
        raise TrainingConfigurationError(f"--prompter_config: {error}") from None
    return settings


def parse_arguments(argv: list[str] | None = None) -> ForgeryTalkerTrainingArguments:
    """`--config FILE.yaml` supplies defaults; every field is also a `--flag` that overrides the file.

    A bad file or value ends the program with exit code 2 and a message naming the flag (argparse's way).
    """
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", type=str, help="a YAML file with any of the arguments below")
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = HfArgumentParser(ForgeryTalkerTrainingArguments, parents=[config_parser])
    if config_args.config:
        settings = _read_yaml(parser, Path(config_args.config))
        fields = {action.dest: action for action in parser._actions}
        unknown = set(settings) - set(fields)
        if unknown:
            parser.error(f"--config {config_args.config}: unknown settings {sorted(unknown)}")
        # as strings, so that argparse converts and checks them exactly like the same values given as flags
        parser.set_defaults(**{name: _as_flag_value(value) for name, value in settings.items()})
        for name in settings:
            fields[name].required = False
    try:
        args, *_, unknown_flags = parser.parse_args_into_dataclasses(args=remaining, return_remaining_strings=True)
    except TrainingConfigurationError as error:
        parser.error(str(error))
    if unknown_flags:
        parser.error(f"unrecognized arguments: {' '.join(unknown_flags)}")
    return args


def _read_yaml(parser: argparse.ArgumentParser, path: Path) -> dict:
    if not path.is_file():
        parser.error(f"--config: no such file: {path}")
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        parser.error(f"--config {path}: not valid YAML ({error})")
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        parser.error(f"--config {path}: must be a mapping of settings, got {type(settings).__name__}")
    return settings


def _as_flag_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
