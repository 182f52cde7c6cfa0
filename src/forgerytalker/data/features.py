"""The one `datasets.Features` of a converted MMTT dataset, shared by the converter, the card and the builder."""

from __future__ import annotations

from datasets import ClassLabel, Features, Image, List, Value

from ..regions import REGION_NAMES

MMTT_FEATURES = Features(
    {
        "image_id": Value("string"),
        "image": Image(),
        "mask": Image(mode="L"),
        "caption": Value("string"),
        "regions": List(ClassLabel(names=list(REGION_NAMES))),
        "method": Value("string"),
        "source": Value("string"),
        "extra": Value("string"),
    }
)
"""Columns of every split.

- `image_id`: the released record's id (unique over all splits).
- `image`: the image file's bytes as released (`path` holds the record's path).
- `mask`: the forgery mask, decoded as grayscale (`L`); pixel > 0 means forged, all zeros means authentic.
- `caption`: the written report.
- `regions`: indices into `forgerytalker.regions.REGION_NAMES`: the released `multilabel` by default, or the
  caption's regions (`forgerytalker.data.validation`).
- `method`: the record's `method` field (mapped to `forgerytalker.data.methods.METHODS` when it names one, else
  kept as written), else read from the image path; `authentic` for an empty mask with no region.
- `source`: the top image folder under the image root (`celeb512`, `FFHQ512`, `face_attribute_image`, `synthetic`).
- `extra`: the record's other fields (`instance_id`, `attribute`, ...) as a JSON object, "{}" when none.
"""
