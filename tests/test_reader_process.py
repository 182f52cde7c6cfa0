"""`forgerytalker analyze`'s photo reader process: the same faces as in the command's own process, unreadable photos
named without stopping it, a dead process named and replaced, and photos read before the model asks for them."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from forgerytalker.analysis.face_crops import FaceOptions
from forgerytalker.analysis.reader_process import PhotoReaderProcess, ReaderProcessDied
from forgerytalker.analysis.runner import PhotoReader
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
