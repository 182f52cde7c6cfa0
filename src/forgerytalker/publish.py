"""Publishing to the Hugging Face Hub: the exact folder a model or dataset repository gets, and its upload.

- A **model** folder is loaded with `AutoModel` / `AutoProcessor` (so only a working checkpoint is published)
  and saved again with `save_pretrained` (weights, configs, processor, tokenizers and the model's code, without
  training checkpoints or logs), with its `metrics.json` and a model card (`hub_cards.model_card`).
- A **dataset** folder written by `forgerytalker data convert` is published as the files its
  `conversion_report.json` lists (the parquet shards, the README card, the report), so that
  `load_dataset("ORG/NAME")` reads it as `load_dataset(folder)` does.

`stage_model` / `stage_dataset` write that folder; `upload_folder` sends it with `huggingface_hub`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
METRICS_FILES = ("metrics.json", "metrics.md")


class PublishError(ValueError):
    """A folder cannot be published; the message names it and says why."""


def looks_like_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub id (`ORG/NAME`) rather than a local path."""
    return bool(name) and not os.path.exists(name) and bool(REPO_ID.match(name))


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", "-", ".")):
        raise PublishError(f"{repo_id!r} is not a Hub repository id of the form ORG/NAME")
    return repo_id


def stage_model(
    model_dir: str | Path,
    staging_dir: str | Path,
    repo_id: str,
    *,
    license: str = "other",
    datasets: Sequence[str] = (),
    base_model: str | None = None,
    metrics_file: str | Path | None = None,
) -> Path:
    """Writes into `staging_dir` (created) the folder a model repository gets; returns it.

    Args:
        model_dir: a checkpoint folder (`save_pretrained` output, e.g. a training run's `--output_dir`).
        repo_id: `ORG/NAME`, named in the card.
        license, datasets, base_model: the card's YAML (`base_model` and `datasets` default to the Hub ids of
            `training_args.json`'s InstructBLIP and dataset, when they are Hub ids).
        metrics_file: the `metrics.json` of `forgerytalker evaluate` (default: the folder's own, if any); its
            `metrics.md` next to it is published too.
    """
    from transformers import AutoModel, AutoProcessor

    import forgerytalker  # noqa: F401  (registers the Auto classes)

    from .hub_cards.model_card import ABOUT_FILE, read_facts_from_folder, write_model_card

    model_dir, staging_dir = Path(model_dir), Path(staging_dir)
    check_repo_id(repo_id)
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"{model_dir}: not a model folder (no config.json)")
    try:
        model = AutoModel.from_pretrained(str(model_dir.resolve()))
        processor = AutoProcessor.from_pretrained(str(model_dir.resolve()))
    except (OSError, ValueError) as error:
        raise PublishError(f"{model_dir}: cannot load the model and processor ({error})") from error
    staging_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staging_dir)
    processor.save_pretrained(staging_dir)
    config_file = staging_dir / "config.json"  # sub-configs keep the `_name_or_path` they were loaded from
    config_file.write_text(json.dumps(without_local_paths(json.loads(config_file.read_text(encoding="utf-8"))),
                                      indent=2, sort_keys=True) + "\n", encoding="utf-8")
    own_metrics = metrics_file is None  # the folder's own files are published only where they stay inside it
    metrics_file = Path(metrics_file) if metrics_file is not None else model_dir / "metrics.json"
    if metrics_file.is_file():
        for name in METRICS_FILES:
            source = metrics_file if name == "metrics.json" else metrics_file.with_name(name)
            if source.is_file():
                shutil.copyfile(_inside(model_dir, source) if own_metrics else source, staging_dir / name)
    elif metrics_file != model_dir / "metrics.json":
        raise PublishError(f"{metrics_file}: no such file")
    training_file = model_dir / "training_args.json"
    if training_file.is_file():
        _inside(model_dir, training_file)
        try:
            training_args = json.loads(training_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise PublishError(f"{training_file}: cannot be read ({error})") from error
        (staging_dir / "training_args.json").write_text(json.dumps(without_local_paths(training_args), indent=2) + "\n")
    if (model_dir / ABOUT_FILE).is_file():  # the card reads it from the staged folder
        shutil.copyfile(_inside(model_dir, model_dir / ABOUT_FILE), staging_dir / ABOUT_FILE)
    facts = read_facts_from_folder(staging_dir, repo_id, license=license, base_model=base_model)
    training = facts.training_args or {}
    if facts.base_model is None and looks_like_hub_id(training.get("instructblip_name_or_path")):
        facts.base_model = training["instructblip_name_or_path"]
    facts.datasets = list(datasets) or ([training["dataset"]] if looks_like_hub_id(training.get("dataset")) else [])
    write_model_card(staging_dir, facts)
    return staging_dir


def _inside(folder: Path, path: Path) -> Path:
    """`path`, refused when it is a link leading out of `folder` (a secret would be published)."""
    from .contained_paths import OutsidePathError, check_inside

    try:
        return check_inside(folder, path, what=str(path.relative_to(folder)))
    except OutsidePathError as error:
        raise PublishError(f"{error}; nothing was staged") from None


def without_local_paths(value):
    """`value` (parsed JSON) with every absolute local path cut to its last component, so that a published file
    does not carry the user's and folders' names (`/home/ann/runs/stage2` → `stage2`); Hub ids stay as they are."""
    if isinstance(value, dict):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return Path(value).name
    return value


def stage_dataset(dataset_dir: str | Path, staging_dir: str | Path) -> Path:
    """Writes into `staging_dir` (created) the files a dataset repository gets: those the conversion listed."""
    from huggingface_hub import DatasetCard

    from .data.mmtt_publish import OWNER as CONVERTER
    from .data.mmtt_publish import REPORT_FILE
    from .output_folder import MANIFEST_NAME, ForeignFilesError, read_manifest

    dataset_dir, staging_dir = Path(dataset_dir), Path(staging_dir)
    try:
        listed = read_manifest(dataset_dir, CONVERTER)  # every entry checked to stay inside the folder, links followed
    except ForeignFilesError as error:
        raise PublishError(str(error).replace(", nothing was deleted", ", nothing was staged")) from None
    if listed is None or REPORT_FILE not in listed:
        raise PublishError(
            f"{dataset_dir}: not a folder written by `forgerytalker data convert` (no {REPORT_FILE} listing its "
            "files); convert the dataset first"
        )
    listed.pop(MANIFEST_NAME, None)  # the record of who wrote the folder, not part of the dataset
    for name, size in sorted(listed.items()):
        source = dataset_dir / name
        if not source.is_file() or size not in (None, source.stat().st_size):
            raise PublishError(f"{source}: missing or changed since the conversion wrote it; convert the dataset again")
    try:
        DatasetCard.load(dataset_dir / "README.md")
    except Exception as error:  # huggingface_hub raises several types for a broken card
        raise PublishError(f"{dataset_dir / 'README.md'}: the dataset card does not parse ({error})") from error
    for name in listed:
        target = staging_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(dataset_dir / name, target)  # the shards can be large: no copy where a link will do
        except OSError:
            shutil.copyfile(dataset_dir / name, target)
    return staging_dir


def upload_folder(staging_dir: str | Path, repo_id: str, repo_type: str, private: bool) -> str:
    """Creates the repository if needed and uploads the folder in one commit; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(staging_dir),
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=f"Upload with forgerytalker push ({repo_type})",
    )
    return str(getattr(info, "commit_url", info))


def describe_folder(folder: str | Path) -> str:
    """A listing of a staged folder: file, size (for the command's output), without the record of who wrote it."""
    from .output_folder import MANIFEST_NAME

    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST_NAME)
    return "\n".join(f"  {path.relative_to(folder).as_posix()}  ({path.stat().st_size:,} bytes)" for path in files)


__all__ = ["PublishError", "check_repo_id", "describe_folder", "stage_dataset", "stage_model", "upload_folder"]
