"""The 21 facial regions of MMTT: their names, their order and how a caption names them.

This module is the one owner of the region vocabulary. The order of `REGION_NAMES` is the order of the
released MMTT `multilabel` vectors; everything that turns regions into labels or labels into names imports
from here. The module has no package-level imports so that it can be copied next to a checkpoint for
`trust_remote_code=True` loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

REGION_NAMES: tuple[str, ...] = (
    "eye",
    "pupil",
    "lip",
    "mouth",
    "nose",
    "ear",
    "cheek",
    "forehead",
    "chin",
    "jaw",
    "eyebrow",
    "tooth",
    "tongue",
    "beard",
    "mustache",
    "skin",
    "hair",
    "wrinkle",
    "freckle",
    "scar",
    "dimple",
)
NUM_REGIONS = len(REGION_NAMES)
REGION_TO_INDEX = {name: index for index, name in enumerate(REGION_NAMES)}

# Whole words that name a region in a caption, as the released annotations map them
# (plurals, spelling variants and the synonyms annotators used).
REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "eye": ("eye", "eyes", "eyelid", "eyelids"),
    "pupil": ("pupil", "pupils", "iris", "irises"),
    "lip": ("lip", "lips"),
    "mouth": ("mouth", "mouths"),
    "nose": ("nose", "noses", "nostril", "nostrils"),
    "ear": ("ear", "ears", "earlobe", "earlobes"),
    "cheek": ("cheek", "cheeks", "cheekbone", "cheekbones"),
    "forehead": ("forehead", "foreheads", "brow", "brows"),
    "chin": ("chin", "chins"),
    "jaw": ("jaw", "jaws", "jawline", "jawlines"),
    "eyebrow": ("eyebrow", "eyebrows"),
    "tooth": ("tooth", "teeth"),
    "tongue": ("tongue", "tongues"),
    "beard": ("beard", "beards"),
    "mustache": ("mustache", "mustaches", "moustache", "moustaches"),
    "skin": ("skin", "skins"),
    "hair": ("hair", "hairs", "hairline"),
    "wrinkle": ("wrinkle", "wrinkles"),
    "freckle": ("freckle", "freckles"),
    "scar": ("scar", "scars"),
    "dimple": ("dimple", "dimples"),
}
_WORD_TO_REGION = {word: region for region, words in REGION_SYNONYMS.items() for word in words}
_WORD_PATTERN = re.compile(r"[a-z]+")


def caption_to_regions(caption: str) -> list[str]:
    """Names of the regions a caption mentions, in `REGION_NAMES` order (whole-word, case-insensitive)."""
    mentioned = {_WORD_TO_REGION[word] for word in _WORD_PATTERN.findall(caption.lower()) if word in _WORD_TO_REGION}
    return [name for name in REGION_NAMES if name in mentioned]


def caption_to_labels(caption: str) -> list[int]:
    """The 21-long 0/1 vector of a caption, as the released MMTT `multilabel` field."""
    return regions_to_labels(caption_to_regions(caption))


def validate_region_names(names: Iterable[str], argument: str = "regions") -> list[str]:
    """Lower-cases and checks region names, raising a `ValueError` that names `argument` for unknown ones."""
    checked = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"`{argument}` must hold region names (str), got {type(name).__name__}: {name!r}")
        key = name.strip().lower()
        if key not in REGION_TO_INDEX:
            raise ValueError(f"Unknown region name {name!r} in `{argument}`; known regions are: {', '.join(REGION_NAMES)}")
        checked.append(key)
    return checked


def regions_to_labels(names: Iterable[str]) -> list[int]:
    """The 21-long 0/1 vector with a 1 at each named region."""
    labels = [0] * NUM_REGIONS
    for name in validate_region_names(names):
        labels[REGION_TO_INDEX[name]] = 1
    return labels


def labels_to_regions(labels: Sequence[int | float | bool]) -> list[str]:
    """Names of the regions whose label is set (non-zero), in `REGION_NAMES` order."""
    if len(labels) != NUM_REGIONS:
        raise ValueError(f"A region label vector has {NUM_REGIONS} entries, got {len(labels)}")
    return [name for name, value in zip(REGION_NAMES, labels) if value]
