"""Shared fixtures: an offline Hugging Face home, tiny models and small face-like images."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from PIL import Image

# Nothing may reach the model hub: every cache points at a throw-away folder before transformers is imported.
_HF_HOME = tempfile.mkdtemp(prefix="forgerytalker-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_model_and_processor():
    import forgerytalker  # noqa: F401  (registers the Auto classes)
    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor("llama", seed=0)
    return model.eval(), processor


def random_image(seed: int, height: int, width: int) -> Image.Image:
    """A reproducible RGB noise image of the given size."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def images() -> list[Image.Image]:
    """Three images of different sizes."""
    return [random_image(0, 40, 50), random_image(1, 64, 48), random_image(2, 33, 33)]
