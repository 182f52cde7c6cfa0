"""The manipulation methods a sample's `method` field can name (one owner for the vocabulary)."""

from __future__ import annotations

FACE_SWAP = "face_swap"  # whole face replaced (MMTT: E4S GAN face swap; synthesis: mesh warp + blending)
TRANSFORMER_INPAINTING = "transformer_inpainting"  # MMTT: MAT
DIFFUSION_INPAINTING = "diffusion_inpainting"  # MMTT: SDXL
CLASSICAL_INPAINTING = "classical_inpainting"  # synthesis: OpenCV Telea / Navier-Stokes
REGION_TRANSPLANT = "region_transplant"  # synthesis: region from another face, Poisson-blended
AUTHENTIC = "authentic"  # untouched photo, empty mask
UNKNOWN = "unknown"  # the path did not say

METHODS: tuple[str, ...] = (
    FACE_SWAP,
    TRANSFORMER_INPAINTING,
    DIFFUSION_INPAINTING,
    CLASSICAL_INPAINTING,
    REGION_TRANSPLANT,
    AUTHENTIC,
    UNKNOWN,
)
