"""Detecting and aligning the faces of a photo folder, cached per photo under `OUT/cache/faces/`.

A photo's cache entry is keyed by the SHA-256 of its bytes (and the face parameters), so a photo replaced by
another of the same name and size is aligned again. An unreadable cache entry is recomputed, with a warning
naming the file and line.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
from tqdm.auto import tqdm

from ..errors import DataInputError
from ..json_files import read_json, write_json_atomic
from ..workers import run_tasks
from .config import SynthesisConfig
from .faces import FaceAligner, FaceAlignment, SkippedFace, list_photos

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: keyed by content hash


@dataclass(frozen=True)
class _PhotoJob:
    faces_dir: Path
    cache_dir: Path
    photo: str
    face_parameters: tuple
    max_image_pixels: int | None


@dataclass
class AlignedFolder:
    """The faces of a photo folder.

    Attributes:
        faces: the usable faces, in photo-name order.
        skipped: the photos, faces and other files that yield no face, with the reason.
        photos: photo file name → SHA-256 of its bytes, for every picture file read.
    """

    faces: list[FaceAlignment]
    skipped: list[SkippedFace]
    photos: dict[str, str]


@lru_cache(maxsize=2)
def worker_aligner(face_parameters: tuple) -> FaceAligner:
    """The `FaceAligner` of this process for the given face parameters (built once: dlib's models load slowly)."""
    return FaceAligner(**dict(face_parameters))


def init_process() -> None:
    cv2.setNumThreads(1)


def _cached(cache_file: Path, key: dict) -> tuple[list[FaceAlignment], list[SkippedFace]] | None:
    if not cache_file.exists():
        return None
    try:
        cached = read_json(cache_file)
        if cached["key"] != key:
            return None
        return [FaceAlignment.from_dict(a) for a in cached["faces"]], [SkippedFace(**s) for s in cached["skipped"]]
    except (DataInputError, KeyError, TypeError) as error:
        logger.warning("Aligning the photo again: its cache entry is unreadable (%s)", error)
        return None


def _align_cached(job: _PhotoJob) -> tuple[list[FaceAlignment], list[SkippedFace], str]:
    try:
        data = (job.faces_dir / job.photo).read_bytes()
    except OSError as error:
        return [], [SkippedFace(job.photo, f"{job.photo}: cannot be read: {error.strerror}")], ""
    digest = hashlib.sha256(data).hexdigest()
    cache_file = job.cache_dir / (hashlib.sha1(job.photo.encode("utf-8")).hexdigest() + ".json")
    key = {"version": CACHE_VERSION, "photo": job.photo, "sha256": digest, **dict(job.face_parameters)}
    cached = _cached(cache_file, key)
    if cached is not None:
        return (*cached, digest)
    alignments, skipped = worker_aligner(job.face_parameters).align_photo(data, job.photo, job.max_image_pixels)
    entry = {"key": key, "faces": [a.to_dict() for a in alignments], "skipped": [s.to_dict() for s in skipped]}
    write_json_atomic(cache_file, entry)
    return alignments, skipped, digest


def align_folder(config: SynthesisConfig) -> AlignedFolder:
    """Detects and aligns the faces of every photo (in `config.num_workers` processes, cached under `OUT/cache/faces`).

    Files without a picture suffix are not read; they are listed as skipped, as are unreadable photos, photos over
    the pixel limit and faces too small to crop.
    """
    photos, ignored = list_photos(config.faces_dir)
    cache_dir = config.output_dir / "cache" / "faces"
    jobs = [_PhotoJob(config.faces_dir, cache_dir, photo, config.aligner_key(), config.max_image_pixels) for photo in photos]
    results: list = [None] * len(jobs)
    with tqdm(total=len(jobs), desc="aligning faces", unit="photo", disable=not config.show_progress) as bar:
        for index, result in run_tasks(
            _align_cached,
            jobs,
            num_workers=config.num_workers,
            describe=lambda job: f"photo {job.photo}",
            initializer=init_process,
        ):
            results[index] = result
            bar.update()
    faces = [alignment for found, _, _ in results for alignment in found]
    skipped = [entry for _, lost, _ in results for entry in lost] + ignored
    for entry in skipped:
        logger.warning("skipped %s: %s", entry.photo, entry.reason)
    return AlignedFolder(faces, skipped, {photo: digest for photo, (_, _, digest) in zip(photos, results)})
