"""The one owner of the 21 region names and of the caption → labels extraction."""

import pytest

from forgerytalker.regions import (
    NUM_REGIONS,
    REGION_NAMES,
    caption_to_labels,
    caption_to_regions,
    labels_to_regions,
    regions_to_labels,
)


def test_released_order_of_the_21_regions():
    assert NUM_REGIONS == 21
    assert REGION_NAMES[:5] == ("eye", "pupil", "lip", "mouth", "nose")
    assert REGION_NAMES[-3:] == ("freckle", "scar", "dimple")


def test_caption_extraction_maps_synonyms_by_whole_word():
    caption = "Both EYES look glassy, the teeth are blurred, a nostril is warped and the brow skin is too smooth."
    assert caption_to_regions(caption) == ["eye", "nose", "forehead", "tooth", "skin"]
    labels = caption_to_labels(caption)
    assert len(labels) == 21 and sum(labels) == 5 and labels[REGION_NAMES.index("tooth")] == 1


def test_caption_extraction_ignores_words_that_only_contain_a_region():
    assert caption_to_regions("The eyebrows and the lipstick look odd; a moustache is pasted.") == ["eyebrow", "mustache"]
    assert caption_to_regions("No manipulation is visible.") == []


def test_labels_round_trip_and_errors():
    assert labels_to_regions(regions_to_labels(["Chin", "eye"])) == ["eye", "chin"]
    with pytest.raises(ValueError, match="Unknown region name 'elbow'"):
        regions_to_labels(["elbow"])
    with pytest.raises(ValueError, match="21 entries, got 3"):
        labels_to_regions([1, 0, 1])
