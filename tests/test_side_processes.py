"""`forgerytalker analyze`'s side processes. The photo reader: the same faces as in the command's own process,
unreadable photos named without stopping it, a dead process named and replaced, and photos read before the model
asks for them. Both: a run whose reader or writer dies goes on with a new one, and only the photo the process died
on gets an error record."""

from __future__ import annotations

import os
import shutil
import signal
import time

import numpy as np
import pytest

from forgerytalker.analysis.face_crops import FaceOptions
from forgerytalker.analysis.reader_process import PhotoReaderProcess, ReaderProcessDied
from forgerytalker.analysis.inputs import collect_photos
from forgerytalker.analysis.runner import AnalysisOptions, PhotoReader, run_analysis
from forgerytalker.analysis.api import load_analyzer
from forgerytalker.analysis.side_process import LONG_RUN_PHOTOS, NeverRan
from forgerytalker.analysis.writer_process import PhotoWriterProcess, PhotoWriterThread, writer_for
from forgerytalker.image_utils import ImageReadError


@pytest.fixture(scope="module")
def reader():
    with PhotoReaderProcess(FaceOptions(min_face_size=40)) as process:
        yield process


def _faces(photo) -> list[tuple]:
    return [(crop.box, crop.detection_score, crop.matrix.tobytes(), np.asarray(crop.image).tobytes())
            for crop in photo.found.crops]


def test_the_reader_process_finds_and_aligns_the_faces_the_command_s_process_would(reader, face_photos_dir):
    here = PhotoReader(FaceOptions(min_face_size=40))
    for name in ("astronaut.png", "grace_hopper.jpg"):
        path = str(face_photos_dir / name)
        photo = reader.photo(reader.read(path), path)
        expected = here(path, path)
        assert photo.name == path and len(photo.found.crops) == 1
        assert _faces(photo) == _faces(expected)
        assert np.array_equal(np.asarray(photo.image), np.asarray(expected.image))
        assert (photo.found.mode, photo.found.face_count, photo.notes) == (expected.found.mode, expected.found.face_count, expected.notes)


def test_an_unreadable_photo_is_named_and_the_next_one_is_still_read(reader, tmp_path, face_photos_dir):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((face_photos_dir / "grace_hopper.jpg").read_bytes()[:300])
    with pytest.raises(ImageReadError, match="broken.jpg"):
        reader.photo(reader.read(str(broken)), str(broken))
    path = str(face_photos_dir / "grace_hopper.jpg")
    assert len(reader.photo(reader.read(path), path).found.crops) == 1


def test_prefetched_photos_are_taken_once_by_the_next_read(reader, face_photos_dir):
    path = str(face_photos_dir / "astronaut.png")
    reader.prefetch([path])
    prefetched = reader._prefetched[path]
    assert reader.read(path) is prefetched
    again = reader.read(path)
    assert again is not prefetched and _faces(reader.photo(again, path)) == _faces(reader.photo(prefetched, path))


