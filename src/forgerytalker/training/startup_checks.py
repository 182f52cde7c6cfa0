"""Checks every process runs before training, before anything is written or any model is built.

Each process runs the same checks on the same inputs, so a bad setting, input or missing tool stops all of
them with the same `TrainingConfigurationError`; none is left waiting at a barrier for a process that died.
"""

from __future__ import annotations

from datasets import Dataset

from ..configuration_forgerytalker import ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
from ..evaluation.detection_metrics import auc_defined
from ..evaluation.text_metrics import JavaNotFoundError, require_java
from ..paths import resolve_local_path
from .arguments import ForgeryTalkerTrainingArguments
from .data import load_splits
from .errors import TrainingConfigurationError
from .model_setup import check_prompter_fits, has_image_processor, stage_one_prompter_config
from .output_folder import check_output_dir


def run_startup_checks(args: ForgeryTalkerTrainingArguments) -> tuple[Dataset, Dataset | None]:
    """Checks the output folder, the model sources, the tools validation needs and the dataset; returns the
    train and validation splits (undecoded, see `data.undecoded`)."""
    check_output_dir(args)
    check_model_sources(args)
    if args.stage == "joint" and args.validation_split is not None:
        try:
            require_java("Stage-2 validation (the PTB tokenizer of the report metrics)")
        except JavaNotFoundError as error:
            raise TrainingConfigurationError(
                f"--validation_split: {error}; or train without validation (--validation_split none)"
            ) from None
    train_split, validation_split = load_splits(args.dataset, args.train_split, args.validation_split, args.stage)
    check_patch_masks(args, train_split)
    if args.best_metric == "AUC" and validation_split is not None:
        check_auc_measurable(validation_split["regions"][: args.max_eval_samples], args.validation_split)
    return train_split, validation_split


def check_auc_measurable(regions: list[list[int]], split_name: str) -> None:
    """`--best_metric AUC` separates images without labelled regions (authentic) from those with: the validated
    rows (their `regions`) need both."""
    labelled = [bool(names) for names in regions]
    if not auc_defined(labelled):
        raise TrainingConfigurationError(
            f"--best_metric: AUC needs validation images with and without labelled regions, and the {len(regions)} "
            f"validated images of split {split_name!r} are all {'forged' if any(labelled) else 'authentic'} (MMTT's "
            "validation has no authentic image); choose PLM or region_loss"
        )


def check_patch_masks(args: ForgeryTalkerTrainingArguments, train_split: Dataset) -> None:
    """A stage-1 prompter with a patch head (`has_patch_head`) learns from the masks: the training split needs its
    `mask` column."""
    if args.stage != "prompter" or "mask" in train_split.column_names:
        return
    config = stage_one_prompter_config(args)
    if config.has_patch_head:
        source = (f"the prompter of --prompter_name_or_path {args.prompter_name_or_path!r}" if args.prompter_name_or_path
                  else "--prompter_config")
        raise TrainingConfigurationError(
            f"--dataset: split {args.train_split!r} of {args.dataset!r} has no 'mask' column, and {source} learns from "
            f"masks (patch_mask_loss_weight={config.patch_mask_loss_weight}); give a dataset with masks or a prompter "
            "with patch_mask_loss_weight 0"
        )


def check_model_sources(args: ForgeryTalkerTrainingArguments) -> None:
    """Every checkpoint folder the arguments name exists and holds the right kind of config."""
    sources = {
        "model_name_or_path": ForgeryTalkerConfig,
        "prompter_name_or_path": ForgeryTalkerPrompterConfig,
        "instructblip_name_or_path": None,
    }
    for name, config_class in sources.items():
        value = getattr(args, name)
        if not value:
            continue
        try:
            path = resolve_local_path(value, name)
            if config_class is not None:
                config_class.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise TrainingConfigurationError(f"--{name}: {value!r} is not a usable checkpoint ({error})") from None
    if args.stage == "prompter" and not (args.tiny_model or args.instructblip_name_or_path):
        if not (args.prompter_name_or_path and has_image_processor(args.prompter_name_or_path)):
            raise TrainingConfigurationError(
                "--instructblip_name_or_path: stage 1 needs the image processor stage 2 will use; give the InstructBLIP "
                "folder (only its image processor is read), a --prompter_name_or_path that holds one, or --tiny_model"
            )
    if args.stage == "joint" and args.prompter_name_or_path:
        check_prompter_fits(args)
