"""The loop behind `forgerytalker analyze`: photos in, per photo a mask, a heatmap figure and a JSON record out.

Reading (decoding, finding and aligning the faces) runs in a process of its own a few batches ahead of the model
(`reader_process`), and writing (mapping the faces' masks back onto the photo, the mask PNG, the figure, the record)
in another behind it (`writer_process`), so that the command's own process only runs the model on the face crops and
is rarely kept waiting. Photos that cannot be read get an error record and the run goes on. Under `accelerate
launch` each process takes every n-th unfinished photo; the caller merges `results.jsonl` once all are done
(`outputs.write_results`).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..image_utils import ImageReadError
from ..output_folder import file_fingerprint
from .face_crops import FaceOptions, answers_per_photo, merge_faces, shared_finder
from .inputs import PhotoInput
from .outputs import atomic_write_json, atomic_write_png, is_finished, read_record
from .overlay import draw_analysis_figure
from .photos import Photo, read_photo
from .reader_process import PhotoReaderProcess, ReaderProcessDied
from .side_process import NeverRan
from .records import ForgeryAnalysis, error_record, skipped_record
from .writer_process import PhotoWriterProcess, PhotoWriterThread, WriterProcessDied, writer_for

logger = logging.getLogger(__name__)


@dataclass
class AnalysisOptions:
    """How each photo is analysed.

    Attributes:
        regions: regions to name in the instruction instead of the prompter's (`None`: the prompter's).
        mask_threshold: overrides the checkpoint's `config.mask_threshold`.
        generate_kwargs: generation arguments overriding the checkpoint's `generation_config`.
        batch_size: model inputs (faces, or whole photos) per `generate` call.
        faces: which faces are analysed, their minimum size, and what happens without one (`face_crops`).
        max_image_pixels: pixel limit checked before decoding (`None`: `image_utils.max_image_pixels()`).
        draw_overlay: write each photo's heatmap figure (drawing and encoding it costs about 50 ms a photo on
            one core; very large runs may leave it out).
    """

    regions: list[str] | None = None
    mask_threshold: float | None = None
    generate_kwargs: dict | None = None
    batch_size: int = 1
    faces: FaceOptions = field(default_factory=FaceOptions)
    max_image_pixels: int | None = None
    draw_overlay: bool = True


def pipeline_kwargs(options: AnalysisOptions) -> dict:
    """The keyword arguments of a `forgery-analysis` pipeline call for `options` (batch size aside)."""
    kwargs = dict(options.generate_kwargs or {})
    if options.regions is not None:
        kwargs["regions"] = list(options.regions)
    if options.mask_threshold is not None:
        kwargs["mask_threshold"] = options.mask_threshold
    return kwargs


class PhotoReader:
    """Reads photos for analysis: `photos.read_photo`, then its faces found and aligned (`face_crops.FaceFinder`,
    whose dlib models start loading in the background when the reader is made)."""

    def __init__(self, faces: FaceOptions | None = None, max_image_pixels: int | None = None):
        self.faces = faces or FaceOptions()
        self.finder = shared_finder().start() if self.faces.faces != "whole" else shared_finder()
        self.max_image_pixels = max_image_pixels

    def __call__(self, source, name: str | None = None, regions: list[str] | None = None) -> Photo:
        photo = read_photo(source, max_pixels=self.max_image_pixels, name=name)
        photo.found = self.finder(photo.image, self.faces, regions)
        return photo


def model_name(pipe) -> str:
    return str(getattr(pipe.model, "name_or_path", "") or type(pipe.model).__name__)


def analyses(pipe, photos: Iterable[Photo], options: AnalysisOptions) -> Iterator[tuple[Photo, list[dict]]]:
    """Runs the pipeline over the model inputs of `photos` (a stream, faces found: `FacePhoto.model_inputs`, one per
    face crop or the whole picture), `options.batch_size` inputs at a time; yields each photo with the pipeline's
    answer for each of its inputs (none for a photo skipped for want of a face). `write_analysis` merges them."""
    run = functools.partial(pipe, batch_size=options.batch_size, faces="whole", **pipeline_kwargs(options))
    yield from answers_per_photo(((photo, photo.found.model_inputs()) for photo in photos), run)


def _read_ahead(
    reader: PhotoReaderProcess, items: Sequence[PhotoInput], lookahead: int
) -> Iterator[tuple[PhotoInput, Photo | ImageReadError]]:
    """`(item, its Photo, or the error naming it)` in order, at most `lookahead` photos read ahead by the reader
    process; a photo that kills the process gets its error and a new process reads the rest."""
    waiting: deque[PhotoInput] = deque(items)
    queue: deque[tuple[PhotoInput, Future]] = deque()
    while waiting or queue:
        while waiting and len(queue) <= lookahead:
            item = waiting.popleft()
            queue.append((item, reader.read(item.path)))
        item, future = queue.popleft()
        try:
            photo = reader.photo(future, item.path)
        except NeverRan:  # the process had died before this photo was asked for: it and the rest are read again
            waiting.extendleft(reversed([item, *(queued for queued, _ in queue)]))
            queue.clear()
            reader.restart()
            continue
        except ReaderProcessDied as error:  # it died on this photo: the rest are read again
            waiting.extendleft(reversed([queued for queued, _ in queue]))
            queue.clear()
            reader.restart()
            photo = error
        except ImageReadError as error:
            photo = error
        yield item, photo


def write_photo_outputs(
    out_dir: Path,
    item: PhotoInput,
    photo: Photo,
    analysis: ForgeryAnalysis | None,
    draw_overlay: bool = True,
    model: str | None = None,
) -> dict:
    """Writes the mask, the figure, then the record (the finished mark) of one photo; returns the record.

    A photo skipped for want of a face (`analysis` is `None`) gets only its record, which says why."""
    if analysis is None:
        record = skipped_record(item.path, photo.found.skipped, photo.found.face_count, photo.notes + photo.found.warnings, model)
        record["source"] = file_fingerprint(item.path)
        atomic_write_json(out_dir / item.output("record"), record)
        (out_dir / item.output("error")).unlink(missing_ok=True)
        return record
    outputs = {kind: item.output(kind) for kind in ("mask", "overlay", "record") if draw_overlay or kind != "overlay"}
    atomic_write_png(out_dir / outputs["mask"], analysis.mask)
    if draw_overlay:
        atomic_write_png(out_dir / outputs["overlay"], draw_analysis_figure(photo.image, analysis, title=item.path))
    record = {**analysis.to_record(outputs), "source": file_fingerprint(item.path)}
    atomic_write_json(out_dir / outputs["record"], record)
    (out_dir / item.output("error")).unlink(missing_ok=True)
    return record


def write_error(out_dir: Path, item: PhotoInput, message: str, model: str) -> dict:
    record = error_record(item.path, message, model)
    try:
        atomic_write_json(out_dir / item.output("error"), record)
    except OSError as error:
        logger.error("Cannot write the error record of %s: %s", item.path, error)
    return record


def write_analysis(out_dir: Path, photo: Photo, answers: list[dict], draw_overlay: bool, model: str) -> dict:
    """Merges a photo's answers (`analyses`) into its analysis (`face_crops.merge_faces`) and writes its files
    (`write_photo_outputs`; a file that cannot be written gets the photo an error record); returns the record."""
    analysis = None
    if photo.found.skipped is None:
        merged = merge_faces(photo.found, answers)
        analysis = ForgeryAnalysis.from_pipeline_result(merged, image=photo.name, warnings=photo.notes, model=model)
    try:
        return write_photo_outputs(out_dir, photo.item, photo, analysis, draw_overlay, model)
    except OSError as error:
        message = f"{photo.item.path}: the outputs cannot be written ({error})"
        logger.error("%s", message)
        return write_error(out_dir, photo.item, message, model)


def run_analysis(
    pipe,
    photos: Sequence[PhotoInput],
    out_dir: Path,
    options: AnalysisOptions,
    *,
    redo_finished: bool = False,
    process_index: int = 0,
    num_processes: int = 1,
    on_record: Callable[[dict, bool], None] | None = None,
    progress: bool = True,
    wait_for_everyone: Callable[[], None] | None = None,
    reader: PhotoReaderProcess | None = None,
    writer: PhotoWriterProcess | PhotoWriterThread | None = None,
) -> list[dict]:
    """Analyses this process's share of `photos` into `out_dir`.

    Args:
        pipe: a `forgery-analysis` pipeline.
        photos: every photo of the run (all processes), in input order.
        out_dir: the output folder (`outputs.py` for its layout).
        options: how each photo is analysed.
        redo_finished: analyse photos whose record exists again (`--overwrite`); otherwise they are skipped.
        process_index, num_processes: this process takes every `num_processes`-th unfinished photo and reports
            every `num_processes`-th finished one.
        on_record: called with `(record, skipped)` for each photo of this process's share as it is done.
        progress: show a progress bar.
        wait_for_everyone: the processes' barrier; called once every process has seen which photos are finished,
            so that all of them split the same list.
        reader: the reader process to read the photos with, started early by the caller with `options.faces` and
            `options.max_image_pixels` (and left running); by default one is started for this call.
        writer: the writer to write the photos' files with, started early by the caller (and left running); by
            default `writer_process.writer_for` the photos to analyse is started for this call.

    Returns:
        The records of this process's share (skipped photos' stored records included), in completion order. A run
        stopped by an exception (Ctrl-C) first finishes writing the photos the model has analysed.
    """
    report = on_record or (lambda record, skipped: None)
    finished = [photo for photo in photos if not redo_finished and is_finished(out_dir, photo)]
    done = {photo.name for photo in finished}
    todo = [photo for photo in photos if photo.name not in done][process_index::num_processes]
    if wait_for_everyone is not None:
        wait_for_everyone()
    records = []
    for photo in finished[process_index::num_processes]:
        record = read_record(out_dir, photo)
        records.append(record)
        report(record, True)
    if finished:
        logger.info("Skipping %d photo(s) analysed by an earlier run (--overwrite redoes them)", len(finished))
    if reader is not None and (reader.faces, reader.max_image_pixels) != (options.faces, options.max_image_pixels):
        raise ValueError("`reader` reads photos with other `faces` or `max_image_pixels` than `options` asks for")
    if not todo:
        return records
    name = model_name(pipe)
    bar = tqdm(total=len(todo), unit="photo", desc="analyze", disable=not progress)
    lookahead = 2 * options.batch_size + 1
    writing: deque[tuple[Photo, list[dict], Future]] = deque()

    def done_writing(record: dict) -> None:
        records.append(record)
        report(record, False)
        bar.update(1)

    def rewrite_queued() -> None:
        writer.restart()
        for index, (queued, answers, _) in enumerate(writing):
            writing[index] = (queued, answers, writer.write(out_dir, queued, answers, options.draw_overlay, name))

    def finish() -> None:
        """Waits for the oldest photo being written. If the writer died on it, the photo gets an error record; the
        photos queued behind it (and it, if the writer had died before it was given) go to a new writer process."""
        photo, _, future = writing[0]
        try:
            record = writer.record(future, photo.item.path)
        except NeverRan:
            rewrite_queued()
            return
        except WriterProcessDied as error:
            logger.error("%s", error)
            record = write_error(out_dir, photo.item, str(error), name)
            writing.popleft()
            rewrite_queued()
        else:
            writing.popleft()
        done_writing(record)

    with ExitStack() as stack:
        if reader is None:
            reader = stack.enter_context(PhotoReaderProcess(options.faces, options.max_image_pixels))
        if writer is None:
            writer = stack.enter_context(writer_for(len(todo)))

        def readable() -> Iterator[Photo]:
            for item, photo in _read_ahead(reader, todo, lookahead):
                if isinstance(photo, ImageReadError):  # its message names the file
                    logger.debug("%s", photo)
                    done_writing(write_error(out_dir, item, str(photo), name))
                    continue
                photo.item = item
                yield photo

        try:
            for photo, answers in analyses(pipe, readable(), options):
                writing.append((photo, answers, writer.write(out_dir, photo, answers, options.draw_overlay, name)))
                while writing and (writing[0][2].done() or len(writing) > lookahead):
                    finish()
        finally:  # also when stopped: the photos the model has analysed are written before the processes close
            while writing:
                finish()
    bar.close()
    return records


__all__ = [
    "AnalysisOptions",
    "PhotoReader",
    "analyses",
    "pipeline_kwargs",
    "run_analysis",
    "write_analysis",
    "write_photo_outputs",
]
