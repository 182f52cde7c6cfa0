"""The photo reader of `forgerytalker analyze`: a process of its own that decodes photos and finds and aligns their faces.

Finding and aligning faces (`face_crops.FaceFinder`: dlib's detector and 68-point landmark model) holds Python's
lock, and setting dlib's models up takes most of a second of it, so in a thread of the command it competes with the
model. `forgerytalker analyze` starts this process first thing, before torch is imported: dlib's models load and the
first photos are read on another core while torch, transformers and the model load in the command's process.
It can be asked for the first photos before the model is loaded (`prefetch`).
`runner.run_analysis` starts one itself when it is not given one. The faces are found by the same `PhotoReader`
in either place, so the results are the same.

The process is started with `spawn` (it never inherits torch's threads), ignores Ctrl-C (the command stops it once
the photo it is reading is done) and is killed with the process that started it however that ends, on Linux
(`data.workers.die_with_parent`). A photo that kills it (a crash in a native decoder or in dlib) raises
`ReaderProcessDied` naming the file; `restart()` starts a new process for the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..image_utils import ImageReadError
from .face_crops import FaceOptions

_reader = None
"""The reader process's `runner.PhotoReader`."""


class ReaderProcessDied(ImageReadError):
    """The reader process ended while reading a photo; the message names the file."""


def _start_reader(faces: FaceOptions, max_image_pixels: int | None, parent_pid: int) -> None:
    """Runs first in the reader process: it dies with its parent, Ctrl-C is left to the parent, and the
    `PhotoReader` starts loading dlib's models."""
    global _reader
    from ..data.workers import die_with_parent
    from .runner import PhotoReader

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _reader = PhotoReader(faces, max_image_pixels)


def _read(path: str):
    return _reader(path, path)


class PhotoReaderProcess:
    """Reads photos (`runner.PhotoReader` with these options) in a separate process, started at once.

    Args:
        faces (`FaceOptions`): which faces are found and aligned.
        max_image_pixels (`int`, *optional*): pixel limit checked before decoding (`photos.read_photo`).

    Use it as a context manager, or call `close()`: the process ends once the photo it is reading is done.
    """

    def __init__(self, faces: FaceOptions | None = None, max_image_pixels: int | None = None):
        self.faces = faces or FaceOptions()
        self.max_image_pixels = max_image_pixels
        self._pool = None
        self._prefetched: dict[str, Future] = {}
        self.restart()

    def restart(self) -> None:
        """Starts a new process (after one died), dropping the photos the old one was asked to read."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._prefetched.clear()
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_reader,
            initargs=(self.faces, self.max_image_pixels, os.getpid()),
        )
        self._pool.submit(int)  # the process starts now, not at the first photo

    def prefetch(self, paths: list[str]) -> None:
        """Starts reading `paths` now; the next `read` of each takes the photo read here."""
        for path in paths:
            if path not in self._prefetched:
                self._prefetched[path] = self._pool.submit(_read, path)

    def read(self, path: str) -> Future:
        """A future of the `Photo` at `path`, its faces found (`photo(future, path)` waits for it)."""
        prefetched = self._prefetched.pop(path, None)
        return prefetched if prefetched is not None else self._pool.submit(_read, path)

    @staticmethod
    def photo(future: Future, path: str):
        """The `Photo` that `future` reads.

        Raises:
            ImageReadError: the photo cannot be read; the message names the file.
            ReaderProcessDied: the process ended while reading it (`restart()` starts another one).
        """
        try:
            return future.result()
        except BrokenProcessPool:
            raise ReaderProcessDied(
                f"{path}: the photo reader process ended while reading this file (a crash in the image decoder or in "
                "dlib's face detector)"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PhotoReaderProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["PhotoReaderProcess", "ReaderProcessDied"]
