"""The whole data path a user takes: synthesize from face photos → convert → `load_dataset`."""

from datasets import load_dataset

from forgerytalker.data.features import MMTT_FEATURES
from forgerytalker.data.methods import AUTHENTIC, METHODS
from forgerytalker.regions import REGION_NAMES, caption_to_regions


def test_synthesized_data_loads_with_the_declared_features_and_consistent_labels(tiny_dataset_dir):
    splits = load_dataset(str(tiny_dataset_dir))
    assert set(splits) == {"train", "validation", "test"}
    assert sum(len(split) for split in splits.values()) == 16
    methods = set()
    for split in splits.values():
        assert split.features == MMTT_FEATURES
        for example in split:
            methods.add(example["method"])
            assert example["method"] in METHODS and example["source"] == "synthetic"
            names = [REGION_NAMES[index] for index in example["regions"]]
            assert names == caption_to_regions(example["caption"])
            assert example["mask"].mode == "L" and example["mask"].size == example["image"].size == (512, 512)
            forged_pixels = sum(count for value, count in enumerate(example["mask"].histogram()) if value > 0)
            if example["method"] == AUTHENTIC:
                assert forged_pixels == 0 and names == []
            else:
                assert forged_pixels > 0 and names
    assert AUTHENTIC in methods and len(methods) >= 3


def test_streaming_gives_the_same_examples(tiny_dataset_dir):
    loaded = load_dataset(str(tiny_dataset_dir), split="validation")
    streamed = load_dataset(str(tiny_dataset_dir), split="validation", streaming=True)
    assert [example["image_id"] for example in streamed] == loaded["image_id"]
