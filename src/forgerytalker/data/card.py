"""The README.md dataset card of a converted MMTT folder: YAML that `datasets.load_dataset` reads, and prose."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from ..regions import REGION_NAMES
from .features import MMTT_FEATURES
from .methods import METHODS
from .splits import RELEASED_SPLIT_FILES, TRAIN

DATA_DIR = "data"
CARD_FILE = "README.md"


def shard_file_name(split: str, shard_index: int, num_shards: int) -> str:
    """`data/<split>-00000-of-00003.parquet`, the Hub's shard naming."""
    return f"{DATA_DIR}/{split}-{shard_index:05d}-of-{num_shards:05d}.parquet"


def card_metadata(split_sizes: Mapping[str, tuple[int, int]], download_size: int) -> DatasetCardData:
    """The card's YAML: `dataset_info` (features, splits) and `configs` (the default config's data files).

    `split_sizes` maps each split, in order, to (number of examples, Arrow bytes).
    """
    splits = SplitDict(
        {
            name: SplitInfo(name=name, num_bytes=num_bytes, num_examples=count)
            for name, (count, num_bytes) in split_sizes.items()
        }
    )
    info = DatasetInfo(
        features=MMTT_FEATURES,
        splits=splits,
        download_size=download_size,
        dataset_size=sum(num_bytes for _, num_bytes in split_sizes.values()),
    )
    metadata = DatasetCardData(pretty_name="MMTT (Multi-Modal Tamper Tracing)")
    DatasetInfosDict({"default": info}).to_dataset_card_data(metadata)
    data_files = [{"split": name, "path": f"{DATA_DIR}/{name}-*"} for name in split_sizes]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(metadata)
    return metadata


def _card_body(
    split_sizes: Mapping[str, tuple[int, int]], skipped: Mapping[str, int], test_fraction: float | None
) -> str:
    rows = "\n".join(f"| {name} | {count} | {skipped.get(name, 0)} |" for name, (count, _) in split_sizes.items())
    if test_fraction is None:
        test_rule = "No test split was carved: `train` and `validation` are the released files."
    else:
        test_rule = (
            f"`test` holds the records of `{RELEASED_SPLIT_FILES[TRAIN]}` whose SHA-256-based id fraction is below "
            f"{test_fraction:.6f} (`forgerytalker.data.splits.id_fraction`); `train` holds the rest of that file; "
            f"`validation` is `{RELEASED_SPLIT_FILES['validation']}` unchanged."
        )
    return f"""
# MMTT (Multi-Modal Tamper Tracing)

Forged face images with a forgery mask and a written report of the manipulated regions (ForgeryTalker,
arXiv 2412.19685), converted from the released layout by `forgerytalker data convert`.

```python
from datasets import load_dataset

dataset = load_dataset("path/to/this/folder")
```

## Columns

- `image_id`: the released id. `image`: the image as released. `mask`: grayscale, pixel > 0 means forged.
- `caption`: the report. `regions`: class labels over {len(REGION_NAMES)} regions ({", ".join(REGION_NAMES)}).
- `method`: one of {", ".join(METHODS)}, read from the image path. `source`: the top image folder.

## Splits

| split | examples | skipped records |
|---|---|---|
{rows}

{test_rule} Skipped records and the reason for each are listed in `conversion_report.json`.
"""


def write_dataset_card(
    output_dir: Path,
    split_sizes: Mapping[str, tuple[int, int]],
    download_size: int,
    skipped: Mapping[str, int],
    test_fraction: float | None,
) -> None:
    """Writes `README.md` into `output_dir`; `skipped` counts skipped records per split."""
    metadata = card_metadata(split_sizes, download_size)
    text = f"---\n{metadata}\n---\n{_card_body(split_sizes, skipped, test_fraction)}"
    (Path(output_dir) / CARD_FILE).write_text(text, encoding="utf-8")
