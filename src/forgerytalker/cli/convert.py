"""`forgerytalker data convert`: the released MMTT layout → a Hub-format `datasets` folder."""

from __future__ import annotations

import argparse
import os
import sys


def _fraction(text: str) -> float:
    """A number in (0, 1), written as a decimal or a ratio such as `1/9`."""
    numerator, _, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError) as error:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r}") from error
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the released MMTT dataset into a folder that datasets.load_dataset reads",
        description=(
            "Validates every record of train-mutilabel-simple.json and eval-mutilabel-simple.json, embeds images "
            "and masks into parquet shards and writes a README.md dataset card. Bad records are skipped and listed "
            "in OUT/conversion_report.json (or, with --strict, stop the conversion). OUT appears only when complete."
        ),
    )
    parser.add_argument(
        "--mmtt-root", required=True, help="folder holding the two JSON files and the dataset/ image root"
    )
    parser.add_argument("--out", required=True, help="output dataset folder (must not exist unless --overwrite)")
    parser.add_argument(
        "--test-split",
        action="store_true",
        help="also carve a deterministic `test` split from the released train file by image_id hash",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default="1/9",
        help="share of the released train file that goes to `test` with --test-split (default 1/9: 8:1:1 overall "
        "for a 9:1 release)",
    )
    parser.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping it")
    parser.add_argument(
        "--trust-multilabel",
        action="store_true",
        help="keep records whose released `multilabel` names other regions than the caption, with regions from "
        "`multilabel` (the release labelled captions with a wider synonym list than forgerytalker.regions)",
    )
    parser.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--shard-size", type=int, help="records per parquet shard (default 1000)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing converted folder at --out")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ..data.mmtt import DEFAULT_SHARD_SIZE, convert_mmtt
    from ..data.validation import BadRecordError

    try:
        result = convert_mmtt(
            args.mmtt_root,
            args.out,
            test_fraction=args.test_fraction if args.test_split else None,
            strict=args.strict,
            trust_multilabel=args.trust_multilabel,
            num_proc=args.num_proc,
            shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
            overwrite=args.overwrite,
        )
    except (BadRecordError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0
