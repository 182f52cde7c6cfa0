"""The manipulation methods a sample's `method` field can name (one owner for the vocabulary)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

FACE_SWAP = "face_swap"  # whole face replaced (MMTT: E4S GAN face swap; synthesis: mesh warp + blending)
TRANSFORMER_INPAINTING = "transformer_inpainting"  # MMTT: MAT
DIFFUSION_INPAINTING = "diffusion_inpainting"  # MMTT: SDXL
CLASSICAL_INPAINTING = "classical_inpainting"  # synthesis: OpenCV Telea / Navier-Stokes
REGION_TRANSPLANT = "region_transplant"  # synthesis: region from another face, Poisson-blended
SELF_BLEND = "self_blend"  # synthesis: a colour-jittered, shifted copy of the face blended into itself (SBI)
AUTHENTIC = "authentic"  # untouched photo, empty mask
UNKNOWN = "unknown"  # neither the record nor its path said

METHODS: tuple[str, ...] = (
    FACE_SWAP,
    TRANSFORMER_INPAINTING,
    DIFFUSION_INPAINTING,
    CLASSICAL_INPAINTING,
    REGION_TRANSPLANT,
    SELF_BLEND,
    AUTHENTIC,
    UNKNOWN,
)

# Folder-name tokens of the released MMTT layout that name a method. The release names the generator in its
# folders (e.g. `dataset/celeb512/mat_gan/samples_celeb/20936.png` holds MAT inpaintings); "gan" alone is
# ambiguous there (MAT's folder is `mat_gan`) and names nothing.
RELEASED_METHOD_TOKENS: dict[str, str] = {
    "e4s": FACE_SWAP,
    "swap": FACE_SWAP,
    "faceswap": FACE_SWAP,
    "mat": TRANSFORMER_INPAINTING,
    "sdxl": DIFFUSION_INPAINTING,
    "diffusion": DIFFUSION_INPAINTING,
}
_TOKEN_PATTERN = re.compile(r"[a-z0-9]+")

# Names a record's own `method` field may use for a method of `METHODS` (after `normalize_method_name`).
METHOD_SYNONYMS: dict[str, str] = {
    "e4s": FACE_SWAP,
    "swap": FACE_SWAP,
    "faceswap": FACE_SWAP,
    "gan_face_swap": FACE_SWAP,
    "gan_fs": FACE_SWAP,
    "mat": TRANSFORMER_INPAINTING,
    "transformer": TRANSFORMER_INPAINTING,
    "trans_inp": TRANSFORMER_INPAINTING,
    "sdxl": DIFFUSION_INPAINTING,
    "sdxl_inpainting": DIFFUSION_INPAINTING,
    "diffusion": DIFFUSION_INPAINTING,
    "diff_inp": DIFFUSION_INPAINTING,
    "telea": CLASSICAL_INPAINTING,
    "opencv_inpainting": CLASSICAL_INPAINTING,
    "sbi": SELF_BLEND,
    "self_blended": SELF_BLEND,
    "real": AUTHENTIC,
    "pristine": AUTHENTIC,
    "original": AUTHENTIC,
    "genuine": AUTHENTIC,
    "untouched": AUTHENTIC,
    "unedited": AUTHENTIC,
    "none": AUTHENTIC,
}


def normalize_method_name(name: str) -> str:
    """Lower case, with runs of spaces, hyphens and dots as one underscore: "GAN Face-Swap" → "gan_face_swap"."""
    return re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")


def method_from_name(name: str) -> str:
    """The method a record's `method` field names: a name of `METHODS` or of `METHOD_SYNONYMS` (any case,
    spaces or hyphens for underscores), else the name as given (stripped): an unknown method is kept."""
    normalized = normalize_method_name(name)
    if normalized in METHODS:
        return normalized
    return METHOD_SYNONYMS.get(normalized, name.strip())


def method_from_path(relative_path: str) -> str:
    """The manipulation method that an image or mask path names, or `UNKNOWN`.

    Only folder names are read, from the deepest to the outermost; the first folder that names a method wins:
    a folder named exactly as one of `METHODS` (the synthesizer's `dataset/synthetic/<method>/...` layout), or a
    folder whose name holds one of `RELEASED_METHOD_TOKENS` as a whole token (the released MMTT layout,
    e.g. `mat_gan` → transformer inpainting).
    """
    folders = PurePosixPath(relative_path.replace("\\", "/")).parts[:-1]
    for folder in reversed(folders):
        name = folder.lower()
        if name in METHODS:
            return name
        for token in _TOKEN_PATTERN.findall(name):
            if token in RELEASED_METHOD_TOKENS:
                return RELEASED_METHOD_TOKENS[token]
    return UNKNOWN
