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

_IRREGULAR_PLURALS = {"tooth": "teeth"}
REGION_WORD_FORMS: dict[str, tuple[str, str]] = {name: (name, _IRREGULAR_PLURALS.get(name, name + "s")) for name in REGION_NAMES}
"""Region → the words a report names it by, its name and its plural: what "a report names a region twice" counts, and
the words `ForgeryTalkerProcessor.region_word_ids` lets a report write once."""

# The release's caption → label table (`scripts/data_preparation/to_mutilabel.py` of
# NattyLianJc/Generating-Attribution-Reports), the rule the released `multilabel` vectors were made with.
# A synonym is a word or a phrase, matched as a whole (case-insensitive, `\b` at both ends); every synonym
# that occurs marks its region, so "facial hair" marks beard, and its word "hair" marks hair too.
RELEASED_REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "eye": ("eye", "eyes", "ocular", "optic", "vision"),
    "pupil": ("pupil", "pupils"),
    "lip": ("lip", "lips", "labium", "labia"),
    "mouth": ("mouth", "mouths", "oral cavity"),
    "nose": ("nose", "noses", "nasal", "nostril", "nostrils"),
    "ear": ("ear", "ears", "auricle", "pinna", "pinnae"),
    "cheek": ("cheek", "cheeks", "malar"),
    "forehead": ("forehead", "frontal", "brow", "brows"),
    "chin": ("chin", "chins", "mentum"),
    "jaw": ("jaw", "jaws", "mandible", "maxilla"),
    "eyebrow": ("eyebrow", "eyebrows"),
    "tooth": ("tooth", "teeth", "dentition"),
    "tongue": ("tongue", "tongues", "glossa", "lingua"),
    "beard": ("beard", "beards", "facial hair"),
    "mustache": ("mustache", "mustaches", "moustache", "moustaches"),
    "skin": ("skin", "derma", "epidermis", "cutis"),
    "hair": ("hair", "hairs", "locks", "tresses", "strands"),
    "wrinkle": ("wrinkle", "wrinkles", "line", "lines", "crease", "creases"),
    "freckle": ("freckle", "freckles", "lentigo", "lentigines"),
    "scar": ("scar", "scars", "cicatrix", "cicatrices"),
    "dimple": ("dimple", "dimples", "fossa", "fossae"),
}
# The release lists "buccal" under both mouth and cheek: it marks both.
RELEASED_SHARED_SYNONYMS: dict[str, tuple[str, ...]] = {"buccal": ("mouth", "cheek")}
# The project's additions: words the release's table lacks that name a region just as plainly. The release
# gives these no label ("eyelids" is not "eye" under `\b` matching), so they are used only on request
# (`include_additions=True`): by default a caption gets exactly the labels the release's rule gives it.
ADDED_REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "eye": ("eyelid", "eyelids"),
    "pupil": ("iris", "irises"),
    "ear": ("earlobe", "earlobes"),
    "cheek": ("cheekbone", "cheekbones"),
    "jaw": ("jawline", "jawlines"),
    "skin": ("skins",),
    "hair": ("hairline", "hairlines"),
}


def _synonym_regions(include_additions: bool) -> dict[str, tuple[str, ...]]:
    """Synonym (lower case) → the regions it marks."""
    tables = (RELEASED_REGION_SYNONYMS, ADDED_REGION_SYNONYMS) if include_additions else (RELEASED_REGION_SYNONYMS,)
    table = {synonym: (region,) for words in tables for region, synonyms in words.items() for synonym in synonyms}
    table.update(RELEASED_SHARED_SYNONYMS)
    return table


REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    name: tuple(synonym for synonym, regions in _synonym_regions(False).items() if name in regions)
    for name in REGION_NAMES
}
"""Region → every word or phrase that marks it in a caption by the release's rule (`ADDED_REGION_SYNONYMS` apart)."""

_WORD = re.compile(r"\w+")


class _CaptionMatcher:
    r"""Finds synonyms as `\b`-bounded whole words or phrases: single words by a set lookup over the caption's
    maximal `\w+` runs (the same matches as `\bword\b`), phrases by one regular expression each."""

    def __init__(self, synonyms: dict[str, tuple[str, ...]]):
        self.words = {synonym: regions for synonym, regions in synonyms.items() if _WORD.fullmatch(synonym)}
        self.phrases = [
            (re.compile(r"\b" + re.escape(synonym) + r"\b", re.IGNORECASE), regions)
            for synonym, regions in synonyms.items()
            if synonym not in self.words
        ]

    def regions(self, caption: str) -> list[str]:
        mentioned = {region for word in _WORD.findall(caption.lower()) for region in self.words.get(word, ())}
        mentioned.update(region for pattern, regions in self.phrases if pattern.search(caption) for region in regions)
        return [name for name in REGION_NAMES if name in mentioned]


_MATCHERS = {True: _CaptionMatcher(_synonym_regions(True)), False: _CaptionMatcher(_synonym_regions(False))}


def caption_to_regions(caption: str, *, include_additions: bool = False) -> list[str]:
    """Names of the regions a caption mentions, in `REGION_NAMES` order.

    Every synonym of `REGION_SYNONYMS` found as a whole word or phrase (case-insensitive) marks its region(s):
    the labels the release's script gives the caption. `include_additions=True` also counts the words of
    `ADDED_REGION_SYNONYMS` ("eyelids" → eye), which the release does not.
    """
    return _MATCHERS[include_additions].regions(caption)


def caption_to_labels(caption: str, *, include_additions: bool = False) -> list[int]:
    """The 21-long 0/1 vector of a caption, as the released MMTT `multilabel` field (see `caption_to_regions`)."""
    return regions_to_labels(caption_to_regions(caption, include_additions=include_additions))


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
