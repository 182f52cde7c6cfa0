"""Training data: MMTT-style `datasets` splits, batched through the `ForgeryTalkerProcessor`."""

from __future__ import annotations

from datasets import Dataset, DatasetDict, load_dataset

from ..regions import REGION_NAMES


def load_splits(dataset: str, train_split: str, validation_split: str | None) -> tuple[Dataset, Dataset | None]:
    """The train and validation splits of a folder or hub id, with a clear error for a missing split."""
    splits = load_dataset(dataset)
    if not isinstance(splits, DatasetDict):
        raise ValueError(f"--dataset {dataset!r} did not load as a dataset with splits")
    for name in (train_split, validation_split):
        if name is not None and name not in splits:
            raise ValueError(f"--dataset {dataset!r} has no split {name!r}; it has {sorted(splits)}")
    return splits[train_split], (splits[validation_split] if validation_split else None)


def region_names_of(example: dict, names: tuple[str, ...] = REGION_NAMES) -> list[str]:
    """The region names of one example's `regions` class labels."""
    return [names[index] for index in example["regions"]]


class ForgeryTalkerCollator:
    """Turns a list of dataset examples into a model batch.

    Stage `"prompter"` needs only images and region labels; stage `"joint"` adds the reports (`labels`) and
    the masks. Each batch also carries `image_ids` (a list of str) for logging; pop it before the model call.
    """

    def __init__(self, processor, stage: str):
        self.processor = processor
        self.stage = stage

    def __call__(self, examples: list[dict]) -> dict:
        images = [example["image"].convert("RGB") for example in examples]
        region_labels = [region_names_of(example) for example in examples]
        if self.stage == "prompter":
            batch = self.processor(images=images, region_labels=region_labels)
        else:
            batch = self.processor(
                images=images,
                reports=[example["caption"] for example in examples],
                region_labels=region_labels,
                masks=[example["mask"] for example in examples],
            )
        batch = dict(batch)
        batch["image_ids"] = [example["image_id"] for example in examples]
        return batch
