"""The processor's inputs: batch-first tensors, its keyword arguments, and every picture read by one rule."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate.utils import concatenate, find_batch_size, slice_tensors
from conftest import random_image
from PIL import Image, ImageOps
from transformers import default_data_collator

from forgerytalker.image_utils import forged_pixels
from forgerytalker.instruction import InstructionPieces
from forgerytalker.regions import REGION_NAMES


def test_every_tensor_is_batch_first(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    masks = [np.zeros((image.height, image.width), np.uint8) for image in images]
    batch = processor(images=images, reports=["a", "the eye", "lips"], regions=[["eye"], [], ["lip", "nose"]],
                      region_labels=[["eye"], [], ["lip"]], masks=masks)
    assert set(batch) == {"pixel_values", "instruction_input_ids", "instruction_qformer_input_ids", "labels",
                          "instruction_regions", "region_labels", "masks"}
    for name, tensor in batch.items():
        assert tensor.shape[0] == 3, name
    assert batch["instruction_input_ids"].shape[:2] == (3, InstructionPieces.NUM_ROWS)
    assert find_batch_size(dict(batch)) == 3


def outputs_of(model, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        output = model(**batch)
    return {"logits": output.logits, "pred_masks": output.pred_masks, "region_logits": output.region_logits}


def assert_rows_match(whole: dict, part: dict, rows: slice) -> None:
    for name in ("pred_masks", "region_logits"):
        torch.testing.assert_close(part[name], whole[name][rows], rtol=1e-4, atol=1e-5)
    # the instruction pieces are the same for every row, so per-row logits have one length in any slice
    torch.testing.assert_close(part["logits"], whole["logits"][rows, : part["logits"].shape[1]], rtol=1e-4, atol=1e-4)


def test_a_sliced_or_split_batch_gives_the_rows_of_the_whole_batch(tiny_model_and_processor, images):
    model, processor = tiny_model_and_processor
    batch = processor(images=images, reports=["the eye looks blurry"] * 3, regions=[["eye"], ["lip"], ["nose"]])
    whole = outputs_of(model, batch)
    assert_rows_match(whole, outputs_of(model, {name: value[1:] for name, value in batch.items()}), slice(1, None))

    # accelerate's batch splitting (split_batches / dispatch_batches) slices every tensor of the batch
    halves = [slice_tensors(dict(batch), slice(0, 2)), slice_tensors(dict(batch), slice(2, 3))]
    assert_rows_match(whole, outputs_of(model, halves[0]), slice(0, 2))
    assert_rows_match(whole, outputs_of(model, halves[1]), slice(2, 3))
    rejoined = concatenate(halves)
    for name, value in batch.items():
        assert torch.equal(rejoined[name], value), name


def test_default_data_collator_stacks_single_image_outputs(tiny_model_and_processor, images):
    model, processor = tiny_model_and_processor
    regions = [["eye"], ["lip"], ["nose"]]
    features = [
        {name: value[0] for name, value in processor(images=[image], reports=["blurry eye"], regions=[names]).items()}
        for image, names in zip(images, regions)
    ]
    collated = default_data_collator(features)
    batch = processor(images=images, reports=["blurry eye"] * 3, regions=regions)
    for name, value in batch.items():
        assert torch.equal(collated[name], value), name
    assert outputs_of(model, collated)["logits"].shape[0] == 3


def test_text_is_an_error_and_reports_become_labels(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"does not take `text`.*reports="):
        processor(images=images[:1], text="the eye looks blurry")
    labels = processor(images=images[:2], reports=["the eye looks blurry", "no"])["labels"]
    eos = processor.tokenizer.eos_token_id
    first = processor.tokenizer("the eye looks blurry", add_special_tokens=False)["input_ids"] + [eos]
    assert labels[0].tolist() == first
    assert labels[1, : (labels[1] != -100).sum()].tolist()[-1] == eos and (labels[1] == -100).any()


def test_padding_truncation_max_length_and_return_tensors(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    reports = ["the left eye looks blurry and the lips are too smooth", "no"]
    eos = processor.tokenizer.eos_token_id
    truncated = processor(images=images[:2], reports=reports, max_length=4)["labels"]
    assert truncated.shape == (2, 4) and truncated[0, -1] == eos
    padded = processor(images=images[:2], reports=reports, padding="max_length", max_length=40)["labels"]
    short = len(processor.tokenizer("no", add_special_tokens=False)["input_ids"]) + 1  # with its EOS
    assert padded.shape == (2, 40) and (padded[1, :short] != -100).all() and (padded[1, short:] == -100).all()
    whole = processor(images=images[:2], reports=reports, truncation=False, max_length=4)["labels"]
    assert whole.shape[1] > 4
    with pytest.raises(ValueError, match="padding=False"):
        processor(images=images[:2], reports=reports, padding=False)
    as_numpy = processor(images=images[:2], reports=reports, return_tensors="np")
    assert all(isinstance(value, np.ndarray) for value in as_numpy.values())
    resized = processor(images=images[:1], size={"height": 16, "width": 16})["pixel_values"]
    assert resized.shape[-2:] == (16, 16)


def test_batch_decode_takes_the_generation_output(tiny_model_and_processor, images):
    model, processor = tiny_model_and_processor
    output = model.generate(**processor(images=images), max_new_tokens=4)
    assert processor.batch_decode(output) == processor.batch_decode(output.sequences)
    assert len(processor.batch_decode(output)) == 3


def test_one_list_of_regions_names_them_for_every_image(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    batch = processor(images=images, regions=["lip", "eye"])
    flagged = [[REGION_NAMES[i] for i in row.nonzero().flatten().tolist()] for row in batch["instruction_regions"]]
    assert flagged == [["eye", "lip"]] * 3  # the named regions, in REGION_NAMES order, for every image


# -- every picture goes through image_utils.to_rgb ------------------------------------------------------------


def pixels(processor, image) -> torch.Tensor:
    return processor(images=[image])["pixel_values"][0]


def test_sixteen_bit_images_are_scaled_by_their_range(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    values = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    sixteen = Image.fromarray(values)
    assert sixteen.mode == "I;16"
    eight = Image.fromarray(np.round(values / 257).astype(np.uint8)).convert("RGB")
    torch.testing.assert_close(pixels(processor, sixteen), pixels(processor, eight))
    png = io.BytesIO()
    sixteen.save(png, format="PNG")
    torch.testing.assert_close(pixels(processor, Image.open(png)), pixels(processor, eight))


def test_transparent_pixels_are_composited_on_white(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200  # red under full transparency
    rgba[:16, :, 3] = 255  # the top half opaque
    expected = np.full((32, 32, 3), 255, np.uint8)
    expected[:16] = (200, 0, 0)
    torch.testing.assert_close(pixels(processor, Image.fromarray(rgba, "RGBA")), pixels(processor, Image.fromarray(expected)))


def test_grayscale_and_cmyk_are_converted(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    gray = Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32))
    torch.testing.assert_close(pixels(processor, gray), pixels(processor, gray.convert("RGB")))
    colour = random_image(3, 32, 32)
    cmyk = colour.convert("CMYK")
    torch.testing.assert_close(pixels(processor, cmyk), pixels(processor, cmyk.convert("RGB")))
    assert pixels(processor, cmyk).shape[0] == 3


def test_exif_orientation_is_applied(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    photo = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1)), "L").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show rotated by 90°
    stored = io.BytesIO()
    photo.save(stored, format="PNG", exif=exif)
    opened = Image.open(stored)
    upright = ImageOps.exif_transpose(Image.open(stored))
    assert upright.size == (32, 48)
    torch.testing.assert_close(pixels(processor, opened), pixels(processor, upright))
    assert not torch.allclose(pixels(processor, opened), pixels(processor, photo))


def test_empty_pictures_and_no_pictures_get_clear_messages(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"`images` is empty"):
        processor(images=[])
    with pytest.raises(ValueError, match=r"`images\[1\]`: The picture is empty"):
        processor(images=[random_image(0, 8, 8), np.zeros((0, 0, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"`images\[0\]`: The picture is empty \(0×0\)"):
        processor(images=[Image.new("RGB", (0, 0))])


# -- masks follow image_utils.forged_pixels ---------------------------------------------------------------------


def test_masks_are_binarised_by_the_one_mask_rule(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    image = random_image(0, 32, 32)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:16, :, 2] = 1  # blue > 0 but fully transparent: forged (alpha is ignored)
    rgba[16:, :, 3] = 255  # opaque black: not forged
    sixteen = Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 2 * 3).astype(np.uint16))
    for mask in (Image.fromarray(rgba, "RGBA"), sixteen, np.eye(32, dtype=bool)):
        expected = torch.from_numpy(forged_pixels(mask).astype(np.float32))
        assert torch.equal(processor(images=[image], masks=[mask])["masks"][0, 0], expected)


def test_a_mask_of_another_size_than_its_image_is_refused(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"`masks\[0\]` is 20×10 but `images\[0\]` is 32×32"):
        processor(images=[random_image(0, 32, 32)], masks=[np.zeros((10, 20), np.uint8)])


def test_a_saved_processor_resizes_with_pil_where_transformers_would_pick_torchvision(saved_tiny_checkpoint, monkeypatch):
    """transformers saves `BlipImageProcessorPil` as "BlipImageProcessor" and loads torchvision's resize wherever
    torchvision is installed (not on this machine: a stand-in plays its part); the processor keeps PIL's, as the
    checkpoint was trained, unless the caller names the backend."""
    from transformers import AutoImageProcessor, BlipImageProcessorPil
    from transformers.image_processing_backends import TorchvisionBackend

    from forgerytalker import ForgeryTalkerProcessor

    class TorchvisionResize(TorchvisionBackend):
        pass

    load = AutoImageProcessor.from_pretrained.__func__

    def as_with_torchvision_installed(cls, *args, backend=None, **kwargs):
        return TorchvisionResize() if backend in (None, "torchvision") else load(cls, *args, backend=backend, **kwargs)

    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", classmethod(as_with_torchvision_installed))
    processor = ForgeryTalkerProcessor.from_pretrained(saved_tiny_checkpoint)
    assert type(processor.image_processor) is BlipImageProcessorPil
    assert processor.image_processor.size == {"height": 32, "width": 32}
    chosen = ForgeryTalkerProcessor.from_pretrained(saved_tiny_checkpoint, image_processor_backend="torchvision")
    assert isinstance(chosen.image_processor, TorchvisionResize)


def test_the_processing_module_does_not_import_modeling_code(tmp_path):
    """Like transformers' own processors, the processor works without the model's code. Checked the way a
    `trust_remote_code=True` checkpoint loads it: the processing module and the files it imports (as transformers
    finds them) are copied into a package of their own and imported in a fresh interpreter, where importing
    `forgerytalker` itself would register the model with the Auto classes."""
    import forgerytalker.processing_forgerytalker as processing
    from transformers.dynamic_module_utils import get_relative_import_files

    package = tmp_path / "checkpoint_code"
    package.mkdir()
    (package / "__init__.py").write_text("")
    copied = [processing.__file__, *get_relative_import_files(processing.__file__)]
    for source in copied:
        shutil.copy(source, package / os.path.basename(source))
    assert not any("modeling_forgerytalker" in os.path.basename(source) for source in copied), copied
    code = (
        "import sys\n"
        "import checkpoint_code.processing_forgerytalker as processing\n"
        "assert processing.resolve_local_path('owner/name') == 'owner/name'\n"
        "print(sorted(name for name in sys.modules if 'modeling_forgerytalker' in name or name.startswith('forgerytalker')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
