"""Model and dataset cards, and `forgerytalker push`: the folder a repository gets, offline (`--dry-run`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard

from forgerytalker.cli import main
from forgerytalker.evaluation.report import metrics_document
from forgerytalker.hub_cards import ModelCardFacts, write_model_card

OVERALL = {
    "BLEU-1": 31.25, "BLEU-2": 17.5, "BLEU-3": 9.75, "BLEU-4": 5.5, "ROUGE-L": 24.125, "CIDEr": 21.75,
    "IoU": 70.5, "Precision": 87.25, "Recall": 78.0, "cIoU": 66.5, "PLM": 41.0, "AUC": 93.5, "Accuracy": 88.0,
    "num_images": 40, "num_forged": 30, "num_authentic": 10,
}


@pytest.fixture
def metrics() -> dict:
    document = metrics_document(OVERALL, per_method={"face_swap": dict(OVERALL, IoU=60.25)})
    document["run"] = {"split": "test"}
    return document


@pytest.fixture
def trained_folder(tmp_path, metrics) -> Path:
    """What a training run leaves: the model, its processor, checkpoints, logs, settings, and an evaluation."""
    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor("llama", seed=0)
    folder = tmp_path / "run"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "checkpoints" / "step-10").mkdir(parents=True)
    (folder / "checkpoints" / "step-10" / "optimizer.bin").write_bytes(b"\0" * 64)
    (folder / "log.jsonl").write_text('{"loss": 1.0}\n')
    training = {"stage": "joint", "dataset": "acme/mmtt", "instructblip_name_or_path": "Salesforce/instructblip-flan-t5-xl",
                "learning_rate": 1e-5, "seed": 42}
    (folder / "training_args.json").write_text(json.dumps(training))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_model_card_parses_and_carries_the_metrics(tmp_path, metrics):
    facts = ModelCardFacts("acme/forgerytalker-demo", license="apache-2.0", datasets=["acme/mmtt"],
                           base_model="Salesforce/instructblip-vicuna-7b", metrics=metrics)
    card = ModelCard.load(write_model_card(tmp_path, facts))
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "image-text-to-text", "apache-2.0")
    assert data.datasets == ["acme/mmtt"] and data.base_model == "Salesforce/instructblip-vicuna-7b"
    assert {"bleu", "cider", "rouge", "iou", "plm", "roc_auc"} <= set(data.metrics)
    results = {result.metric_name: result for result in data.eval_results}
    assert {name: result.metric_value for name, result in results.items()} == {
        key: value for key, value in OVERALL.items() if not key.startswith("num_")
    }
    assert all(result.dataset_split == "test" and result.dataset_type == "acme/mmtt" for result in results.values())
    text = card.text
    assert "## Intended use and limits" in text and "Not for" in text and "## Evaluation" in text
    assert "21.75" in text and "60.25" in text  # this run's Table-2 row (CIDEr) and the per-method table (IoU)
    lines = text.splitlines()
    assert lines.count("## Evaluation") == 1 and "# Evaluation" not in lines and "### Per manipulation method" in lines


def test_a_card_without_evaluation_or_training_says_so(tmp_path):
    card = ModelCard.load(write_model_card(tmp_path, ModelCardFacts("acme/untrained")))
    assert card.data.eval_results is None and card.data.license == "other"
    assert "Not evaluated" in card.text and "no `training_args.json`" in card.text


def test_push_model_dry_run_writes_a_folder_that_loads_back(tmp_path, trained_folder, capsys):
    from transformers import AutoModel, AutoProcessor

    out = tmp_path / "upload"
    code = main(["push", "--model", str(trained_folder), "--repo-id", "acme/forgerytalker-demo", "--dry-run", "--out", str(out)])
    assert code == 0 and str(out) in capsys.readouterr().out
    names = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert {"README.md", "config.json", "model.safetensors", "metrics.json", "training_args.json", "processor_config.json"} <= names
    assert not any(name.startswith("checkpoints") or name == "log.jsonl" for name in names)
    model = AutoModel.from_pretrained(str(out))
    original = AutoModel.from_pretrained(str(trained_folder))
    for (name, value), (_, expected) in zip(model.state_dict().items(), original.state_dict().items()):
        assert torch.equal(value, expected), name
    processor = AutoProcessor.from_pretrained(str(out))
    assert processor.build_instruction(["eye"]) == AutoProcessor.from_pretrained(str(trained_folder)).build_instruction(["eye"])
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "Salesforce/instructblip-flan-t5-xl" and card.data.datasets == ["acme/mmtt"]
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["IoU"] == 70.5
    assert '"learning_rate": 1e-05' in card.text
    assert not list(tmp_path.glob(".upload.partial"))


def test_push_uploads_the_staged_folder_with_huggingface_hub(tmp_path, trained_folder, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        calls["create"] = (repo_id, repo_type, private, exist_ok)

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        calls["files"] = sorted(path.name for path in Path(folder_path).iterdir())
        calls["upload"] = (repo_id, repo_type)
        return "https://hub.example/acme/x/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert main(["push", "--model", str(trained_folder), "--repo-id", "acme/x", "--private"]) == 0
    assert calls["create"] == ("acme/x", "model", True, True) and calls["upload"] == ("acme/x", "model")
    assert "README.md" in calls["files"] and "model.safetensors" in calls["files"] and "checkpoints" not in calls["files"]


def test_push_dataset_dry_run_loads_back_with_load_dataset(tmp_path, tiny_dataset_dir, capsys):
    from datasets import load_dataset

    out = tmp_path / "mmtt-upload"
    assert main(["push", "--dataset", str(tiny_dataset_dir), "--repo-id", "acme/mmtt", "--dry-run", "--out", str(out)]) == 0
    original, published = load_dataset(str(tiny_dataset_dir)), load_dataset(str(out))
    assert set(published) == set(original) and published["train"].features == original["train"].features
    for split in original:
        assert published[split]["image_id"] == original[split]["image_id"]
        assert np.array_equal(np.asarray(published[split][0]["mask"]), np.asarray(original[split][0]["mask"]))
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "other" and "dataset_info" in card.data.to_dict()
    assert "| method | examples | train |" in card.text  # examples per method and split
    assert "## Licences" in card.text


def test_push_model_publishes_no_absolute_local_paths(tmp_path, trained_folder, capsys):
    """Issue 19 N15: `training_args.json`, the card and the config carried the user's and folders' names."""
    training = json.loads((trained_folder / "training_args.json").read_text())
    training.update(output_dir=str(trained_folder), dataset="/home/ann/data/mmtt", logging_dir="~/runs/logs",
                    init_from=[str(tmp_path / "stage1" / "best")])
    (trained_folder / "training_args.json").write_text(json.dumps(training))
    config = json.loads((trained_folder / "config.json").read_text())
    config["prompter_config"]["_name_or_path"] = str(tmp_path / "stage1" / "best")
    (trained_folder / "config.json").write_text(json.dumps(config))

    out = tmp_path / "upload"
    assert main(["push", "--model", str(trained_folder), "--repo-id", "acme/x", "--dry-run", "--out", str(out)]) == 0
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".py", ".txt"):
            text = path.read_text(encoding="utf-8")
            assert str(tmp_path) not in text and "/home/ann" not in text and "~/runs" not in text, path.name
    published = json.loads((out / "training_args.json").read_text())
    assert published["output_dir"] == "run" and published["dataset"] == "mmtt" and published["init_from"] == ["best"]
    assert published["instructblip_name_or_path"] == "Salesforce/instructblip-flan-t5-xl"  # a Hub id stays
    assert "\"mmtt\"" in (out / "README.md").read_text()  # the card shows the published settings


def test_push_dataset_refuses_a_listed_path_leading_out_of_the_folder(tmp_path, tiny_dataset_dir, capsys):
    """Issue 19 N10: a listed file that is a link to a secret, or a report entry climbing out, was staged."""
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    for case, entry in (("link", "data/key"), ("climb", "../home/.ssh/id_rsa")):
        folder = tmp_path / case
        shutil.copytree(tiny_dataset_dir, folder)
        if case == "link":
            (folder / "data" / "key").symlink_to(secret)
        report = json.loads((folder / "conversion_report.json").read_text())
        report["files"][entry] = secret.stat().st_size
        (folder / "conversion_report.json").write_text(json.dumps(report))
        out = tmp_path / f"{case}-upload"
        assert main(["push", "--dataset", str(folder), "--repo-id", "acme/mmtt", "--dry-run", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: --dataset: ") and repr(entry) in error and "Traceback" not in error
        assert not out.exists() and not any("PRIVATE KEY" in path.read_text(errors="ignore")
                                            for path in tmp_path.rglob("*upload*/**/*") if path.is_file())


def test_push_refuses_bad_arguments_naming_the_flag(tmp_path, trained_folder, capsys):
    cases = [
        (["--model", str(trained_folder), "--repo-id", "no-owner"], "--repo-id"),
        (["--model", str(tmp_path / "missing"), "--repo-id", "acme/x", "--dry-run"], "--model"),
        (["--dataset", str(trained_folder), "--repo-id", "acme/x", "--dry-run", "--out", str(tmp_path / "d")], "--dataset"),
        (["--model", str(trained_folder), "--repo-id", "acme/x", "--dry-run", "--out", str(trained_folder)], "--out"),
        (["--model", str(trained_folder), "--repo-id", "acme/x", "--out", str(tmp_path / "o")], "--out"),
    ]
    for arguments, flag in cases:
        assert main(["push", *arguments]) == 2, arguments
        assert f"error: {flag}" in capsys.readouterr().err


def test_a_folder_that_describes_itself_gets_its_own_words_in_the_card(tmp_path):
    from forgerytalker.hub_cards.model_card import ABOUT_FILE, read_facts_from_folder

    (tmp_path / ABOUT_FILE).write_text("**A demonstration model.** Trained on UTKFace (non-commercial research only).\n")
    card = ModelCard.load(write_model_card(tmp_path / "card", read_facts_from_folder(tmp_path, "acme/demo")))
    assert "## What this model is" in card.text and "UTKFace (non-commercial research only)" in card.text
    assert "MMTT: GAN face swap" not in card.text
    plain = ModelCard.load(write_model_card(tmp_path / "plain", ModelCardFacts("acme/other")))
    assert "MMTT: GAN face swap" in plain.text and "## What this model is" not in plain.text
