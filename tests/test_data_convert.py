"""`forgerytalker data convert`: hand-written miniatures of MMTT-style folders, with each kind of bad record,
each accepted layout, and each way a conversion can be interrupted or misused."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest

from forgerytalker.cli import convert_data as convert_cli
from forgerytalker.data import methods, mmtt
from forgerytalker.data.errors import DataInputError, WorkerDiedError
from forgerytalker.data.features import MMTT_FEATURES
from forgerytalker.data.methods import method_from_name, method_from_path
from forgerytalker.data.mmtt import MMTT, convert_mmtt
from forgerytalker.data.mmtt_publish import REPORT_FILE
from forgerytalker.data.splits import id_fraction
from forgerytalker.data.validation import BadRecordError
from forgerytalker.regions import REGION_NAMES, caption_to_labels, regions_to_labels

SIZE = 32
REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _save(path: Path, array: np.ndarray, mode: str, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array, mode=mode).save(path, **options)


def _pixels(seed: int, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _image(root: Path, relative: str, seed: int, size: int = SIZE) -> str:
    _save(root / relative, _pixels(seed, size, size), "RGB")
    return relative


def _mask_pixels(forged: bool = True, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    if forged:
        mask[4:12, 8:20] = 255
    return mask


def _mask(root: Path, relative: str, forged: bool = True, size: int = SIZE, mode: str = "L") -> str:
    mask = _mask_pixels(forged, size, size)
    if mode == "RGB":
        mask = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)], axis=-1)
    _save(root / relative, mask, mode)
    return relative


def _record(image_id, img_path, mask_path, caption, multilabel=None, **extra) -> dict:
    labels = caption_to_labels(caption) if multilabel is None else multilabel
    return {
        "image_id": image_id,
        "img_path": img_path,
        "mask_path": mask_path,
        "caption": caption,
        "multilabel": labels,
        **extra,
    }


def _write(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


MAT = "dataset/celeb512/mat_gan/samples_celeb"
E4S = "dataset/FFHQ512/e4s_swap"
SDXL = "dataset/FFHQ512/sdxl_inpaint"
SYNTHETIC = "dataset/synthetic"
EYES_NOSE = "The eyes look blurred and the nose has an unnatural outline."
NO_REGION = "No sign of manipulation is visible."

# (split, image_id, reason) of every bad record of the miniature, in report order.
EXPECTED_SKIPPED = [
    ("train", "missing_image", "missing_image"),
    ("train", "missing_mask", "missing_mask"),
    ("train", "small_mask", "mask_size_mismatch"),
    ("train", "short_multilabel", "multilabel_length"),
    ("train", "empty_caption", "empty_caption"),
    ("train", "empty_mask", "empty_mask_with_regions"),
    ("train", "mat_0001", "duplicate_image_id"),
    ("train", "authentic_masked", "authentic_with_mask"),
    ("train", "no_caption", "missing_field"),
    ("train", "broken_image", "unreadable_image"),
    ("validation", "eval_missing_mask", "missing_mask"),
]
GOOD_TRAIN_IDS = ["mat_0001", "e4s_0002", "authentic_0003", "relabelled", "mat_0004", "mat_0005"]
GOOD_VALIDATION_IDS = ["sdxl_0100", "synthetic_0101"]


@pytest.fixture
def mmtt_root(tmp_path) -> Path:
    """The released layout in miniature: a `dataset/` image root and the two JSON files."""
    root = tmp_path / "mmtt"

    def pair(folder: str, name: str, seed: int, **mask_options) -> tuple[str, str]:
        return _image(root, f"{folder}/{name}.png", seed), _mask(root, f"{folder}/masks/{name}.png", **mask_options)

    train = [
        _record("mat_0001", *pair(MAT, "0001", 1), EYES_NOSE),
        _record("e4s_0002", *pair(E4S, "0002", 2, mode="RGB"), "Skin on the cheeks is too smooth; the jaw blurs."),
        _record("authentic_0003", *pair(f"{SYNTHETIC}/authentic", "authentic_0003", 3, forged=False), NO_REGION),
        _record("missing_image", f"{MAT}/absent.png", _mask(root, f"{MAT}/masks/absent.png"), EYES_NOSE),
        _record("missing_mask", _image(root, f"{MAT}/lonely.png", 4), f"{MAT}/masks/lonely.png", EYES_NOSE),
        _record("small_mask", *pair(MAT, "small", 5, size=16), EYES_NOSE),
        _record("short_multilabel", *pair(MAT, "short", 6), EYES_NOSE, [1] * 20),
        _record("relabelled", *pair(MAT, "relabelled", 7), EYES_NOSE, regions_to_labels(["lip"])),
        _record("empty_caption", *pair(MAT, "empty", 8), "  ", [0] * 21),
        _record("empty_mask", *pair(MAT, "blank", 9, forged=False), EYES_NOSE),
        _record("mat_0001", *pair(MAT, "again", 10), EYES_NOSE),
        _record("authentic_masked", *pair(f"{SYNTHETIC}/authentic", "authentic_masked", 11), NO_REGION),
        {
            "image_id": "no_caption",
            "img_path": f"{MAT}/0001.png",
            "mask_path": f"{MAT}/masks/0001.png",
            "multilabel": [0] * 21,
        },
        _record("broken_image", f"{MAT}/broken.png", _mask(root, f"{MAT}/masks/broken.png"), EYES_NOSE),
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
        _record("eval_missing_mask", _image(root, f"{SDXL}/0102.png", 102), f"{SDXL}/masks/0102.png", EYES_NOSE),
    ]
    for record in validation:
        record["instance_id"] = record["image_id"]
    for key in ("img_path", "mask_path"):  # the synthesizer writes paths relative to the image root
        validation[1][key] = validation[1][key].removeprefix("dataset/")
    _write(root / "train-mutilabel-simple.json", train)
    _write(root / "eval-mutilabel-simple.json", validation)
    return root


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()
    }


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", "--no-progress", *argv])
    return args.func(args)


def _in_child(target, timeout: float = 120) -> int:
    """Runs `target` in a forked child process and returns its exit code; a child that hangs fails the test."""
    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"the conversion hung for {timeout} s")
    return process.exitcode


def _load(out: Path, split: str | None = None):
    import datasets

    return datasets.load_dataset(str(out), split=split)


# ---------------------------------------------------------------- methods


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


@pytest.mark.parametrize(
    "name, method",
    [
        ("E4S", methods.FACE_SWAP),
        ("GAN Face-Swap", methods.FACE_SWAP),
        ("MAT", methods.TRANSFORMER_INPAINTING),
        (" sdxl ", methods.DIFFUSION_INPAINTING),
        ("region_transplant", methods.REGION_TRANSPLANT),
        ("Real", methods.AUTHENTIC),
        ("pristine", methods.AUTHENTIC),
        ("StyleGAN3 edit", "StyleGAN3 edit"),  # unknown names are kept as given
    ],
)
def test_method_from_name(name, method):
    assert method_from_name(name) == method


# ---------------------------------------------------------------- the released layout


def test_convert_reports_every_bad_record(mmtt_root, tmp_path):
    out = tmp_path / "out"
    result = convert_mmtt(mmtt_root, out)

    assert [(bad.split, bad.image_id, bad.reason) for bad in result.bad_records] == EXPECTED_SKIPPED
    assert result.num_records == {"train": 16, "validation": 3}
    assert result.num_examples == {"train": 6, "validation": 2}
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["splits"]["train"] == {"records": 16, "examples": 6, "skipped": 10}
    assert report["skipped_by_reason"]["missing_mask"] == 2
    duplicate = report["skipped"][6]
    assert duplicate["source_file"] == "train-mutilabel-simple.json" and duplicate["index"] == 10
    assert "train-mutilabel-simple.json[0]" in duplicate["message"]
    assert "is 16x16 but its image is 32x32" in report["skipped"][2]["message"]
    assert sorted(path.name for path in (out / "data").iterdir()) == [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert not (tmp_path / ".out.partial").exists()
    assert set(report["files"]) == {"README.md", "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"}


def test_loads_offline_with_the_declared_features(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    dataset = _load(out)

    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].features == MMTT_FEATURES
    assert dataset["train"]["image_id"] == GOOD_TRAIN_IDS
    assert dataset["validation"]["image_id"] == GOOD_VALIDATION_IDS
    assert dataset["train"]["method"] == ["transformer_inpainting", "face_swap", "authentic"] + [
        "transformer_inpainting"
    ] * 3
    assert dataset["train"]["source"] == ["celeb512", "FFHQ512", "synthetic"] + ["celeb512"] * 3
    assert dataset["validation"]["method"] == ["diffusion_inpainting", "diffusion_inpainting"]
    assert dataset["validation"]["source"] == ["FFHQ512", "synthetic"]
    assert json.loads(dataset["validation"][0]["extra"]) == {"instance_id": "sdxl_0100"}

    swapped = dataset["train"][1]
    assert [REGION_NAMES[index] for index in swapped["regions"]] == ["cheek", "jaw", "skin"]
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
    rows = list(datasets.load_dataset(str(out), split="train", streaming=True))
    assert [row["image_id"] for row in rows] == GOOD_TRAIN_IDS
    assert rows[0]["image"].size == (SIZE, SIZE)
    assert [REGION_NAMES[index] for index in rows[0]["regions"]] == ["eye", "nose"]


def test_same_input_gives_byte_identical_output(mmtt_root, tmp_path):
    moved_root = shutil.copytree(mmtt_root, tmp_path / "elsewhere" / "mmtt")
    convert_mmtt(mmtt_root, tmp_path / "one", shard_size=4)
    convert_mmtt(moved_root, tmp_path / "two", shard_size=4, num_proc=2)

    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert "data/train-00003-of-00004.parquet" in one
    assert one == two
    assert _load(tmp_path / "one", "train")["image_id"] == GOOD_TRAIN_IDS


def test_test_split_is_carved_from_train_ids(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out, test_fraction=0.5)
    dataset = _load(out)

    carved = [image_id for image_id in GOOD_TRAIN_IDS if id_fraction(image_id) < 0.5]
    assert carved and dataset["test"]["image_id"] == carved
    assert dataset["train"]["image_id"] == [image_id for image_id in GOOD_TRAIN_IDS if image_id not in carved]
    assert dataset["validation"]["image_id"] == GOOD_VALIDATION_IDS


def test_split_without_valid_records_is_left_out(mmtt_root, tmp_path):
    eval_file = mmtt_root / "eval-mutilabel-simple.json"
    eval_file.write_text(json.dumps(json.loads(eval_file.read_text())[2:]))
    out = tmp_path / "out"
    result = convert_mmtt(mmtt_root, out)

    assert result.num_examples == {"train": 6, "validation": 0}
    assert result.bad_records[-1].image_id == "eval_missing_mask"
    assert set(_load(out)) == {"train"}
    assert "validation" not in (out / "README.md").read_text().split("\n---\n")[0]

    (mmtt_root / "train-mutilabel-simple.json").write_text("[]")
    with pytest.raises(DataInputError, match="None of the 1 records is valid"):
        convert_mmtt(mmtt_root, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_strict_stops_at_the_first_bad_record(mmtt_root, tmp_path, capsys):
    with pytest.raises(BadRecordError, match=r"train-mutilabel-simple.json\[3\] \(image_id='missing_image'") as caught:
        convert_mmtt(mmtt_root, tmp_path / "out", strict=True, shard_size=2)

    assert caught.value.bad_record.reason == "missing_image"
    assert "dataset/celeb512/mat_gan/samples_celeb/absent.png does not exist" in str(caught.value)
    assert not (tmp_path / "out").exists()
    strict = ["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "strict"), "--num-proc", "1", "--strict"]
    assert _run_cli(strict) == 2
    assert "image_id='missing_image'" in capsys.readouterr().err


def test_existing_output_needs_overwrite(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    with pytest.raises(DataInputError, match=r"already exists; pass overwrite=True to replace it"):
        convert_mmtt(mmtt_root, out)
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out: {out} already exists; pass --overwrite to replace it\n"
    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    assert (out / "data" / "test-00000-of-00001.parquet").is_file()


def test_builder_yields_the_converted_rows(mmtt_root, tmp_path):
    convert_mmtt(mmtt_root, tmp_path / "out")
    converted = _load(tmp_path / "out")
    builder = MMTT(data_dir=str(mmtt_root), cache_dir=str(tmp_path / "builder_cache"))
    builder.download_and_prepare()
    built = builder.as_dataset()

    assert built["train"].features == MMTT_FEATURES
    for split in ("train", "validation"):
        assert built[split].data.table.equals(converted[split].data.table)


def test_cli_prints_a_summary(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--num-proc", "1", "--test-split"]) == 0
    printed = capsys.readouterr().out
    assert "Wrote 8 examples" in printed and "Skipped 11 bad records" in printed
    assert "missing_mask 2" in printed and "disagree on some records (per region: eye 1, lip 1, nose 1)" in printed
    assert json.loads((out / REPORT_FILE).read_text())["test_fraction"] == pytest.approx(1 / 9)


# ---------------------------------------------------------------- MMTT-style folders as users have them


def _users_folder(root: Path) -> Path:
    """A user's folder: one eval file at the root, images/ and masks/ relative to it, a `method` field, extra
    fields, and authentic photos with empty masks (one saying so, one only showing it)."""
    records = []
    for index, (method, caption) in enumerate(
        [("E4S", "The whole face looks pasted; the jaw is blurred."), ("mat", EYES_NOSE),
         ("SDXL inpainting", "The lips are too glossy."), ("StyleGAN3 edit", "The eyebrows are uneven."),
         ("real", NO_REGION), (None, NO_REGION)]
    ):  # fmt: skip
        name = f"{index:03d}"
        forged = method not in ("real", None)
        _image(root, f"images/{name}.jpg", index)
        _mask(root, f"masks/{name}.png", forged=forged)
        record = _record(f"user_{name}", f"images/{name}.jpg", f"masks/{name}.png", caption,
                         instance_id=index, source_face=f"person_{index % 2}")  # fmt: skip
        if method is not None:
            record["method"] = method
        records.append(record)
    return _write(root / "eval-mutilabel-simple.json", records)


def test_a_users_folder_with_one_split_file_converts_with_methods_and_authentic_rows(tmp_path):
    root = tmp_path / "mine"
    _users_folder(root)
    result = convert_mmtt(root, tmp_path / "out")
    assert result.bad_records == [] and result.num_examples == {"validation": 6}
    validation = _load(tmp_path / "out", "validation")
    assert validation["method"] == [
        "face_swap", "transformer_inpainting", "diffusion_inpainting", "StyleGAN3 edit", "authentic", "authentic"
    ]  # fmt: skip
    assert validation["source"] == ["images"] * 6
    assert json.loads(validation[3]["extra"]) == {"instance_id": 3, "source_face": "person_1"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| authentic | 2 |" in card and "| StyleGAN3 edit | 1 |" in card


def test_split_files_named_explicitly(tmp_path, capsys):
    root = tmp_path / "mine"
    records = json.loads(_users_folder(root).read_text())
    (root / "eval-mutilabel-simple.json").unlink()
    elsewhere = tmp_path / "lists"
    _write(elsewhere / "train.json", records[:3])
    _write(elsewhere / "eval.json", records[3:5])
    _write(elsewhere / "test.json", records[5:])
    argv = ["--mmtt-root", str(root), "--split", f"train={elsewhere / 'train.json'}",
            "--split", f"validation={elsewhere / 'eval.json'}", "--split", f"test={elsewhere / 'test.json'}"]  # fmt: skip
    assert _run_cli([*argv, "--out", str(tmp_path / "out")]) == 0
    dataset = _load(tmp_path / "out")
    assert {split: len(rows) for split, rows in dataset.items()} == {"train": 3, "validation": 2, "test": 1}
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert report["split_files"] == {"train": "train.json", "validation": "eval.json", "test": "test.json"}
    capsys.readouterr()

    for extra, message in [
        (["--split", "dev=x.json"], "--split: unknown split name 'dev'; split names are train, validation, test"),
        (["--split", "train=eval.json"], "--split: no such file for split train: eval.json"),
        (["--split", "train"], None),
        ([*argv[6:8], "--test-split"], "--test-fraction: the dataset has a test split file (test.json)"),
    ]:
        if message is None:
            with pytest.raises(SystemExit) as caught:
                _run_cli(["--mmtt-root", str(root), "--out", str(tmp_path / "no"), *extra])
            assert caught.value.code == 2 and "expected SPLIT=PATH" in capsys.readouterr().err
            continue
        assert _run_cli(["--mmtt-root", str(root), "--out", str(tmp_path / "no"), *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "no").exists()


def test_the_release_file_names_are_found_and_two_for_one_split_are_refused(mmtt_root, tmp_path, capsys):
    (mmtt_root / "eval-mutilabel-simple.json").rename(mmtt_root / "eval-mutilabel.json")
    (mmtt_root / "train-mutilabel-simple.json").unlink()
    assert convert_mmtt(mmtt_root, tmp_path / "out").split_files == {"validation": "eval-mutilabel.json"}
    shutil.copy(mmtt_root / "eval-mutilabel.json", mmtt_root / "eval-mutilabel-simple.json")
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "two")]) == 2
    assert "holds both eval-mutilabel-simple.json and eval-mutilabel.json for split validation; choose one with --split" in (
        capsys.readouterr().err
    )
    for name in ("eval-mutilabel.json", "eval-mutilabel-simple.json"):
        (mmtt_root / name).unlink()
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "none")]) == 2
    assert "holds none of the split files" in capsys.readouterr().err


def test_record_paths_are_resolved_under_the_root_or_the_image_root(tmp_path):
    root = tmp_path / "mine"
    # record's (img_path, mask_path) → where the files are, relative to the dataset root
    layouts = {
        "root_relative": (("images/a.png", "masks/a.png"), ("images/a.png", "masks/a.png")),
        "release_style": (("dataset/celeb512/b.png", "dataset/celeb512/masks/b.png"),) * 2,
        "image_root_relative": (
            ("synthetic/face_swap/c.png", "synthetic/face_swap/masks/c.png"),
            ("dataset/synthetic/face_swap/c.png", "dataset/synthetic/face_swap/masks/c.png"),
        ),
        "backslashes": (("images\\d.png", "masks\\d.png"), ("images/d.png", "masks/d.png")),
    }
    records = []
    for seed, (image_id, ((image, mask), (image_file, mask_file))) in enumerate(layouts.items()):
        _image(root, image_file, seed)
        _mask(root, mask_file)
        records.append(_record(image_id, image, mask, EYES_NOSE))
    records.append(_record("absolute_inside", str(root / "images" / "a.png"), str(root / "masks" / "a.png"), EYES_NOSE))
    _write(root / "train-mutilabel-simple.json", records)

    result = convert_mmtt(root, tmp_path / "out")
    assert result.bad_records == []
    assert [row["image"].size for row in _load(tmp_path / "out", "train")] == [(SIZE, SIZE)] * 5
    paths = _files_in_column(tmp_path / "out", "train", "image")
    assert paths == ["images/a.png", "dataset/celeb512/b.png", "synthetic/face_swap/c.png", "images/d.png", "images/a.png"]


def _files_in_column(out: Path, split: str, column: str) -> list[str]:
    table = pq.read_table(next((out / "data").glob(f"{split}-*.parquet")))
    return [cell["path"] for cell in table.column(column).to_pylist()]


def test_escaping_and_ambiguous_paths_are_rejected_with_the_record_named(tmp_path):
    root = tmp_path / "mine"
    secret = _image(tmp_path, "secret.png", 0)  # outside the root: must never be read
    _mask(tmp_path, "secret_mask.png")
    _image(root, "good.png", 1)
    _mask(root, "good_mask.png")
    _image(root, "twice.png", 2)
    _image(root, "dataset/twice.png", 3)  # `twice.png` names a file under the root and one under dataset/
    (root / "linked.png").symlink_to(tmp_path / secret)  # issue 19 N14: a link inside the root leading out
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    (root / "inner.png").symlink_to(root / "good.png")  # a link that stays inside is fine
    records = [
        _record("dotdot", f"../{secret}", "good_mask.png", EYES_NOSE),
        _record("absolute_outside", str(tmp_path / secret), "good_mask.png", EYES_NOSE),
        _record("mask_escapes", "good.png", "../secret_mask.png", EYES_NOSE),
        _record("ambiguous", "twice.png", "good_mask.png", EYES_NOSE),
        _record("linked_image", "linked.png", "good_mask.png", EYES_NOSE),
        _record("linked_folder", f"outside/{secret}", "good_mask.png", EYES_NOSE),
        _record("good", "good.png", "good_mask.png", EYES_NOSE),
        _record("inner_link", "inner.png", "good_mask.png", EYES_NOSE),
    ]
    _write(root / "train-mutilabel-simple.json", records)
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [
        ("dotdot", "unsafe_path"),
        ("absolute_outside", "unsafe_path"),
        ("mask_escapes", "unsafe_path"),
        ("ambiguous", "ambiguous_path"),
        ("linked_image", "unsafe_path"),
        ("linked_folder", "unsafe_path"),
    ]
    assert "is a link leading out of the dataset root" in result.bad_records[4].message
    described = result.bad_records[0].describe()
    assert described.startswith("train-mutilabel-simple.json[0] (image_id='dotdot', split train): image path ../secret.png")
    assert "outside the dataset root" in result.bad_records[1].message
    assert "names two files" in result.bad_records[3].message
    assert result.num_examples == {"train": 2}


# ---------------------------------------------------------------- labels


def test_released_labels_are_kept_and_disagreements_counted(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    train = _load(out, "train")
    relabelled = train[train["image_id"].index("relabelled")]
    assert [REGION_NAMES[index] for index in relabelled["regions"]] == ["lip"]  # the released vector, kept
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["labels"] == "released"
    assert report["label_disagreements"] == {
        "records_compared": 8,
        "released_only": {"lip": 1},
        "caption_only": {"eye": 1, "nose": 1},
    }
    card = (out / "README.md").read_text()
    assert "`regions` are the released `multilabel` vectors" in card
    assert "| eye | 0 | 1 |" in card and "| lip | 1 | 0 |" in card


def test_labels_from_captions_are_opt_in_and_follow_the_release_rules(mmtt_root, tmp_path):
    expression = _record("angry_00001", *(
        _image(mmtt_root, "dataset/face_attribute_image/angry_00001.png", 50),
        _mask(mmtt_root, "dataset/face_attribute_image/masks/angry_00001.png"),
    ), "The nasal bridge and the ocular area look odd.", attribute="angry")  # fmt: skip
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text()) + [expression]
    _write(mmtt_root / "train-mutilabel-simple.json", records)
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out, labels="caption")
    train = _load(out, "train")
    regions = {row["image_id"]: [REGION_NAMES[index] for index in row["regions"]] for row in train}
    assert regions["relabelled"] == ["eye", "nose"]  # from the caption now
    assert regions["angry_00001"] == ["eye", "lip", "mouth", "nose", "eyebrow"]  # nasal, ocular + expression rule
    assert json.loads((out / REPORT_FILE).read_text())["labels"] == "caption"


# ---------------------------------------------------------------- resume, progress, load_dataset("mmtt"), card


def test_resume_after_a_kill_mid_conversion_redoes_only_unfinished_shards(mmtt_root, tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    convert_mmtt(mmtt_root, uninterrupted, shard_size=4)
    out = tmp_path / "out"
    original = mmtt.load_example

    def killed_in_the_third_shard(planned, *args):
        if planned.index == 9:  # train shard 2 holds records 8..11
            os.kill(os.getpid(), signal.SIGKILL)
        return original(planned, *args)

    monkeypatch.setattr(mmtt, "load_example", killed_in_the_third_shard)
    assert _in_child(lambda: convert_mmtt(mmtt_root, out, shard_size=4)) == -signal.SIGKILL
    staging = tmp_path / ".out.partial"
    assert not out.exists()
    assert sorted(path.name for path in (staging / "data").iterdir()) == [
        "train-00000-of-00004.parquet",
        "train-00001-of-00004.parquet",
        "train-00002-of-00004.parquet.tmp",
    ]
    monkeypatch.undo()
    converted = []
    monkeypatch.setattr(mmtt, "load_example", lambda planned, *args: converted.append(planned.index) or original(planned, *args))
    convert_mmtt(mmtt_root, out, shard_size=4)
    assert converted == [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2]  # train shards 2-3, then validation
    assert _files(out) == _files(uninterrupted)
    assert not staging.exists()


def test_a_changed_record_file_starts_the_conversion_over(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(mmtt, "publish", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        convert_mmtt(mmtt_root, out, shard_size=4)
    monkeypatch.undo()
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text())
    records[0]["caption"] = "The lips are too red."
    _write(mmtt_root / "train-mutilabel-simple.json", records)
    convert_mmtt(mmtt_root, out, shard_size=4)
    assert _load(out, "train")[0]["caption"] == "The lips are too red."


def test_progress_bar_counts_records(mmtt_root, tmp_path, monkeypatch):
    bars = []

    class Recorder:
        def __init__(self, **options):
            self.options, self.updates = options, []
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, count=1):
            self.updates.append(count)

    monkeypatch.setattr(mmtt, "tqdm", Recorder)
    convert_mmtt(mmtt_root, tmp_path / "out", shard_size=8)
    (bar,) = bars
    assert bar.options["total"] == 19 and bar.options["unit"] == "record"
    assert sum(bar.updates) == 19 and len(bar.updates) == 19  # one step per record, not per shard


def test_load_dataset_mmtt_works_from_the_readme_example(mmtt_root, tmp_path, monkeypatch):
    from datasets import load_dataset

    data_section = (REPOSITORY / "README.md").read_text().split("## Data", 1)[1].split("\n## ", 1)[0]
    assert "--out mmtt " in data_section and 'load_dataset("mmtt")' in data_section
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", "mmtt"]) == 0
    dataset = load_dataset("mmtt")
    assert dataset["train"]["image_id"] == GOOD_TRAIN_IDS


def test_card_states_the_sources_licences(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n")
    licences = card.split("## Licences", 1)[1]
    assert "states no licence for its images, masks and captions" in licences
    assert "| `celeb512` | 4 | CelebA-HQ / CelebAMask-HQ: non-commercial research" in licences
    assert "| `FFHQ512` | 2 | FFHQ: the collection is CC BY-NC-SA 4.0" in licences
    assert "| `synthetic` | 2 | made by `forgerytalker data synthesize`" in licences


# ---------------------------------------------------------------- nothing lost, nothing silently wrong (issue 10)


def test_overwrite_deletes_only_what_the_converter_wrote(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    before = _files(out)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "extra.parquet").write_bytes(b"mine too")
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds files the converter did not write (data/extra.parquet, notes.txt)" in err and "nothing was deleted" in err
    assert _files(out) == {**before, "notes.txt": b"mine", "data/extra.parquet": b"mine too"}

    (out / "notes.txt").unlink()
    (out / "data" / "extra.parquet").unlink()
    (out / "README.md").write_text("my edited card")  # a listed file the user changed is not the converter's any more
    with pytest.raises(DataInputError, match=r"did not write \(README.md\)"):
        convert_mmtt(mmtt_root, out, overwrite=True)

    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / REPORT_FILE).write_text("{}")
    (lookalike / "keep.txt").write_text("mine")
    with pytest.raises(DataInputError, match="is not a folder written by the converter"):
        convert_mmtt(mmtt_root, lookalike, overwrite=True)
    assert (lookalike / "keep.txt").read_text() == "mine"

    (out / "README.md").write_bytes(before["README.md"])
    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    assert "data/test-00000-of-00001.parquet" in _files(out)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize("entry", ["../x", "ABSOLUTE", "data/../../x", "linked/x"])
def test_a_report_entry_outside_out_is_refused_and_nothing_is_deleted(mmtt_root, tmp_path, capsys, entry):
    """Issue 19 N2: `conversion_report.json` (downloaded or edited) lists `../x`, an absolute path or a path through a
    link leading out of the folder; `--overwrite` deleted those files."""
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    outside = tmp_path / "x"
    outside.write_text("the user's file")
    (out / "linked").symlink_to(tmp_path)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    report = json.loads((out / REPORT_FILE).read_text())
    report["files"][entry] = len("the user's file")
    report["files"]["linked"] = (out / "linked").lstat().st_size  # the link itself is listed, so only the entry is odd
    (out / REPORT_FILE).write_text(json.dumps(report))
    before = _files(out)

    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert str(out / REPORT_FILE) in err and repr(entry) in err and "nothing was deleted" in err
    assert outside.read_text() == "the user's file" and _files(out) == before


def test_a_second_conversion_into_the_same_out_is_refused_while_the_first_writes(mmtt_root, tmp_path, capsys):
    """Issue 19 (one output-folder policy): two conversions into one --out shared `.out.partial` and its shards."""
    from forgerytalker.output_folder import hold_lock

    out = tmp_path / "out"
    held = hold_lock(out, mmtt.CONVERTER.command, beside=True)  # a first conversion, still writing
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 2
    assert f"error: --out: another forgerytalker data convert is writing into {out}" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
    held.close()
    Path(held.name).unlink()
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # its lock is gone


def test_a_kill_between_the_renames_of_overwrite_leaves_no_hidden_copy(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    old = _files(out)
    renames = []
    real_rename = os.rename

    def killed_at_the_second_rename(source, target):
        renames.append((Path(source).name, Path(target).name))
        if len(renames) == 2:
            raise KeyboardInterrupt  # the process stops here: no clean-up of ours runs
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    monkeypatch.undo()
    assert renames == [("out", ".out.replaced"), (".out.partial", "out")]
    assert not out.exists() and _files(tmp_path / ".out.replaced") == old  # the window the issue found

    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    fresh = tmp_path / "fresh"
    convert_mmtt(mmtt_root, fresh, test_fraction=0.5)
    assert _files(out) == _files(fresh)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []

    # killed after both renames, before the old copy was deleted: the next run deletes it
    monkeypatch.setattr(mmtt, "publish", lambda staging, output: (real_rename(output, tmp_path / ".out.replaced"),
                                                                   real_rename(staging, output), sys.exit(1)))  # fmt: skip
    with pytest.raises(SystemExit):
        convert_mmtt(mmtt_root, out, overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / ".out.replaced").exists()
    with pytest.raises(DataInputError, match="already exists"):
        convert_mmtt(mmtt_root, out)
    assert not (tmp_path / ".out.replaced").exists()


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_truncated_images_and_masks_are_skipped_as_unreadable(tmp_path):
    root = tmp_path / "mine"
    whole = _jpeg(_pixels(0))
    (root / "images").mkdir(parents=True)
    (root / "images" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with PIL.Image.open(root / "images" / "cut.jpg") as image:
        image.verify()  # Pillow's verify does not notice
    _image(root, "images/good.png", 1)
    _mask(root, "masks/good.png")
    mask = (root / "masks" / "good.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(mask[: len(mask) - 20])
    _write(root / "train-mutilabel-simple.json", [
        _record("cut_image", "images/cut.jpg", "masks/good.png", EYES_NOSE),
        _record("cut_mask", "images/good.png", "masks/cut.png", EYES_NOSE),
        _record("good", "images/good.png", "masks/good.png", EYES_NOSE),
    ])  # fmt: skip
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [
        ("cut_image", "unreadable_image"),
        ("cut_mask", "unreadable_mask"),
    ]
    assert "image file images/cut.jpg: the picture cannot be decoded" in result.bad_records[0].message
    assert "truncated" in result.bad_records[0].message


def test_exif_rotated_images_are_checked_against_their_mask_as_displayed(tmp_path):
    root = tmp_path / "mine"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 40 wide × 20 high, displayed 20 × 40
    (root / "images").mkdir(parents=True)
    (root / "images" / "phone.jpg").write_bytes(_jpeg(_pixels(0, 40, 20), exif=exif.tobytes()))
    _save(root / "masks" / "displayed.png", _mask_pixels(True, 20, 40), "L")
    _save(root / "masks" / "stored.png", _mask_pixels(True, 40, 20), "L")
    _save(root / "masks" / "tagged.png", _mask_pixels(True, 40, 20), "L", exif=exif.tobytes())
    _write(root / "train-mutilabel-simple.json", [
        _record("as_displayed", "images/phone.jpg", "masks/displayed.png", EYES_NOSE),
        _record("as_stored", "images/phone.jpg", "masks/stored.png", EYES_NOSE),
        _record("mask_tagged_too", "images/phone.jpg", "masks/tagged.png", EYES_NOSE),
    ])  # fmt: skip
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [("as_stored", "mask_size_mismatch")]
    assert "mask masks/stored.png is 40x20 but its image is 20x40" in result.bad_records[0].message
    for row in _load(tmp_path / "out", "train"):
        assert row["image"].size == row["mask"].size == (20, 40)


def test_a_killed_worker_is_an_error_naming_the_shard_and_the_rerun_resumes(mmtt_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = mmtt.load_example

    def oom_killed(planned, *args):
        if planned.image_id == "mat_0004":  # train shard 3 (records 12..15)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(planned, *args)

    monkeypatch.setattr(mmtt, "load_example", oom_killed)
    message_file = tmp_path / "message.txt"

    def child():
        try:
            convert_mmtt(mmtt_root, out, shard_size=4, num_proc=2)
        except WorkerDiedError as error:
            message_file.write_text(str(error))
            sys.exit(3)

    assert _in_child(child) == 3
    message = message_file.read_text()
    assert "shard data/train-00003-of-00004.parquet (train-mutilabel-simple.json[12] to [15])" in message
    assert "run the same command again to resume" in message
    monkeypatch.undo()
    convert_mmtt(mmtt_root, out, shard_size=4, num_proc=2)
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert _files(out) == _files(tmp_path / "fresh")


SLOW_WORKERS = """
import os, sys, time
from forgerytalker.data import workers

