"""The demo recipe's choice of generation settings: the one with the best validation CIDEr, written into the model's
generation config, once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgerytalker import ForgeryTalkerForConditionalGeneration  # noqa: E402
from forgerytalker.evaluation.text_metrics import compute_text_metrics  # noqa: E402
from forgerytalker.tiny import build_tiny_model_and_processor  # noqa: E402
from recipe_datasets import parquet_folder, recipe_rows  # noqa: E402
from recipes.demo_model import generation  # noqa: E402
from recipes.demo_model.generation import choose_generation  # noqa: E402
from recipes.demo_model.settings import recipe_settings  # noqa: E402

METHODS = ["authentic", "face_swap", "classical_inpainting", "authentic", "region_transplant", "face_swap", "authentic"]
CAPTIONS = ["The face looks authentic.", "The whole face looks swapped.", "The nose looks blurred.",
            "Nothing in this face looks edited.", "The lips look darker than the cheeks.",
            "The face looks swapped and the jaw is soft.", "The photo appears untouched."]


def _one_at_a_time(model, processor, rows, **choice) -> dict[str, str]:
    reports = {}
    for row in rows:
        with torch.inference_mode():
            outputs = model.generate(**processor(images=[row["image"].convert("RGB")], return_tensors="pt"),
                                     max_new_tokens=8, **choice)
        reports[row["image_id"]] = processor.post_process_generation(outputs)[0]["report"]
    return reports


def test_validation_reports_in_batches_are_the_reports_of_one_image_at_a_time(monkeypatch):
    monkeypatch.setattr(generation, "BATCH_SIZE", 3)  # three batches, the last one short
    model, processor = build_tiny_model_and_processor()
    model.eval()
    rows = recipe_rows(METHODS, "v")
    for choice in (generation.GENERATION_CHOICES[0], generation.GENERATION_CHOICES[-1]):
        expected = _one_at_a_time(model, processor, rows, **choice)
        model.generation_config.update(**choice)  # the settings the reports are written with are the model's own
        assert generation.validation_reports(model, processor, rows, 8) == expected


def _tiny_model_and_validation(tmp_path):
    dataset = parquet_folder(tmp_path / "mmtt", {"train": recipe_rows(["authentic"], "t"),
                                                 "validation": recipe_rows(METHODS, "v", CAPTIONS)})
    model, processor = build_tiny_model_and_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return dataset, [f"v{index}" for index in range(len(METHODS))]


def _written_reports(ids, target: int) -> dict:
    """Per setting (num_beams, repetition_penalty): the references for `target`, a shuffled copy for the others."""
    return {(choice["num_beams"], choice["repetition_penalty"]): dict(zip(ids, CAPTIONS if index == target else CAPTIONS[index + 1 :] + CAPTIONS[: index + 1]))
            for index, choice in enumerate(generation.GENERATION_CHOICES)}


def test_the_setting_with_the_best_validation_cider_is_written_into_the_generation_config(tmp_path, monkeypatch):
    """A random tiny model writes the same words for every image (CIDEr 0 for any setting), so the reports each
    setting writes are given: the references for one setting, a shuffled copy for the others."""
    target = 4
    dataset, ids = _tiny_model_and_validation(tmp_path)
    written = _written_reports(ids, target)
    asked = []

    def reports_of(model, processor, rows, max_new_tokens):
        asked.append((rows["image_id"], max_new_tokens))
        return written[(model.generation_config.num_beams, model.generation_config.repetition_penalty)]

    monkeypatch.setattr(generation, "validation_reports", reports_of)
    settings = recipe_settings(quick=True)
    result = choose_generation(tmp_path / "model", dataset, settings)

    assert asked == [(ids, settings.max_new_tokens)] * len(generation.GENERATION_CHOICES)
    expected = [compute_text_metrics(written[key], dict(zip(ids, CAPTIONS)))["CIDEr"] for key in written]
    assert [tried["CIDEr"] for tried in result["tried"]] == pytest.approx(expected)
    assert expected[target] > max(expected[:target] + expected[target + 1 :])
    assert [tried["distinct_forged_reports"] for tried in result["tried"]] == [4] * len(expected)
    assert result["chosen"] == generation.GENERATION_CHOICES[target] and result["validation_forged"] == 4
    saved = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "model").generation_config
    assert (saved.num_beams, saved.repetition_penalty) == tuple(generation.GENERATION_CHOICES[target].values())
    # and the shipped model writes each region's name once, as every setting was tried
    from forgerytalker import ForgeryTalkerProcessor

    assert saved.once_words_ids == ForgeryTalkerProcessor.from_pretrained(tmp_path / "model").region_word_ids()
    assert json.loads((tmp_path / "model" / generation.RECORD).read_text()) == result
    assert choose_generation(tmp_path / "model", dataset, settings) == result  # chosen once


def test_a_setting_whose_reports_name_a_region_twice_is_passed_over(tmp_path, monkeypatch):
    """The best-CIDEr setting writes one forged report naming the nose twice: the best of the others is chosen."""
    target = 4
    dataset, ids = _tiny_model_and_validation(tmp_path)
    written = _written_reports(ids, target)
    best_key = tuple(generation.GENERATION_CHOICES[target].values())
    written[best_key] = {**written[best_key], "v2": "The nose looks blurred and the nose looks dark."}
    monkeypatch.setattr(generation, "validation_reports",
                        lambda model, processor, rows, max_new_tokens: written[(model.generation_config.num_beams,
                                                                                model.generation_config.repetition_penalty)])
    result = choose_generation(tmp_path / "model", dataset, recipe_settings(quick=True))
    repeating = [tried["forged_reports_repeating_a_region"] for tried in result["tried"]]
    assert repeating == [int(index == target) for index in range(len(repeating))]
    cider = [tried["CIDEr"] for tried in result["tried"]]
    assert cider[target] == max(cider)  # still the best CIDEr, yet passed over
    runner_up = max((index for index in range(len(cider)) if index != target), key=lambda index: cider[index])
    assert result["chosen"] == generation.GENERATION_CHOICES[runner_up]



def test_stage_two_validates_with_settings_of_the_kind_the_choice_ships(tmp_path):
    """Stage 2 keeps the checkpoint with the best validation CIDEr of reports generated with the initial model's
    generation config: greedy or beam search as one of the choices, each region's name written once, through a
    save and a load as the trainer does."""
    from forgerytalker import ForgeryTalkerProcessor
    from recipes.demo_model.model import GENERATION, set_initial_generation_config

    model, processor = build_tiny_model_and_processor()
    set_initial_generation_config(model, processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path).generation_config
    assert {key: getattr(loaded, key) for key in GENERATION} == GENERATION
    assert {key: GENERATION[key] for key in generation.GENERATION_CHOICES[0]} in generation.GENERATION_CHOICES
    assert loaded.once_words_ids == ForgeryTalkerProcessor.from_pretrained(tmp_path).region_word_ids()
    assert loaded.once_words_ids
