"""The released MMTT layout → a Hub-format `datasets` folder (`convert_mmtt`), and a builder for direct use (`MMTT`).

Output layout (loads with `datasets.load_dataset(output_dir)`, also with `streaming=True`):

    output_dir/
      README.md                           # dataset card; YAML `dataset_info` (features, splits) and `configs`
      conversion_report.json              # every skipped record with its split, file, index and reason
      data/<split>-00000-of-00003.parquet  # images and masks embedded

The folder is written into a hidden sibling (`.<name>.partial`) and renamed into place only when complete,
so a killed run leaves nothing at `output_dir`; the next run deletes the stale sibling and starts over.
The same input gives byte-identical files, whatever `num_proc`: rows keep the released order, shards are
cut by record count before conversion, and nothing time- or machine-dependent is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets.builder import Key
from tqdm.auto import tqdm

from .card import DATA_DIR, shard_file_name, write_dataset_card
from .features import MMTT_FEATURES
from .mmtt_records import PlannedRecord, examples_to_table, load_example, plan_records, read_released_records
from .splits import SPLITS
from .validation import REASONS, BadRecord, BadRecordError, InvalidRecordError

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1000  # records per parquet shard (~400 MB at MMTT's 512×512 PNGs)
ROW_GROUP_SIZE = 100  # rows per parquet row group: the unit a streaming reader fetches
REPORT_FILE = "conversion_report.json"


def iter_example_batches(
    records: Sequence[PlannedRecord],
    mmtt_root: str | Path,
    bad_records: list[BadRecord],
    *,
    strict: bool = False,
    trust_multilabel: bool = False,
) -> Iterator[list[dict]]:
    """Batches of up to `ROW_GROUP_SIZE` valid examples, in record order.

    Each bad record is appended to `bad_records`; in strict mode the first one raises `BadRecordError`.
    """
    batch = []
    for planned in records:
        try:
            batch.append(load_example(planned, mmtt_root, trust_multilabel))
        except InvalidRecordError as error:
            bad_record = planned.bad(error)
            bad_records.append(bad_record)
            logger.debug("Skipping %s", bad_record.describe())
            if strict:
                raise BadRecordError(bad_record) from error
        if len(batch) == ROW_GROUP_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    split: str
    file_name: str
    records: tuple[PlannedRecord, ...]
    mmtt_root: str
    staging_dir: str
    strict: bool
    trust_multilabel: bool


@dataclasses.dataclass(frozen=True)
class _ShardResult:
    split: str
    num_records: int
    num_examples: int
    num_bytes: int
    file_size: int
    bad_records: tuple[BadRecord, ...]


def _convert_shard(task: _ShardTask) -> _ShardResult:
    """Writes one parquet shard (runs in a worker process when `num_proc` > 1)."""
    path = Path(task.staging_dir) / task.file_name
    bad_records: list[BadRecord] = []
    num_examples = num_bytes = 0
    with pq.ParquetWriter(path, MMTT_FEATURES.arrow_schema) as writer:
        batches = iter_example_batches(
            task.records, task.mmtt_root, bad_records, strict=task.strict, trust_multilabel=task.trust_multilabel
        )
        for batch in batches:
            table = examples_to_table(batch)
            writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            num_examples += table.num_rows
            num_bytes += table.nbytes
    return _ShardResult(task.split, len(task.records), num_examples, num_bytes, path.stat().st_size, tuple(bad_records))


@dataclasses.dataclass
class ConversionResult:
    """What a conversion wrote: per-split record and example counts, and every skipped record."""

    output_dir: Path
    num_records: dict[str, int]
    num_examples: dict[str, int]
    bad_records: list[BadRecord]
    test_fraction: float | None
    trust_multilabel: bool

    def report(self) -> dict:
        """The content of `conversion_report.json`."""
        skipped = Counter(bad.split for bad in self.bad_records)
        reasons = Counter(bad.reason for bad in self.bad_records)
        return {
            "test_fraction": self.test_fraction,
            "trust_multilabel": self.trust_multilabel,
            "splits": {
                split: {"records": count, "examples": self.num_examples[split], "skipped": skipped[split]}
                for split, count in self.num_records.items()
            },
            "skipped_by_reason": {reason: reasons[reason] for reason in REASONS if reasons[reason]},
            "skipped": [dataclasses.asdict(bad) for bad in self.bad_records],
        }

    def summary(self) -> str:
        """A few lines for people: counts per split and per skip reason."""
        splits = ", ".join(f"{split} {count}" for split, count in self.num_examples.items())
        lines = [f"Wrote {sum(self.num_examples.values())} examples to {self.output_dir} ({splits})."]
        if self.bad_records:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.report()["skipped_by_reason"].items())
            lines.append(
                f"Skipped {len(self.bad_records)} bad records ({reasons}); see {self.output_dir / REPORT_FILE}."
            )
        return "\n".join(lines)


def _shard_tasks(
    planned: dict[str, list[PlannedRecord]],
    mmtt_root: Path,
    staging_dir: Path,
    shard_size: int,
    strict: bool,
    trust_multilabel: bool,
) -> list[_ShardTask]:
    tasks = []
    for split, records in planned.items():
        num_shards = math.ceil(len(records) / shard_size)
        for shard_index in range(num_shards):
            chunk = tuple(records[shard_index * shard_size : (shard_index + 1) * shard_size])
            file_name = shard_file_name(split, shard_index, num_shards)
            tasks.append(
                _ShardTask(split, file_name, chunk, str(mmtt_root), str(staging_dir), strict, trust_multilabel)
            )
    return tasks


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux: a spawned worker would re-import the package (transformers and torch, seconds each).

    The pool is started before any progress bar or parquet writer exists, so no thread of ours is forked.
    """
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _run_shard_tasks(tasks: list[_ShardTask], num_proc: int) -> list[_ShardResult]:
    """Runs the shard tasks, results in task order, with a progress bar over records."""
    total = sum(len(task.records) for task in tasks)
    num_workers = min(num_proc, len(tasks))
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(_worker_context().Pool(num_workers)) if num_workers > 1 else None
        progress = stack.enter_context(tqdm(total=total, unit="record", desc="Converting MMTT", disable=None))
        results = []
        for result in pool.imap(_convert_shard, tasks) if pool else map(_convert_shard, tasks):
            results.append(result)
            progress.update(result.num_records)
    return results


