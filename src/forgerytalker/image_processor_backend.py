"""Which resize a ForgeryTalker processor uses: PIL's, unless the caller names another backend.

transformers saves an image processor without its backend (`BlipImageProcessorPil` is written as
`BlipImageProcessor`) and, on loading, picks torchvision's where torchvision is installed. Torchvision's bicubic
differs from PIL's by a few grey levels, so the same checkpoint would see other pixels on another machine. The
release resizes with PIL (LAVIS's transforms on PIL images) and every ForgeryTalker checkpoint is trained and
evaluated with PIL's resize, so the processor keeps PIL's whatever is installed.
"""

from __future__ import annotations

from transformers import AutoImageProcessor
from transformers.image_processing_backends import PilBackend, TorchvisionBackend

IMAGE_PROCESSOR_BACKEND = "pil"
"""The image processor backend ForgeryTalker's processors load with unless told otherwise."""


def backend_of(image_processor) -> str | None:
    """`"pil"`, `"torchvision"`, or None for an image processor of neither kind."""
    if isinstance(image_processor, PilBackend):
        return "pil"
    if isinstance(image_processor, TorchvisionBackend):
        return "torchvision"
    return None


def with_backend(image_processor, source: str, backend: str, **load_kwargs):
    """`image_processor`, or the image processor of `source` loaded again with `backend` when it has another
    (`load_kwargs`: the hub arguments of the first load, such as `revision` or `subfolder`)."""
    if backend_of(image_processor) in (None, backend):
        return image_processor
    return AutoImageProcessor.from_pretrained(source, backend=backend, **load_kwargs)


__all__ = ["IMAGE_PROCESSOR_BACKEND", "backend_of", "with_backend"]
