"""Two-stage training through `accelerate launch`, one process and two, with kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgerytalker.training.arguments import parse_arguments

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def launch(*arguments: str, processes: int = 1) -> list[str]:
    """The `accelerate launch training/run.py ...` command line; two processes are real CPU processes."""
    if processes == 1:
        prefix = [*ACCELERATE, "--cpu", "--num_processes", "1"]
    else:
        prefix = [*ACCELERATE, "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    return [*prefix, "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / "run.py"), *arguments]


def environment(processes: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"  # `--cpu --num_processes 2` would silently start one process
    return env


def run_training(*arguments: str, processes: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(launch(*arguments, processes=processes), env=environment(processes), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def step_records(log: list[dict]) -> dict[int, dict]:
    """The last record of each training step (a resumed run logs the steps it redoes again)."""
    return {record["step"]: record for record in log if "loss" in record}


def tiny(stage: str, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "training" / "configs" / f"tiny_{stage}.yaml"), "--dataset", str(dataset),
            "--output_dir", str(output_dir), *extra]


@pytest.fixture(scope="module")
def stage_one(tiny_dataset_dir, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("stage-one")
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir))
    return output_dir


def test_stage_one_trains_the_prompter_and_saves_a_loadable_model(stage_one, tiny_dataset_dir):
    import forgerytalker  # noqa: F401
    from transformers import AutoModel, AutoProcessor

    log = read_log(stage_one)
    steps = step_records(log)
    assert sorted(steps) == list(range(1, 7))
    assert all(math.isfinite(record["loss"]) and record["samples_per_second"] > 0 for record in steps.values())
    validations = [record["validation"] for record in log if "validation" in record]
    assert len(validations) == 2 and all(0 <= v["PLM"] <= 100 for v in validations)
    assert (stage_one / "best" / "config.json").is_file()
    assert [path.name for path in sorted((stage_one / "checkpoints").iterdir())] == ["step-00000004", "step-00000006"]

    model = AutoModel.from_pretrained(stage_one).eval()
    processor = AutoProcessor.from_pretrained(stage_one)
    from datasets import load_dataset

    example = load_dataset(str(tiny_dataset_dir), split="validation")[0]
    output = model.generate(**processor(images=[example["image"]]), max_new_tokens=4)
    assert output.region_probs.shape == (1, 21)


def test_stage_one_changes_only_the_prompter(stage_one):
    from forgerytalker.tiny import build_tiny_model_and_processor

    trained = load_file(stage_one / "model.safetensors")
    args = json.loads((stage_one / "training_args.json").read_text())
    from datasets import load_dataset

    captions = load_dataset(args["dataset"], split="train")["caption"]
    initial, _ = build_tiny_model_and_processor(texts=captions, seed=args["seed"])
    changed = {name for name, value in initial.state_dict().items() if not torch.equal(value, trained[name])}
    assert changed and all(name.startswith("prompter.") for name in changed)


def test_stage_two_from_stage_one_on_two_processes(stage_one, tiny_dataset_dir, tmp_path):
    output_dir = tmp_path / "stage-two"
    run_training(*tiny("joint", tiny_dataset_dir, output_dir, "--model_name_or_path", str(stage_one)), processes=2)
    steps = step_records(read_log(output_dir))
    assert sorted(steps) == list(range(1, 7))
    for record in steps.values():
        assert math.isfinite(record["language_model_loss"]) and math.isfinite(record["mask_loss"])
    validations = [record["validation"] for record in read_log(output_dir) if "validation" in record]
    assert validations and {"CIDEr", "IoU", "PLM"} <= set(validations[-1])

    before, after = load_file(stage_one / "model.safetensors"), load_file(output_dir / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith(("instructblip.qformer.", "instructblip.query_tokens",
                                            "instructblip.language_projection.", "mask_decoder.")) for name in changed)


def test_stage_two_on_one_process_with_gradient_accumulation(stage_one, tiny_dataset_dir, tmp_path):
    output_dir = tmp_path / "stage-two-single"
    run_training(*tiny("joint", tiny_dataset_dir, output_dir, "--model_name_or_path", str(stage_one),
                       "--gradient_accumulation_steps", "2", "--max_steps", "3", "--log_batch_ids"))
    steps = step_records(read_log(output_dir))
    assert sorted(steps) == [1, 2, 3]
    # two micro-batches of two images per optimizer step (the last one of the epoch may be short)
    assert len(steps[1]["image_ids"]) == 4
    assert all(math.isfinite(record["loss"]) for record in steps.values())
    assert (output_dir / "best" / "model.safetensors").is_file() and (output_dir / "model.safetensors").is_file()


def test_stage_one_on_two_processes_shards_the_data(tiny_dataset_dir, tmp_path):
    output_dir = tmp_path / "two"
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir, "--log_batch_ids", "--eval_steps", "100"), processes=2)
    steps = step_records(read_log(output_dir))
    assert sorted(steps) == list(range(1, 7))
    # 7 training images, 2 per device batch: on two processes an epoch is 2 steps, not 4, and the main
    # process sees its own shard of 4 distinct images (accelerate pads 7 to 8 across the two).
    assert [steps[step]["epoch"] for step in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    first_epoch = steps[1]["image_ids"] + steps[2]["image_ids"]
    assert len(first_epoch) == 4 and len(set(first_epoch)) == 4


def test_killed_run_resumes_with_the_same_data_order_and_weights(tiny_dataset_dir, tmp_path):
    settings = ("--max_steps", "40", "--save_steps", "2", "--eval_steps", "1000", "--log_batch_ids",
                "--save_total_limit", "3")
    reference = tmp_path / "reference"
    run_training(*tiny("prompter", tiny_dataset_dir, reference, *settings))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(launch(*tiny("prompter", tiny_dataset_dir, interrupted, *settings)), cwd=REPO,
                               env=environment(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    checkpoint = interrupted / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(step_records(read_log(interrupted)))
    assert killed_at < 40

    run_training(*tiny("prompter", tiny_dataset_dir, interrupted, *settings, "--resume"))
    resumed, expected = step_records(read_log(interrupted)), step_records(read_log(reference))
    assert max(resumed) == 40
    assert [resumed[step]["image_ids"] for step in range(1, 41)] == [expected[step]["image_ids"] for step in range(1, 41)]
    final, reference_final = load_file(interrupted / "model.safetensors"), load_file(reference / "model.safetensors")
    for name, value in reference_final.items():
        torch.testing.assert_close(final[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_yaml_settings_are_overridden_by_flags(tmp_path):
    config = REPO / "training" / "configs" / "tiny_prompter.yaml"
    arguments = parse_arguments(["--config", str(config), "--dataset", "d", "--output_dir", str(tmp_path),
                                 "--learning_rate", "0.5"])
    assert arguments.stage == "prompter" and arguments.tiny_model and arguments.max_steps == 6
    assert arguments.learning_rate == 0.5 and arguments.best_metric == "PLM"
    paper = parse_arguments(["--config", str(REPO / "training" / "configs" / "joint.yaml"), "--dataset", "d",
                             "--output_dir", "o", "--model_name_or_path", "m"])
    assert (paper.learning_rate, paper.num_train_epochs, paper.per_device_train_batch_size, paper.mixed_precision) == (4e-6, 60, 16, "fp16")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("stage: prompter\nlearnin_rate: 1.0\n")
    with pytest.raises(SystemExit):
        parse_arguments(["--config", str(config), "--dataset", "d", "--output_dir", "o", "--tiny_model"])
    assert "unknown settings ['learnin_rate']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exactly one of"):
        parse_arguments(["--stage", "joint", "--dataset", "d", "--output_dir", "o"])
    with pytest.raises(ValueError, match="--stage must be one of"):
        parse_arguments(["--stage", "third", "--dataset", "d", "--output_dir", "o", "--tiny_model"])


def test_lora_adapts_only_the_language_model_and_is_merged_on_save(tmp_path):
    import numpy as np
    from transformers import AutoModel

    from forgerytalker.tiny import build_tiny_model_and_processor
    from forgerytalker.training.arguments import ForgeryTalkerTrainingArguments
    from forgerytalker.training.model_setup import add_lora
    from forgerytalker.training.trainer import _save_model

    model, processor = build_tiny_model_and_processor()
    model.freeze_for_stage("joint")
    args = ForgeryTalkerTrainingArguments(stage="joint", dataset="d", output_dir="o", tiny_model=True, use_lora=True)
    adapted = add_lora(model, args)
    adapters = [name for name, p in adapted.named_parameters() if p.requires_grad and "lora_" in name]
    assert adapters and all(".language_model." in name for name in adapters)
    trainable = {name.removeprefix("base_model.model.") for name, p in adapted.named_parameters() if p.requires_grad}
    assert any(name.startswith("mask_decoder.") for name in trainable)  # the stage's own parameters still train

    batch = processor(images=[np.zeros((32, 32, 3), np.uint8)], reports=["the eye is blurry"], masks=[np.ones((32, 32))])
    adapted(**batch).loss.backward()
    assert all(p.grad is not None for name, p in adapted.named_parameters() if "lora_B" in name)

    _save_model(adapted, processor, tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "ForgeryTalkerForConditionalGeneration"
    assert not any("lora" in name for name in loaded.state_dict())


def test_gradient_checkpointing_trains():
    import numpy as np

    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor()
    model.freeze_for_stage("joint")
    model.activation_checkpointing_enable()
    model.train()
    batch = processor(images=[np.zeros((32, 32, 3), np.uint8)], reports=["the eye is blurry"], masks=[np.ones((32, 32))])
    model(**batch).loss.backward()
    assert model.is_activation_checkpointing
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(layer.gradient_checkpointing for layer in layers)
    assert all(p.grad is not None for p in model.mask_decoder.parameters())
