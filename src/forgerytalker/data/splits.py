"""Which split a released MMTT record lands in: its split file's split, or a test split carved from ids.

The release has a train file and an eval file (and its code reads a test file); the paper splits 8:1:1.
`SPLIT_FILE_NAMES` lists the file names the release uses for each split. When a test split is wanted and no
test file is given, it is carved from the **train** file only: a record goes to `test` when the stable hash of its `image_id`
(`id_fraction`, uniform in [0, 1)) is below `test_fraction`. The default fraction 1/9 turns a 9:1 train/eval
release into 8:1:1. The eval file always becomes `validation`, unchanged. The rule depends on nothing but the
id, so it is the same on every run and machine, whatever the record order or the number of processes.
"""

from __future__ import annotations

import hashlib

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS: tuple[str, ...] = (TRAIN, VALIDATION, TEST)

SPLIT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    TRAIN: ("train-mutilabel-simple.json", "train-mutilabel.json"),
    VALIDATION: ("eval-mutilabel-simple.json", "eval-mutilabel.json"),
    TEST: ("test-mutilabel.json",),
}
"""Split → the file names of that split in the release (its README names the `-simple` files, its code the others)."""
DEFAULT_TEST_FRACTION = 1 / 9


def id_fraction(image_id: str) -> float:
    """A stable number in [0, 1) from an id: the first 8 bytes of its SHA-256, as a fraction of 2**64."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(released_split: str, image_id: str | None, test_fraction: float | None) -> str:
    """The output split of a record from the split file of `released_split`.

    With `test_fraction` None no test split is carved. A record without a usable id stays in its released
    split (it is reported as bad anyway).
    """
    if test_fraction is not None and released_split == TRAIN and image_id is not None:
        if id_fraction(image_id) < test_fraction:
            return TEST
    return released_split
