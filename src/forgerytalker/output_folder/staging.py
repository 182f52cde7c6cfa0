"""Writing a folder beside its destination and putting it in place by renames once it is complete.

    .OUT.partial   the folder being written (a re-run of the same work may resume it)
    .OUT.replaced  the earlier OUT, moved aside during the swap; its own files are deleted after it

`swap_in` replaces OUT by two renames (OUT → .OUT.replaced, .OUT.partial → OUT), then deletes the files the earlier
folder's manifest lists. A run killed between the renames leaves `.OUT.replaced` and no OUT: `recover_swap`, called
by the next run, renames it back; one killed after them has its `.OUT.replaced` cleared the same way.
`replacing` (and `write_folder`, built on it) holds the command's lock beside OUT from the first check to the swap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .lock import locked
from .manifest import Owner, write_manifest
from .ownership import check_replaceable, remove_owned
from .writable import check_writable

logger = logging.getLogger(__name__)


def sibling(output_dir: str | os.PathLike, suffix: str) -> Path:
    """The hidden sibling `.<name>.<suffix>` of `output_dir` (same file system, so renames are atomic)."""
    output_dir = Path(output_dir)
    return output_dir.parent / f".{output_dir.name}.{suffix}"


def recover_swap(output_dir: str | os.PathLike, owner: Owner) -> None:
    """Undoes what a run killed inside `swap_in` left behind (module docstring)."""
    output_dir = Path(output_dir)
    retired = sibling(output_dir, "replaced")
    if not retired.exists():
        return
    if not os.path.lexists(output_dir):
        logger.warning("Restoring %s, moved aside by a run that was stopped while replacing it", output_dir)
        os.rename(retired, output_dir)
    else:
        logger.info("Removing %s, the folder a finished replacement left behind", retired)
        _remove_retired(retired, owner)


def _remove_retired(retired: Path, owner: Owner, legacy_own: Callable[[Path], bool] | None = None) -> None:
    kept = remove_owned(retired, owner, legacy_own)
    if kept:
        logger.warning("Left %s in place: it holds files the command did not write (%s)", retired, ", ".join(kept[:5]))


def swap_in(
    staging_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    owner: Owner,
    *,
    legacy_own: Callable[[Path], bool] | None = None,
) -> None:
    """Moves the complete `staging_dir` to `output_dir` by renames, replacing an earlier folder there only when it
    holds nothing but its command's files (`check_replaceable`, checked again here: files may have appeared)."""
    staging_dir, output_dir = Path(staging_dir), Path(output_dir)
    if output_dir.is_dir() and not output_dir.is_symlink() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if not os.path.lexists(output_dir):
        os.rename(staging_dir, output_dir)
        return
    check_replaceable(output_dir, owner, overwrite=True, legacy_own=legacy_own)
    retired = sibling(output_dir, "replaced")
    os.rename(output_dir, retired)
    os.rename(staging_dir, output_dir)
    _remove_retired(retired, owner, legacy_own)


@contextlib.contextmanager
def replacing(
    output_dir: str | os.PathLike, owner: Owner, *, overwrite: bool, option: str = "--out"
) -> Iterator[Callable[[Callable[[Path], None]], None]]:
    """Prepares writing `output_dir` whole: for the block, holds `owner`'s lock beside it (a second run is refused),
    after undoing a swap a killed run left (`recover_swap`) and refusing a folder that cannot be written or replaced,
    all before the block computes what to write. Yields `install(write)`, which runs `write(folder)` into a fresh
    `.OUT.partial`, records its files as `owner`'s and swaps it into place (`swap_in`, which checks the earlier
    folder again).

    Raises:
        OutputFolderError: the folder is a file, under one or not writable; another run holds the lock; or
            `check_replaceable` refuses it (`ForeignFilesError`). The message names the folder, not `option`.
    """
    output_dir = Path(check_writable(output_dir, beside=True))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with locked(output_dir, owner.command, option, beside=True):
        recover_swap(output_dir, owner)
        check_replaceable(output_dir, owner, overwrite=overwrite)

        def install(write: Callable[[Path], None]) -> None:
            partial = sibling(output_dir, "partial")
            if partial.exists():
                shutil.rmtree(partial)  # left by a killed run: only ever written here
            partial.mkdir()
            try:
                write(partial)
                write_manifest(partial, owner)
                swap_in(partial, output_dir, owner)
            finally:
                shutil.rmtree(partial, ignore_errors=True)

        yield install


def write_folder(
    output_dir: str | os.PathLike, write: Callable[[Path], None], owner: Owner, *, overwrite: bool, option: str = "--out"
) -> None:
    """Writes `output_dir` whole by `write(folder)`, staged and swapped in under the lock (`replacing`)."""
    with replacing(output_dir, owner, overwrite=overwrite, option=option) as install:
        install(write)


__all__ = ["recover_swap", "replacing", "sibling", "swap_in", "write_folder"]
