"""MMTT-style synthesis: from a folder of face photos to forged faces with masks and reports in the released layout.

Output (paths in the JSON records are relative to `OUT/dataset/`):

```
OUT/dataset/synthetic/<method>/<image_id>.png          RGB forged (or untouched) face, face_size (512) square
OUT/dataset/synthetic/<method>/masks/<image_id>.png    L, 255 where forged
OUT/train-mutilabel-simple.json, OUT/eval-mutilabel-simple.json
OUT/synthesis.json                                     parameters, counts, skipped photos, versions
OUT/samples/<image_id>.json                            per-sample sidecar (regions, donor, measured flaws)
OUT/samples/parameters.json, OUT/samples/photos.json   what the samples were made with (`run_state`)
OUT/cache/faces/<sha1 of photo name>.json              per-photo face alignments, keyed by the photo's SHA-256
```

Sample `i` draws everything from `numpy.random.default_rng([seed, 1, i])` and faces are visited in seeded
permutations, so a seed fixes every byte whatever the number of workers. Sample `i` goes to the eval split
when `i % eval_every == eval_every - 1` (9:1 by default): the split is by sample, so one photo can feed both
splits. A sample is finished when its sidecar exists (written last, atomically, like every file here); a
re-run with the same arguments skips finished samples and rewrites the JSON files from the sidecars. A run
that stops (killed, a lost worker process, a full disk) keeps its finished samples.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ...output_folder import (
    FolderLockedError,
    ForeignFilesError,
    Owner,
    check_no_foreign,
    files_in,
    locked,
    write_manifest,
)
from ...regions import caption_to_labels, caption_to_regions
from ..errors import DataInputError, option
from ..json_files import read_json, write_json_atomic
from ..methods import AUTHENTIC, CLASSICAL_INPAINTING, FACE_SWAP
from ..output_folders import check_output_folder, output_write_error
from ..workers import run_tasks
from .alignment import AlignedFolder, align_folder, init_process, worker_aligner
from .config import SynthesisConfig
from .faces import FaceAlignment, crop_face, landmark_box, read_photo
from .landmark_regions import face_geometry, face_mask, region_masks
from .manipulations import MANIPULATIONS
from .measurements import measure_regions
from .reports import authentic_report, select_swap_regions, write_report
from .run_state import PARAMETERS_FILE, SAMPLE_PREFIX, check_parameters, check_photo_set

logger = logging.getLogger(__name__)

TRAIN_FILE = "train-mutilabel-simple.json"
EVAL_FILE = "eval-mutilabel-simple.json"
SUMMARY_FILE = "synthesis.json"
IMAGE_ROOT = "dataset"
_SIDECAR_HINT = "delete this file to make the sample again"

__all__ = ["EVAL_FILE", "IMAGE_ROOT", "SUMMARY_FILE", "TRAIN_FILE", "SynthesisConfig", "align_folder", "synthesize"]


def _write_png(path: Path, image: np.ndarray) -> None:
    """Writes uint8 RGB (H, W, 3) or L (H, W) as PNG, atomically; OpenCV's encoder adds no time stamp, so bytes
    are reproducible."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    encoded, data = cv2.imencode(".png", pixels)
    if not encoded:
        raise ValueError(f"OpenCV could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data.tobytes())
    os.replace(temporary, path)


# ---------------------------------------------------------------- samples


@dataclass
class _WorkerState:
    config: SynthesisConfig
    faces: list[FaceAlignment]
    donors: list[list[int]] = field(default_factory=list)


_STATE: _WorkerState | None = None


def _init_worker(config: SynthesisConfig, faces: list[FaceAlignment]) -> None:
    global _STATE
    init_process()
    donors = [[j for j, other in enumerate(faces) if other.photo != face.photo] for face in faces]
    _STATE = _WorkerState(config, faces, donors)
    _load_face.cache_clear()


@lru_cache(maxsize=32)
def _load_face(face_index: int):
    """The aligned crop of a face with its region masks and whole-face mask (cached per worker)."""
    alignment = _STATE.faces[face_index]
    photo = read_photo(_STATE.config.faces_dir / alignment.photo, _STATE.config.max_image_pixels, alignment.photo)
    face = crop_face(photo, alignment)
    size = face.image.shape[0]
    return face, region_masks(face.landmarks, face.image), face_mask(face.landmarks, size)


def face_for_sample(index: int, num_faces: int, seed: int) -> int:
    """Which face sample `index` uses: faces are visited in a fresh seeded permutation every `num_faces` samples."""
    epoch, position = divmod(index, num_faces)
    return int(np.random.default_rng([seed, 0, epoch]).permutation(num_faces)[position])


def image_id_for(index: int, seed: int) -> str:
    return f"{SAMPLE_PREFIX}{seed}-{index:07d}"


def _choose_forgery(rng: np.random.Generator, regions: dict, has_donor: bool, config: SynthesisConfig):
    """Draws (method, chosen regions or None for the whole face, fallback note or "")."""
    if rng.random() < config.whole_face_rate:
        if has_donor:
            return FACE_SWAP, None, ""
        fallback = f"{FACE_SWAP}: no face from another photo, edited regions instead"
    else:
        fallback = ""
    names = list(regions)
    k = int(rng.integers(1, min(config.max_regions, len(names)) + 1))
    chosen = set(rng.choice(len(names), size=k, replace=False).tolist())
    method = config.local_methods[int(rng.integers(len(config.local_methods)))]
    if MANIPULATIONS[method].needs_donor and not has_donor:
        fallback = fallback or f"{method}: no face from another photo, used {CLASSICAL_INPAINTING}"
        method = CLASSICAL_INPAINTING
    return method, [name for i, name in enumerate(names) if i in chosen], fallback


def _forge(index: int, rng: np.random.Generator, face_index: int):
    """Makes one forged sample: (forged image, bool mask, method, report, regions, donor id, flaws, fallback)."""
    config = _STATE.config
    face, regions, whole = _load_face(face_index)
    donors = _STATE.donors[face_index]
    method, chosen, fallback = _choose_forgery(rng, regions, bool(donors), config)
    donor = None
    if MANIPULATIONS[method].needs_donor:
        donor = _load_face(donors[int(rng.integers(len(donors)))])[0]
    if chosen is None:
        mask = whole
    else:
        union = np.logical_or.reduce([regions[name] for name in chosen])
        radius = max(1, int(round(0.05 * face_geometry(face.landmarks)[0])))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(union.astype(np.uint8), kernel).astype(bool) & whole
    generated = MANIPULATIONS[method](face, mask, rng, donor)
    forged = np.where(mask[..., None], generated, face.image)
    forged_landmarks = worker_aligner(config.aligner_key()).landmarks(forged, landmark_box(face.landmarks))
    measured_names = list(regions) if chosen is None else chosen
    measured = measure_regions(forged, mask, {n: regions[n] for n in measured_names}, whole, forged_landmarks)
    if chosen is None:
        measured = {name: measured[name] for name in select_swap_regions(measured)}
    report = write_report(measured, whole_face=chosen is None, rng=rng)
    donor_id = donor.face_id if donor is not None else None
    return forged, mask, method, report, list(measured), donor_id, measured, fallback


def written_sample(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config: SynthesisConfig):
    """The chain every sample goes through before it is written, untouched or forged alike: the resize to
    `config.face_size` (area interpolation; the mask keeps the pixels at least half forged) and the JPEG round
    trip at a quality drawn from `config.jpeg_quality`. Returns (uint8 RGB image, bool mask, quality or None)."""
    size = config.face_size
    if image.shape[0] != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
    if config.jpeg_quality is None:
        return image, mask, None
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    encoded, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not encoded:
        raise ValueError(f"OpenCV could not JPEG-encode a {size}×{size} sample")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), mask, quality


