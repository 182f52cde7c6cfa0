"""`forgerytalker data convert` on damaged or hostile input: truncated and EXIF-rotated pictures,
decompression bombs, split files that are not UTF-8 or not JSON, bad arguments and unusable folders; each is a
skipped record or an error naming the file or flag."""

from __future__ import annotations

import io
import json

import numpy as np
import PIL.Image
import pytest
from failure_conditions import bomb_png
from mmtt_folders import (
    EYES_NOSE,
    MAT,
    load_converted,
    make_record,
    mask_pixels,
    noise_pixels,
    run_convert_cli,
    save_picture,
    write_image,
    write_mask,
    write_records,
)

from forgerytalker.data.mmtt import convert_mmtt

pytestmark = pytest.mark.usefixtures("offline_hf_cache")


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_truncated_images_and_masks_are_skipped_as_unreadable(tmp_path):
    root = tmp_path / "mine"
    whole = _jpeg(noise_pixels(0))
    (root / "images").mkdir(parents=True)
    (root / "images" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with PIL.Image.open(root / "images" / "cut.jpg") as image:
        image.verify()  # Pillow's verify does not notice
    write_image(root, "images/good.png", 1)
    write_mask(root, "masks/good.png")
    mask = (root / "masks" / "good.png").read_bytes()
    (root / "masks" / "cut.png").write_bytes(mask[: len(mask) - 20])
    write_records(root / "train-mutilabel-simple.json", [
        make_record("cut_image", "images/cut.jpg", "masks/good.png", EYES_NOSE),
        make_record("cut_mask", "images/good.png", "masks/cut.png", EYES_NOSE),
        make_record("good", "images/good.png", "masks/good.png", EYES_NOSE),
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
    (root / "images" / "phone.jpg").write_bytes(_jpeg(noise_pixels(0, 40, 20), exif=exif.tobytes()))
    save_picture(root / "masks" / "displayed.png", mask_pixels(True, 20, 40), "L")
    save_picture(root / "masks" / "stored.png", mask_pixels(True, 40, 20), "L")
    save_picture(root / "masks" / "tagged.png", mask_pixels(True, 40, 20), "L", exif=exif.tobytes())
    write_records(root / "train-mutilabel-simple.json", [
        make_record("as_displayed", "images/phone.jpg", "masks/displayed.png", EYES_NOSE),
        make_record("as_stored", "images/phone.jpg", "masks/stored.png", EYES_NOSE),
        make_record("mask_tagged_too", "images/phone.jpg", "masks/tagged.png", EYES_NOSE),
    ])  # fmt: skip
    result = convert_mmtt(root, tmp_path / "out")
    assert [(bad.image_id, bad.reason) for bad in result.bad_records] == [("as_stored", "mask_size_mismatch")]
    assert "mask masks/stored.png is 40x20 but its image is 20x40" in result.bad_records[0].message
    for row in load_converted(tmp_path / "out", "train"):
        assert row["image"].size == row["mask"].size == (20, 40)


def test_decompression_bombs_are_skipped_records_and_the_limit_is_a_flag(mmtt_root, tmp_path, capsys):
    (mmtt_root / MAT / "bomb.png").write_bytes(bomb_png(12_000, 12_000))
    (mmtt_root / MAT / "masks" / "bomb.png").write_bytes(bomb_png(30_000, 30_000))  # over Pillow's own limit too
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text())
    records.append(make_record("bomb", f"{MAT}/bomb.png", f"{MAT}/masks/0001.png", EYES_NOSE))
    records.append(make_record("mask_bomb", f"{MAT}/0001.png", f"{MAT}/masks/bomb.png", EYES_NOSE))
    write_records(mmtt_root / "train-mutilabel-simple.json", records)
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

    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "small"), "--max-image-pixels", "1000"]) == 2
    assert "None of the 21 records is valid" in capsys.readouterr().err
    report = convert_mmtt(mmtt_root, tmp_path / "limit", max_image_pixels=20_000).bad_records
    assert "is over the limit of 20,000" in report[-3].message


def test_corrupt_or_non_utf8_split_files_are_named_with_their_line(mmtt_root, tmp_path, capsys):
    split_file = mmtt_root / "train-mutilabel-simple.json"
    split_file.write_bytes(b'[\n  {"image_id": "a",\n   "caption": "caf\xe9"}\n]\n')
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {split_file}: line 3, column 19: not UTF-8 text (byte 0xe9)\n"
    split_file.write_text('[\n  {"image_id": "a",\n   "caption": "x" "y"}\n]\n')
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out")]) == 2
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
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "out"), *arguments]) == 2
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
        assert run_convert_cli(argv) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")
