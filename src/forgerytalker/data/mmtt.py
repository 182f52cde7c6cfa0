"""An MMTT-style folder → a Hub-format `datasets` folder (`convert_mmtt`), and a builder for direct use (`MMTT`).

Output layout (loads with `datasets.load_dataset(output_dir)`, also with `streaming=True`):

    output_dir/
      README.md                            # dataset card; YAML `dataset_info` (features, splits) and `configs`
      conversion_report.json               # skipped records, label disagreements, and the files written
      data/<split>-00000-of-00003.parquet  # images and masks embedded

**Atomic and resumable.** The folder is built in the hidden sibling `.<name>.partial`, shard by shard: a shard
is written as `<shard>.tmp`, renamed when complete, and then recorded as finished in
`.<name>.partial/.conversion/`. A run that stops (killed, a full disk, a worker lost) leaves the finished
shards there; the next run with the same record files and options converts only the others, and a run with
different ones starts over. The folder is renamed to `output_dir` when complete (`mmtt_publish`).

**Deterministic.** The same input gives byte-identical files, whatever `num_proc` and however often the
conversion was interrupted: rows keep the record files' order, shards are cut by record count before
conversion, and nothing time- or machine-dependent is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets.builder import Key
from tqdm.auto import tqdm

from .. import __version__
from ..hub_cards.dataset_card import DATA_DIR, CardFacts, shard_file_name, write_dataset_card
from ..output_folder import FolderLockedError, file_fingerprint, locked
from ..regions import REGION_NAMES
from .errors import DataInputError, option
from .features import MMTT_FEATURES
from .json_files import read_json, write_json_atomic
from .mmtt_layout import find_split_files, read_split_file, resolve_record_path, split_file_name
from .mmtt_publish import OWNER as CONVERTER
from .mmtt_publish import REPORT_FILE, check_replaceable, publish, record_files, recover_interrupted_replace, sibling
from .mmtt_records import LoadedExample, PlannedRecord, examples_to_table, load_example, plan_records
from .output_folders import check_free_space, check_output_folder, output_write_error
from .splits import SPLITS, TEST
from .validation import LABEL_SOURCES, REASONS, RELEASED_LABELS, BadRecord, BadRecordError, InvalidRecordError
from .workers import report_progress, run_tasks

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1000  # records per parquet shard (~400 MB at MMTT's 512×512 PNGs)
ROW_GROUP_SIZE = 100  # rows per parquet row group: the unit a streaming reader fetches
STATE_DIR = ".conversion"  # inside the staging folder: the plan and one file per finished shard
_FORMAT = 2  # bump when shard contents change for the same input, so that older partial shards are not reused


@dataclasses.dataclass
class ShardStats:
    """What a shard's valid records hold beyond their rows: label comparisons, methods and sources."""

    compared: int = 0
    disagreements: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # region → [released, caption]
    methods: Counter = dataclasses.field(default_factory=Counter)
    sources: Counter = dataclasses.field(default_factory=Counter)

    def add(self, loaded: LoadedExample) -> None:
        self.methods[loaded.example["method"]] += 1
        self.sources[loaded.example["source"]] += 1
        if loaded.labels is None:
            return
        self.compared += 1
        for position, names in enumerate((loaded.labels.released_only, loaded.labels.caption_only)):
            for name in names:
                self.disagreements.setdefault(name, [0, 0])[position] += 1

    def merge(self, other: ShardStats) -> None:
        self.compared += other.compared
        for name, counts in other.disagreements.items():
            mine = self.disagreements.setdefault(name, [0, 0])
            mine[0] += counts[0]
            mine[1] += counts[1]
        self.methods.update(other.methods)
        self.sources.update(other.sources)

    def to_dict(self) -> dict:
        return {
            "compared": self.compared,
            "disagreements": {name: self.disagreements[name] for name in REGION_NAMES if name in self.disagreements},
            "methods": dict(sorted(self.methods.items())),
            "sources": dict(sorted(self.sources.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ShardStats:
        return cls(data["compared"], dict(data["disagreements"]), Counter(data["methods"]), Counter(data["sources"]))


def iter_example_batches(
    records: Sequence[PlannedRecord],
    mmtt_root: str | Path,
    bad_records: list[BadRecord],
    stats: ShardStats,
    *,
    strict: bool = False,
    labels: str = RELEASED_LABELS,
    max_image_pixels: int | None = None,
) -> Iterator[list[dict]]:
    """Batches of up to `ROW_GROUP_SIZE` valid examples, in record order; reports progress per record.

    Each bad record is appended to `bad_records`; in strict mode the first one raises `BadRecordError`.
    """
    batch = []
    for position, planned in enumerate(records):
        try:
            loaded = load_example(planned, mmtt_root, labels, max_image_pixels)
        except InvalidRecordError as error:
            bad_record = planned.bad(error)
            bad_records.append(bad_record)
            logger.debug("Skipping %s", bad_record.describe())
            if strict:
                raise BadRecordError(bad_record) from error
        else:
            batch.append(loaded.example)
            stats.add(loaded)
        report_progress(position + 1)
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
    labels: str
    max_image_pixels: int | None

    def describe(self) -> str:
        first, last = self.records[0], self.records[-1]
        return f"shard {self.file_name} ({first.source_file}[{first.index}] to [{last.index}])"


@dataclasses.dataclass(frozen=True)
class _ShardResult:
    split: str
    file_name: str
    num_records: int
    num_examples: int
    num_bytes: int
    file_size: int
    bad_records: tuple[BadRecord, ...]
    stats: ShardStats

    def to_dict(self) -> dict:
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        fields["bad_records"] = [dataclasses.asdict(bad) for bad in self.bad_records]
        fields["stats"] = self.stats.to_dict()
        return fields

    @classmethod
    def from_dict(cls, data: Mapping) -> _ShardResult:
        bad_records = tuple(BadRecord(**bad) for bad in data["bad_records"])
        fields = {**data, "bad_records": bad_records, "stats": ShardStats.from_dict(data["stats"])}
        return cls(**fields)


def _state_file(staging_dir: Path, file_name: str) -> Path:
    return staging_dir / STATE_DIR / (Path(file_name).name + ".json")


def _convert_shard(task: _ShardTask) -> _ShardResult:
    """Writes one parquet shard and records it as finished (runs in a worker process when `num_proc` > 1)."""
    staging_dir = Path(task.staging_dir)
    path = staging_dir / task.file_name
    partial = path.with_name(path.name + ".tmp")
    bad_records: list[BadRecord] = []
    stats = ShardStats()
    num_examples = num_bytes = 0
    with pq.ParquetWriter(partial, MMTT_FEATURES.arrow_schema) as writer:
        batches = iter_example_batches(
            task.records,
            task.mmtt_root,
            bad_records,
            stats,
            strict=task.strict,
            labels=task.labels,
            max_image_pixels=task.max_image_pixels,
        )
        for batch in batches:
            table = examples_to_table(batch)
            writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            num_examples += table.num_rows
            num_bytes += table.nbytes
    partial.replace(path)
    result = _ShardResult(
        task.split,
        task.file_name,
        len(task.records),
        num_examples,
        num_bytes,
        path.stat().st_size,
        tuple(bad_records),
        stats,
    )
    write_json_atomic(_state_file(staging_dir, task.file_name), result.to_dict(), indent=None)
    return result


@dataclasses.dataclass
class ConversionResult:
    """What a conversion wrote: per-split record and example counts, every skipped record, label comparisons."""

    output_dir: Path
    split_files: dict[str, str]
    num_records: dict[str, int]
    num_examples: dict[str, int]
    bad_records: list[BadRecord]
    test_fraction: float | None
    labels: str
    stats: ShardStats
    files: dict[str, int] = dataclasses.field(default_factory=dict)

    def report(self) -> dict:
        """The content of `conversion_report.json`."""
        skipped = Counter(bad.split for bad in self.bad_records)
        reasons = Counter(bad.reason for bad in self.bad_records)
        stats = self.stats.to_dict()
        return {
            "split_files": self.split_files,
            "test_fraction": self.test_fraction,
            "labels": self.labels,
            "splits": {
                split: {"records": count, "examples": self.num_examples[split], "skipped": skipped[split]}
                for split, count in self.num_records.items()
            },
            "methods": stats["methods"],
            "sources": stats["sources"],
            "label_disagreements": {
                "records_compared": stats["compared"],
                "released_only": {name: counts[0] for name, counts in stats["disagreements"].items() if counts[0]},
                "caption_only": {name: counts[1] for name, counts in stats["disagreements"].items() if counts[1]},
            },
            "skipped_by_reason": {reason: reasons[reason] for reason in REASONS if reasons[reason]},
            "skipped": [dataclasses.asdict(bad) for bad in self.bad_records],
            "files": self.files,
        }

    def summary(self) -> str:
        """A few lines for people: counts per split, per skip reason and label disagreements."""
        splits = ", ".join(f"{split} {count}" for split, count in self.num_examples.items())
        lines = [f"Wrote {sum(self.num_examples.values())} examples to {self.output_dir} ({splits})."]
        if self.bad_records:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.report()["skipped_by_reason"].items())
            lines.append(
                f"Skipped {len(self.bad_records)} bad records ({reasons}); see {self.output_dir / REPORT_FILE}."
            )
        disagreeing = {name: sum(counts) for name, counts in self.stats.to_dict()["disagreements"].items()}
        if disagreeing:
            regions = ", ".join(f"{name} {count}" for name, count in disagreeing.items())
            lines.append(f"Released labels and captions disagree on some records (per region: {regions}).")
        return "\n".join(lines)


def _shard_tasks(planned: dict[str, list[PlannedRecord]], staging_dir: Path, shard_size: int, **options) -> list[_ShardTask]:
    tasks = []
    for split, records in planned.items():
        num_shards = math.ceil(len(records) / shard_size)
        for shard_index in range(num_shards):
            chunk = tuple(records[shard_index * shard_size : (shard_index + 1) * shard_size])
            file_name = shard_file_name(split, shard_index, num_shards)
            tasks.append(_ShardTask(split, file_name, chunk, staging_dir=str(staging_dir), **options))
    return tasks


def _fingerprint(split_paths: Mapping[str, Path], options: Mapping) -> str:
    """Identifies a conversion by its dataset root, its record files' content and the options that decide the
    shards' content."""
    files = {split: (file_fingerprint(path) or {}).get("sha256") for split, path in split_paths.items()}
    content = {"format": _FORMAT, "forgerytalker": __version__, "files": files, **options}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _prepare_staging(staging_dir: Path, fingerprint: str, tasks: list[_ShardTask]) -> dict[str, _ShardResult]:
    """The finished shards of an interrupted run of the same conversion; a stale staging folder is removed."""
    plan_file = staging_dir / STATE_DIR / "plan.json"
    finished: dict[str, _ShardResult] = {}
    if staging_dir.exists():
        try:
            same = read_json(plan_file).get("fingerprint") == fingerprint
        except (DataInputError, OSError, AttributeError):
            same = False
        if same:
            for task in tasks:
                state = _state_file(staging_dir, task.file_name)
                if state.is_file() and (staging_dir / task.file_name).is_file():
                    try:
                        finished[task.file_name] = _ShardResult.from_dict(read_json(state))
                    except (DataInputError, KeyError, TypeError):
                        logger.warning("Converting shard %s again: its record %s is unreadable", task.file_name, state)
            for leftover in (staging_dir / DATA_DIR).glob("*.tmp"):
                leftover.unlink()
        else:
            logger.info("Removing %s, left by an interrupted conversion of other records or options", staging_dir)
            shutil.rmtree(staging_dir)
    (staging_dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_file, {"fingerprint": fingerprint})
    return finished


def _estimated_bytes(tasks: Sequence[_ShardTask], mmtt_root: Path) -> int:
    """About how many bytes the shards of `tasks` take: the mean size of the image and mask files of up to 200
    records spread over them, times the number of records."""
    records = [planned for task in tasks for planned in task.records]
    if not records:
        return 0
    sample = records[:: max(1, len(records) // 200)]
    total = 0
    for planned in sample:
        for key in ("img_path", "mask_path"):
            written = planned.record.get(key) if isinstance(planned.record, Mapping) else None
            if isinstance(written, str):
                try:
                    total += resolve_record_path(mmtt_root, written, "image")[0].stat().st_size
                except (InvalidRecordError, OSError):
                    pass
    return total * len(records) // len(sample)


def _check_options(
    num_proc: int, shard_size: int, test_fraction: float | None, labels: str, max_image_pixels: int | None
) -> None:
    for name, value in (("num_proc", num_proc), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataInputError(f"{option(name)}: must be a whole number of at least 1, got {value!r}")
    if max_image_pixels is not None and (not isinstance(max_image_pixels, int) or max_image_pixels < 1):
        raise DataInputError(f"{option('max_image_pixels')}: must be a whole number of at least 1, got {max_image_pixels!r}")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise DataInputError(f"{option('test_fraction')}: must be between 0 and 1, got {test_fraction}")
    if labels not in LABEL_SOURCES:
        raise DataInputError(f"{option('labels')}: must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")


def _results_to_conversion(
    output_dir: Path, split_files: dict[str, str], planned, results: list[_ShardResult], test_fraction, labels
) -> ConversionResult:
    stats = ShardStats()
    for result in results:
        stats.merge(result.stats)
    return ConversionResult(
        output_dir=output_dir,
        split_files=split_files,
        num_records={split: len(records) for split, records in planned.items()},
        num_examples={split: sum(r.num_examples for r in results if r.split == split) for split in planned},
        bad_records=[bad for shard in results for bad in shard.bad_records],
        test_fraction=test_fraction,
        labels=labels,
        stats=stats,
    )


def _finish_staging(staging_dir: Path, results: list[_ShardResult], result: ConversionResult) -> None:
    """Drops splits without examples (`load_dataset` refuses an empty split), then writes the card and report."""
    if not any(result.num_examples.values()):
        first = "; ".join(bad.describe() for bad in result.bad_records[:3])
        raise DataInputError(f"None of the {len(result.bad_records)} records is valid (first ones: {first})")
    split_sizes = {}
    for split, count in result.num_examples.items():
        if count:
            split_sizes[split] = (count, sum(shard.num_bytes for shard in results if shard.split == split))
        else:
            logger.warning("Split %s kept no example: it is left out of the dataset", split)
            for shard in results:
                if shard.split == split:
                    (staging_dir / shard.file_name).unlink(missing_ok=True)
    shutil.rmtree(staging_dir / STATE_DIR)
    stats = result.stats.to_dict()
    per_split = {split: ShardStats() for split in split_sizes}
    for shard in results:
        if shard.split in per_split:
            per_split[shard.split].merge(shard.stats)
    facts = CardFacts(
        split_sizes=split_sizes,
        download_size=sum(shard.file_size for shard in results if shard.split in split_sizes),
        skipped=Counter(bad.split for bad in result.bad_records),
        split_files=result.split_files,
        test_fraction=result.test_fraction,
        labels=result.labels,
        disagreements={name: tuple(counts) for name, counts in stats["disagreements"].items()},
        compared=stats["compared"],
        methods=stats["methods"],
        sources=stats["sources"],
        methods_per_split={split: split_stats.to_dict()["methods"] for split, split_stats in per_split.items()},
    )
    write_dataset_card(staging_dir, facts)
    result.files = {
        path.relative_to(staging_dir).as_posix(): path.stat().st_size
        for path in sorted(staging_dir.rglob("*"))
        if path.is_file()
    }
    report = json.dumps(result.report(), indent=2, ensure_ascii=False) + "\n"
    (staging_dir / REPORT_FILE).write_text(report, encoding="utf-8")
    record_files(staging_dir)


@contextlib.contextmanager
def _convert_lock(output_dir: Path) -> Iterator[None]:
    """Holds the converter's lock on `output_dir` (beside it: the folder is replaced whole) for the block."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(output_dir, CONVERTER.command, option("output_dir"), beside=True))
        except FolderLockedError as error:
            raise DataInputError(f"{option('output_dir')}: {error}") from None
        yield


def convert_mmtt(
    mmtt_root: str | Path,
    output_dir: str | Path,
    *,
    split_files: Mapping[str, str | Path] | None = None,
    test_fraction: float | None = None,
    strict: bool = False,
    labels: str = RELEASED_LABELS,
    num_proc: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    max_image_pixels: int | None = None,
    show_progress: bool = True,
) -> ConversionResult:
    """Converts an MMTT-style folder into a Hub-format `datasets` folder at `output_dir`.

    Args:
        mmtt_root: the dataset root: record paths are relative to it or to its `dataset/` image root
            (`forgerytalker.data.mmtt_layout`); it holds the split files unless `split_files` names them.
        output_dir: where the dataset folder appears, complete, at the end.
        split_files: split (`train`, `validation`, `test`) → its record file; None finds the release's files
            in `mmtt_root` (any of them alone is enough).
        test_fraction: when set, carve a `test` split of this fraction from the train file by id
            (`forgerytalker.data.splits`; 1/9 gives the paper's 8:1:1); None keeps the files' splits.
        strict: raise `BadRecordError` at the first bad record met instead of skipping and reporting it.
        labels: `released` keeps the records' `multilabel` as `regions`; `caption` re-derives them from the
            captions by the release's rule. Disagreements between the two are counted either way.
        num_proc: worker processes, each converting whole shards.
        shard_size: records per parquet shard.
        overwrite: replace an earlier conversion at `output_dir` (only a folder holding nothing but the
            files that conversion listed).
        max_image_pixels: refuse images and masks with more pixels (before decoding) as bad records; None
            uses `forgerytalker.image_utils.max_image_pixels()`.
        show_progress: show a progress bar over records.

    Raises:
        DataInputError: an unusable argument, split file or output folder (the message names which), or
            no valid record at all.
        BadRecordError: in strict mode.
        WorkerDiedError: a worker process died; finished shards are kept for the next run.
    """
    _check_options(num_proc, shard_size, test_fraction, labels, max_image_pixels)
    mmtt_root = Path(mmtt_root)
    output_dir = check_output_folder(output_dir, "output_dir", writes_beside=True)
    with _convert_lock(output_dir):
        recover_interrupted_replace(output_dir)
        check_replaceable(output_dir, overwrite)
        split_paths = find_split_files(mmtt_root, split_files)
        if test_fraction is not None and TEST in split_paths:
            raise DataInputError(
                f"{option('test_fraction')}: the dataset has a test split file ({split_paths[TEST].name}); a test "
                "split is carved only from a dataset without one"
            )
        names = {split: split_file_name(path, mmtt_root) for split, path in split_paths.items()}
        released = {split: (names[split], read_split_file(path)) for split, path in split_paths.items()}
        planned = plan_records(released, test_fraction)
        staging_dir = sibling(output_dir, "partial")
        options = dict(mmtt_root=str(mmtt_root), strict=strict, labels=labels, max_image_pixels=max_image_pixels)
        tasks = _shard_tasks(planned, staging_dir, shard_size, **options)
        fingerprint_options = dict(root=os.path.realpath(mmtt_root), test_fraction=test_fraction, labels=labels,
                                   shard_size=shard_size, max_image_pixels=max_image_pixels)  # fmt: skip
        kept = f"finished shards are kept in {staging_dir}; run the same command again to resume"
        try:
            finished = _prepare_staging(staging_dir, _fingerprint(split_paths, fingerprint_options), tasks)
            todo = [task for task in tasks if task.file_name not in finished]
            check_free_space(staging_dir, _estimated_bytes(todo, mmtt_root), "output_dir")
            if finished:
                logger.info("Resuming: %d of %d shards are already converted", len(finished), len(tasks))
            done = sum(result.num_records for result in finished.values())
            total = sum(len(task.records) for task in tasks)
            bar = tqdm(total=total, initial=done, unit="record", desc="Converting MMTT", disable=None if show_progress else True)
            with bar:
                shards = run_tasks(_convert_shard, todo, num_workers=num_proc, describe=_ShardTask.describe, on_progress=bar.update)
                for _, result in shards:
                    finished[result.file_name] = result
            results = [finished[task.file_name] for task in tasks]
            result = _results_to_conversion(output_dir, names, planned, results, test_fraction, labels)
            check_replaceable(output_dir, overwrite)  # again, before anything in the staging folder is finalised
            _finish_staging(staging_dir, results, result)
            publish(staging_dir, output_dir)
        except OSError as error:
            converted = output_write_error(error, "output_dir", kept)
            if converted is None:
                raise
            raise converted from error
        if result.bad_records:
            logger.warning("Skipped %d bad records; see %s", len(result.bad_records), output_dir / REPORT_FILE)
        return result


@dataclasses.dataclass
class MMTTConfig(datasets.BuilderConfig):
    """Config of the `MMTT` builder; `data_dir` is the dataset root, the rest as in `convert_mmtt`."""

    split_files: dict[str, str] | None = None
    test_fraction: float | None = None
    strict: bool = False
    labels: str = RELEASED_LABELS
    max_image_pixels: int | None = None


class MMTT(datasets.ArrowBasedBuilder):
    """Builds MMTT straight from an MMTT-style folder, with the converter's features, checks and splits.

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
            raise ValueError("The MMTT builder needs data_dir=<dataset root> (the folder of the MMTT-style dataset)")
        root = Path(self.config.data_dir)
        split_paths = find_split_files(root, self.config.split_files)
        released = {split: (split_file_name(path, root), read_split_file(path)) for split, path in split_paths.items()}
        planned = plan_records(released, self.config.test_fraction)
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
            ShardStats(),
            strict=self.config.strict,
            labels=self.config.labels,
            max_image_pixels=self.config.max_image_pixels,
        )
        for batch_index, batch in enumerate(batches):
            yield Key(0, batch_index), examples_to_table(batch)
        for bad_record in bad_records:
            logger.warning("Skipped %s", bad_record.describe())
