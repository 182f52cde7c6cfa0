"""`forgerytalker data convert`: a hand-written miniature of the released MMTT layout, with each kind of bad record."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from forgerytalker.cli import convert as convert_cli
from forgerytalker.data import methods
from forgerytalker.data.features import MMTT_FEATURES
from forgerytalker.data.methods import method_from_path
from forgerytalker.data.mmtt import MMTT, REPORT_FILE, convert_mmtt
from forgerytalker.data.splits import id_fraction
from forgerytalker.data.validation import BadRecordError
from forgerytalker.regions import REGION_NAMES, caption_to_labels

SIZE = 32


@pytest.fixture(autouse=True)
def offline_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _save(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, mode=mode).save(path)


def _image(root: Path, relative: str, seed: int, size: int = SIZE) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    _save(root / relative, pixels, "RGB")
    return relative


def _mask(root: Path, relative: str, forged: bool = True, size: int = SIZE, mode: str = "L") -> str:
    mask = np.zeros((size, size), dtype=np.uint8)
    if forged:
        mask[4:12, 8:20] = 255
    if mode == "RGB":
        mask = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)], axis=-1)
    _save(root / relative, mask, mode)
    return relative


def _record(image_id, img_path, mask_path, caption, multilabel=None) -> dict:
    labels = caption_to_labels(caption) if multilabel is None else multilabel
    return {
        "image_id": image_id,
        "img_path": img_path,
        "mask_path": mask_path,
        "caption": caption,
        "multilabel": labels,
    }


MAT = "dataset/celeb512/mat_gan/samples_celeb"
E4S = "dataset/FFHQ512/e4s_swap"
SDXL = "dataset/FFHQ512/sdxl_inpaint"
SYNTHETIC = "dataset/synthetic"

# (split, image_id, reason) of every bad record of the miniature, in report order.
EXPECTED_SKIPPED = [
    ("train", "missing_image", "missing_image"),
    ("train", "missing_mask", "missing_mask"),
    ("train", "small_mask", "mask_size_mismatch"),
    ("train", "short_multilabel", "multilabel_length"),
    ("train", "wrong_multilabel", "multilabel_caption_mismatch"),
    ("train", "empty_caption", "empty_caption"),
    ("train", "empty_mask", "empty_mask_with_regions"),
    ("train", "mat_0001", "duplicate_image_id"),
    ("train", "authentic_masked", "authentic_with_mask"),
    ("train", "no_caption", "missing_field"),
    ("train", "broken_image", "unreadable_image"),
    ("validation", "eval_missing_mask", "missing_mask"),
]
GOOD_TRAIN_IDS = ["mat_0001", "e4s_0002", "authentic_0003", "mat_0004", "mat_0005"]
GOOD_VALIDATION_IDS = ["sdxl_0100", "synthetic_0101"]


@pytest.fixture
def mmtt_root(tmp_path) -> Path:
    """The released layout in miniature: a `dataset/` image root and the two JSON files."""
    root = tmp_path / "mmtt"

    def pair(folder: str, name: str, seed: int, **mask_options) -> tuple[str, str]:
        return _image(root, f"{folder}/{name}.png", seed), _mask(root, f"{folder}/masks/{name}.png", **mask_options)

    eyes_nose = "The eyes look blurred and the nose has an unnatural outline."
    no_region = "No sign of manipulation is visible."
    train = [
        _record("mat_0001", *pair(MAT, "0001", 1), eyes_nose),
        _record("e4s_0002", *pair(E4S, "0002", 2, mode="RGB"), "Skin on the cheeks is too smooth; the jawline blurs."),
        _record("authentic_0003", *pair(f"{SYNTHETIC}/authentic", "authentic_0003", 3, forged=False), no_region),
        _record("missing_image", f"{MAT}/absent.png", _mask(root, f"{MAT}/masks/absent.png"), eyes_nose),
        _record("missing_mask", _image(root, f"{MAT}/lonely.png", 4), f"{MAT}/masks/lonely.png", eyes_nose),
        _record("small_mask", *pair(MAT, "small", 5, size=16), eyes_nose),
        _record("short_multilabel", *pair(MAT, "short", 6), eyes_nose, [1] * 20),
        _record("wrong_multilabel", *pair(MAT, "wrong", 7), eyes_nose, [0] * 21),
        _record("empty_caption", *pair(MAT, "empty", 8), "  ", [0] * 21),
        _record("empty_mask", *pair(MAT, "blank", 9, forged=False), eyes_nose),
        _record("mat_0001", *pair(MAT, "again", 10), eyes_nose),
        _record("authentic_masked", *pair(f"{SYNTHETIC}/authentic", "authentic_masked", 11), no_region),
        {
            "image_id": "no_caption",
            "img_path": f"{MAT}/0001.png",
            "mask_path": f"{MAT}/masks/0001.png",
            "multilabel": [0] * 21,
        },
        _record("broken_image", f"{MAT}/broken.png", _mask(root, f"{MAT}/masks/broken.png"), eyes_nose),
        _record("mat_0004", *pair(MAT, "0004", 12), "The lips are too red."),
        _record("mat_0005", *pair(MAT, "0005", 13), "Teeth look fused."),
    ]
    (root / f"{MAT}/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    validation = [
        _record("sdxl_0100", *pair(SDXL, "0100", 100), "The left eyebrow is thinner than the right one."),
        _record(
            "synthetic_0101",
            *pair(f"{SYNTHETIC}/diffusion_inpainting", "synthetic_0101", 101),
            "The mouth and the chin are smeared.",
        ),
        _record("eval_missing_mask", _image(root, f"{SDXL}/0102.png", 102), f"{SDXL}/masks/0102.png", eyes_nose),
    ]
    for record in validation:
        record["instance_id"] = record["image_id"]
    for key in ("img_path", "mask_path"):  # the synthesizer writes paths relative to the image root
        validation[1][key] = validation[1][key].removeprefix("dataset/")
    (root / "train-mutilabel-simple.json").write_text(json.dumps(train), encoding="utf-8")
    (root / "eval-mutilabel-simple.json").write_text(json.dumps(validation), encoding="utf-8")
    return root


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()
    }


@pytest.mark.parametrize(
    "path, method",
    [
        ("dataset/celeb512/mat_gan/samples_celeb/20936.png", methods.TRANSFORMER_INPAINTING),
        ("dataset/FFHQ512/e4s/00012.png", methods.FACE_SWAP),
        ("dataset/FFHQ512/SDXL_inpaint/masks/00012.png", methods.DIFFUSION_INPAINTING),
        ("dataset/synthetic/region_transplant/masks/x_0001.png", methods.REGION_TRANSPLANT),
        ("dataset/synthetic/authentic/x_0002.png", methods.AUTHENTIC),
        ("dataset/face_attribute_image/angry_00001.png", methods.UNKNOWN),
        ("dataset/celeb512/gan_mat.png", methods.UNKNOWN),
    ],
)
def test_method_from_path(path, method):
    assert method_from_path(path) == method


def test_convert_reports_every_bad_record(mmtt_root, tmp_path):
    out = tmp_path / "out"
    result = convert_mmtt(mmtt_root, out)

    assert [(bad.split, bad.image_id, bad.reason) for bad in result.bad_records] == EXPECTED_SKIPPED
    assert result.num_records == {"train": 16, "validation": 3}
    assert result.num_examples == {"train": 5, "validation": 2}
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["splits"]["train"] == {"records": 16, "examples": 5, "skipped": 11}
    assert report["skipped_by_reason"]["missing_mask"] == 2
    duplicate = report["skipped"][7]
    assert duplicate["source_file"] == "train-mutilabel-simple.json" and duplicate["index"] == 10
    assert "train-mutilabel-simple.json[0]" in duplicate["message"]
    assert "is 16x16 but its image is 32x32" in report["skipped"][2]["message"]
    assert sorted(path.name for path in (out / "data").iterdir()) == [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert not (tmp_path / ".out.partial").exists()


def test_loads_offline_with_the_declared_features(mmtt_root, tmp_path):
    import datasets

    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    dataset = datasets.load_dataset(str(out))

    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].features == MMTT_FEATURES
    assert dataset["train"]["image_id"] == GOOD_TRAIN_IDS
    assert dataset["validation"]["image_id"] == GOOD_VALIDATION_IDS
    assert (
        dataset["train"]["method"]
        == ["transformer_inpainting", "face_swap", "authentic"] + ["transformer_inpainting"] * 2
    )
    assert dataset["train"]["source"] == ["celeb512", "FFHQ512", "synthetic", "celeb512", "celeb512"]
    assert dataset["validation"]["method"] == ["diffusion_inpainting", "diffusion_inpainting"]
    assert dataset["validation"]["source"] == ["FFHQ512", "synthetic"]

    swapped = dataset["train"][1]
    regions = [REGION_NAMES[index] for index in swapped["regions"]]
    assert regions == ["cheek", "jaw", "skin"]
    assert swapped["image"].size == (SIZE, SIZE)
    assert swapped["image"].tobytes() == PIL.Image.open(mmtt_root / E4S / "0002.png").tobytes()
    mask = np.asarray(swapped["mask"])
    assert swapped["mask"].mode == "L" and set(np.unique(mask)) == {0, 255}  # RGB mask stored as 0/255 L
    assert mask[4:12, 8:20].all() and mask.sum() == 8 * 12 * 255
    authentic = dataset["train"][2]
    assert authentic["regions"] == [] and not np.asarray(authentic["mask"]).any()


def test_streaming_yields_the_same_rows(mmtt_root, tmp_path):
    import datasets

    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    streamed = datasets.load_dataset(str(out), split="train", streaming=True)

    rows = list(streamed)
    assert [row["image_id"] for row in rows] == GOOD_TRAIN_IDS
    assert rows[0]["image"].size == (SIZE, SIZE)
    assert [REGION_NAMES[index] for index in rows[0]["regions"]] == ["eye", "nose"]


def test_same_input_gives_byte_identical_output(mmtt_root, tmp_path):
    import datasets

    moved_root = shutil.copytree(mmtt_root, tmp_path / "elsewhere" / "mmtt")
    convert_mmtt(mmtt_root, tmp_path / "one", shard_size=4)
    convert_mmtt(moved_root, tmp_path / "two", shard_size=4, num_proc=2)

    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert "data/train-00003-of-00004.parquet" in one
    assert one == two
    train = datasets.load_dataset(str(tmp_path / "one"), split="train")  # shard 1 holds bad records only
    assert train["image_id"] == GOOD_TRAIN_IDS


def test_test_split_is_carved_from_train_ids(mmtt_root, tmp_path):
    import datasets

    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out, test_fraction=0.5)
    dataset = datasets.load_dataset(str(out))

    carved = [image_id for image_id in GOOD_TRAIN_IDS if id_fraction(image_id) < 0.5]
    assert dataset["test"]["image_id"] == carved == ["mat_0004", "mat_0005"]
    assert dataset["train"]["image_id"] == ["mat_0001", "e4s_0002", "authentic_0003"]
    assert dataset["validation"]["image_id"] == GOOD_VALIDATION_IDS


def test_trust_multilabel_keeps_label_mismatches_with_released_labels(mmtt_root, tmp_path):
    import datasets

    result = convert_mmtt(mmtt_root, tmp_path / "out", trust_multilabel=True)

    assert [(bad.split, bad.image_id, bad.reason) for bad in result.bad_records] == [
        skipped for skipped in EXPECTED_SKIPPED if skipped[2] != "multilabel_caption_mismatch"
    ]
    train = datasets.load_dataset(str(tmp_path / "out"), split="train")
    kept = train[train["image_id"].index("wrong_multilabel")]
    assert kept["regions"] == []  # the released all-zero vector, not the caption's eye and nose


def test_split_without_valid_records_is_left_out(mmtt_root, tmp_path):
    import datasets

    eval_file = mmtt_root / "eval-mutilabel-simple.json"
    eval_file.write_text(json.dumps(json.loads(eval_file.read_text())[2:]))
    out = tmp_path / "out"
    result = convert_mmtt(mmtt_root, out)

    assert result.num_examples == {"train": 5, "validation": 0}
    assert result.bad_records[-1].image_id == "eval_missing_mask"
    assert set(datasets.load_dataset(str(out))) == {"train"}
    assert "validation" not in (out / "README.md").read_text().split("\n---\n")[0]

    (mmtt_root / "train-mutilabel-simple.json").write_text("[]")
    with pytest.raises(ValueError, match="None of the 1 records is valid"):
        convert_mmtt(mmtt_root, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_strict_stops_at_the_first_bad_record(mmtt_root, tmp_path):
    with pytest.raises(BadRecordError, match=r"train-mutilabel-simple.json\[3\] \(image_id='missing_image'") as caught:
        convert_mmtt(mmtt_root, tmp_path / "out", strict=True, shard_size=2)

    assert caught.value.bad_record.reason == "missing_image"
    assert "dataset/celeb512/mat_gan/samples_celeb/absent.png does not exist" in str(caught.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_interrupted_run_leaves_no_dataset_and_rerun_works(mmtt_root, tmp_path, monkeypatch):
    from forgerytalker.data import mmtt

    out = tmp_path / "out"
    monkeypatch.setattr(mmtt, "_write_metadata", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        convert_mmtt(mmtt_root, out)
    assert not out.exists()
    monkeypatch.undo()

    stale = tmp_path / ".out.partial"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "train-00000-of-00009.parquet").write_bytes(b"killed half-way")
    result = convert_mmtt(mmtt_root, out)
    assert result.num_examples == {"train": 5, "validation": 2}
    assert not stale.exists()


def test_existing_output_needs_overwrite(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    with pytest.raises(FileExistsError, match="already exists"):
        convert_mmtt(mmtt_root, out)
    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    assert (out / "data" / "test-00000-of-00001.parquet").is_file()

    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a converted MMTT folder"):
        convert_mmtt(mmtt_root, unrelated, overwrite=True)
    assert (unrelated / "keep.txt").read_text() == "mine"


def test_builder_yields_the_converted_rows(mmtt_root, tmp_path):
    import datasets

    convert_mmtt(mmtt_root, tmp_path / "out")
    converted = datasets.load_dataset(str(tmp_path / "out"))
    builder = MMTT(data_dir=str(mmtt_root), cache_dir=str(tmp_path / "builder_cache"))
    builder.download_and_prepare()
    built = builder.as_dataset()

    assert built["train"].features == MMTT_FEATURES
    for split in ("train", "validation"):
        assert built[split].data.table.equals(converted[split].data.table)


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


def test_cli_prints_a_summary_and_fails_in_strict_mode(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--num-proc", "1", "--test-split"]) == 0
    printed = capsys.readouterr().out
    assert "Wrote 7 examples" in printed and "Skipped 12 bad records" in printed
    assert "missing_mask 2" in printed
    assert json.loads((out / REPORT_FILE).read_text())["test_fraction"] == pytest.approx(1 / 9)

    strict = ["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "strict"), "--num-proc", "1", "--strict"]
    assert _run_cli(strict) == 1
    assert "image_id='missing_image'" in capsys.readouterr().err