def _sibling(output_dir: Path, suffix: str) -> Path:
    return output_dir.parent / f".{output_dir.name}.{suffix}"


def _check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuses to touch an existing `output_dir` unless `overwrite` and it is empty or a converted MMTT folder."""
    if not output_dir.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    if not output_dir.is_dir() or (any(output_dir.iterdir()) and not (output_dir / REPORT_FILE).is_file()):
        raise FileExistsError(f"{output_dir} exists and is not a converted MMTT folder; refusing to replace it")


def _publish(staging_dir: Path, output_dir: Path) -> None:
    """Moves the finished staging folder to `output_dir` by renames, replacing an existing one."""
    if output_dir.exists():
        retired = _sibling(output_dir, "replaced")
        shutil.rmtree(retired, ignore_errors=True)
        output_dir.rename(retired)
        staging_dir.rename(output_dir)
        shutil.rmtree(retired)
    else:
        staging_dir.rename(output_dir)


def _drop_empty_splits(staging_dir: Path, result: ConversionResult) -> None:
    """Deletes the shards of splits that kept no example (`load_dataset` refuses an empty split).

    The records of such a split stay in the report; a conversion that kept no example at all fails.
    """
    if not any(result.num_examples.values()):
        first = "; ".join(bad.describe() for bad in result.bad_records[:3])
        raise ValueError(f"None of the {len(result.bad_records)} records is valid (first ones: {first})")
    for split, count in result.num_examples.items():
        if count == 0:
            logger.warning("Split %s kept no example: it is left out of the dataset", split)
            for path in (staging_dir / DATA_DIR).glob(f"{split}-*.parquet"):
                path.unlink()


def _write_metadata(staging_dir: Path, results: list[_ShardResult], result: ConversionResult) -> None:
    split_sizes = {}
    for split, count in result.num_examples.items():
        if count:
            num_bytes = sum(shard.num_bytes for shard in results if shard.split == split)
            split_sizes[split] = (count, num_bytes)
    skipped = Counter(bad.split for bad in result.bad_records)
    download_size = sum(shard.file_size for shard in results if shard.split in split_sizes)
    write_dataset_card(staging_dir, split_sizes, download_size, skipped, result.test_fraction)
    report = json.dumps(result.report(), indent=2, ensure_ascii=False) + "\n"
    (staging_dir / REPORT_FILE).write_text(report, encoding="utf-8")


def convert_mmtt(
    mmtt_root: str | Path,
    output_dir: str | Path,
    *,
    test_fraction: float | None = None,
    strict: bool = False,
    trust_multilabel: bool = False,
    num_proc: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> ConversionResult:
    """Converts a released MMTT folder into a Hub-format `datasets` folder at `output_dir`.

    Args:
        mmtt_root: the folder holding `train-mutilabel-simple.json`, `eval-mutilabel-simple.json` and the
            `dataset/` image root (record paths: see `forgerytalker.data.mmtt_records`).
        output_dir: where the dataset folder appears, complete, at the end.
        test_fraction: when set, carve a `test` split of this fraction from the released train file by id
            (`forgerytalker.data.splits`; 1/9 gives the paper's 8:1:1); None keeps train/validation only.
        strict: raise `BadRecordError` at the first bad record instead of skipping and reporting it.
        trust_multilabel: take `regions` from the released `multilabel` without requiring it to match the
            caption (the release labelled with a wider synonym list and a rule for expression edits).
        num_proc: worker processes, each converting whole shards.
        shard_size: records per parquet shard.
        overwrite: replace an existing converted folder at `output_dir`.
    """
    if num_proc < 1 or shard_size < 1:
        raise ValueError(f"num_proc and shard_size must be >= 1, got {num_proc} and {shard_size}")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    mmtt_root, output_dir = Path(mmtt_root), Path(output_dir)
    _check_replaceable(output_dir, overwrite)
    planned = plan_records(read_released_records(mmtt_root), test_fraction)
    staging_dir = _sibling(output_dir, "partial")
    if staging_dir.exists():
        logger.info("Removing %s left by an interrupted conversion", staging_dir)
        shutil.rmtree(staging_dir)
    (staging_dir / DATA_DIR).mkdir(parents=True)
    try:
        tasks = _shard_tasks(planned, mmtt_root, staging_dir, shard_size, strict, trust_multilabel)
        results = _run_shard_tasks(tasks, num_proc)
        result = ConversionResult(
            output_dir=output_dir,
            num_records={split: len(records) for split, records in planned.items()},
            num_examples={split: sum(r.num_examples for r in results if r.split == split) for split in planned},
            bad_records=[bad for shard in results for bad in shard.bad_records],
            test_fraction=test_fraction,
            trust_multilabel=trust_multilabel,
        )
        _drop_empty_splits(staging_dir, result)
        _write_metadata(staging_dir, results, result)
        _publish(staging_dir, output_dir)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    if result.bad_records:
        logger.warning("Skipped %d bad records; see %s", len(result.bad_records), output_dir / REPORT_FILE)
    return result


@dataclasses.dataclass
class MMTTConfig(datasets.BuilderConfig):
    """Config of the `MMTT` builder; `data_dir` is the MMTT root, the rest as in `convert_mmtt`."""

    test_fraction: float | None = None
    strict: bool = False
    trust_multilabel: bool = False


class MMTT(datasets.ArrowBasedBuilder):
    """Builds MMTT straight from the released layout, with the converter's features, checks and splits.

    An Arrow-based builder, not a `GeneratorBasedBuilder`: it yields the same Arrow tables as the converter,
    so both write identical rows. Bad records are logged as warnings and skipped (`strict=True` raises).

    ```python
    builder = MMTT(data_dir="path/to/mmtt", test_fraction=1 / 9)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    ```
    """

    BUILDER_CONFIG_CLASS = MMTTConfig

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(features=MMTT_FEATURES)

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise ValueError("The MMTT builder needs data_dir=<MMTT root> (the folder with the released JSON files)")
        planned = plan_records(read_released_records(self.config.data_dir), self.config.test_fraction)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"records": planned[split]})
            for split in SPLITS
            if split in planned
        ]

    def _generate_tables(self, records: list[PlannedRecord]):
        bad_records: list[BadRecord] = []
        batches = iter_example_batches(
            records,
            self.config.data_dir,
            bad_records,
            strict=self.config.strict,
            trust_multilabel=self.config.trust_multilabel,
        )
        for batch_index, batch in enumerate(batches):
            yield Key(0, batch_index), examples_to_table(batch)
        for bad_record in bad_records:
            logger.warning("Skipped %s", bad_record.describe())
