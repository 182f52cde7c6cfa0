"""Training-time augmentation: the mask follows every geometric change of its image, photometric changes leave
the mask alone, and the draws come from torch's seeded generator (so a resumed run repeats them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from forgerytalker.training.augmentation import AugmentationSettings, augment_pair

GEOMETRY_ONLY = AugmentationSettings(min_crop=0.6, flip_probability=0.5, jitter=0.0, resize_probability=0.0,
                                     jpeg_probability=0.0)
PHOTOMETRY_ONLY = AugmentationSettings(min_crop=1.0, flip_probability=0.0, jitter=0.4, resize_probability=1.0,
                                       jpeg_probability=1.0)


def marked_face(width: int = 160, height: int = 120) -> tuple[Image.Image, np.ndarray]:
    """A grey picture with a red, off-centre rectangle, and the mask of exactly that rectangle."""
    pixels = np.full((height, width, 3), 128, np.uint8)
    mask = np.zeros((height, width), bool)
    mask[20:70, 15:60] = True
    pixels[mask] = (230, 20, 20)
    return Image.fromarray(pixels), mask


def red(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image).astype(int)
    return (pixels[..., 0] > 180) & (pixels[..., 1] < 80)


def test_the_mask_follows_crops_and_flips_of_its_image():
    image, mask = marked_face()
    torch.manual_seed(0)
    flipped_any = False
    for _ in range(20):
        new_image, new_mask = augment_pair(image, mask, GEOMETRY_ONLY)
        assert new_mask.shape == (new_image.height, new_image.width) and new_mask.dtype == bool
        # the red rectangle and the mask are the same pixels after any crop and flip
        np.testing.assert_array_equal(new_mask, red(new_image))
        if new_mask.any():
            columns = np.flatnonzero(new_mask.any(axis=0))
            flipped_any |= columns.mean() > new_image.width / 2
    assert flipped_any, "20 draws with a flip probability of 0.5 flipped none"


def test_photometric_changes_leave_the_mask_as_it_was():
    image, mask = marked_face()
    torch.manual_seed(1)
    new_image, new_mask = augment_pair(image, mask, PHOTOMETRY_ONLY)
    np.testing.assert_array_equal(new_mask, mask)
    assert new_image.size == image.size
    assert not np.array_equal(np.asarray(new_image), np.asarray(image))


def test_the_working_size_shrinks_image_and_mask_together():
    image, mask = marked_face(512, 512)
    torch.manual_seed(2)
    settings = AugmentationSettings(min_crop=1.0, flip_probability=0.0, jitter=0.0, resize_probability=0.0,
                                    jpeg_probability=0.0, working_size=128)
    new_image, new_mask = augment_pair(image, mask, settings)
    assert new_image.size == (128, 128) and new_mask.shape == (128, 128)
    assert abs(new_mask.mean() - mask.mean()) < 0.01


def test_the_same_torch_seed_gives_the_same_augmentation():
    image, mask = marked_face()
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        results.append(augment_pair(image, mask))
    np.testing.assert_array_equal(np.asarray(results[0][0]), np.asarray(results[1][0]))
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_a_mask_of_another_size_is_refused():
    image, mask = marked_face()
    with pytest.raises(ValueError, match="160×120"):
        augment_pair(image, mask[:50])


def test_an_image_whose_report_names_a_side_is_never_flipped():
    from forgerytalker.training.augmentation import flip_allowed

    assert flip_allowed("The lips look blurred.") and flip_allowed(None)
    assert not flip_allowed("The LEFT eye is darker.") and not flip_allowed("a seam on the right cheek")
    assert flip_allowed("The eyes look brighter and the skin is lighter.")  # "brighter" is no side
    image, mask = marked_face()
    torch.manual_seed(0)
    for _ in range(20):
        new_image, new_mask = augment_pair(image, mask, GEOMETRY_ONLY, allow_flip=False)
        columns = np.flatnonzero(new_mask.any(axis=0))
        assert not columns.size or columns.mean() < new_image.width / 2  # the rectangle stays on the left
