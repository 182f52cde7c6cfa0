"""Reports in the style of MMTT's human annotations, written from measured flaws.

Each statement says what is visibly wrong in named regions (blur, colour or lighting mismatch, seam, distorted
shape), graded by the measured score, and regions that share a flaw share a sentence. The text names regions
only through the nouns in `REGION_NOUNS`, so `caption_to_regions(report)` gives back exactly the regions written
about, with the project's additions as without (`include_additions`: no noun is one of them). All other wording avoids every synonym of either table (no "skin" in a texture phrase,
no "brow", which MMTT counts as forehead, no "line", which it counts as wrinkle). Reports never refer to an
original image.
"""

from __future__ import annotations

import numpy as np

from .measurements import RegionFlaws

# Region → (noun, is plural) choices; every noun is in the release's table and maps back to its region.
REGION_NOUNS: dict[str, tuple[tuple[str, bool], ...]] = {
    "eye": (("eyes", True),),
    "pupil": (("pupils", True),),
    "lip": (("lips", True),),
    "mouth": (("mouth", False),),
    "nose": (("nose", False),),
    "cheek": (("cheeks", True),),
    "forehead": (("forehead", False),),
    "chin": (("chin", False),),
    "jaw": (("jaw", False),),
    "eyebrow": (("eyebrows", True),),
    "tooth": (("teeth", True),),
    "skin": (("skin", False),),
}
MAX_WORDS = 120
_VISIBLE = 1.0
_FAINT = 0.5  # below this nothing is measurably wrong, and the report says the edit is subtle

_ADVERBS = {
    "blur": (("slightly", "a little", "somewhat"), ("noticeably", "visibly", "clearly"), ("very", "extremely")),
    "colour": (("slightly", "a little", "faintly"), ("noticeably", "visibly", "clearly"), ("much", "far", "markedly")),
    "seam": (("faint", "soft", "thin"), ("visible", "noticeable", "distinct"), ("sharp", "obvious", "hard")),
    "geometry": (("slightly", "a little"), ("noticeably", "visibly"), ("clearly", "markedly")),
}
_COLOUR_WORDS = {
    "darker": ("darker",),
    "brighter": ("brighter", "lighter"),
    "redder": ("redder", "more reddish"),
    "greener": ("more greenish", "more sallow"),
    "yellower": ("more yellow", "yellower"),
    "bluer": ("cooler", "bluer"),
}
_TEMPLATES = {
    "blur": (
        "{S} {be} {adv} blurred and {lack} fine texture.",
        "{S} {look} {adv} smeared, with less detail than the rest of the face.",
        "Texture in {s} is {adv} smoothed out, giving a painted look.",
        "{S} {look} {adv} soft and out of focus compared with the rest of the face.",
        "Fine detail in {s} is {adv} washed out, and {it} {look} waxy.",
    ),
    "colour": (
        "{S} {be} {adv} {colour} than the area around {them}.",
        "The colour of {s} does not match the rest of the face; {it} {be} {adv} {colour}.",
        "{S} {have} an odd tint, {adv} {colour} than the neighbouring area.",
    ),
    "lighting": (
        "The lighting on {s} is inconsistent: {it} {be} {adv} {colour} than nearby areas.",
        "{S} {be} {adv} {colour} than the surrounding area, as if lit differently.",
    ),
    "seam": (
        "A {adv} seam runs along the border of {s}.",
        "{S} {look} pasted in, with a {adv} edge at {its} boundary.",
        "There is a {adv} edge where {s} {meet} the surrounding area.",
    ),
    "eye_size": ("The eyes are {adv} different in size.", "One eye looks {adv} larger than the other."),
    "eyebrow_height": ("The eyebrows sit at {adv} uneven heights.", "One eyebrow is {adv} higher than the other."),
    "tilt": ("{S} {be} {adv} tilted and {look} crooked.", "{S} {be} {adv} slanted to one side."),
    "off_centre": ("{S} {be} {adv} shifted to one side of the face.", "{S} {look} {adv} lopsided and off-centre."),
    "distorted": ("{S} {look} {adv} distorted and asymmetric.", "The shape of {s} is {adv} warped and uneven."),
    "subtle": (
        "{S} {look} retouched, though the change is subtle.",
        "{S} {have} a faintly artificial look, with no single obvious flaw.",
    ),
}
_OPENERS_LOCAL = ("This face has been edited in places.", "Parts of this face look manipulated.", "Some areas of this face look retouched.")
_OPENERS_SWAP = (
    "The whole face appears to be swapped in from another person.",
    "The entire face looks replaced and does not sit naturally on the head.",
    "This looks like a face swap: the facial area seems transplanted onto the head.",
)
_CLOSERS = ("Overall the result looks artificial.", "These areas do not blend with the rest of the image.")
AUTHENTIC_REPORTS = (
    "No manipulation is visible: texture, colour and lighting are consistent across the face.",
    "This face looks authentic, with natural detail, even lighting and no seams or distortions.",
    "Nothing in this image looks edited; shading and detail are continuous across the facial features.",
    "No signs of forgery: the face shows consistent texture and colour, and no pasted or blurred areas.",
    "The photo appears untouched, with natural shading and detail throughout the face.",
)


