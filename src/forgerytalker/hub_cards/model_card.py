"""The README.md model card of a ForgeryTalker checkpoint: the YAML the Hub reads, and what a user must know.

The YAML carries `library_name`, `pipeline_tag`, `license`, `datasets`, `metrics`, `base_model`, tags and, when
the checkpoint was evaluated, a `model-index` with every overall number of `metrics.json` (the file
`forgerytalker evaluate` writes). The prose says what the model is for and not for, how it was trained (from
the `training_args.json` that training writes) and shows the evaluation tables rendered from `metrics.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_FILE = "README.md"
PIPELINE_TAG = "image-text-to-text"
"""The Hub's task for a model that reads an image and writes text (the report); the mask comes with it."""
TAGS = ("forgerytalker", "face-forgery-localization", "deepfake-detection", "image-forensics", "instructblip", "custom_code")
METRIC_IDS = {
    "BLEU-1": "bleu",
    "BLEU-2": "bleu",
    "BLEU-3": "bleu",
    "BLEU-4": "bleu",
    "METEOR": "meteor",
    "ROUGE-L": "rouge",
    "CIDEr": "cider",
    "IoU": "iou",
    "Precision": "precision",
    "Recall": "recall",
    "cIoU": "ciou",
    "PLM": "plm",
    "AUC": "roc_auc",
    "Accuracy": "accuracy",
}
"""Metric key of `metrics.json` → the metric id in the card's YAML."""
TRAINING_KEYS = (
    "stage",
    "dataset",
    "instructblip_name_or_path",
    "prompter_name_or_path",
    "model_name_or_path",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "mixed_precision",
    "use_lora",
    "train_vision_encoder",
    "train_language_model",
    "seed",
)
"""The settings of `training_args.json` the card lists (the whole file is shown below them)."""


@dataclass
class ModelCardFacts:
    """What the model card states.

    Attributes:
        repo_id: the Hub repository (`ORG/NAME`), used in the usage example.
        license: a Hub licence id (`apache-2.0`, `other`, ...).
        datasets: Hub dataset ids the model was trained or evaluated on.
        base_model: the Hub id of the InstructBLIP checkpoint it was built around, if any.
        metrics: the content of `metrics.json`, if evaluated.
        training_args: the content of `training_args.json`, if trained by `training/run.py`.
        evaluation_dataset: the name of the evaluated dataset (default: the first of `datasets`, or "MMTT").
        evaluation_split: the evaluated split (default: `metrics["run"]["split"]`).
        about: what this model is and what it was trained on (Markdown), from the folder's `ABOUT_FILE` when it
            has one; the card then says it instead of naming MMTT as the training data.
    """

    repo_id: str
    license: str = "other"
    datasets: Sequence[str] = ()
    base_model: str | None = None
    metrics: Mapping | None = None
    training_args: Mapping | None = None
    evaluation_dataset: str | None = None
    evaluation_split: str | None = None
    about: str | None = None
    tags: Sequence[str] = field(default_factory=lambda: list(TAGS))


ABOUT_FILE = "about.md"
"""A checkpoint folder's own description for its model card (the bundled demo model ships one)."""


def read_facts_from_folder(model_dir: str | Path, repo_id: str, **overrides) -> ModelCardFacts:
    """`ModelCardFacts` from a checkpoint folder: its `metrics.json`, `training_args.json` and `ABOUT_FILE` when present."""
    model_dir = Path(model_dir)
    facts = {"repo_id": repo_id}
    if (model_dir / ABOUT_FILE).is_file():
        facts["about"] = (model_dir / ABOUT_FILE).read_text(encoding="utf-8").strip()
    for name, key in (("metrics.json", "metrics"), ("training_args.json", "training_args")):
        path = model_dir / name
        if path.is_file():
            facts[key] = json.loads(path.read_text(encoding="utf-8"))
    facts.update({key: value for key, value in overrides.items() if value is not None})
    return ModelCardFacts(**facts)


def _numbers(overall: Mapping) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in overall.items()
        if key in METRIC_IDS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def card_metadata(facts: ModelCardFacts) -> ModelCardData:
    """The card's YAML (see the module docstring)."""
    overall = _numbers((facts.metrics or {}).get("overall", {}))
    run = (facts.metrics or {}).get("run", {})
    dataset_name = facts.evaluation_dataset or (facts.datasets[0] if facts.datasets else "MMTT")
    split = facts.evaluation_split or run.get("split")
    results = [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name="Face forgery localization and report generation",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=METRIC_IDS[key],
            metric_name=key,
            metric_value=value,
        )
        for key, value in overall.items()
    ]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=facts.license,
        datasets=list(facts.datasets) or None,
        metrics=sorted({METRIC_IDS[key] for key in overall}) or None,
        base_model=facts.base_model,
        tags=list(facts.tags),
        model_name=facts.repo_id.split("/")[-1],
        eval_results=results or None,
    )