def test_a_reader_process_that_dies_is_named_with_the_photo_and_a_restart_reads_on(face_photos_dir):
    path = str(face_photos_dir / "grace_hopper.jpg")
    with PhotoReaderProcess() as reader:
        future = reader.read(path)
        for process in list(reader._pool._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(ReaderProcessDied, match="grace_hopper.jpg: the photo reader process ended"):
            reader.photo(future, path)
        reader.restart()
        assert len(reader.photo(reader.read(path), path).found.crops) == 1


CRASHING_PHOTO = "grace_3.jpg"
"""The photo that kills the side process under test, as a crash in a native decoder or encoder would."""


def _read_or_crash(path: str):
    from forgerytalker.analysis import reader_process

    if path.endswith(CRASHING_PHOTO):
        os.kill(os.getpid(), signal.SIGKILL)
    return reader_process._read(path)


def _write_or_crash(out_dir, photo, *args):
    from forgerytalker.analysis import writer_process

    if photo.name.endswith(CRASHING_PHOTO):
        os.kill(os.getpid(), signal.SIGKILL)
    return writer_process._write(out_dir, photo, *args)


class CrashingReader(PhotoReaderProcess):
    def read(self, path):
        return self.submit(_read_or_crash, path)


class CrashingWriter(PhotoWriterProcess):
    def write(self, out_dir, photo, *args):
        return self.submit(_write_or_crash, out_dir, photo, *args)


def _dead(side_process):
    """`side_process` with its process killed while idle, and its pool aware of it."""
    pids = side_process.pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if side_process._pool._broken:
            return side_process
        time.sleep(0.05)
    raise AssertionError("the pool did not notice its process died")


@pytest.fixture
def eight_photos(tmp_path, face_photos_dir):
    (tmp_path / "photos").mkdir()
    for index in range(8):
        shutil.copy(face_photos_dir / "grace_hopper.jpg", tmp_path / "photos" / f"grace_{index}.jpg")
    return collect_photos([str(tmp_path / "photos")])


def _run(saved_tiny_checkpoint, photos, out, reader, writer) -> list[dict]:
    pipe = load_analyzer(saved_tiny_checkpoint, device="cpu")
    options = AnalysisOptions(batch_size=3, generate_kwargs={"max_new_tokens": 3})
    records = run_analysis(pipe, photos, out, options, progress=False, reader=reader, writer=writer)
    assert sorted(record["image"] for record in records) == sorted(photo.path for photo in photos)
    for photo in photos:  # on disk too: each photo's record, or its error record
        assert (out / photo.output("record")).is_file() != (out / photo.output("error")).is_file()
    return records


@pytest.mark.parametrize("crashing", ["reader", "writer"])
def test_a_photo_that_kills_a_side_process_gets_an_error_record_and_a_new_process_does_the_rest(
    tmp_path, saved_tiny_checkpoint, eight_photos, crashing
):
    with (CrashingReader() if crashing == "reader" else PhotoReaderProcess()) as reader, (
        CrashingWriter() if crashing == "writer" else PhotoWriterProcess()
    ) as writer:
        records = _run(saved_tiny_checkpoint, eight_photos, tmp_path / "out", reader, writer)
    failed = {record["image"]: record["error"] for record in records if record["status"] == "error"}
    assert list(failed) == [str(tmp_path / "photos" / CRASHING_PHOTO)]
    assert f"the photo {crashing} process ended" in failed[str(tmp_path / "photos" / CRASHING_PHOTO)]
    assert all(record["faces"] == 1 for record in records if record["status"] == "ok")


def test_a_side_process_that_died_while_idle_is_replaced_and_no_photo_fails(tmp_path, saved_tiny_checkpoint, eight_photos):
    with PhotoReaderProcess() as reader, PhotoWriterProcess() as writer:
        with pytest.raises(NeverRan):
            _dead(writer).record(writer.write(tmp_path, None, [], False, "m"), "photo.jpg")
        records = _run(saved_tiny_checkpoint, eight_photos, tmp_path / "out", _dead(reader), writer)
    assert all(record["status"] == "ok" for record in records)


def test_a_small_run_writes_in_a_thread_the_same_files_as_the_writer_process(tmp_path, saved_tiny_checkpoint, eight_photos):
    assert isinstance(writer_for(LONG_RUN_PHOTOS - 1), PhotoWriterThread)
    with writer_for(LONG_RUN_PHOTOS) as writer:
        assert isinstance(writer, PhotoWriterProcess)
    photos = eight_photos[:2]
    with PhotoReaderProcess() as reader, PhotoWriterThread() as thread, PhotoWriterProcess() as process:
        by_thread = _run(saved_tiny_checkpoint, photos, tmp_path / "thread", reader, thread)
        by_process = _run(saved_tiny_checkpoint, photos, tmp_path / "process", reader, process)
    assert by_thread == by_process
    for photo in photos:
        for kind in ("mask", "overlay"):
            assert (tmp_path / "thread" / photo.output(kind)).read_bytes() == (tmp_path / "process" / photo.output(kind)).read_bytes()