def make_sample(index: int) -> dict:
    """Synthesizes, writes and returns the sidecar of sample `index` (in a worker set up by `_init_worker`)."""
    config = _STATE.config
    rng = np.random.default_rng([config.seed, 1, index])
    face_index = face_for_sample(index, len(_STATE.faces), config.seed)
    if rng.random() < config.authentic_rate:
        face = _load_face(face_index)[0]
        forged, mask, method = face.image, np.zeros(face.image.shape[:2], bool), AUTHENTIC
        report, regions, donor_id, measured, fallback = authentic_report(rng), [], None, {}, ""
    else:
        forged, mask, method, report, regions, donor_id, measured, fallback = _forge(index, rng, face_index)
    region_pixels = {name: int((_load_face(face_index)[1][name] & mask).sum()) for name in regions}  # on the 512 crop
    forged, mask, quality = written_sample(forged, mask, rng, config)
    image_id = image_id_for(index, config.seed)
    img_path = f"synthetic/{method}/{image_id}.png"
    mask_path = f"synthetic/{method}/masks/{image_id}.png"
    image_root = config.output_dir / IMAGE_ROOT
    _write_png(image_root / img_path, forged)
    _write_png(image_root / mask_path, mask.astype(np.uint8) * 255)
    sidecar = {
        "index": index,
        "split": "eval" if config.eval_every and index % config.eval_every == config.eval_every - 1 else "train",
        "record": {
            "image_id": image_id,
            "img_path": img_path,
            "mask_path": mask_path,
            "caption": report,
            "multilabel": caption_to_labels(report),
        },
        "method": method,
        "source_face": _STATE.faces[face_index].face_id,
        "donor_face": donor_id,
        "regions": regions,
        "region_pixels": region_pixels,
        "flaws": {name: flaws.to_dict() for name, flaws in measured.items()},
        "fallback": fallback,
        "jpeg_quality": quality,
    }
    if set(caption_to_regions(report)) != set(regions):
        raise RuntimeError(f"report of sample {index} names {caption_to_regions(report)}, not {regions}: {report!r}")
    write_json_atomic(config.output_dir / "samples" / f"{image_id}.json", sidecar)
    return sidecar