def _training_section(training_args: Mapping | None) -> str:
    if not training_args:
        return (
            "This folder carries no `training_args.json`, so its training settings are not known to this card. "
            "ForgeryTalker trains in two stages (`training/run.py`): stage 1 the Forgery Prompter Network alone "
            "(½(ω-BCE + Dice), ω = 0.2), stage 2 the Q-Former and mask decoder on L_text + L_mask with the "
            "prompter frozen."
        )
    rows = [f"| `{key}` | `{json.dumps(training_args[key])}` |" for key in TRAINING_KEYS if key in training_args]
    table = "| setting | value |\n|---|---|\n" + "\n".join(rows)
    full = json.dumps(training_args, indent=2, sort_keys=True)
    return (
        "Trained with `training/run.py` of the forgerytalker package (stage "
        f"`{training_args.get('stage', '?')}`):\n\n{table}\n\n<details><summary>training_args.json</summary>\n\n"
        f"```json\n{full}\n```\n\n</details>"
    )


def _evaluation_section(metrics: Mapping | None, name: str) -> str:
    if not metrics:
        return "Not evaluated: run `forgerytalker evaluate` and pass its `metrics.json` to `forgerytalker push --metrics`."
    from ..evaluation.report import render_markdown

    body = render_markdown(metrics, name)
    # the rendered report starts with its own "# Evaluation" heading; the card's levels are one deeper
    return "\n".join(("#" + line) if line.startswith("#") else line for line in body.splitlines()).replace(
        "## Evaluation\n", "", 1
    )


def card_text(facts: ModelCardFacts) -> str:
    """The card's prose (the part after the YAML)."""
    name = facts.repo_id.split("/")[-1]
    return f"""
# {name}

A [ForgeryTalker](https://arxiv.org/abs/2412.19685) model for interpretable face-forgery localization, for the
`forgerytalker` Python package (its code also travels with this checkpoint: `trust_remote_code=True`). For a face photo it gives a pixel **mask** of the
manipulated area, the probability of each of 21 facial **regions** (eye, pupil, lip, mouth, nose, ear, cheek,
forehead, chin, jaw, eyebrow, tooth, tongue, beard, mustache, skin, hair, wrinkle, freckle, scar, dimple) and a
written **report** of what looks manipulated and why.

{f"## What this model is{chr(10)}{chr(10)}{facts.about}{chr(10)}{chr(10)}" if facts.about else ""}## How to use

```bash
forgerytalker analyze face.jpg --model {facts.repo_id} --out results/
```

```python
import forgerytalker
result = forgerytalker.analyze("face.jpg", model="{facts.repo_id}")
result.report, result.regions, result.manipulation_score, result.mask
```

```python
from transformers import pipeline
analyze = pipeline("forgery-analysis", model="{facts.repo_id}", trust_remote_code=True)
```

## Intended use and limits

- **For**: forensic analysts and researchers who want to see *where* a face photo may have been edited and
  *which* facial regions are affected, as a second opinion next to their own examination.
- **Not for**: deciding on its own whether a photo is genuine. A high manipulation score is evidence to look
  at, not a verdict; a low one does not prove a photo authentic. The model knows only the manipulation methods
  of its training data ({"see above" if facts.about else "MMTT: GAN face swap, transformer and diffusion inpainting"}) and may miss others.
- **Inputs**: one face per photo works best; the whole photo is read, at the model's input size. Photos with no
  face or several faces are analysed but flagged by `forgerytalker analyze`.
- **Reports** are generated text: they can name regions the mask does not cover or describe flaws that are not
  there. Read them with the mask and the region probabilities.
- **Faces are personal data**: analyse only photos you are entitled to process.

## Training

{_training_section(facts.training_args)}

## Evaluation

{_evaluation_section(facts.metrics, name)}
"""


def write_model_card(output_dir: str | Path, facts: ModelCardFacts) -> Path:
    """Writes `README.md` (YAML + prose) into `output_dir` and returns its path."""
    card = ModelCard(f"---\n{card_metadata(facts).to_yaml()}\n---\n{card_text(facts)}")
    path = Path(output_dir) / CARD_FILE
    card.save(path)
    return path


__all__ = ["CARD_FILE", "METRIC_IDS", "PIPELINE_TAG", "ModelCardFacts", "card_metadata", "read_facts_from_folder", "write_model_card"]
