"""The settings of `training/run.py`: YAML files overridden by flags, and every bad setting, config file or
flag refused before a model is built, naming it, with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from recipe_datasets import parquet_folder, recipe_rows
from training_runs import REPO, run_cli, tiny

from forgerytalker.training.arguments import parse_arguments


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--save_steps", "0"), "--save_steps: must be at least 1"),
        (("--eval_steps", "-2"), "--eval_steps: must be at least 1"),
        (("--logging_steps", "0"), "--logging_steps: must be at least 1"),
        (("--learning_rate", "-0.001"), "--learning_rate: must be positive"),
        (("--best_metric", "BLEU-9"), "--best_metric: 'BLEU-9' is not a stage-prompter validation metric"),
        (("--dataset", "/no/such/dataset"), "--dataset: '/no/such/dataset' cannot be loaded"),
        (("--validation_split", "val"), "--validation_split: --dataset"),
        (("--mask_only", "true"), "--mask_only: a stage-2 setting"),
        (("--train_region_source", "ground_truth"), "--train_region_source: a stage-2 setting"),
        (("--stage", "joint", "--tiny_model", "true", "--mask_only", "true", "--train_language_model", "true"),
         "--mask_only: without the report loss the language model gets no gradient"),
        (("--stage", "joint", "--tiny_model", "true", "--train_region_source", "oracle"),
         "--train_region_source: must be one of predicted, ground_truth, none; got 'oracle'"),
    ],
)
def test_bad_settings_are_rejected_before_any_model_is_built(tiny_dataset_dir, tmp_path, capsys, no_model_may_be_built,
                                                             extra, message):
    assert run_cli(*tiny("prompter", tiny_dataset_dir, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("methods", "limit"), [(["face_swap", "classical_inpainting"], ()),
                                                (["face_swap", "authentic"], ("--max_eval_samples", "1"))])
def test_auc_as_the_best_metric_needs_authentic_and_forged_validation_images(tmp_path, capsys, no_model_may_be_built,
                                                                           methods, limit):
    dataset = parquet_folder(tmp_path / "data", {"train": recipe_rows(["authentic", "face_swap"], "t"),
                                                 "validation": recipe_rows(methods, "v")})
    assert run_cli(*tiny("prompter", dataset, tmp_path / "out", "--best_metric", "AUC", *limit)) == 2
    assert "--best_metric: AUC needs validation images with and without labelled regions, and the" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_config_files_are_clear_errors(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: prompter\nlearning_rate: [0.1\n")
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("stage: prompter\nlearnin_rate: 1.0\n")
    for config, message in ((broken, "not valid YAML"), (misspelt, "unknown settings ['learnin_rate']")):
        assert run_cli("--config", str(config), "--dataset", "d", "--output_dir", str(tmp_path / "o"), "--tiny_model") == 2
        assert f"--config {config}: {message}" in capsys.readouterr().err
    for prompter_config, message in (('{"image_size": 30, "patch_size": 8}', "`image_size` (30) must be a multiple"),
                                     ('{"hidden_sise": 8}', "unknown settings ['hidden_sise']"),
                                     (str(tmp_path / "missing.json"), "no such file")):
        with pytest.raises(SystemExit):
            parse_arguments(["--stage", "prompter", "--dataset", "d", "--output_dir", "o", "--prompter_config", prompter_config])
        assert f"--prompter_config: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_arguments(["--stage", "joint", "--dataset", "d", "--output_dir", "o"])
    assert "--model_name_or_path, --instructblip_name_or_path, --tiny_model: give exactly one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_arguments(["--stage", "third", "--dataset", "d", "--output_dir", "o", "--tiny_model"])
    assert "--stage: must be one of prompter, joint" in capsys.readouterr().err


def test_the_command_line_exits_with_code_2_naming_the_flag(tiny_dataset_dir, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "training" / "run.py"),
                             *tiny("prompter", tiny_dataset_dir, tmp_path / "out", "--save_steps", "0")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--save_steps: must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_and_output_folders_exit_with_code_2_naming_them(tiny_dataset_dir, tmp_path, capsys, monkeypatch):
    """Issue 19 F14: an unknown flag, --output_dir under a file, or a read-only one gave a raw traceback, rc 1."""
    result = subprocess.run([sys.executable, str(REPO / "training" / "run.py"),
                             *tiny("prompter", tiny_dataset_dir, tmp_path / "out", "--no_such_flag", "0.1")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unrecognized arguments: --no_such_flag 0.1" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "file").write_text("x")
    assert run_cli(*tiny("prompter", tiny_dataset_dir, tmp_path / "file" / "out")) == 2
    assert "--output_dir: cannot create" in (err := capsys.readouterr().err) and "Traceback" not in err

    import errno

    readonly, original_open = tmp_path / "readonly", os.open

    def read_only_open(path, flags, *args, **kwargs):  # a read-only file system (root ignores permission bits)
        if str(path).startswith(str(readonly)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return original_open(path, flags, *args, **kwargs)

    readonly.mkdir()
    monkeypatch.setattr(os, "open", read_only_open)
    assert run_cli(*tiny("prompter", tiny_dataset_dir, readonly)) == 2
    assert "--output_dir: cannot write in" in capsys.readouterr().err


def test_yaml_settings_are_overridden_by_flags(tmp_path):
    config = REPO / "training" / "configs" / "tiny_prompter.yaml"
    arguments = parse_arguments(["--config", str(config), "--dataset", "d", "--output_dir", str(tmp_path),
                                 "--learning_rate", "0.5"])
    assert arguments.stage == "prompter" and arguments.tiny_model and arguments.max_steps == 6
    assert arguments.learning_rate == 0.5 and arguments.best_metric == "PLM"
    paper = parse_arguments(["--config", str(REPO / "training" / "configs" / "joint.yaml"), "--dataset", "d",
                             "--output_dir", "o", "--instructblip_name_or_path", "i"])
    assert (paper.learning_rate, paper.num_train_epochs, paper.per_device_train_batch_size, paper.mixed_precision) == (
        4e-6, 60, 16, "fp16")
    prompter = parse_arguments(["--config", str(REPO / "training" / "configs" / "prompter.yaml"), "--dataset", "d",
                                "--output_dir", "o", "--instructblip_name_or_path", "i"])
    assert (prompter.learning_rate, prompter.max_steps, prompter.weight_decay) == (7.5e-3, 125000, 0.05)