# ---------------------------------------------------------------- the run


def _versions() -> dict:
    import dlib

    from ... import __version__

    return {"forgerytalker": __version__, "opencv": cv2.__version__, "dlib": dlib.__version__, "numpy": np.__version__}


OUTPUT_NAMES = (IMAGE_ROOT, "samples", "cache", TRAIN_FILE, EVAL_FILE, SUMMARY_FILE)
"""Everything a synthesis writes into its output folder (besides the shared manifest and lock)."""
OWNER = Owner("forgerytalker data synthesize")


def _check_own_files(output_dir: Path) -> None:
    """Refuses a folder where the run would write over a file it did not write (the shared policy,
    `forgerytalker.output_folder`): its own are those its manifest lists, and, in a folder a run started (it has
    `samples/parameters.json`), the files under `OUTPUT_NAMES` a killed run or an earlier version left. Entries of
    the face cache (`cache/`, named by the photo's content) count as its own anywhere: a user may copy the cache of
    another synthesis to skip aligning the same photos again."""
    started = (output_dir / "samples" / PARAMETERS_FILE).is_file()

    def written_by_a_synthesis(path: Path) -> bool:
        return started or path.relative_to(output_dir).parts[0] == "cache"

    try:
        check_no_foreign(output_dir, OWNER, OUTPUT_NAMES, legacy_own=written_by_a_synthesis)
    except ForeignFilesError as error:
        raise DataInputError(f"{option('output_dir')}: {error}") from None


def _remove_unfinished(output_dir: Path) -> None:
    """Deletes the temporary files a killed run left (every file it writes is written as `<name>.tmp` first)."""
    for name in OUTPUT_NAMES:
        for unfinished in (output_dir / name).rglob("*.tmp") if (output_dir / name).is_dir() else ():
            unfinished.unlink()


