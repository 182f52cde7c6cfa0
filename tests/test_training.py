"""Two-stage training: through `accelerate launch` on one process and two, and in this process where a
behaviour needs no launcher (gradient accumulation, resume, refusals, unreadable images)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from forgerytalker.training.arguments import parse_arguments

from training_runs import (
    launch,
    environment,
    run_training,
    train_here,
    run_cli,
    read_log,
    step_records,
    ids_per_epoch,
    tiny,
    folder_digest,
    no_model_may_be_built,
    stage_one,
    train_ids,
    REPO,
)


# -- stage 1: the prompter alone -------------------------------------------------------------------------------


def test_stage_one_trains_and_saves_the_prompter_alone(stage_one, tiny_dataset_dir):
    import forgerytalker  # noqa: F401  (registers the Auto classes)
    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModel

    from forgerytalker import ForgeryTalkerPrompterNetwork

    log = read_log(stage_one)
    steps = step_records(log)
    assert sorted(steps) == list(range(1, 7))
    assert all(math.isfinite(record["loss"]) and record["samples_per_second"] > 0 for record in steps.values())
    validations = [record["validation"] for record in log if "validation" in record]
    assert len(validations) == 2 and all(0 <= v["PLM"] <= 100 for v in validations)
    assert [path.name for path in sorted((stage_one / "checkpoints").iterdir())] == ["step-00000004", "step-00000006"]

    example = load_dataset(str(tiny_dataset_dir), split="validation")[0]
    for folder in (stage_one, stage_one / "best"):
        prompter = AutoModel.from_pretrained(folder).eval()
        assert isinstance(prompter, ForgeryTalkerPrompterNetwork)
        # nothing but the prompter was built or saved: no InstructBLIP, no mask decoder
        assert set(load_file(folder / "model.safetensors")) == set(ForgeryTalkerPrompterNetwork(prompter.config).state_dict())
        pixel_values = AutoImageProcessor.from_pretrained(folder)(example["image"], return_tensors="pt")["pixel_values"]
        assert prompter(pixel_values).region_logits.shape == (1, 21)


def test_stage_one_validation_feeds_the_prompters_own_device(tiny_dataset_dir):
    """Inputs must reach the device of the module they are fed to; the prompter sits on the meta device here,
    as it sits on a GPU while the rest of the program is on the CPU."""
    from datasets import load_dataset

    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.tiny import build_tiny_processor, tiny_prompter_config
    from forgerytalker.training.data import undecoded
    from forgerytalker.training.validation import validate_prompter

    prompter = ForgeryTalkerPrompterNetwork(tiny_prompter_config()).to("meta")
    seen = []

    class Reached(Exception):
        pass

    def check_devices(module, args, kwargs):
        weights = next(module.parameters()).device
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        seen.extend(tensor.device == weights for tensor in tensors)
        raise Reached

    prompter.register_forward_pre_hook(check_devices, with_kwargs=True)
    split = undecoded(load_dataset(str(tiny_dataset_dir), split="validation"))
    with pytest.raises(Reached):
        validate_prompter(prompter, build_tiny_processor().image_processor, split, batch_size=2)
    assert seen == [True, True]  # pixel_values and region_labels


def test_stage_one_validation_uses_the_configs_region_threshold(tiny_dataset_dir):
    from datasets import load_dataset

    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.evaluation.region_metrics import positive_label_matching
    from forgerytalker.image_utils import load_rgb
    from forgerytalker.regions import regions_to_labels
    from forgerytalker.tiny import build_tiny_processor, tiny_prompter_config
    from forgerytalker.training.data import region_names_of, undecoded
    from forgerytalker.training.validation import validate_prompter

    split = undecoded(load_dataset(str(tiny_dataset_dir), split="validation"))
    image_processor = build_tiny_processor().image_processor
    torch.manual_seed(0)
    prompter = ForgeryTalkerPrompterNetwork(tiny_prompter_config()).eval()
    images = [load_rgb(example["image"]["bytes"]) for example in split]
    with torch.no_grad():
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        probabilities = torch.sigmoid(prompter(pixel_values).region_logits).numpy()
    targets = np.array([regions_to_labels(region_names_of(example)) for example in split])
    thresholds = np.quantile(probabilities, [0.3, 0.7])
    plms = []
    for threshold in thresholds:
        prompter.config.region_threshold = float(threshold)
        plms.append(validate_prompter(prompter, image_processor, split, batch_size=3)["PLM"])
        assert plms[-1] == pytest.approx(positive_label_matching(probabilities > threshold, targets))
    assert plms[0] != plms[1]


def test_stage_one_on_two_processes_shards_training_and_validation(tiny_dataset_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoImageProcessor

    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.training.data import undecoded
    from forgerytalker.training.validation import validate_prompter

    output_dir = tmp_path / "two"
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir, "--log_batch_ids", "--eval_steps", "100",
                       "--per_device_eval_batch_size", "3"), processes=2, scratch=tmp_path / "tmp")
    log = read_log(output_dir)
    steps = step_records(log)
    assert sorted(steps) == list(range(1, 7))
    # 7 training images, 2 per device batch: on two processes an epoch is 2 steps, not 4, and the main
    # process sees its own shard of 4 distinct images (accelerate pads 7 to 8 across the two).
    assert [steps[step]["epoch"] for step in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    first_epoch = steps[1]["image_ids"] + steps[2]["image_ids"]
    assert len(first_epoch) == 4 and len(set(first_epoch)) == 4
    # each process scored half of the validation split; gathered, the metrics are a single process's
    [validation] = [record["validation"] for record in log if "validation" in record]
    prompter = ForgeryTalkerPrompterNetwork.from_pretrained(output_dir)
    split = undecoded(load_dataset(str(tiny_dataset_dir), split="validation"))
    single = validate_prompter(prompter, AutoImageProcessor.from_pretrained(output_dir), split, batch_size=4)
    assert validation["PLM"] == pytest.approx(single["PLM"])
    assert validation["region_loss"] == pytest.approx(single["region_loss"], rel=1e-5)


def test_both_stages_from_an_instructblip_folder_with_a_configured_prompter(tiny_dataset_dir, tmp_path):
    """The path of a user with real weights, at tiny size: stage 1 reads only the InstructBLIP folder's image
    processor (the folder holds no weights yet) and trains a prompter of its own width; stage 2 builds the
    model around InstructBLIP with a mask decoder for that width and the stage-1 prompter in it."""
    from datasets import load_dataset
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    from forgerytalker.tiny import build_tiny_model_and_processor

    captions = load_dataset(str(tiny_dataset_dir), split="train")["caption"]
    model, processor = build_tiny_model_and_processor(texts=captions, seed=0)
    instructblip = tmp_path / "instructblip"
    InstructBlipProcessor(processor.image_processor, processor.tokenizer, processor.qformer_tokenizer,
                          num_query_tokens=model.config.num_query_tokens).save_pretrained(instructblip)
    prompter_config = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "intermediate_size": 48, "num_conv_branch_layers": 1, "conv_kernel_sizes": [3]}
    common = ("--dataset", str(tiny_dataset_dir), "--instructblip_name_or_path", str(instructblip), "--max_steps", "2",
              "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--learning_rate", "0.003")
    stage_one = tmp_path / "stage-one"
    train_here("--stage", "prompter", "--output_dir", str(stage_one), "--prompter_config", json.dumps(prompter_config), *common)
    saved = json.loads((stage_one / "config.json").read_text())
    assert saved["model_type"] == "forgerytalker_prompter" and saved["hidden_size"] == 24
    assert json.loads((stage_one / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}

    InstructBlipForConditionalGeneration(model.config.instructblip_config).save_pretrained(instructblip)
    stage_two = tmp_path / "stage-two"
    train_here("--stage", "joint", "--output_dir", str(stage_two), "--prompter_name_or_path", str(stage_one),
               "--validation_split", "none", *common)
    assert json.loads((stage_two / "config.json").read_text())["prompter_config"]["hidden_size"] == 24
    trained = load_file(stage_two / "model.safetensors")
    for name, value in load_file(stage_one / "model.safetensors").items():
        assert torch.equal(trained["prompter." + name], value), name


# -- stage 2 ---------------------------------------------------------------------------------------------------


def test_stage_two_loads_the_stage_one_prompter_on_two_processes(stage_one, tiny_dataset_dir, tmp_path):
    from datasets import load_dataset

    from forgerytalker.tiny import build_tiny_model_and_processor

    output_dir = tmp_path / "stage-two"
    run_training(*tiny("joint", tiny_dataset_dir, output_dir, "--tiny_model", "--prompter_name_or_path", str(stage_one)),
                 processes=2, scratch=tmp_path / "tmp")
    steps = step_records(read_log(output_dir))
    assert sorted(steps) == list(range(1, 7))
    for record in steps.values():
        assert math.isfinite(record["language_model_loss"]) and math.isfinite(record["mask_loss"])
    validations = [record["validation"] for record in read_log(output_dir) if "validation" in record]
    assert len(validations) == 2 and {"CIDEr", "IoU", "PLM"} <= set(validations[-1])

    trained, prompter = load_file(output_dir / "model.safetensors"), load_file(stage_one / "model.safetensors")
    for name, value in prompter.items():  # the stage-1 prompter, loaded and kept frozen
        assert torch.equal(trained["prompter." + name], value), name
    captions = load_dataset(str(tiny_dataset_dir), split="train")["caption"]
    initial, _ = build_tiny_model_and_processor(texts=captions, seed=42)
    changed = {name for name, value in initial.state_dict().items()
               if not name.startswith("prompter.") and not torch.equal(value, trained[name])}
    assert changed and all(name.startswith(("instructblip.qformer.", "instructblip.query_tokens",
                                            "instructblip.language_projection.", "mask_decoder.")) for name in changed)


def test_startup_checks_stop_every_process_before_training(tiny_dataset_dir, tmp_path):
    """Java is missing: stage-2 validation would need it. Both processes report it at start-up, instead of
    rank 0 failing at the first validation while rank 1 waits at a barrier."""
    path_without_java = tmp_path / "bin"
    path_without_java.mkdir()
    output_dir = tmp_path / "out"
    command = launch(*tiny("joint", tiny_dataset_dir, output_dir, "--tiny_model"), processes=2)
    result = subprocess.run(command, env=environment(2, tmp_path / "tmp", PATH=str(path_without_java)), cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("run.py: error: --validation_split: Stage-2 validation") == 2, result.stderr[-3000:]
    assert not output_dir.exists()  # nothing written, no step trained


# -- gradient accumulation, resume, output folder ----------------------------------------------------------------


def test_gradient_accumulation_sees_every_sample_once_per_epoch_and_resumes_inside_an_epoch(tiny_dataset_dir, tmp_path):
    # 7 images in batches of 2 are 4 batches an epoch; 3 per optimizer step leaves an epoch's last step 1 batch
    settings = ("--max_train_samples", "7", "--gradient_accumulation_steps", "3", "--max_steps", "6", "--save_steps", "3",
                "--eval_steps", "100", "--log_batch_ids")
    reference = tmp_path / "reference"
    train_here(*tiny("prompter", tiny_dataset_dir, reference, *settings))
    steps = step_records(read_log(reference))
    images = Counter(train_ids(tiny_dataset_dir, 7))
    assert [steps[step]["epoch"] for step in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    assert [len(steps[step]["image_ids"]) for step in range(1, 7)] == [6, 1, 6, 1, 6, 1]
    assert ids_per_epoch(steps) == {0: images, 1: images, 2: images}

    # resume from the checkpoint after step 3, inside epoch 1: only that epoch's first 3 batches are skipped
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000006")
    (resumed / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in read_log(reference) if r["step"] <= 3))
    train_here(*tiny("prompter", tiny_dataset_dir, resumed, *settings, "--resume"))
    log = read_log(resumed)
    assert [record for record in log if "resumed_from" in record] == [
        {"resumed_from": "checkpoints/step-00000003", "step": 3, "reproducible": True}]
    again = step_records(log)
    assert [again[step]["image_ids"] for step in range(1, 7)] == [steps[step]["image_ids"] for step in range(1, 7)]
    for name, value in load_file(reference / "model.safetensors").items():
        torch.testing.assert_close(load_file(resumed / "model.safetensors")[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_killed_run_resumes_with_the_same_data_order_and_weights(tiny_dataset_dir, tmp_path):
    settings = ("--max_steps", "30", "--save_steps", "2", "--eval_steps", "1000", "--log_batch_ids",
                "--save_total_limit", "3")
    # CPU sums are split over torch's threads, so all three runs get the same count: the reference runs here on one
    # thread (as it did after an in-process CLI test with --num-threads 1: its weights then differed from the
    # launched runs' by 2e-6 after 30 steps, first at step 14's loss), the launched runs are told the same.
    torch.set_num_threads(1)
    one_thread = {"OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    train_here(*tiny("prompter", tiny_dataset_dir, reference, *settings))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(launch(*tiny("prompter", tiny_dataset_dir, interrupted, *settings)), cwd=REPO,
                               env=environment(1, tmp_path / "tmp", **one_thread), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = interrupted / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(step_records(read_log(interrupted)))
    assert killed_at < 30

    run_training(*tiny("prompter", tiny_dataset_dir, interrupted, *settings, "--resume"), scratch=tmp_path / "tmp",
                 **one_thread)
    log = read_log(interrupted)
    [record] = [record for record in log if "resumed_from" in record]
    assert record["reproducible"] and 4 <= record["step"] <= killed_at
    resumed, expected = step_records(log), step_records(read_log(reference))
    assert max(resumed) == 30
    assert [resumed[step]["image_ids"] for step in range(1, 31)] == [expected[step]["image_ids"] for step in range(1, 31)]
    final, reference_final = load_file(interrupted / "model.safetensors"), load_file(reference / "model.safetensors")
    for name, value in reference_final.items():
        torch.testing.assert_close(final[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_resume_on_another_torch_thread_count_is_reported_as_not_reproducible(tiny_dataset_dir, tmp_path, caplog):
    settings = ("--max_steps", "4", "--save_steps", "2", "--eval_steps", "100")
    torch.set_num_threads(2)
    reference = tmp_path / "reference"
    train_here(*tiny("prompter", tiny_dataset_dir, reference, *settings))
    assert json.loads((reference / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())["torch_threads"] == 2

    def resume_from_step_two(name: str, threads: int) -> Path:
        run = tmp_path / name
        shutil.copytree(reference, run)
        shutil.rmtree(run / "checkpoints" / "step-00000004")
        torch.set_num_threads(threads)
        train_here(*tiny("prompter", tiny_dataset_dir, run, *settings, "--resume"))
        return run

    with caplog.at_level("WARNING"):
        same = resume_from_step_two("same-threads", 2)
    assert "reproducible" not in caplog.text
    assert [record for record in read_log(same) if "resumed_from" in record][-1]["reproducible"] is True
    for name, value in load_file(reference / "model.safetensors").items():
        assert torch.equal(load_file(same / "model.safetensors")[name], value), name

    with caplog.at_level("WARNING"):
        other = resume_from_step_two("one-thread", 1)
    assert [record for record in read_log(other) if "resumed_from" in record][-1] == {
        "resumed_from": "checkpoints/step-00000002", "step": 2, "reproducible": False}
    assert "written by a run with 2 torch CPU thread(s) and this one has 1" in caplog.text
    assert "OMP_NUM_THREADS=2 resumes it exactly" in caplog.text


def test_resume_ignores_incomplete_checkpoints_and_reports_a_damaged_rng_state(stage_one, tiny_dataset_dir, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    checkpoints = run / "checkpoints"
    latest = checkpoints / "step-00000006"

    def fake_checkpoint(name: str, step: int) -> Path:
        folder = checkpoints / name
        shutil.copytree(latest, folder)
        saved = json.loads((folder / "trainer_state.json").read_text())
        saved["state"]["step"] = step
        (folder / "trainer_state.json").write_text(json.dumps(saved))
        return folder

    fake_checkpoint("step-00000009.tmp", 9)  # killed after writing the state file, before the rename
    with open(fake_checkpoint("step-00000008", 8) / "model.safetensors", "r+b") as weights:
        weights.truncate(100)  # a partial copy
    (fake_checkpoint("step-00000007", 7) / "trainer_state.json").write_text('{"state": {"st')
    rng_state = latest / "random_states_0.pkl"
    rng_state.write_bytes(os.urandom(rng_state.stat().st_size))

    with caplog.at_level("WARNING"):
        train_here(*tiny("prompter", tiny_dataset_dir, run, "--resume"))
    resumed = [record for record in read_log(run) if "resumed_from" in record]
    assert resumed == [{"resumed_from": "checkpoints/step-00000006", "step": 6, "reproducible": False}]
    assert "the run is no longer reproducible" in caplog.text and "random_states_0.pkl" in caplog.text
    assert "step-00000008: model.safetensors has 100 bytes" in caplog.text
    assert not (checkpoints / "step-00000009.tmp").exists()

    # damaged beyond what the size check sees: an error naming the checkpoint, not a traceback deep in accelerate
    weights = latest / "model.safetensors"
    weights.write_bytes(b"\0" * weights.stat().st_size)
    from forgerytalker.training.errors import TrainingConfigurationError

    with pytest.raises(TrainingConfigurationError, match="--resume: checkpoint .*step-00000006 cannot be loaded"):
        train_here(*tiny("prompter", tiny_dataset_dir, run, "--resume"))


def test_a_new_run_refuses_a_finished_runs_output_dir(stage_one, tiny_dataset_dir, capsys, no_model_may_be_built):
    before = folder_digest(stage_one)
    assert run_cli(*tiny("prompter", tiny_dataset_dir, stage_one)) == 2
    assert "--output_dir: " in capsys.readouterr().err
    # resuming under other settings would restore this run's weights into a different run
    assert run_cli(*tiny("prompter", tiny_dataset_dir, stage_one, "--resume", "--learning_rate", "0.1")) == 2
    assert "--resume: the run in" in (err := capsys.readouterr().err) and "learning_rate: 0.003 -> 0.1" in err
    assert folder_digest(stage_one) == before


def test_overwrite_output_dir_replaces_the_earlier_run(stage_one, tiny_dataset_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    train_here(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir", "--max_steps", "2", "--save_steps", "1",
                     "--eval_steps", "2"))
    # the earlier run's later-numbered checkpoints would otherwise have rotated the new run's away
    assert [path.name for path in sorted((run / "checkpoints").iterdir())] == ["step-00000001", "step-00000002"]
    log = read_log(run)
    assert sorted(step_records(log)) == [1, 2] and [r["step"] for r in log if "validation" in r] == [2]
    assert json.loads((run / "training_args.json").read_text())["max_steps"] == 2


# -- the mask-only baseline (it continues the module's stage-1 run) ---------------------------------------


def test_mask_only_trains_the_mask_path_and_leaves_the_language_side_untouched(stage_one, tiny_dataset_dir, tmp_path):
    from transformers import AutoModel

    from forgerytalker.training.data import undecoded
    from forgerytalker.training.model_setup import build_model_and_processor

    arguments = tiny("joint", tiny_dataset_dir, tmp_path / "out", "--tiny_model", "true", "--prompter_name_or_path",
                     str(stage_one), "--mask_only", "true", "--train_vision_encoder", "true", "--max_steps", "3",
                     "--best_metric", "IoU")
    from datasets import load_dataset

    initial, _ = build_model_and_processor(parse_arguments(arguments),
                                           undecoded(load_dataset(str(tiny_dataset_dir), split="train"))["caption"])
    output = train_here(*arguments)
    trained = AutoModel.from_pretrained(output)
    before, after = initial.state_dict(), trained.state_dict()
    unchanged = [name for name in before if name.startswith(("instructblip.language_model.", "instructblip.language_projection."))]
    changed = [name for name in before if name.startswith(("mask_decoder.", "instructblip.vision_model."))]
    assert unchanged and changed
    assert all(torch.equal(before[name], after[name]) for name in unchanged)
    assert sum(not torch.equal(before[name], after[name]) for name in changed) > len(changed) // 2
    steps = step_records(read_log(output))
    assert sorted(steps) == [1, 2, 3]
    assert all("language_model_loss" not in record and math.isfinite(record["mask_loss"]) for record in steps.values())