def slow(index, task):
    open(os.path.join(os.environ["WORKER_PIDS"], str(os.getpid())), "w").close()
    time.sleep(120)

workers._run_in_worker = slow
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie waits only to be reaped


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_pool_workers_die_with_their_parent_killed_by_sigkill(mmtt_root, tmp_path):
    """Issue 19 F18: the parent of `data convert --num-proc 2` killed with SIGKILL left its workers running."""
    import time

    script, pids = tmp_path / "convert_with_slow_workers.py", tmp_path / "pids"
    script.write_text(SLOW_WORKERS)
    pids.mkdir()
    command = [sys.executable, str(script), "data", "convert", "--mmtt-root", str(mmtt_root), "--out",
               str(tmp_path / "out"), "--num-proc", "2", "--shard-size", "4", "--no-progress"]
    parent = subprocess.Popen(command, env=dict(os.environ, WORKER_PIDS=str(pids)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    workers = [int(path.name) for path in pids.iterdir()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header announces width × height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_skipped_records_and_the_limit_is_a_flag(mmtt_root, tmp_path, capsys):
    (mmtt_root / MAT / "bomb.png").write_bytes(_bomb_png(12_000, 12_000))
    (mmtt_root / MAT / "masks" / "bomb.png").write_bytes(_bomb_png(30_000, 30_000))  # over Pillow's own limit too
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text())
    records.append(_record("bomb", f"{MAT}/bomb.png", f"{MAT}/masks/0001.png", EYES_NOSE))
    records.append(_record("mask_bomb", f"{MAT}/0001.png", f"{MAT}/masks/bomb.png", EYES_NOSE))
    _write(mmtt_root / "train-mutilabel-simple.json", records)
    result = convert_mmtt(mmtt_root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records[-3:-1]] == [
        ("bomb", "image_too_large"),
        ("mask_bomb", "mask_too_large"),
    ]
    assert "12000×12000 = 144,000,000 pixels is over the limit of 100,000,000 pixels (refused before decoding" in (
        result.bad_records[-3].message
    )
    assert "is over the limit of 100,000,000 pixels" in result.bad_records[-2].message
    assert result.num_examples == {"train": 6, "validation": 2}  # the good records of the run are kept

    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "small"), "--max-image-pixels", "1000"]) == 2
    assert "None of the 21 records is valid" in capsys.readouterr().err
    report = convert_mmtt(mmtt_root, tmp_path / "limit", max_image_pixels=20_000).bad_records
    assert "is over the limit of 20,000" in report[-3].message


