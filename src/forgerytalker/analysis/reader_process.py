"""The photo reader of `forgerytalker analyze`: a process of its own that decodes photos and finds and aligns their faces.

Finding and aligning faces (`face_crops.FaceFinder`: dlib's detector and 68-point landmark model) holds Python's
lock, and setting dlib's models up takes most of a second of it, so in a thread of the command it competes with the
model. `forgerytalker analyze` starts this process first thing, before torch is imported: dlib's models load and the
first photos are read on another core while torch, transformers and the model load in the command's process.
It can be asked for the first photos before the model is loaded (`prefetch`).
`runner.run_analysis` starts one itself when it is not given one. The faces are found by the same `PhotoReader`
in either place, so the results are the same.

A photo that kills the process (a crash in a native decoder or in dlib) raises `ReaderProcessDied` naming the file;
`restart()` starts a new process for the rest (`side_process` for how the process is run).
"""

from __future__ import annotations

from concurrent.futures import Future

from ..image_utils import ImageReadError
from .face_crops import FaceOptions
from .side_process import SideProcess

_reader = None
"""The reader process's `runner.PhotoReader`."""


class ReaderProcessDied(ImageReadError):
    """The reader process ended while reading a photo; the message names the file."""


def _start_reader(faces: FaceOptions, max_image_pixels: int | None) -> None:
    """Runs first in the reader process: the `PhotoReader` starts loading dlib's models."""
    global _reader
    from .runner import PhotoReader

    _reader = PhotoReader(faces, max_image_pixels)


def _read(path: str):
    return _reader(path, path)


class PhotoReaderProcess(SideProcess):
    """Reads photos (`runner.PhotoReader` with these options) in a separate process, started at once.

    Args:
        faces (`FaceOptions`): which faces are found and aligned.
        max_image_pixels (`int`, *optional*): pixel limit checked before decoding (`photos.read_photo`).

    Use it as a context manager, or call `close()`: the process ends once the photo it is reading is done.
    """

    def __init__(self, faces: FaceOptions | None = None, max_image_pixels: int | None = None):
        self.faces = faces or FaceOptions()
        self.max_image_pixels = max_image_pixels
        self._prefetched: dict[str, Future] = {}
        super().__init__(_start_reader, (self.faces, self.max_image_pixels))

    def restart(self) -> None:
        """Starts a new process (after one died), dropping the photos the old one was asked to read."""
        self._prefetched.clear()
        super().restart()

    def prefetch(self, paths: list[str]) -> None:
        """Starts reading `paths` now; the next `read` of each takes the photo read here."""
        for path in paths:
            if path not in self._prefetched:
                self._prefetched[path] = self.submit(_read, path)

    def read(self, path: str) -> Future:
        """A future of the `Photo` at `path`, its faces found (`photo(future, path)` waits for it)."""
        prefetched = self._prefetched.pop(path, None)
        return prefetched if prefetched is not None else self.submit(_read, path)

    def photo(self, future: Future, path: str):
        """The `Photo` that `future` reads.

        Raises:
            ImageReadError: the photo cannot be read; the message names the file.
            ReaderProcessDied: the process ended while reading it (`restart()` starts another one).
            NeverRan: the process had ended before the photo was asked for (`restart()`, then read it again).
        """
        return self.result(future, ReaderProcessDied(
            f"{path}: the photo reader process ended while reading this file (a crash in the image decoder or in "
            "dlib's face detector)"
        ))


__all__ = ["PhotoReaderProcess", "ReaderProcessDied"]
