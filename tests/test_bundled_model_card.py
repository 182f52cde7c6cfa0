"""The bundled demo model says what it is and carries no trace of the machine that built it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from forgerytalker.analysis.defaults import BUNDLED_MODEL_DIR, DEMONSTRATION_NOTE, verdict
from forgerytalker.hub_cards.model_card import ABOUT_FILE

REPO = Path(__file__).resolve().parents[1]
ABSOLUTE_PATH = re.compile(r'"(/(?:work|root|home|tmp|Users|mnt|opt)/[^"]*)"')


def test_shipped_files_name_no_folder_of_the_build_machine():
    for path in [*BUNDLED_MODEL_DIR.glob("*.json"), REPO / "benchmarks" / "latest.json"]:
        assert not ABSOLUTE_PATH.search(path.read_text()), path
    assert "/work/" not in (REPO / "docs" / "RESULTS.md").read_text()


def test_the_bundled_model_reads_256_px_through_pretrained_features_and_caps_its_instruction():
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    prompter = config["prompter_config"]
    assert prompter["conv_branch_type"] == "mobilenet_v2" and prompter["image_size"] >= 256
    assert config["max_instruction_regions"] == 4  # the longest region list of its training reports
    assert 0 < prompter["region_threshold"] < 1


def test_the_card_and_the_verdicts_say_it_is_a_demonstration_trained_on_utkface(tmp_path):
    from forgerytalker.cli import main

    about = (BUNDLED_MODEL_DIR / ABOUT_FILE).read_text()
    assert "demonstration" in about and "UTKFace" in about and "non-commercial research" in about
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())  # the thresholds it states are its own
    assert f"above {config['prompter_config']['region_threshold']:.3f}, chosen on held-out validation people" in about
    emptied = " (a face not called manipulated gets an empty mask)" if config["empty_untouched_masks"] else ""
    assert f"a mask pixel is forged above {config['mask_threshold']:g}{emptied}, chosen on the same people" in about
    assert main(["push", "--model", str(BUNDLED_MODEL_DIR), "--repo-id", "acme/demo", "--dry-run", "--out", str(tmp_path / "up")]) == 0
    card = (tmp_path / "up" / "README.md").read_text()
    assert "## What this model is" in card and "MMTT: GAN face swap" not in card and "Not evaluated" not in card
    assert verdict(False, str(BUNDLED_MODEL_DIR)).endswith(DEMONSTRATION_NOTE)
    assert verdict(True, str(tmp_path)) == "manipulated"


def test_the_readme_states_the_bundled_models_generation_settings():
    generation = json.loads((BUNDLED_MODEL_DIR / "generation_config.json").read_text())
    readme = " ".join((REPO / "README.md").read_text().split())
    stated = re.search(r"The bundled demo model's own: (\d+) beams?, (\d+) to (\d+) new tokens, `repetition_penalty=([\d.]+)`",
                       readme)
    assert stated, "README: the bundled model's generation settings are not stated"
    beams, least, most, penalty = stated.groups()
    assert (int(beams), int(least), int(most), float(penalty)) == (
        generation["num_beams"], generation["min_new_tokens"], generation["max_new_tokens"], generation["repetition_penalty"])
