"""Training options and refusals: what the instruction names while training, augmentation, bad settings and
inputs, YAML and flags, LoRA, gradient checkpointing, the training benchmark."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from forgerytalker.training.arguments import parse_arguments

from training_runs import (
    run_training,
    train_here,
    run_cli,
    read_log,
    step_records,
    ids_per_epoch,
    tiny,
    no_model_may_be_built,
    unreadable_dataset,
    train_ids,
    REPO,
)


# -- stage-2 options: what the instruction names while training, augmentation --------------------------------


def test_stage_one_validation_on_two_processes_with_fewer_samples_than_processes(tiny_dataset_dir, tmp_path):
    """One validation image, two processes: one process scores it, the other an empty shard."""
    output_dir = tmp_path / "two"
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir, "--max_eval_samples", "1", "--max_steps", "2",
                       "--eval_steps", "2"), processes=2, scratch=tmp_path / "tmp")
    [validation] = [record["validation"] for record in read_log(output_dir) if "validation" in record]
    assert 0 <= validation["PLM"] <= 100 and math.isfinite(validation["region_loss"])


def test_validation_shards_are_the_datasets_contiguous_shards_and_may_be_empty():
    from datasets import Dataset

    from forgerytalker.training.validation import contiguous_shard

    rows = Dataset.from_dict({"i": list(range(7))})
    for shards in (1, 2, 3, 7):
        for index in range(shards):
            expected = rows.shard(num_shards=shards, index=index, contiguous=True)["i"]
            assert list(contiguous_shard(7, shards, index)) == expected
    assert [len(contiguous_shard(1, 2, index)) for index in range(2)] == [1, 0]


def _tiny_joint_batch(tiny_dataset_dir, args):
    from datasets import load_dataset

    from forgerytalker.training.data import ForgeryTalkerCollator, undecoded
    from forgerytalker.training.model_setup import build_model_and_processor

    train = undecoded(load_dataset(str(tiny_dataset_dir), split="train"))
    model, processor = build_model_and_processor(args, train["caption"])
    forged = [example for example in train if example["regions"]][:3]
    return model, processor, ForgeryTalkerCollator(processor, "joint")(forged)


def test_train_region_source_ground_truth_names_the_true_regions_in_the_instruction(tiny_dataset_dir, tmp_path):
    from forgerytalker.training.trainer import _losses

    args = parse_arguments(tiny("joint", tiny_dataset_dir, tmp_path / "out", "--tiny_model", "true",
                                "--train_region_source", "ground_truth"))
    model, _, batch = _tiny_joint_batch(tiny_dataset_dir, args)
    model.eval()  # no dropout: the same inputs give the same loss
    for name in ("image_ids", "skipped_image_ids", "loss_weight"):
        batch.pop(name)
    losses = _losses(model, dict(batch), args)
    named = model(**batch, instruction_regions=batch["region_labels"])
    assert torch.equal(named.instruction_regions, batch["region_labels"].long())
    assert losses["language_model_loss"].item() == pytest.approx(named.language_model_loss.item())
    # the default trains on the (untrained) prompter's own guesses, which name other regions
    args.train_region_source = None
    predicted = model(**batch)
    assert not torch.equal(predicted.instruction_regions, named.instruction_regions)
    assert _losses(model, dict(batch), args)["language_model_loss"].item() == pytest.approx(predicted.language_model_loss.item())


def test_augment_changes_the_training_images_but_not_where_their_masks_lie(tiny_dataset_dir, tmp_path):
    from forgerytalker.training.data import ForgeryTalkerCollator

    args = parse_arguments(tiny("joint", tiny_dataset_dir, tmp_path / "out", "--tiny_model", "true", "--augment", "true"))
    from forgerytalker.training.trainer import _augmentation

    model, processor, plain = _tiny_joint_batch(tiny_dataset_dir, args)
    settings = _augmentation(args, processor)
    assert settings.working_size == args.tiny_image_size
    from datasets import load_dataset

    from forgerytalker.training.data import undecoded

    train = undecoded(load_dataset(str(tiny_dataset_dir), split="train"))
    forged = [example for example in train if example["regions"]][:3]
    torch.manual_seed(3)
    augmented = ForgeryTalkerCollator(processor, "joint", augmentation=settings)(forged)
    assert augmented["pixel_values"].shape == plain["pixel_values"].shape
    assert not torch.equal(augmented["pixel_values"], plain["pixel_values"])
    # crops of at least 80% of the side keep most of each mask where it was
    overlap = (augmented["masks"] * plain["masks"]).sum() / plain["masks"].sum()
    assert augmented["masks"].sum() > 0 and overlap > 0.3


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


def test_an_unreadable_image_is_named_or_skipped(unreadable_dataset, tmp_path, capsys):
    dataset, broken = unreadable_dataset
    assert run_cli(*tiny("prompter", dataset, tmp_path / "stops", "--validation_split", "none")) == 2
    err = capsys.readouterr().err
    assert f"the image of sample {broken!r}" in err and "--skip_unreadable_images" in err

    # stage 2, one image per batch: the unreadable one's batch is a zero-weight placeholder, the rest train
    output_dir = tmp_path / "skips"
    train_here(*tiny("joint", dataset, output_dir, "--tiny_model", "--skip_unreadable_images", "--validation_split", "none",
                     "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--max_steps", "4",
                     "--log_batch_ids"))
    log = read_log(output_dir)
    steps = step_records(log)
    assert sorted(steps) == [1, 2, 3, 4]
    losses = [record["loss"] for record in steps.values()]  # None: the step's only batch was the placeholder
    assert sum(loss is not None and math.isfinite(loss) for loss in losses) >= 3 and losses.count(None) <= 1
    readable = Counter(image_id for image_id in train_ids(dataset) if image_id != broken)
    assert ids_per_epoch(steps) == {0: readable}
    assert [record["skipped_images"] for record in steps.values() if "skipped_images" in record] == [[broken]]
    assert log[-1] == {"step": 4, "unreadable_images": [broken]}


def test_a_run_stopped_by_an_unreadable_image_resumes_with_the_advised_flag(unreadable_dataset, tmp_path, capsys):
    """Issue 19 R1: `--skip_unreadable_images` was refused together with `--resume`, so the run had to start over."""
    dataset, broken = unreadable_dataset
    output_dir = tmp_path / "run"
    arguments = tiny("prompter", dataset, output_dir, "--validation_split", "none")
    assert run_cli(*arguments) == 2 and "--skip_unreadable_images" in capsys.readouterr().err
    assert (output_dir / "training_args.json").is_file()
    assert run_cli(*arguments, "--resume", "--skip_unreadable_images") == 0, capsys.readouterr().err
    assert read_log(output_dir)[-1]["unreadable_images"] == [broken]
    assert run_cli(*arguments, "--resume", "--learning_rate", "0.5") == 2  # a setting that changes the weights
    assert "learning_rate" in capsys.readouterr().err


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


def test_images_are_read_by_the_one_picture_rule(tiny_dataset_dir):
    """A 16-bit picture becomes 8 bits by its range (32768 -> 128), not clipped to white."""
    from forgerytalker.image_utils import to_rgb
    from forgerytalker.tiny import build_tiny_processor
    from forgerytalker.training.data import ForgeryTalkerCollator

    picture = Image.fromarray(np.full((20, 24), 32768, dtype=np.uint16))
    stored = io.BytesIO()
    picture.save(stored, format="PNG")
    example = {"image_id": "deep", "image": {"bytes": stored.getvalue(), "path": None}, "regions": [0, 2]}
    image_processor = build_tiny_processor().image_processor
    batch = ForgeryTalkerCollator(image_processor, "prompter")([example])
    expected = image_processor([to_rgb(Image.open(io.BytesIO(stored.getvalue())))], return_tensors="pt")["pixel_values"]
    assert to_rgb(Image.open(io.BytesIO(stored.getvalue()))).getpixel((0, 0)) == (128, 128, 128)
    torch.testing.assert_close(batch["pixel_values"], expected)
    assert batch["region_labels"][0].nonzero().flatten().tolist() == [0, 2] and batch["image_ids"] == ["deep"]


# -- arguments, LoRA, gradient checkpointing, benchmark -------------------------------------------------------


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


def test_lora_adapts_only_the_language_model_and_is_merged_on_save(tmp_path):
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


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients():
    from transformers.modeling_layers import GradientCheckpointingLayer

    from forgerytalker.tiny import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor()
    model.freeze_for_stage("joint")
    model.train()
    batch = processor(images=[np.zeros((32, 32, 3), np.uint8)], reports=["the eye is blurry"], masks=[np.ones((32, 32))])
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    calls = {id(layer): 0 for layer in layers}
    # checkpointing wraps a layer's `forward`, so count the calls of the modules inside it (their hooks fire on
    # the recompute too)
    for layer in layers:
        for inner in layer.modules():
            if inner is not layer:
                inner.register_forward_hook(lambda *_, key=id(layer): calls.__setitem__(key, calls[key] + 1))

    def gradients_and_calls():
        model.zero_grad()
        calls.update(dict.fromkeys(calls, 0))
        torch.manual_seed(0)
        model(**batch).loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return grads, dict(calls)

    plain_grads, plain_calls = gradients_and_calls()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed_grads, checkpointed_calls = gradients_and_calls()

    # a checkpointed layer with trained parameters runs (most of) its modules again in the backward pass
    trained = [id(layer) for layer in layers if any(p.requires_grad for p in layer.parameters())]
    assert trained and all(checkpointed_calls[key] > plain_calls[key] > 0 for key in trained)
    assert plain_grads.keys() == checkpointed_grads.keys()
    assert any(name.startswith("mask_decoder.") for name in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def test_training_benchmark_needs_no_test_extras(tmp_path, monkeypatch):
    from datasets import load_dataset

    for extra in ("skimage", "matplotlib", "pytest_fixtures"):
        monkeypatch.setitem(sys.modules, extra, None)  # importing any of them now fails
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as for `python benchmarks/bench_training.py`
    spec = importlib.util.spec_from_file_location("bench_training", REPO / "benchmarks" / "bench_training.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    splits = load_dataset(str(bench.make_dataset(tmp_path, samples=6, image_size=32)))
    assert splits["train"].num_rows == 6 and {"image", "mask", "caption", "regions"} <= set(splits["train"].column_names)
