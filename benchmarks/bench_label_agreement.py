"""How often `forgerytalker.regions.caption_to_labels` gives a caption the labels the MMTT release gives it.

    python benchmarks/bench_label_agreement.py --captions 20000

The release labelled its captions with `scripts/data_preparation/to_mutilabel.py`: every synonym of its table
searched as `\\b<synonym>\\b`, case-insensitive. `release_rule` below does that (written from that description).
No MMTT caption can be downloaded here, so three caption sets stand in for them:

- `release_style`: captions built the way the release's annotations read (its README quotes translated
  annotator notes such as "The woman's mouth was deformed ... the contour of her hairline was unclear. Part of
  her right eyebrow was missing"; the paper quotes "The nose texture appears unnaturally smooth, lacking real
  skin details"): clauses about regions drawn with the paper's frequencies (eye, eyebrow and lip most often),
  each region named by one of the words annotators use for it, drawn uniformly, including words the
  release's table does not list (eyelashes, nose bridge, jawline, hairline, cheekbones, ...);
- `synthesized`: reports written by `forgerytalker.data.synthesis.reports.write_report`;
- `tricky`: captions with hyphens, possessives, case, digits, underscores and phrases.

For each set it prints the share of captions whose 21-vector `caption_to_labels` makes identical to the
release's (the default rule, and with `include_additions=True`), and per region the captions where the rule
with the additions differs. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

import numpy as np

from _machine import load_average, machine_state
from forgerytalker.data.synthesis.landmark_regions import LANDMARK_REGIONS
from forgerytalker.data.synthesis.measurements import FLAW_KINDS, RegionFlaws
from forgerytalker.data.synthesis.reports import write_report
from forgerytalker.regions import (
    REGION_NAMES,
    RELEASED_REGION_SYNONYMS,
    RELEASED_SHARED_SYNONYMS,
    caption_to_labels,
)

# Region → how often the paper's Figure 3 / §3.3 says captions mention it (relative), and the words annotators
# use for it. Words outside the release's table are kept on purpose: they are what makes rules disagree.
REGION_WORDS: dict[str, tuple[float, tuple[str, ...]]] = {
    "eye": (10.9, ("eyes", "eye", "left eye", "right eye", "eyelids", "eyelashes", "eye corners")),
    "pupil": (1.0, ("pupils", "pupil", "iris")),
    "lip": (5.0, ("lips", "upper lip", "lower lip")),
    "mouth": (3.0, ("mouth", "mouth corners")),
    "nose": (3.0, ("nose", "nostrils", "nose bridge", "nasal bridge")),
    "ear": (0.5, ("ears", "ear", "earlobe")),
    "cheek": (1.5, ("cheeks", "cheek", "cheekbones")),
    "forehead": (1.5, ("forehead", "brow")),
    "chin": (1.0, ("chin",)),
    "jaw": (1.0, ("jaw", "jawline")),
    "eyebrow": (8.4, ("eyebrows", "eyebrow", "left eyebrow", "right eyebrow")),
    "tooth": (1.5, ("teeth", "tooth")),
    "tongue": (0.3, ("tongue",)),
    "beard": (0.3, ("beard", "facial hair")),
    "mustache": (0.3, ("mustache", "moustache")),
    "skin": (2.0, ("skin", "skin texture", "neck skin")),
    "hair": (2.0, ("hair", "hairline", "hair strands")),
    "wrinkle": (0.5, ("wrinkles", "fine lines")),
    "freckle": (0.2, ("freckles",)),
    "scar": (0.1, ("scar",)),
    "dimple": (0.1, ("dimples",)),
}
FLAWS = (
    "{S} {is} deformed", "{S} {is} unclear", "part of {s} is missing", "{S} {has} no texture",
    "{S} {looks} blurred", "the contour of {s} is unclear", "{S} {is} asymmetric",
    "{S} {looks} unnaturally smooth", "the colour of {s} is inconsistent with the face",
)  # fmt: skip
OPENERS = ("", "The woman's ", "The man's ", "Her ", "His ")
TRICKY = (
    "The EYES look glassy; the eye's corner is smeared.",
    "Eye-catching artifacts near the nose-bridge and the lips.",
    "eyelids, hairline, jawline and cheekbones look retouched; the iris is grey.",
    "The eye_2 label and eyes3 are not words; the skin's tone is off.",
    "Facial  hair (two spaces) and facial\nhair and facialhair.",
    "Teeth, tooth, dentition; tongue glossa lingua; pinna pinnae auricle.",
    "Skins and strands of locks; tresses; frontal brows; malar and buccal areas.",
    "The nose texture appears unnaturally smooth, lacking real skin details.",
)


def release_rule(caption: str) -> list[int]:
    """The release's labelling: each synonym of its table searched as `\\b<synonym>\\b`, ignoring case."""
    table = {region: list(words) for region, words in RELEASED_REGION_SYNONYMS.items()}
    for synonym, regions in RELEASED_SHARED_SYNONYMS.items():
        for region in regions:
            table[region].append(synonym)
    return [
        int(any(re.search(r"\b" + re.escape(word) + r"\b", caption, re.IGNORECASE) for word in table[region]))
        for region in REGION_NAMES
    ]