def test_corrupt_or_non_utf8_split_files_are_named_with_their_line(mmtt_root, tmp_path, capsys):
    split_file = mmtt_root / "train-mutilabel-simple.json"
    split_file.write_bytes(b'[\n  {"image_id": "a",\n   "caption": "caf\xe9"}\n]\n')
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {split_file}: line 3, column 19: not UTF-8 text (byte 0xe9)\n"
    split_file.write_text('[\n  {"image_id": "a",\n   "caption": "x" "y"}\n]\n')
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {split_file}: line 3, column 19: Expecting ',' delimiter\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shard-size", "0"], "--shard-size: must be a whole number of at least 1, got 0"),
        (["--num-proc", "0"], "--num-proc: must be a whole number of at least 1, got 0"),
        (["--max-image-pixels", "-5"], "--max-image-pixels: must be a whole number of at least 1, got -5"),
        (["--test-split", "--test-fraction", "1.5"], "--test-fraction: must be between 0 and 1, got 1.5"),
    ],
)
def test_bad_arguments_are_rejected_up_front_naming_the_flag(mmtt_root, tmp_path, capsys, arguments, message):
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out"), *arguments]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_missing_dataset_and_unusable_out_are_rejected_naming_the_flag(mmtt_root, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for argv, message in [
        (["--mmtt-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], "--mmtt-root: no such folder"),
        (["--mmtt-root", str(mmtt_root), "--out", str(a_file)], f"--out: {a_file} is a file, not a folder"),
        (["--mmtt-root", str(mmtt_root), "--out", str(a_file / "out")], f"--out: cannot create {a_file / 'out'}: {a_file} is a file"),
    ]:  # fmt: skip
        assert _run_cli(argv) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")


@contextlib.contextmanager
def _read_only(folder: Path):
    """Makes `folder` unwritable for this process: permission bits, or for root (whom they do not stop) the
    immutable attribute; skips the test where neither is available."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without `chattr +i`: nothing here can make a folder read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_out_is_refused(mmtt_root, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    with _read_only(locked):
        assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(locked / "out")]) == 2
        assert capsys.readouterr().err.startswith(f"error: --out: cannot write in {locked}")


def test_full_disk_names_out_keeps_finished_shards_and_the_rerun_resumes(mmtt_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    tables = []
    original = pq.ParquetWriter.write_table

    def fill_up(writer, table, *args, **kwargs):
        tables.append(table.num_rows)
        if len(tables) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(writer, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fill_up)
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write: No space left on device; finished shards are kept in")
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--shard-size", "4", "--num-proc", "1"]) == 0
    convert_mmtt(mmtt_root, tmp_path / "fresh", shard_size=4)
    assert _files(out) == _files(tmp_path / "fresh")

    from forgerytalker.data import output_folders

    monkeypatch.setattr(output_folders.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    assert _run_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "tiny_disk")]) == 2
    assert "--out: " in (err := capsys.readouterr().err) and "needs about" in err and "GB free" in err
