"""The photo writer of `forgerytalker analyze`: a process of its own that turns each photo's answers into its files.

Per photo it maps the faces' masks back onto the photo (`face_crops.merge_faces`), draws the heatmap figure,
encodes the PNGs and writes the record (`runner.write_analysis`). Drawing and encoding take about as long as the
model's share of a face in a batch and hold Python's lock, so in a thread of the command they would slow
`generate` down; here they run on the other core. `forgerytalker analyze` starts it first thing, with the reader,
so that its imports are done while the model loads; `runner.run_analysis` starts one itself when it is not given
one.

The process ends with the photo it was writing if that photo's files cannot be made (a crash in a native encoder):
`record` raises `WriterProcessDied` naming the file, and `restart()` starts a new process for the rest
(`side_process` for how the process is run).

A run of a few photos gains nothing from a process of its own and pays for its start (about 0.15 s of
`forgerytalker analyze one.jpg`, measured against the thread it replaced): `writer_for(photo_count)` gives a run
of fewer than `side_process.LONG_RUN_PHOTOS` photos a `PhotoWriterThread`, the same writing in a thread of the
command's process.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .side_process import LONG_RUN_PHOTOS, SideProcess


class WriterProcessDied(RuntimeError):
    """The writer process ended while writing a photo's files; the message names the photo."""


def _start_writer() -> None:
    """Runs first in the writer process: what writing needs is imported before the first photo comes."""
    from . import runner  # noqa: F401
    from ..data.synthesis import faces  # noqa: F401  (the inverse warp of `merge_faces`)
    from ..evaluation import detection_metrics  # noqa: F401


def _write(out_dir: Path, photo, answers: list[dict], draw_overlay: bool, model: str) -> dict:
    from .runner import write_analysis

    return write_analysis(out_dir, photo, answers, draw_overlay, model)


class PhotoWriterProcess(SideProcess):
    """Writes each photo's mask, figure and record (`runner.write_analysis`) in a separate process, started at once.

    Use it as a context manager, or call `close()`: the process ends once the photo it is writing is done.
    """

    def __init__(self):
        super().__init__(_start_writer)

    def write(self, out_dir: Path, photo, answers: list[dict], draw_overlay: bool, model: str) -> Future:
        """A future of the record of `photo` (a `photos.Photo` with its faces found and its `item`) once its files are
        written from `answers` (the pipeline's answer for each of its model inputs)."""
        return self.submit(_write, out_dir, photo, answers, draw_overlay, model)

    def record(self, future: Future, path: str) -> dict:
        """The record that `future` writes.

        Raises:
            WriterProcessDied: the process ended while writing it (`restart()` starts another one).
            NeverRan: the process had ended before the photo was given (`restart()`, then write it again).
        """
        return self.result(future, WriterProcessDied(
            f"{path}: the photo writer process ended while writing this photo's files (a crash in the image encoder)"
        ))


class PhotoWriterThread:
    """`PhotoWriterProcess`'s writing in a thread of the command's own process, for runs of a few photos."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyze-write")

    def write(self, out_dir: Path, photo, answers: list[dict], draw_overlay: bool, model: str) -> Future:
        """As `PhotoWriterProcess.write`."""
        return self._pool.submit(_write, out_dir, photo, answers, draw_overlay, model)

    def record(self, future: Future, path: str) -> dict:
        """As `PhotoWriterProcess.record` (a thread does not die with the photo it writes)."""
        return future.result()

    def restart(self) -> None:
        """Nothing to restart: a thread does not die with the photo it writes."""

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> PhotoWriterThread:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def writer_for(photo_count: int) -> PhotoWriterProcess | PhotoWriterThread:
    """The writer for a run of `photo_count` photos: a `PhotoWriterProcess` for a run of at least
    `side_process.LONG_RUN_PHOTOS` (it saves about 10 ms of `generate` a face: drawing and encoding hold Python's
    lock), a `PhotoWriterThread` for a shorter one."""
    return PhotoWriterProcess() if photo_count >= LONG_RUN_PHOTOS else PhotoWriterThread()


__all__ = ["PhotoWriterProcess", "PhotoWriterThread", "WriterProcessDied", "writer_for"]
