"""Two-stage training: through `accelerate launch` on one process and two, and in this process where a
behaviour needs no launcher (gradient accumulation, resume, refusals, unreadable images)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
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


def environment(processes: int, scratch: Path, **overrides: str) -> dict[str, str]:
    """The launched run's environment; its temporary files (torch elastic's among them) go under `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(scratch), **overrides)
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"  # `--cpu --num_processes 2` would silently start one process
    return env


def run_training(*arguments: str, scratch: Path, processes: int = 1, **environ: str) -> subprocess.CompletedProcess:
    result = subprocess.run(launch(*arguments, processes=processes), env=environment(processes, scratch, **environ),
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def reset_accelerate() -> None:
    """Forgets the Accelerate state of an in-process run, so the next one starts like a new program."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train_here(*arguments: str) -> Path:
    """`training/run.py ARGUMENTS` in this process (one Accelerate process), raising what the run raises."""
    from forgerytalker.training.trainer import train

    try:
        return train(parse_arguments(list(arguments)))
    finally:
        reset_accelerate()


def run_cli(*arguments: str) -> int:
    """`training/run.py`'s `main` in this process; returns its exit code."""
    spec = importlib.util.spec_from_file_location("training_run", REPO / "training" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(list(arguments))
    except SystemExit as exit:
        return exit.code
    finally:
        reset_accelerate()


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def step_records(log: list[dict]) -> dict[int, dict]:
    """The last record of each training step (a resumed run logs the steps it redoes again)."""
    return {record["step"]: record for record in log if "loss" in record}


def ids_per_epoch(steps: dict[int, dict]) -> dict[int, Counter]:
    epochs: dict[int, Counter] = {}
    for record in steps.values():
        epochs.setdefault(record["epoch"], Counter()).update(record["image_ids"])
    return epochs


def tiny(stage: str, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "training" / "configs" / f"tiny_{stage}.yaml"), "--dataset", str(dataset),
            "--output_dir", str(output_dir), *extra]


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def no_model_may_be_built(monkeypatch):
    """Fails the test if a training run gets as far as building its model."""
    from forgerytalker.training import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was reported")

    monkeypatch.setattr(trainer, "build_model_and_processor", refuse)


@pytest.fixture(scope="module")
def stage_one(tiny_dataset_dir, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("stage-one") / "run"
    run_training(*tiny("prompter", tiny_dataset_dir, output_dir), scratch=output_dir.parent / "tmp")
    return output_dir


@pytest.fixture(scope="module")
def unreadable_dataset(tiny_dataset_dir, tmp_path_factory) -> tuple[Path, str]:
    """The tiny dataset with one training image truncated (as a copy interrupted mid-file leaves it)."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    output = tmp_path_factory.mktemp("unreadable") / "dataset"
    splits = load_dataset(str(tiny_dataset_dir))
    broken = splits["train"][2]["image_id"]

    def truncate(example):
        if example["image_id"] == broken:
            example["image"] = {"bytes": example["image"]["bytes"][: len(example["image"]["bytes"]) // 2], "path": None}
        return example

    for name, split in splits.items():
        split = split.cast_column("image", ImageFeature(decode=False))
        if name == "train":
            split = split.map(truncate)
        split.cast_column("image", ImageFeature()).to_parquet(str(output / "data" / f"{name}-00000-of-00001.parquet"))
    return output, broken


def train_ids(dataset: Path, count: int | None = None) -> list[str]:
    from datasets import load_dataset

    ids = load_dataset(str(dataset), split="train")["image_id"]
    return ids[:count] if count else ids


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


def test_overwrite_output_dir_never_deletes_a_file_the_run_did_not_write(stage_one, tiny_dataset_dir, tmp_path, capsys,
                                                                       no_model_may_be_built):
    """Issue 19 (one output-folder policy): --overwrite_output_dir cleared checkpoints/, best/ and the log of any
    folder; now only a training run's folder, holding only its files (the shared manifest), and one run at a time."""
    from forgerytalker.output_folder import MANIFEST_NAME, hold_lock

    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    assert (run / MANIFEST_NAME).is_file()  # the finished run's record of its files
    (run / "checkpoints" / "my-notes.txt").write_text("mine")
    before = folder_digest(run)
    assert run_cli(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir")) == 2
    error = capsys.readouterr().err
    assert "--output_dir: " in error and "did not write (checkpoints/my-notes.txt)" in error and "Traceback" not in error
    assert folder_digest(run) == before

    mine = tmp_path / "mine"  # not a training run's folder at all
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "thesis.tex").write_text("mine")
    assert run_cli(*tiny("prompter", tiny_dataset_dir, mine, "--overwrite_output_dir")) == 2
    assert "is not the folder of a training run" in capsys.readouterr().err
    assert (mine / "checkpoints" / "thesis.tex").read_text() == "mine"

    (run / "checkpoints" / "my-notes.txt").unlink()
    held = hold_lock(run, "forgerytalker train")  # a first run, still writing
    assert run_cli(*tiny("prompter", tiny_dataset_dir, run, "--overwrite_output_dir")) == 2
    assert "another forgerytalker train is writing into" in capsys.readouterr().err
    held.close()
    assert (run / "log.jsonl").is_file()  # nothing cleared while the other run held the folder


# -- stage-2 options: what the instruction names while training, the mask-only baseline, augmentation ----------


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