def _tier(score: float) -> int:
    return 0 if score < 1.5 else 1 if score < 2.5 else 2


def _subject(regions: list[str], rng: np.random.Generator) -> tuple[str, bool]:
    nouns = [REGION_NOUNS[name][int(rng.integers(len(REGION_NOUNS[name])))] for name in regions]
    words = [noun for noun, _ in nouns]
    text = "the " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1])
    return text, len(words) > 1 or nouns[0][1]


def _statement(kind: str, detail: str, regions: list[str], score: float, rng: np.random.Generator) -> str:
    """One sentence about a flaw shared by `regions`, graded by `score`."""
    subject, plural = _subject(regions, rng)
    template_key = (detail or "distorted") if kind == "geometry" else kind
    if kind == "colour" and detail in ("darker", "brighter") and rng.random() < 0.5:
        template_key = "lighting"
    templates = _TEMPLATES[template_key]
    adverbs = _ADVERBS[kind][_tier(score)] if kind in _ADVERBS else ("",)
    sentence = templates[int(rng.integers(len(templates)))].format(
        S=subject[0].upper() + subject[1:],
        s=subject,
        adv=adverbs[int(rng.integers(len(adverbs)))],
        colour=rng.choice(_COLOUR_WORDS[detail]) if kind == "colour" and detail else "different in colour",
        be="are" if plural else "is",
        look="look" if plural else "looks",
        lack="lack" if plural else "lacks",
        have="have" if plural else "has",
        meet="meet" if plural else "meets",
        it="they" if plural else "it",
        them="them" if plural else "it",
        its="their" if plural else "its",
    )
    return " ".join(sentence.split())


def _flaw_to_write(flaws: RegionFlaws, with_details: bool) -> tuple[str, str, float]:
    """The (kind, detail, score) of the one statement about a region: its strongest flaw, or "subtle" when
    nothing is measurably wrong. One flaw per region, so that no report names a region twice."""
    detail = {"colour": flaws.colour_shift, "geometry": flaws.geometry} if with_details else {}
    kind, score = flaws.strongest()
    return (kind, detail.get(kind, ""), score) if score >= _FAINT else ("subtle", "", score)


def _statements(measured: dict[str, RegionFlaws], with_details: bool, rng) -> list[str]:
    """One sentence per shared flaw, strongest first; each is graded by the weakest region it speaks for."""
    groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for name in measured:
        kind, detail, score = _flaw_to_write(measured[name], with_details)
        groups.setdefault((kind, detail), []).append((name, score))
    ordered = sorted(groups.items(), key=lambda item: -max(score for _, score in item[1]))
    return [
        _statement(kind, detail, [name for name, _ in members], min(score for _, score in members), rng)
        for (kind, detail), members in ordered
    ]


def select_swap_regions(measured: dict[str, RegionFlaws], max_regions: int = 3) -> list[str]:
    """For a whole-face swap, the regions to write about: those with a visible flaw (strongest first, at most
    `max_regions`), or the single most flawed region."""
    ranked = sorted(measured, key=lambda name: -measured[name].strongest()[1])
    visible = [name for name in ranked if measured[name].strongest()[1] >= _VISIBLE]
    return visible[:max_regions] or ranked[:1]


def write_report(measured: dict[str, RegionFlaws], whole_face: bool, rng: np.random.Generator) -> str:
    """A report naming exactly the regions of `measured` (region → flaws), in MMTT's annotation style.

    Args:
        measured (`dict[str, RegionFlaws]`): the regions to write about and their measured flaws.
        whole_face (`bool`): open with a sentence saying the whole face looks swapped.
        rng (`np.random.Generator`): picks among equivalent wordings.
    """
    opener = closer = ""
    if whole_face:
        opener = _OPENERS_SWAP[int(rng.integers(len(_OPENERS_SWAP)))]
    elif rng.random() < 0.3:
        opener = _OPENERS_LOCAL[int(rng.integers(len(_OPENERS_LOCAL)))]
    if rng.random() < 0.2:
        closer = _CLOSERS[int(rng.integers(len(_CLOSERS)))]
    # A shorter wording until the report fits MMTT's 120-word limit.
    for with_details in (True, False):
        report = " ".join([opener, *_statements(measured, with_details, rng), closer]).strip()
        if len(report.split()) <= MAX_WORDS:
            break
        closer = ""
    return report


def authentic_report(rng: np.random.Generator) -> str:
    """A report for an untouched photo: says no manipulation is visible and names no region."""
    return AUTHENTIC_REPORTS[int(rng.integers(len(AUTHENTIC_REPORTS)))]
