"""`forgerytalker.analyze`: one function call from photos to `ForgeryAnalysis` results.

    import forgerytalker
    result = forgerytalker.analyze("face.jpg", model="path/to/checkpoint")
    result.report, result.regions, result.manipulation_score, result.mask      # a ForgeryAnalysis
    results = forgerytalker.analyze(["a.jpg", "b.png"], model="path/to/checkpoint", batch_size=8)

The model is loaded once per (model, device, dtype) and kept (`load_analyzer`), so repeated calls are cheap.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

from .defaults import resolve_model
from .face_crops import FaceOptions
from .records import ForgeryAnalysis
from .runner import PhotoReader, model_name

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str | None) -> str:
    """`"auto"` or `None` → `"cuda"` when a GPU is available, else `"cpu"`; anything else as given."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_location(model: str | os.PathLike) -> str:
    """A local folder as an absolute path (so `from_pretrained` never takes it for a hub id), else the hub id."""
    model = os.fspath(model)
    return os.path.abspath(model) if os.path.exists(model) else model


@lru_cache(maxsize=4)
def _load(location: str, device: str, dtype: str):
    import torch
    from transformers import pipeline

    from ..configuration_forgerytalker import PIPELINE_TASK

    return pipeline(PIPELINE_TASK, model=location, device=device, dtype=getattr(torch, dtype))


def load_analyzer(model: str | os.PathLike | None = None, *, device: str | None = None, dtype: str = "float32"):
    """The `forgery-analysis` pipeline of `model` (default: `defaults.default_model()`), loaded once and kept.

    Args:
        model: a checkpoint folder or hub id.
        device: "cpu", "cuda", "cuda:1", or "auto"/`None` for a GPU when there is one.
        dtype: "float32", "bfloat16" or "float16".
    """
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return _load(model_location(resolve_model(None if model is None else os.fspath(model))), resolve_device(device), dtype)


def analyze(
    images,
    model=None,
    *,
    regions: list[str] | list[list[str]] | None = None,
    mask_threshold: float | None = None,
    batch_size: int = 1,
    device: str | None = None,
    dtype: str = "float32",
    faces: str | None = None,
    min_face_size: int | None = None,
    no_face: str | None = None,
    max_image_pixels: int | None = None,
    **generate_kwargs,
) -> ForgeryAnalysis | list[ForgeryAnalysis]:
    """Analyses one photo or a list of photos.

    Args:
        images: a path, the file's bytes, a `PIL.Image.Image`, or a list of them.
        model: a checkpoint folder or hub id, or a loaded `forgery-analysis` pipeline; `None` for the default model.
        regions: regions to name in the instruction instead of the prompter's (an analyst correcting the model):
            one list for every photo, or one list per photo.
        mask_threshold: overrides the checkpoint's `config.mask_threshold`.
        batch_size: model inputs (faces, or whole photos) per `generate` call (the answers do not depend on it).
        device, dtype: where and in which precision the model runs (see `load_analyzer`).
        faces: `"every"` (default): each face is found, aligned as the model's training data, analysed, and its
            mask mapped back onto the photo (`result.faces` has one entry per face); `"largest"`: only the
            largest face; `"whole"`: the whole picture (for inputs that are already face crops).
        min_face_size: faces narrower than this many pixels are left out (default 32).
        no_face: a photo without a usable face is analysed `"whole"` (default, with a warning) or `"skip"`ped
            (its result is `None`).
        max_image_pixels: pixel limit checked before decoding (default `image_utils.max_image_pixels()`).
        generate_kwargs: generation arguments (`max_new_tokens`, `num_beams`, ...) overriding the checkpoint's.

    Returns:
        A `ForgeryAnalysis` per photo (one, or a list for a list); `None` for a photo skipped for want of a face.

    Raises:
        ImageReadError: a photo cannot be read or is too small or too large; the message names it.
    """
    if "check_faces" in generate_kwargs:  # before per-face analysis: False read the whole picture
        warnings.warn(
            "`check_faces` is deprecated and will be removed: faces are analysed one by one now; use "
            '`faces="whole"` to read the whole picture as `check_faces=False` did',
            FutureWarning,
            stacklevel=2,
        )
        if not generate_kwargs.pop("check_faces") and faces is None:
            faces = "whole"
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("`analyze` writes one report per photo; use the pipeline for `num_return_sequences`")
    pipe = model if hasattr(model, "postprocess") else load_analyzer(model, device=device, dtype=dtype)
    single = not isinstance(images, (list, tuple))
    sources = [images] if single else list(images)
    if regions is not None and not all(isinstance(name, str) for name in regions) and len(regions) != len(sources):
        raise ValueError(f"`regions` has {len(regions)} lists but {len(sources)} photos were given; give one per photo")
    per_photo = [regions] * len(sources) if regions is None or all(isinstance(n, str) for n in regions) else regions
    reader = PhotoReader(FaceOptions.from_arguments(faces, min_face_size, no_face), max_image_pixels)
    photos = [reader(source, regions=names) for source, names in zip(sources, per_photo)]
    kwargs = dict(generate_kwargs)
    if mask_threshold is not None:
        kwargs["mask_threshold"] = mask_threshold
    results = pipe([photo.found for photo in photos], batch_size=batch_size, **kwargs)
    name = model_name(pipe)
    answers = [
        ForgeryAnalysis.from_pipeline_result(
            result,
            image=os.fspath(source) if isinstance(source, (str, os.PathLike)) else None,
            warnings=photo.notes,
            model=name,
        )
        for source, photo, result in zip(sources, photos, results)
    ]
    return answers[0] if single else answers


__all__ = ["DEVICES", "DTYPES", "analyze", "load_analyzer", "model_location", "resolve_device"]
