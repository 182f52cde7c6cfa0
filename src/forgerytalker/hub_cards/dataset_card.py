"""The README.md dataset card of a converted MMTT folder: YAML that `datasets.load_dataset` reads, and prose.

`forgerytalker data convert` writes it; `forgerytalker push --dataset` uploads it with the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from ..data.features import MMTT_FEATURES
from ..data.splits import TEST, TRAIN
from ..regions import REGION_NAMES

DATA_DIR = "data"
CARD_FILE = "README.md"

# Top image folder → the terms its pictures come under. The MMTT release states no licence for the dataset
# itself (its code is BSD-3-Clause); its pictures derive from CelebA-HQ / CelebAMask-HQ and FFHQ.
SOURCE_LICENCES: dict[str, str] = {
    "celeb512": "CelebA-HQ / CelebAMask-HQ: non-commercial research and educational use only (the CelebA agreement)",
    "FFHQ512": (
        "FFHQ: the collection is CC BY-NC-SA 4.0 (NVIDIA); each photo keeps its Flickr licence (CC BY 2.0, "
        "CC BY-NC 2.0, Public Domain Mark 1.0, CC0 1.0 or U.S. Government Works)"
    ),
    "face_attribute_image": "expression edits of the release's faces: no licence stated by the release",
    "synthetic": (
        "made by `forgerytalker data synthesize`: the licence of the face photos it was given applies "
        "(listed in that run's synthesis.json)"
    ),
}
UNKNOWN_SOURCE_LICENCE = "not known to the converter: state it before sharing this dataset"
DATASET_LICENCE_NOTE = (
    "The MMTT release (NattyLianJc/Generating-Attribution-Reports, LianJC/MMTT-Dataset) states no licence for "
    "its images, masks and captions; its code is BSD-3-Clause. Its forgeries were made with E4S, MAT and SDXL "
    "(SDXL's CreativeML Open RAIL++-M licence restricts some uses of its outputs). Use the data under the "
    "terms of its sources below, and ask the authors before redistributing it."
)


@dataclasses.dataclass
class CardFacts:
    """What the card reports about a conversion.

    Attributes:
        split_sizes: split → (number of examples, Arrow bytes), in order; splits without examples left out.
        download_size: bytes of the parquet shards.
        skipped: split → number of skipped records.
        split_files: split of a record file → its name ("eval-mutilabel-simple.json").
        test_fraction: the share of the train file carved into `test`, or None.
        labels: where `regions` come from (`released` or `caption`).
        disagreements: region → (records whose released label alone marks it, records whose caption alone does).
        compared: number of kept records that have both labels.
        methods: method → number of examples.
        sources: top image folder → number of examples.
        methods_per_split: split → method → number of examples.
    """

    split_sizes: Mapping[str, tuple[int, int]]
    download_size: int
    skipped: Mapping[str, int]
    split_files: Mapping[str, str]
    test_fraction: float | None
    labels: str
    disagreements: Mapping[str, tuple[int, int]]
    compared: int
    methods: Mapping[str, int]
    sources: Mapping[str, int]
    methods_per_split: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)


def shard_file_name(split: str, shard_index: int, num_shards: int) -> str:
    """`data/<split>-00000-of-00003.parquet`, the Hub's shard naming."""
    return f"{DATA_DIR}/{split}-{shard_index:05d}-of-{num_shards:05d}.parquet"


def card_metadata(split_sizes: Mapping[str, tuple[int, int]], download_size: int) -> DatasetCardData:
    """The card's YAML: licence, `dataset_info` (features, splits) and `configs` (the default config's data files).

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
    metadata = DatasetCardData(pretty_name="MMTT (Multi-Modal Tamper Tracing)", license="other")
    DatasetInfosDict({"default": info}).to_dataset_card_data(metadata)
    data_files = [{"split": name, "path": f"{DATA_DIR}/{name}-*"} for name in split_sizes]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(metadata)
    return metadata


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_rule(facts: CardFacts) -> str:
    files = "; ".join(f"`{split}`: `{name}`" for split, name in facts.split_files.items())
    text = f"Record files ({files}); rows keep the files' order."
    if facts.test_fraction is not None:
        text += (
            f" `{TEST}` holds the records of `{facts.split_files[TRAIN]}` whose SHA-256-based id fraction is below "
            f"{facts.test_fraction:.6f} (`forgerytalker.data.splits.id_fraction`); `{TRAIN}` holds the rest of it."
        )
    return text


def _labels_section(facts: CardFacts) -> str:
    source = (
        "the released `multilabel` vectors (the labels the paper trained on)"
        if facts.labels == "released"
        else "re-derived from the captions by the release's rule (`forgerytalker.regions.caption_to_regions`)"
    )
    text = f"`regions` are {source}."
    if not facts.compared:
        return text
    rows = [(name, *facts.disagreements[name]) for name in REGION_NAMES if any(facts.disagreements.get(name, ()))]
    if not rows:
        return text + f" Released labels and captions agree on all {facts.compared} records that have both."
    header = ("region", "marked by the released label only", "named by the caption only")
    return (
        f"{text} Of the {facts.compared} records that have both, released labels and captions disagree on these "
        f"regions (records per region; `conversion_report.json` has the totals):\n\n{_table(header, rows)}"
    )


def _licence_section(facts: CardFacts) -> str:
    rows = [
        (f"`{source}`", count, SOURCE_LICENCES.get(source, UNKNOWN_SOURCE_LICENCE))
        for source, count in facts.sources.items()
    ]
    return f"{DATASET_LICENCE_NOTE}\n\n{_table(('source folder', 'examples', 'terms'), rows)}"


def _card_body(facts: CardFacts) -> str:
    split_rows = [(name, count, facts.skipped.get(name, 0)) for name, (count, _) in facts.split_sizes.items()]
    splits = [name for name in facts.split_sizes if name in facts.methods_per_split]
    method_rows = [
        (method, count, *(facts.methods_per_split[split].get(method, 0) for split in splits))
        for method, count in facts.methods.items()
    ]
    method_header = ("method", "examples", *splits)
    return f"""
# MMTT (Multi-Modal Tamper Tracing)

Forged face images with a forgery mask and a written report of the manipulated regions (ForgeryTalker,
arXiv 2412.19685), converted from an MMTT-style folder by `forgerytalker data convert`.

```python
from datasets import load_dataset

dataset = load_dataset("path/to/this/folder")
```

## Columns

- `image_id`: the record's id. `image`: the image as released. `mask`: grayscale, pixel > 0 means forged.
- `caption`: the report. `regions`: class labels over {len(REGION_NAMES)} regions ({", ".join(REGION_NAMES)}).
- `method`: the manipulation (the record's `method` field, else read from the image path; `authentic` for an
  empty mask with no region). `source`: the top image folder. `extra`: the record's other fields, as JSON.

## Splits

{_table(("split", "examples", "skipped records"), split_rows)}

{_split_rule(facts)} Skipped records and the reason for each are listed in `conversion_report.json`.

## Methods

{_table(method_header, method_rows)}

## Labels

{_labels_section(facts)}

## Licences

{_licence_section(facts)}
"""


def write_dataset_card(output_dir: Path, facts: CardFacts) -> None:
    """Writes `README.md` into `output_dir`."""
    metadata = card_metadata(facts.split_sizes, facts.download_size)
    text = f"---\n{metadata}\n---\n{_card_body(facts)}"
    (Path(output_dir) / CARD_FILE).write_text(text, encoding="utf-8")
