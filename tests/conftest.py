"""Shared fixtures: an offline Hugging Face home, tiny models and small face-like images."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

# Everything the suite and the processes it starts write to "the temp directory" goes into one folder of its
# own, removed when the session ends: pytest's tmp_path folders, the Hugging Face home, torch elastic's files.
_TEMP_ROOT = tempfile.mkdtemp(prefix="forgerytalker-tests-")
atexit.register(shutil.rmtree, _TEMP_ROOT, ignore_errors=True)
os.environ["TMPDIR"] = _TEMP_ROOT
tempfile.tempdir = _TEMP_ROOT

# Nothing may reach the model hub: every cache points at a throw-away folder before transformers is imported.
os.environ["HF_HOME"] = os.path.join(_TEMP_ROOT, "hf-home")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Gives each test the torch thread count the session started with.

    The CLIs' `--num-threads` sets torch's count for the whole process, so a test calling a CLI's `main` here left
    later in-process runs on one thread while the runs they launch use torch's default: their CPU sums are split
    differently and their weights differ in the last digits.
    """
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model_and_processor():
    import forgerytalker  # noqa: F401  (registers the Auto classes)
    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor("llama", seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def saved_tiny_checkpoint(tmp_path_factory):
    """A tiny llama checkpoint folder (`save_pretrained`), loaded the way a user loads one."""
    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor("llama", seed=0)
    folder = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def random_image(seed: int, height: int, width: int) -> Image.Image:
    """A reproducible RGB noise image of the given size."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def images() -> list[Image.Image]:
    """Three images of different sizes."""
    return [random_image(0, 40, 50), random_image(1, 64, 48), random_image(2, 33, 33)]


@pytest.fixture(scope="session")
def face_photos_dir(tmp_path_factory):
    """Two face photos any machine has: scikit-image's astronaut and matplotlib's Grace Hopper."""
    import shutil

    from matplotlib import cbook
    from skimage import data

    folder = tmp_path_factory.mktemp("faces")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), folder / "grace_hopper.jpg")
    return folder


@pytest.fixture(scope="session")
def tiny_dataset_dir(face_photos_dir, tmp_path_factory):
    """A `load_dataset`-able folder made the way users make one: synthesize 16 forgeries, then convert.

    Splits: train (about 9), validation (4: every fourth sample) and test (carved from train by id hash).
    About a quarter of the samples are authentic.
    """
    from forgerytalker.data.mmtt import convert_mmtt
    from forgerytalker.data.synthesis.pipeline import SynthesisConfig, synthesize

    layout = tmp_path_factory.mktemp("tiny-mmtt-layout")
    synthesize(SynthesisConfig(face_photos_dir, layout, 16, seed=0, authentic_rate=0.25, max_upscale=4.0,
                               eval_every=4, show_progress=False))
    output = tmp_path_factory.mktemp("tiny-mmtt") / "dataset"
    convert_mmtt(layout, output, test_fraction=0.3)
    return output


@pytest.fixture
def offline_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face home of the test's own, offline, for the `data convert` tests (which load what they
    convert): what one test loads is not cached for the next."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def mmtt_root(tmp_path):
    """The released MMTT layout in miniature (`mmtt_folders.write_released_miniature`), fresh for each test."""
    from mmtt_folders import write_released_miniature

    return write_released_miniature(tmp_path / "mmtt")


@pytest.fixture
def no_model_may_be_built(monkeypatch):
    """Fails the test if a training run gets as far as building its model."""
    from forgerytalker.training import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was reported")

    monkeypatch.setattr(trainer, "build_model_and_processor", refuse)


@pytest.fixture(scope="session")
def stage_one(tiny_dataset_dir, tmp_path_factory):
    """A finished stage-1 run (`tiny_prompter.yaml`, launched on one process), shared by the training test files;
    tests that change a run copy it first."""
    from training_runs import run_training, tiny

    output_dir = tmp_path_factory.mktemp("stage-one") / "run"
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir), scratch=output_dir.parent / "tmp")
    return output_dir


@pytest.fixture(scope="session")
def split(tiny_dataset_dir):
    """The split the `forgerytalker evaluate` tests evaluate (`evaluate_runs.SPLIT`: 4 samples, forged and
    authentic, so AUC is defined)."""
    from datasets import load_dataset
    from evaluate_runs import SPLIT

    return load_dataset(str(tiny_dataset_dir), split=SPLIT)


@pytest.fixture(scope="session")
def model_dir(tiny_dataset_dir, tmp_path_factory):
    """A tiny untrained model whose vocabulary covers every caption of the fixture dataset; tests that change
    it save a copy."""
    from datasets import load_dataset

    from forgerytalker.tiny import build_tiny_model_and_processor

    dataset = load_dataset(str(tiny_dataset_dir))
    texts = [caption for name in dataset for caption in dataset[name]["caption"]]
    model, processor = build_tiny_model_and_processor("llama", image_size=32, texts=texts)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
