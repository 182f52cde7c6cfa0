"""Putting a finished conversion in place through the shared output-folder policy (`forgerytalker.output_folder`).

A conversion is written into `.OUT.partial` (resumable, `mmtt`), records its files in the shared manifest (and, as
the dataset's own listing, in the `files` of `conversion_report.json`, which older converted folders carry alone),
and is swapped into place by renames (`output_folder.swap_in`). `overwrite=True` replaces only a folder holding
nothing but the files a manifest lists with their size; anything else stops it before anything is deleted.
"""

from __future__ import annotations

from pathlib import Path

from ..output_folder import ForeignFilesError, Owner, recover_swap, sibling, swap_in, write_manifest
from ..output_folder import check_replaceable as check_folder_replaceable
from .errors import DataInputError, option

REPORT_FILE = "conversion_report.json"
OWNER = Owner("forgerytalker data convert", who="the converter", overwrite_flag=option("overwrite"),
              legacy_records=(REPORT_FILE,))  # fmt: skip


def _as_input_error(error: ForeignFilesError) -> DataInputError:
    return DataInputError(f"{option('output_dir')}: {error}")


def check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuses an existing `output_dir` unless it is empty, or a converted folder holding only its own files and
    `overwrite` is set. Nothing is deleted here.

    Raises:
        DataInputError: naming `output_dir` and what stops the replacement.
    """
    try:
        check_folder_replaceable(output_dir, OWNER, overwrite=overwrite)
    except ForeignFilesError as error:
        raise _as_input_error(error) from None


def record_files(staging_dir: Path) -> None:
    """Records every file of the finished `staging_dir` in the shared manifest."""
    write_manifest(staging_dir, OWNER)


def recover_interrupted_replace(output_dir: Path) -> None:
    """Undoes what a conversion killed while replacing `output_dir` left behind (`output_folder.recover_swap`)."""
    try:
        recover_swap(output_dir, OWNER)
    except ForeignFilesError as error:
        raise _as_input_error(error) from None


def publish(staging_dir: Path, output_dir: Path) -> None:
    """Moves the finished `staging_dir` to `output_dir` by renames, replacing a converted folder there."""
    try:
        swap_in(staging_dir, output_dir, OWNER)
    except ForeignFilesError as error:
        raise _as_input_error(error) from None


__all__ = ["OWNER", "REPORT_FILE", "check_replaceable", "publish", "record_files", "recover_interrupted_replace", "sibling"]
