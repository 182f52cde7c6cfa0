"""`forgerytalker data convert`: what a conversion writes, from hand-written miniatures of MMTT-style folders:
the released layout with each kind of bad record, the layouts users have, the labels, the card and
`load_dataset`. What it must never lose is in test_data_convert_output_folder.py, interrupted conversions in
test_data_convert_resume.py, damaged input and bad arguments in test_data_convert_bad_input.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from mmtt_folders import (
    E4S,
    EXPECTED_SKIPPED,
    EYES_NOSE,
    GOOD_TRAIN_IDS,
    GOOD_VALIDATION_IDS,
    NO_REGION,
    REPOSITORY,
    SIZE,
    folder_files,
    load_converted,
    make_record,
    run_convert_cli,
    write_image,
    write_mask,
    write_records,
)

from forgerytalker.data import methods, mmtt
from forgerytalker.data.errors import DataInputError
from forgerytalker.data.features import MMTT_FEATURES
from forgerytalker.data.methods import method_from_name, method_from_path
from forgerytalker.data.mmtt import MMTT, convert_mmtt
from forgerytalker.data.mmtt_publish import REPORT_FILE
from forgerytalker.data.splits import id_fraction
from forgerytalker.data.validation import BadRecordError
from forgerytalker.regions import REGION_NAMES

pytestmark = pytest.mark.usefixtures("offline_hf_cache")


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
    dataset = load_converted(out)

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

    one, two = folder_files(tmp_path / "one"), folder_files(tmp_path / "two")
    assert "data/train-00003-of-00004.parquet" in one
    assert one == two
    assert load_converted(tmp_path / "one", "train")["image_id"] == GOOD_TRAIN_IDS


def test_test_split_is_carved_from_train_ids(mmtt_root, tmp_path):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out, test_fraction=0.5)
    dataset = load_converted(out)

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
    assert set(load_converted(out)) == {"train"}
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
    assert run_convert_cli(strict) == 2
    assert "image_id='missing_image'" in capsys.readouterr().err


def test_existing_output_needs_overwrite(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out)
    with pytest.raises(DataInputError, match=r"already exists; pass overwrite=True to replace it"):
        convert_mmtt(mmtt_root, out)
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out: {out} already exists; pass --overwrite to replace it\n"
    convert_mmtt(mmtt_root, out, overwrite=True, test_fraction=0.5)
    assert (out / "data" / "test-00000-of-00001.parquet").is_file()


def test_builder_yields_the_converted_rows(mmtt_root, tmp_path):
    convert_mmtt(mmtt_root, tmp_path / "out")
    converted = load_converted(tmp_path / "out")
    builder = MMTT(data_dir=str(mmtt_root), cache_dir=str(tmp_path / "builder_cache"))
    builder.download_and_prepare()
    built = builder.as_dataset()

    assert built["train"].features == MMTT_FEATURES
    for split in ("train", "validation"):
        assert built[split].data.table.equals(converted[split].data.table)


def test_cli_prints_a_summary(mmtt_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(out), "--num-proc", "1", "--test-split"]) == 0
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
        write_image(root, f"images/{name}.jpg", index)
        write_mask(root, f"masks/{name}.png", forged=forged)
        record = make_record(f"user_{name}", f"images/{name}.jpg", f"masks/{name}.png", caption,
                         instance_id=index, source_face=f"person_{index % 2}")  # fmt: skip
        if method is not None:
            record["method"] = method
        records.append(record)
    return write_records(root / "eval-mutilabel-simple.json", records)


def test_a_users_folder_with_one_split_file_converts_with_methods_and_authentic_rows(tmp_path):
    root = tmp_path / "mine"
    _users_folder(root)
    result = convert_mmtt(root, tmp_path / "out")
    assert result.bad_records == [] and result.num_examples == {"validation": 6}
    validation = load_converted(tmp_path / "out", "validation")
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
    write_records(elsewhere / "train.json", records[:3])
    write_records(elsewhere / "eval.json", records[3:5])
    write_records(elsewhere / "test.json", records[5:])
    argv = ["--mmtt-root", str(root), "--split", f"train={elsewhere / 'train.json'}",
            "--split", f"validation={elsewhere / 'eval.json'}", "--split", f"test={elsewhere / 'test.json'}"]  # fmt: skip
    assert run_convert_cli([*argv, "--out", str(tmp_path / "out")]) == 0
    dataset = load_converted(tmp_path / "out")
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
                run_convert_cli(["--mmtt-root", str(root), "--out", str(tmp_path / "no"), *extra])
            assert caught.value.code == 2 and "expected SPLIT=PATH" in capsys.readouterr().err
            continue
        assert run_convert_cli(["--mmtt-root", str(root), "--out", str(tmp_path / "no"), *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "no").exists()


def test_the_release_file_names_are_found_and_two_for_one_split_are_refused(mmtt_root, tmp_path, capsys):
    (mmtt_root / "eval-mutilabel-simple.json").rename(mmtt_root / "eval-mutilabel.json")
    (mmtt_root / "train-mutilabel-simple.json").unlink()
    assert convert_mmtt(mmtt_root, tmp_path / "out").split_files == {"validation": "eval-mutilabel.json"}
    shutil.copy(mmtt_root / "eval-mutilabel.json", mmtt_root / "eval-mutilabel-simple.json")
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "two")]) == 2
    assert "holds both eval-mutilabel-simple.json and eval-mutilabel.json for split validation; choose one with --split" in (
        capsys.readouterr().err
    )
    for name in ("eval-mutilabel.json", "eval-mutilabel-simple.json"):
        (mmtt_root / name).unlink()
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", str(tmp_path / "none")]) == 2
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
        write_image(root, image_file, seed)
        write_mask(root, mask_file)
        records.append(make_record(image_id, image, mask, EYES_NOSE))
    records.append(make_record("absolute_inside", str(root / "images" / "a.png"), str(root / "masks" / "a.png"), EYES_NOSE))
    write_records(root / "train-mutilabel-simple.json", records)

    result = convert_mmtt(root, tmp_path / "out")
    assert result.bad_records == []
    assert [row["image"].size for row in load_converted(tmp_path / "out", "train")] == [(SIZE, SIZE)] * 5
    paths = _files_in_column(tmp_path / "out", "train", "image")
    assert paths == ["images/a.png", "dataset/celeb512/b.png", "synthetic/face_swap/c.png", "images/d.png", "images/a.png"]


def _files_in_column(out: Path, split: str, column: str) -> list[str]:
    table = pq.read_table(next((out / "data").glob(f"{split}-*.parquet")))
    return [cell["path"] for cell in table.column(column).to_pylist()]


def test_escaping_and_ambiguous_paths_are_rejected_with_the_record_named(tmp_path):
    root = tmp_path / "mine"
    secret = write_image(tmp_path, "secret.png", 0)  # outside the root: must never be read
    write_mask(tmp_path, "secret_mask.png")
    write_image(root, "good.png", 1)
    write_mask(root, "good_mask.png")
    write_image(root, "twice.png", 2)
    write_image(root, "dataset/twice.png", 3)  # `twice.png` names a file under the root and one under dataset/
    (root / "linked.png").symlink_to(tmp_path / secret)  # issue 19 N14: a link inside the root leading out
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    (root / "inner.png").symlink_to(root / "good.png")  # a link that stays inside is fine
    records = [
        make_record("dotdot", f"../{secret}", "good_mask.png", EYES_NOSE),
        make_record("absolute_outside", str(tmp_path / secret), "good_mask.png", EYES_NOSE),
        make_record("mask_escapes", "good.png", "../secret_mask.png", EYES_NOSE),
        make_record("ambiguous", "twice.png", "good_mask.png", EYES_NOSE),
        make_record("linked_image", "linked.png", "good_mask.png", EYES_NOSE),
        make_record("linked_folder", f"outside/{secret}", "good_mask.png", EYES_NOSE),
        make_record("good", "good.png", "good_mask.png", EYES_NOSE),
        make_record("inner_link", "inner.png", "good_mask.png", EYES_NOSE),
    ]
    write_records(root / "train-mutilabel-simple.json", records)
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
    train = load_converted(out, "train")
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
    expression = make_record("angry_00001", *(
        write_image(mmtt_root, "dataset/face_attribute_image/angry_00001.png", 50),
        write_mask(mmtt_root, "dataset/face_attribute_image/masks/angry_00001.png"),
    ), "The nasal bridge and the ocular area look odd.", attribute="angry")  # fmt: skip
    records = json.loads((mmtt_root / "train-mutilabel-simple.json").read_text()) + [expression]
    write_records(mmtt_root / "train-mutilabel-simple.json", records)
    out = tmp_path / "out"
    convert_mmtt(mmtt_root, out, labels="caption")
    train = load_converted(out, "train")
    regions = {row["image_id"]: [REGION_NAMES[index] for index in row["regions"]] for row in train}
    assert regions["relabelled"] == ["eye", "nose"]  # from the caption now
    assert regions["angry_00001"] == ["eye", "lip", "mouth", "nose", "eyebrow"]  # nasal, ocular + expression rule
    assert json.loads((out / REPORT_FILE).read_text())["labels"] == "caption"


# ---------------------------------------------------------------- progress, load_dataset("mmtt"), card


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
    assert run_convert_cli(["--mmtt-root", str(mmtt_root), "--out", "mmtt"]) == 0
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
