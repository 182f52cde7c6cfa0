"""`forgerytalker push`: upload a model (with its processor and model card) or a converted dataset to the Hub.

`--dry-run` writes the exact folder that would be uploaded and uploads nothing. The Hub token is the one
huggingface_hub finds (`hf auth login`, or `HF_TOKEN`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .arguments import fail


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a model (with a model card) or a converted dataset to the Hugging Face Hub",
        description=(
            "Uploads a checkpoint folder (--model: model, processor, metrics.json and a generated README.md model "
            "card) or a folder written by `forgerytalker data convert` (--dataset: parquet shards and its dataset "
            "card) to the repository --repo-id. --dry-run writes the folder that would be uploaded instead."
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="DIR", help="a checkpoint folder (save_pretrained output)")
    what.add_argument("--dataset", metavar="DIR", help="a dataset folder written by `forgerytalker data convert`")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="write the folder that would be uploaded; upload nothing")
    parser.add_argument("--out", metavar="DIR", help="with --dry-run: where to write it (default: ./NAME-upload)")
    parser.add_argument("--license", default="other", help="model card: Hub licence id (default: other)")
    parser.add_argument("--base-model", help="model card: Hub id of the InstructBLIP it was built around")
    parser.add_argument(
        "--dataset-id", action="append", default=[], metavar="ORG/NAME", help="model card: a Hub dataset it was trained on (repeatable)"
    )
    parser.add_argument("--metrics", metavar="FILE", help="model card: the metrics.json of `forgerytalker evaluate` (default: DIR/metrics.json)")
    parser.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    from ..output_folder import OutputFolderError, Owner, write_folder
    from ..publish import PublishError, check_repo_id, describe_folder, stage_dataset, stage_model, upload_folder

    try:
        check_repo_id(args.repo_id)
    except PublishError as error:
        return fail(f"--repo-id: {error}", 2)
    option, folder = ("--model", args.model) if args.model else ("--dataset", args.dataset)
    if not os.path.isdir(folder):
        return fail(f"{option}: no such folder: {folder}", 2)
    if args.out and not args.dry_run:
        return fail("--out: only with --dry-run (a real push uploads from a temporary folder)", 2)
    if args.metrics and not args.model:
        return fail("--metrics: only with --model", 2)
    out = Path(args.out or f"{args.repo_id.split('/')[-1]}-upload")
    if args.dry_run and out.exists() and (not out.is_dir() or any(out.iterdir())):
        return fail(f"--out: {out} already exists; choose another folder or remove it", 2)

    def stage(target: Path) -> None:
        if args.model:
            stage_model(
                args.model, target, args.repo_id, license=args.license, datasets=args.dataset_id,
                base_model=args.base_model, metrics_file=args.metrics,
            )
        else:
            stage_dataset(args.dataset, target)

    try:
        if args.dry_run:
            write_folder(out, stage, Owner("forgerytalker push"), overwrite=False)  # staged beside, then swapped in
            print(f"Dry run: this folder would be uploaded to {args.repo_id}: {out}\n{describe_folder(out)}")
            return 0
        with tempfile.TemporaryDirectory(prefix="forgerytalker-push-") as staging:
            stage(Path(staging))
            try:
                url = upload_folder(staging, args.repo_id, "model" if args.model else "dataset", args.private)
            except Exception as error:  # huggingface_hub's HTTP, offline and permission errors
                print(f"error: the upload to {args.repo_id} failed: {error}", file=sys.stderr)
                return 1
    except PublishError as error:
        return fail(f"{option}: {error}", 2)
    except OutputFolderError as error:  # --out unwritable, another run staging into it, or files appeared in it
        return fail(f"--out: {error}", 2)
    print(f"Uploaded {folder} to {args.repo_id}: {url}")
    return 0
