"""`forgerytalker data convert`: an MMTT-style folder → a Hub-format `datasets` folder."""

from __future__ import annotations

import argparse
import os

from .arguments import fail, number, whole_number
from .data import JOB_ERROR, USAGE_ERROR, render_error

FLAGS = {
    "mmtt_root": "--mmtt-root",
    "output_dir": "--out",
    "split_files": "--split",
    "test_fraction": "--test-fraction",
    "strict": "--strict",
    "labels": "--labels",
    "num_proc": "--num-proc",
    "shard_size": "--shard-size",
    "overwrite": "--overwrite",
    "max_image_pixels": "--max-image-pixels",
}
"""Parameter of `convert_mmtt` → the flag that sets it, for error messages."""


def _split_file(text: str) -> tuple[str, str]:
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"expected SPLIT=PATH (e.g. validation=eval.json), got {text!r}")
    return name.strip(), path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an MMTT-style dataset into a folder that datasets.load_dataset reads",
        description=(
            "Validates every record of the split files, embeds images and masks into parquet shards and writes a "
            "README.md dataset card. Bad records are skipped and listed in OUT/conversion_report.json (or, with "
            "--strict, stop the conversion). OUT appears only when complete; an interrupted conversion resumes "
            "where it stopped when run again. See docs/data-convert.md."
        ),
    )
    parser.add_argument(
        "--mmtt-root",
        required=True,
        help="the dataset root: record paths are relative to it or to its dataset/ folder; it holds the split "
        "files unless --split names them",
    )
    parser.add_argument("--out", required=True, help="output dataset folder (must not exist unless --overwrite)")
    parser.add_argument(
        "--split",
        action="append",
        type=_split_file,
        metavar="SPLIT=PATH",
        help="a record file and its split (train, validation or test); repeatable; default: the release's "
        "file names found in --mmtt-root",
    )
    parser.add_argument(
        "--test-split",
        action="store_true",
        help="also carve a deterministic `test` split from the train file by image_id hash",
    )
    parser.add_argument(
        "--test-fraction",
        type=number,
        default=1 / 9,
        help="share of the train file that goes to `test` with --test-split (default 1/9: 8:1:1 overall for a "
        "9:1 release)",
    )
    parser.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping it")
    parser.add_argument(
        "--labels",
        choices=("released", "caption"),
        default="released",
        help="where `regions` come from: the records' `multilabel` (default) or re-derived from the captions",
    )
    parser.add_argument("--num-proc", type=whole_number, default=min(8, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--shard-size", type=whole_number, default=1000, help="records per parquet shard (default 1000)")
    parser.add_argument(
        "--max-image-pixels",
        type=whole_number,
        help="skip records whose image or mask has more pixels (checked before decoding; default 100000000)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion at --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars, the libraries' too")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ..data.errors import DataInputError, WorkerDiedError
    from ..data.mmtt import convert_mmtt
    from ..data.validation import BadRecordError

    split_files = None
    if args.split:
        split_files = dict(args.split)
        if len(split_files) < len(args.split):
            return fail("--split: a split is named twice", USAGE_ERROR)
    try:
        result = convert_mmtt(
            args.mmtt_root,
            args.out,
            split_files=split_files,
            test_fraction=args.test_fraction if args.test_split else None,
            strict=args.strict,
            labels=args.labels,
            num_proc=args.num_proc,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            max_image_pixels=args.max_image_pixels,
            show_progress=not args.no_progress,
        )
    except (DataInputError, BadRecordError) as error:
        return fail(render_error(error, FLAGS), USAGE_ERROR)
    except WorkerDiedError as error:
        return fail(str(error), JOB_ERROR)
    print(result.summary())
    return 0
