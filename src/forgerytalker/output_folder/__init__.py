"""The one owner of output folders: every command that writes a folder (`data convert`, `data synthesize`,
training, `evaluate`, `analyze`, `convert-checkpoint`, `push --dry-run`) follows this policy.

- **A manifest of what the command wrote.** `MANIFEST_NAME` (`.forgerytalker-files.json`) lists every file the
  command wrote into the folder (relative path → size) and which command wrote it (`manifest`): only files a
  manifest of the same command lists are its own, so one command never replaces another's folder. The records a
  command's earlier versions kept (its `Owner.legacy_records`: evaluate's `evaluation_manifest.json`, the `files` of
  data convert's `conversion_report.json`) are read too, so folders written before keep working. Every entry of
  every record must stay inside the folder (`contained_paths`).
- **Foreign files are refused.** A file the command would delete, replace or write over that no manifest lists
  with its size, is the user's: the command stops with an error naming it, with or without `--overwrite`, and
  nothing is deleted (`ownership`).
- **Staged, then swapped.** A folder written whole is written beside its destination (`.NAME.partial`) and moved
  into place by renames only when complete; a kill between the renames is undone by the next run (`staging`).
- **Checked before any work.** A folder that is a file, lies under a file or cannot be written to is refused before
  the command loads or reads anything, the message naming the option that chose it (`writable`).
- **Locked against a second writer.** A run holds `.forgerytalker-<command>.lock` while it writes (`lock`).
- **Resumed only with the same settings.** Finished work is kept only for a run with the same settings; another
  run is refused naming each setting that differs (`resume.changed_settings`).
- **Fingerprinted.** What the outputs depend on is recorded so that a re-run never keeps outputs made from other
  inputs: input files by size, modification time and SHA-256, the model by its weights (`fingerprints`).

Each command describes itself once as an `Owner` (its name in manifests and messages, its `--overwrite` flag, the
records its earlier versions kept) and passes it to every function here; what only it can recognise (a folder its
earlier versions wrote without any record) it passes as `legacy_own`.
"""

from .fingerprints import file_fingerprint
from .lock import FolderLockedError, hold_lock, lock_name, locked
from .manifest import (
    MANIFEST_NAME,
    ForeignFilesError,
    OutputFolderError,
    Owner,
    files_in,
    read_manifest,
    write_manifest,
)
from .ownership import check_no_foreign, check_replaceable, foreign_files, remove_owned, shown_names
from .resume import changed_settings
from .staging import recover_swap, replacing, sibling, swap_in, write_folder
from .writable import check_writable, make_writable, nearest_existing

__all__ = [
    "MANIFEST_NAME",
    "FolderLockedError",
    "ForeignFilesError",
    "OutputFolderError",
    "Owner",
    "changed_settings",
    "check_no_foreign",
    "check_replaceable",
    "check_writable",
    "file_fingerprint",
    "files_in",
    "foreign_files",
    "hold_lock",
    "lock_name",
    "locked",
    "make_writable",
    "nearest_existing",
    "read_manifest",
    "recover_swap",
    "remove_owned",
    "replacing",
    "shown_names",
    "sibling",
    "swap_in",
    "write_folder",
    "write_manifest",
]