def release_style_captions(count: int, rng: np.random.Generator) -> list[str]:
    regions = list(REGION_WORDS)
    weights = np.array([REGION_WORDS[name][0] for name in regions])
    weights = weights / weights.sum()
    captions = []
    for _ in range(count):
        chosen = rng.choice(len(regions), size=int(rng.integers(1, 6)), replace=False, p=weights)
        clauses = []
        for index in chosen:
            words = REGION_WORDS[regions[index]][1]
            noun = words[int(rng.integers(len(words)))]
            plural = noun.endswith("s") and not noun.endswith("ss")
            template = FLAWS[int(rng.integers(len(FLAWS)))]
            opener = OPENERS[int(rng.integers(len(OPENERS)))]
            subject = f"{opener}{noun}" if opener else f"the {noun}"
            clauses.append(template.format(S=subject[0].upper() + subject[1:], s=f"the {noun}",
                                           **{"is": "are" if plural else "is", "has": "have" if plural else "has",
                                              "looks": "look" if plural else "looks"}))  # fmt: skip
        captions.append(". ".join(clauses) + ".")
    return captions


def synthesized_reports(count: int, rng: np.random.Generator) -> list[str]:
    colours = ("darker", "brighter", "redder", "greener", "yellower", "bluer")
    geometry = {"eye": "eye_size", "eyebrow": "eyebrow_height", "mouth": "tilt", "lip": "tilt", "nose": "off_centre"}
    reports = []
    for _ in range(count):
        measured = {}
        for name in rng.choice(LANDMARK_REGIONS, size=int(rng.integers(1, 12)), replace=False):
            flaws = RegionFlaws(colour_shift=str(rng.choice(colours)), geometry=geometry.get(name, ""))
            for kind in FLAW_KINDS if name in geometry else FLAW_KINDS[:3]:
                flaws.scores[kind] = float(rng.exponential(1.0))
            measured[str(name)] = flaws
        reports.append(write_report(measured, whole_face=bool(rng.random() < 0.2), rng=rng))
    return reports


def agreement(captions: list[str]) -> dict:
    identical = identical_with_additions = 0
    differing = Counter()
    for caption in captions:
        released = release_rule(caption)
        identical += caption_to_labels(caption) == released
        with_additions = caption_to_labels(caption, include_additions=True)
        identical_with_additions += with_additions == released
        for name, a, b in zip(REGION_NAMES, with_additions, released):
            if a != b:
                differing[name] += 1
    return {
        "captions": len(captions),
        "identical_label_vectors": round(identical / len(captions), 4),
        "identical_with_additions": round(identical_with_additions / len(captions), 4),
        "differing_with_additions_per_region": {name: differing[name] for name in REGION_NAMES if differing[name]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=20_000, help="captions per generated set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = load_average()
    rng = np.random.default_rng(args.seed)
    result = {
        "benchmark": "label_agreement",
        "release_style": agreement(release_style_captions(args.captions, rng)),
        "synthesized": agreement(synthesized_reports(args.captions // 4, rng)),
        "tricky": agreement(list(TRICKY)),
        "machine": machine_state(load_before),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