def _make_samples(config: SynthesisConfig, faces: list[FaceAlignment]) -> None:
    sidecar_dir = config.output_dir / "samples"
    todo = [i for i in range(config.num_samples) if not (sidecar_dir / f"{image_id_for(i, config.seed)}.json").exists()]
    if len(todo) < config.num_samples:
        logger.info("resuming: %d of %d samples already made", config.num_samples - len(todo), config.num_samples)
    with tqdm(total=len(todo), desc="synthesizing", unit="sample", disable=not config.show_progress) as bar:
        for _ in run_tasks(
            make_sample,
            todo,
            num_workers=config.num_workers,
            describe=lambda index: f"sample {index} ({image_id_for(index, config.seed)})",
            initializer=_init_worker,
            initargs=(config, faces),
        ):
            bar.update()


def _write_layout(config: SynthesisConfig, aligned: AlignedFolder, mixed: bool) -> dict:
    """Writes the two record files and `synthesis.json` from the sidecars; returns the summary."""
    sidecar_dir = config.output_dir / "samples"
    sidecars = [
        read_json(sidecar_dir / f"{image_id_for(i, config.seed)}.json", hint=_SIDECAR_HINT)
        for i in range(config.num_samples)
    ]
    train = [s["record"] for s in sidecars if s["split"] == "train"]
    evaluation = [{**s["record"], "instance_id": n} for n, s in enumerate(s for s in sidecars if s["split"] == "eval")]
    write_json_atomic(config.output_dir / TRAIN_FILE, train)
    write_json_atomic(config.output_dir / EVAL_FILE, evaluation)
    fallbacks = Counter(s["fallback"] for s in sidecars if s["fallback"])
    summary = {
        **config.sample_parameters(),
        **config.face_parameters(),
        "num_samples": config.num_samples,
        "split_rule": f"sample i is eval when i % {config.eval_every} == {config.eval_every - 1}" if config.eval_every else "all train",
        "counts": {
            "methods": dict(sorted(Counter(s["method"] for s in sidecars).items())),
            "train": len(train),
            "eval": len(evaluation),
            "photos": len(aligned.photos),
            "usable_faces": len(aligned.faces),
        },
        "faces": [face.face_id for face in aligned.faces],
        "skipped": [entry.to_dict() for entry in aligned.skipped],
        "mixed_photo_sets": mixed,
        "fallbacks": dict(sorted(fallbacks.items())),
        "versions": _versions(),
    }
    write_json_atomic(config.output_dir / SUMMARY_FILE, summary)
    write_manifest(config.output_dir, OWNER, {name: size for name, size in files_in(config.output_dir).items()
                                                if Path(name).parts[0] in OUTPUT_NAMES})  # fmt: skip
    return summary


def synthesize(config: SynthesisConfig) -> dict:
    """Runs (or resumes) a synthesis and writes the released layout; returns the summary written to `synthesis.json`.

    Raises:
        DataInputError: an unusable setting (the message names it), an output folder that is a file, is read-only,
            lies inside the photo folder or holds samples made with other parameters or photos, no usable face,
            a corrupt JSON file of the folder, or a write that fails for lack of room.
        WorkerDiedError: a worker process died; finished samples are kept for the next run.
    """
    config.validate()
    check_output_folder(config.output_dir, "output_dir")
    _check_own_files(config.output_dir)
    kept = "finished samples are kept; free space and run the same command again to resume"
    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked(config.output_dir, OWNER.command, option("output_dir")))
            except FolderLockedError as error:
                raise DataInputError(f"{option('output_dir')}: {error}") from None
            check_parameters(config)
            _remove_unfinished(config.output_dir)
            aligned = align_folder(config)
            if not aligned.faces:
                raise DataInputError(f"No usable face in the {len(aligned.photos)} photos of {config.faces_dir}")
            mixed = check_photo_set(config, aligned.photos, [face.face_id for face in aligned.faces])
            _make_samples(config, aligned.faces)
            return _write_layout(config, aligned, mixed)
    except OSError as error:
        converted = output_write_error(error, "output_dir", kept)
        if converted is None:
            raise
        raise converted from error
