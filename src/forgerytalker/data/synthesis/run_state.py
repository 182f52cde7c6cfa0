"""What a synthesis folder remembers between runs, so that a resumed run never mixes two different runs silently.

`OUT/samples/parameters.json` holds the sample parameters and `OUT/samples/photos.json` the photo set (every
photo's SHA-256 and the usable faces). While no sample is finished, a run may change either (a corrected
command simply starts); once samples exist, a run with other parameters is refused, and so is one with other
photos unless `allow_changed_faces` (the folder is then marked as mixing photo sets).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...output_folder import changed_settings
from ..errors import DataInputError, option
from ..json_files import read_json, write_json_atomic
from .config import SynthesisConfig

logger = logging.getLogger(__name__)

PARAMETERS_FILE = "parameters.json"
PHOTOS_FILE = "photos.json"
SAMPLE_PREFIX = "syn"  # sidecars are samples/syn<seed>-<index>.json


def finished_samples(sidecar_dir: Path) -> list[Path]:
    return sorted(sidecar_dir.glob(f"{SAMPLE_PREFIX}*.json"))


def check_parameters(config: SynthesisConfig) -> None:
    """Records the sample parameters of the folder; refuses other ones once samples were made with them."""
    sidecar_dir = config.output_dir / "samples"
    parameters_file = sidecar_dir / PARAMETERS_FILE
    parameters = config.sample_parameters()
    if parameters_file.exists():
        previous = read_json(parameters_file, hint="delete it if no sample in this folder is worth keeping")
        if previous != parameters:
            if finished_samples(sidecar_dir):
                changes = "; ".join(changed_settings(previous, parameters)) if isinstance(previous, dict) else previous
                raise DataInputError(
                    f"{option('output_dir')}: {config.output_dir} holds samples made with other parameters ({changes}); "
                    f"use another {option('output_dir')} or the same parameters"
                )
            logger.info("No sample was made in %s yet: its parameters are replaced", config.output_dir)
    write_json_atomic(parameters_file, parameters)


def _describe_changes(previous: dict, current: dict) -> str:
    before, now = previous.get("photos", {}), current["photos"]
    parts = []
    for label, names in (
        ("added", sorted(set(now) - set(before))),
        ("removed", sorted(set(before) - set(now))),
        ("changed", sorted(name for name in set(now) & set(before) if now[name] != before[name])),
    ):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label}: {shown}")
    if not parts:
        parts.append("the same photos give other usable faces (were --max-upscale or --min-detection-score changed?)")
    return "; ".join(parts)


def check_photo_set(config: SynthesisConfig, photos: dict[str, str], face_ids: list[str]) -> bool:
    """Records the photo set of the folder; refuses a changed one once samples exist, unless allowed.

    Returns:
        Whether the folder's samples come from more than one photo set.
    """
    sidecar_dir = config.output_dir / "samples"
    photos_file = sidecar_dir / PHOTOS_FILE
    current = {"photos": photos, "faces": face_ids, "mixed": False}
    if photos_file.exists():
        previous = read_json(photos_file, hint="delete it if no sample in this folder is worth keeping")
        mixed = bool(previous.get("mixed"))
        same = previous.get("photos") == photos and previous.get("faces") == face_ids
        if not same and finished_samples(sidecar_dir):
            if not config.allow_changed_faces:
                raise DataInputError(
                    f"{option('faces_dir')}: the photos changed since samples were made in {config.output_dir} "
                    f"({_describe_changes(previous, current)}); use a new {option('output_dir')} for the new "
                    f"photos, or pass {option('allow_changed_faces')} to continue with them (the folder then "
                    "mixes samples made from both photo sets)"
                )
            logger.warning("Continuing %s with a changed photo set: it now mixes photo sets", config.output_dir)
            mixed = True
        current["mixed"] = mixed
    write_json_atomic(photos_file, current)
    return current["mixed"]
