"""MMTT-style synthesis: from a folder of face photos to forged faces with masks and reports in the released layout.

Output (paths in the JSON records are relative to `OUT/dataset/`):

```
OUT/dataset/synthetic/<method>/<image_id>.png          RGB 512×512 forged (or untouched) face
OUT/dataset/synthetic/<method>/masks/<image_id>.png    L, 255 where forged
OUT/train-mutilabel-simple.json, OUT/eval-mutilabel-simple.json
OUT/synthesis.json                                     parameters, counts, skipped photos, versions
OUT/samples/<image_id>.json                            per-sample sidecar (regions, donor, measured flaws)
OUT/cache/faces/<sha1 of photo name>.json              per-photo face alignments
```

Sample `i` draws everything from `numpy.random.default_rng([seed, 1, i])` and faces are visited in seeded
permutations, so a seed fixes every byte whatever the number of workers. Sample `i` goes to the eval split
when `i % eval_every == eval_every - 1` (9:1 by default): the split is by sample, so one photo can feed both
splits. A sample is finished when its sidecar exists; a re-run with the same arguments skips finished samples
and rewrites the JSON files (atomically) from the sidecars.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ...regions import caption_to_labels, caption_to_regions
from ..methods import AUTHENTIC, CLASSICAL_INPAINTING, FACE_SWAP, REGION_TRANSPLANT
from .faces import FaceAligner, FaceAlignment, SkippedFace, crop_face, landmark_box, list_photos, read_photo
from .landmark_regions import face_geometry, face_mask, region_masks
from .manipulations import MANIPULATIONS
from .measurements import measure_regions
from .reports import authentic_report, select_swap_regions, write_report

logger = logging.getLogger(__name__)

TRAIN_FILE = "train-mutilabel-simple.json"
EVAL_FILE = "eval-mutilabel-simple.json"
SUMMARY_FILE = "synthesis.json"
IMAGE_ROOT = "dataset"
_CACHE_VERSION = 1


@dataclass
class SynthesisConfig:
    """What to synthesize and how.

    Args:
        faces_dir (`Path`): folder of face photos (searched recursively).
        output_dir (`Path`): where the released-layout dataset is written.
        num_samples (`int`): number of samples (forged and authentic).
        seed (`int`): fixes every sample.
        authentic_rate (`float`): share of untouched photos with an empty mask.
        whole_face_rate (`float`): share of forgeries that replace the whole face (the paper's 20%).
        max_regions (`int`): upper end of the number k of regions edited in a local forgery (k ∈ [1, max_regions]).
        local_methods (`tuple[str, ...]`): methods drawn uniformly for local (region) forgeries; each must be
            registered in `manipulations.MANIPULATIONS`.
        eval_every (`int`): every `eval_every`-th sample goes to the eval split (0: no eval split).
        max_upscale (`float`): faces needing more enlargement than this to fill 512×512 are skipped.
        min_detection_score (`float`): dlib detections scored below this are ignored.
        num_workers (`int`): worker processes (1: in this process).
        show_progress (`bool`): show tqdm progress bars.
    """

    faces_dir: Path
    output_dir: Path
    num_samples: int
    seed: int = 0
    authentic_rate: float = 0.1
    whole_face_rate: float = 0.2
    max_regions: int = 11
    local_methods: tuple[str, ...] = (CLASSICAL_INPAINTING, REGION_TRANSPLANT)
    eval_every: int = 10
    max_upscale: float = 2.0
    min_detection_score: float = 0.2
    num_workers: int = 1
    show_progress: bool = True

    def sample_parameters(self) -> dict:
        """The parameters that decide each sample's content (a resumed run must match them)."""
        keep = ("seed", "authentic_rate", "whole_face_rate", "max_regions", "local_methods", "eval_every")
        parameters = {key: value for key, value in asdict(self).items() if key in keep}
        parameters["local_methods"] = list(self.local_methods)
        return parameters

    def face_parameters(self) -> dict:
        return {"max_upscale": self.max_upscale, "min_detection_score": self.min_detection_score}

    def aligner_key(self) -> tuple:
        """The face parameters as a hashable key for the per-process `FaceAligner` cache."""
        return tuple(sorted(self.face_parameters().items()))


def _write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _write_png(path: Path, image: np.ndarray) -> None:
    """Writes uint8 RGB (H, W, 3) or L (H, W) as PNG; OpenCV's writer adds no time stamp, so bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


# ---------------------------------------------------------------- faces: detection and alignment, cached per photo


def _align_cached(args: tuple[Path, Path, str, tuple]) -> tuple[list[FaceAlignment], list[SkippedFace]]:
    faces_dir, cache_dir, photo, face_parameters = args
    cache_file = cache_dir / (hashlib.sha1(photo.encode("utf-8")).hexdigest() + ".json")
    file_size = (faces_dir / photo).stat().st_size
    key = {"version": _CACHE_VERSION, "photo": photo, "bytes": file_size, **dict(face_parameters)}
    if cache_file.exists():
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if cached["key"] == key:
            return [FaceAlignment.from_dict(a) for a in cached["faces"]], [SkippedFace(**s) for s in cached["skipped"]]
    alignments, skipped = _worker_aligner(face_parameters).align_photo(faces_dir, photo)
    entry = {"key": key, "faces": [a.to_dict() for a in alignments], "skipped": [s.to_dict() for s in skipped]}
    _write_json_atomic(cache_file, entry)
    return alignments, skipped


@lru_cache(maxsize=2)
def _worker_aligner(face_parameters: tuple) -> FaceAligner:
    return FaceAligner(**dict(face_parameters))


def _init_process() -> None:
    cv2.setNumThreads(1)


def align_folder(config: SynthesisConfig) -> tuple[list[FaceAlignment], list[SkippedFace], int]:
    """Detects and aligns the faces of every photo (in parallel, cached under `OUT/cache/faces`).

    Returns the usable faces (in photo-name order), the skipped photos/faces with reasons and the photo count.
    """
    photos = list_photos(config.faces_dir)
    cache_dir = config.output_dir / "cache" / "faces"
    jobs = [(config.faces_dir, cache_dir, photo, config.aligner_key()) for photo in photos]
    progress = dict(total=len(jobs), desc="aligning faces", unit="photo", disable=not config.show_progress)
    if config.num_workers > 1:
        with multiprocessing.Pool(config.num_workers, initializer=_init_process) as pool:
            results = list(tqdm(pool.imap(_align_cached, jobs), **progress))
    else:
        results = [_align_cached(job) for job in tqdm(jobs, **progress)]
    faces = [alignment for found, _ in results for alignment in found]
    skipped = [entry for _, lost in results for entry in lost]
    for entry in skipped:
        logger.warning("skipped %s: %s", entry.photo, entry.reason)
    return faces, skipped, len(photos)


# ---------------------------------------------------------------- samples


@dataclass
class _WorkerState:
    config: SynthesisConfig
    faces: list[FaceAlignment]
    donors: list[list[int]] = field(default_factory=list)


_STATE: _WorkerState | None = None


def _init_worker(config: SynthesisConfig, faces: list[FaceAlignment]) -> None:
    global _STATE
    _init_process()
    donors = [[j for j, other in enumerate(faces) if other.photo != face.photo] for face in faces]
    _STATE = _WorkerState(config, faces, donors)
    _load_face.cache_clear()


@lru_cache(maxsize=32)
def _load_face(face_index: int):
    """The aligned crop of a face with its region masks and whole-face mask (cached per worker)."""
    alignment = _STATE.faces[face_index]
    face = crop_face(read_photo(_STATE.config.faces_dir / alignment.photo), alignment)
    size = face.image.shape[0]
    return face, region_masks(face.landmarks, face.image), face_mask(face.landmarks, size)


def face_for_sample(index: int, num_faces: int, seed: int) -> int:
    """Which face sample `index` uses: faces are visited in a fresh seeded permutation every `num_faces` samples."""
    epoch, position = divmod(index, num_faces)
    return int(np.random.default_rng([seed, 0, epoch]).permutation(num_faces)[position])


def image_id_for(index: int, seed: int) -> str:
    return f"syn{seed}-{index:07d}"


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
    forged_landmarks = _worker_aligner(config.aligner_key()).landmarks(forged, landmark_box(face.landmarks))
    measured_names = list(regions) if chosen is None else chosen
    measured = measure_regions(forged, mask, {n: regions[n] for n in measured_names}, whole, forged_landmarks)
    if chosen is None:
        measured = {name: measured[name] for name in select_swap_regions(measured)}
    report = write_report(measured, whole_face=chosen is None, rng=rng)
    donor_id = donor.face_id if donor is not None else None
    return forged, mask, method, report, list(measured), donor_id, measured, fallback


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
        "region_pixels": {name: int((_load_face(face_index)[1][name] & mask).sum()) for name in regions},
        "flaws": {name: flaws.to_dict() for name, flaws in measured.items()},
        "fallback": fallback,
    }
    if set(caption_to_regions(report)) != set(regions):
        raise RuntimeError(f"report of sample {index} names {caption_to_regions(report)}, not {regions}: {report!r}")
    _write_json_atomic(config.output_dir / "samples" / f"{image_id}.json", sidecar)
    return sidecar


# ---------------------------------------------------------------- the run


def _versions() -> dict:
    import dlib

    from ... import __version__

    return {"forgerytalker": __version__, "opencv": cv2.__version__, "dlib": dlib.__version__, "numpy": np.__version__}


def _check_resumable(config: SynthesisConfig) -> None:
    """Records the sample parameters of this output folder, refusing to mix runs with different ones."""
    parameters_file = config.output_dir / "samples" / "parameters.json"
    parameters = config.sample_parameters()
    if parameters_file.exists():
        previous = json.loads(parameters_file.read_text(encoding="utf-8"))
        if previous != parameters:
            raise ValueError(
                f"{config.output_dir} holds samples made with {previous}, not {parameters}; use another --out"
            )
    else:
        _write_json_atomic(parameters_file, parameters)


def _sample_stream(config: SynthesisConfig, faces: list[FaceAlignment], todo: list[int]):
    if config.num_workers > 1:
        with multiprocessing.Pool(config.num_workers, initializer=_init_worker, initargs=(config, faces)) as pool:
            yield from pool.imap_unordered(make_sample, todo, chunksize=4)
    else:
        _init_worker(config, faces)
        yield from map(make_sample, todo)


def synthesize(config: SynthesisConfig) -> dict:
    """Runs (or resumes) a synthesis and writes the released layout; returns the summary written to `synthesis.json`.

    Raises:
        `ValueError`: no usable face in `faces_dir`, an unknown local method, or an output folder made with other
            sample parameters.
    """
    unknown = [m for m in config.local_methods if m not in MANIPULATIONS]
    if unknown:
        raise ValueError(f"No manipulation registered for {unknown}; registered: {sorted(MANIPULATIONS)}")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    _check_resumable(config)
    for folder in (config.output_dir, config.output_dir / "samples", config.output_dir / "cache" / "faces"):
        for unfinished in folder.glob("*.tmp"):  # left by a killed run
            unfinished.unlink()
    faces, skipped, num_photos = align_folder(config)
    if not faces:
        raise ValueError(f"No usable face in the {num_photos} photos of {config.faces_dir}")
    sidecar_dir = config.output_dir / "samples"
    todo = [i for i in range(config.num_samples) if not (sidecar_dir / f"{image_id_for(i, config.seed)}.json").exists()]
    if len(todo) < config.num_samples:
        logger.info("resuming: %d of %d samples already made", config.num_samples - len(todo), config.num_samples)
    progress = dict(total=len(todo), desc="synthesizing", unit="sample", disable=not config.show_progress)
    for _ in tqdm(_sample_stream(config, faces, todo), **progress):
        pass

    sidecars = [
        json.loads((sidecar_dir / f"{image_id_for(i, config.seed)}.json").read_text(encoding="utf-8"))
        for i in range(config.num_samples)
    ]
    train = [s["record"] for s in sidecars if s["split"] == "train"]
    evaluation = [{**s["record"], "instance_id": n} for n, s in enumerate(s for s in sidecars if s["split"] == "eval")]
    _write_json_atomic(config.output_dir / TRAIN_FILE, train)
    _write_json_atomic(config.output_dir / EVAL_FILE, evaluation)
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
            "photos": num_photos,
            "usable_faces": len(faces),
        },
        "faces": [face.face_id for face in faces],
        "skipped": [entry.to_dict() for entry in skipped],
        "fallbacks": dict(sorted(fallbacks.items())),
        "versions": _versions(),
    }
    _write_json_atomic(config.output_dir / SUMMARY_FILE, summary)
    return summary
