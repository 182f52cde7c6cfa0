"""Which photos an `analyze` run reads, and the names of their outputs.

PATH arguments may be files, folders (searched recursively for `image_utils.IMAGE_SUFFIXES`) or glob patterns
(`"faces/**/*.jpg"`, quoted so that the shell leaves them alone). Every photo's outputs are named after its path
relative to the folder that all the photos share, with its suffix kept so that `a.jpg` and `a.png` stay apart:

    faces/x.jpg, faces/sub/y.png   →   OUT/x.jpg.json, OUT/x.jpg.mask.png, OUT/x.jpg.overlay.png,
                                       OUT/sub/y.png.json, ...
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..image_utils import IMAGE_SUFFIXES, is_image_file

OUTPUT_KINDS = {"record": ".json", "mask": ".mask.png", "overlay": ".overlay.png"}
"""Output kind → the suffix appended to a photo's name. The record is written last: it marks a finished photo."""
ERROR_SUFFIX = ".error.json"
"""The record of a photo that failed; replaced by its `.json` when a later run succeeds."""
_GLOB_CHARACTERS = frozenset("*?[")


class InputPathError(ValueError):
    """A PATH argument names nothing usable; the message names the argument."""


@dataclass(frozen=True)
class PhotoInput:
    """One photo of a run.

    Attributes:
        path: the file, as found (relative paths stay relative to the working folder).
        name: its output name, relative to the output folder, with `/` separators (`sub/y.png`).
    """

    path: str
    name: str

    def output(self, kind: str) -> str:
        """The output file of `kind` ("record", "mask", "overlay" or "error"), relative to the output folder."""
        return self.name + (ERROR_SUFFIX if kind == "error" else OUTPUT_KINDS[kind])


def _inside(path: str, folder: str | None) -> bool:
    """Whether `path` lies in `folder` (a resolved path), links followed: an output folder reached through a link
    into the inputs is still the output folder."""
    return folder is not None and os.path.commonpath([os.path.realpath(path), folder]) == folder


def _expand(argument: str, exclude: str | None) -> list[str]:
    if os.path.isdir(argument):
        # a broken link is a photo that cannot be read: it gets an error record rather than silence
        found = [str(path) for path in Path(argument).rglob("*") if (path.is_file() or path.is_symlink()) and is_image_file(path)]
        return sorted(path for path in found if not _inside(path, exclude))
    if os.path.lexists(argument):
        return [argument]
    if _GLOB_CHARACTERS & set(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        files = [match for match in matches if os.path.isfile(match) and is_image_file(match)]
        folders = [found for match in matches if os.path.isdir(match) for found in _expand(match, exclude)]
        return [path for path in files if not _inside(path, exclude)] + folders
    raise InputPathError(f"{argument}: no such file or folder")


def collect_photos(arguments: list[str], exclude: str | os.PathLike | None = None) -> list[PhotoInput]:
    """The photos named by PATH arguments, in argument order, each once, with their output names.

    A file named explicitly is read whatever its suffix (so a mislabelled picture gets a clear error record);
    folders and globs contribute only files with a picture suffix, outside `exclude` (the output folder, whose
    figures are pictures too).

    Raises:
        InputPathError: an argument names nothing, or a folder or glob holds no picture.
    """
    paths: list[str] = []
    seen: set[str] = set()
    exclude = None if exclude is None else os.path.realpath(exclude)
    for argument in arguments:
        found = _expand(argument, exclude)
        if not found:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise InputPathError(f"{argument}: holds no picture file (pictures end in {suffixes})")
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    parents = [os.path.dirname(os.path.abspath(path)) for path in paths]
    root = os.path.commonpath(parents) if parents else ""
    return [PhotoInput(path, Path(os.path.relpath(os.path.abspath(path), root)).as_posix()) for path in paths]


__all__ = ["ERROR_SUFFIX", "OUTPUT_KINDS", "InputPathError", "PhotoInput", "collect_photos"]
