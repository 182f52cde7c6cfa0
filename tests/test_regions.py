"""The one owner of the 21 region names and of the caption → labels extraction."""

import re

import pytest

from forgerytalker.regions import (
    ADDED_REGION_SYNONYMS,
    NUM_REGIONS,
    REGION_NAMES,
    REGION_SYNONYMS,
    RELEASED_REGION_SYNONYMS,
    RELEASED_SHARED_SYNONYMS,
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


def test_the_releases_synonyms_and_phrases_mark_their_regions():
    assert caption_to_regions("The ocular area is smeared and the nasal bridge is warped.") == ["eye", "nose"]
    assert caption_to_regions("The mandible looks stretched; fine lines and a crease appear.") == ["jaw", "wrinkle"]
    assert caption_to_regions("The oral cavity is dark.") == ["mouth"]
    assert caption_to_regions("The buccal region is blurred.") == ["mouth", "cheek"]  # the release lists it under both
    # a phrase marks its region, and its words mark theirs, as in the release
    assert caption_to_regions("Facial Hair is painted on.") == ["beard", "hair"]
    assert caption_to_regions("The hair-line is uneven.") == ["hair", "wrinkle"]


def _release_rule(caption: str) -> list[int]:
    """The release's labelling algorithm, written from its description: every synonym of its table searched in
    the caption as `\\b<synonym>\\b`, case-insensitive; a match sets its region's label."""
    table = {region: list(words) for region, words in RELEASED_REGION_SYNONYMS.items()}
    for synonym, regions in RELEASED_SHARED_SYNONYMS.items():
        for region in regions:
            table[region].append(synonym)
    return [
        int(any(re.search(r"\b" + re.escape(word) + r"\b", caption, re.IGNORECASE) for word in table[region]))
        for region in REGION_NAMES
    ]


TRICKY_CAPTIONS = [
    "The EYES look glassy; the eye's corner is smeared.",
    "Eye-catching artifacts near the nose-bridge and the lips.",
    "eyelids, hairline, jawline and cheekbones look retouched; the iris is grey.",
    "The eye_2 label and eyes3 are not words; the skin's tone is off.",
    "Facial  hair (two spaces) and facial\nhair and facialhair.",
    "No sign of manipulation is visible.",
    "Teeth, tooth, dentition; tongue glossa lingua; pinna pinnae auricle.",
    "Skins and strands of locks; tresses; frontal brows; malar and buccal areas.",
    "Vision is blurred, optic nerves; labia; mentum; maxilla; fossa; cicatrix; lentigo; derma; cutis.",
    "Ça ne va pas: l'œil gauche et le nez sont flous, the EYEBROW too.",
]


def test_the_labels_are_the_releases():
    for caption in TRICKY_CAPTIONS:
        assert caption_to_labels(caption) == _release_rule(caption), caption


def test_the_additions_are_opt_in_and_change_labels_only_through_their_own_words():
    added = {word for words in ADDED_REGION_SYNONYMS.values() for word in words}
    for caption in TRICKY_CAPTIONS:
        ours, released = caption_to_regions(caption, include_additions=True), caption_to_regions(caption)
        extra = set(ours) - set(released)
        assert set(released) <= set(ours)
        words = set(re.findall(r"\w+", caption.lower()))
        assert extra == {region for region, synonyms in ADDED_REGION_SYNONYMS.items() if words & set(synonyms)}, caption
    assert caption_to_regions(TRICKY_CAPTIONS[2], include_additions=True) == ["eye", "pupil", "cheek", "jaw", "hair"]
    assert caption_to_regions(TRICKY_CAPTIONS[2]) == []
    assert added == {"eyelid", "eyelids", "iris", "irises", "earlobe", "earlobes", "cheekbone", "cheekbones",
                     "jawline", "jawlines", "skins", "hairline", "hairlines"}  # fmt: skip


def test_each_synonym_is_listed_once_with_its_regions():
    listed = [word for table in (RELEASED_REGION_SYNONYMS, ADDED_REGION_SYNONYMS) for words in table.values() for word in words]
    listed += list(RELEASED_SHARED_SYNONYMS)
    assert len(listed) == len(set(listed))
    assert set(RELEASED_REGION_SYNONYMS) == set(REGION_NAMES) and set(ADDED_REGION_SYNONYMS) <= set(REGION_NAMES)
    assert all(set(regions) <= set(REGION_NAMES) for regions in RELEASED_SHARED_SYNONYMS.values())
    assert "buccal" in REGION_SYNONYMS["mouth"] and "buccal" in REGION_SYNONYMS["cheek"]
    assert not added_words_in(REGION_SYNONYMS)
    assert REGION_SYNONYMS["beard"] == ("beard", "beards", "facial hair")


def added_words_in(table) -> set[str]:
    return {word for words in table.values() for word in words} & {
        word for words in ADDED_REGION_SYNONYMS.values() for word in words
    }
