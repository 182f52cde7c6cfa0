"""Two-stage training in this process (one Accelerate process): stage 1 alone, both stages from an InstructBLIP
folder, the stage-2 options, unreadable images, LoRA, gradient checkpointing. Runs on two processes and
resumed runs are in test_training_processes.py, the output folder in test_training_output_folder.py, the
settings and their refusals in test_training_arguments.py."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from training_runs import REPO, ids_per_epoch, read_log, run_cli, step_records, tiny, train_here, train_ids

from forgerytalker.training.arguments import parse_arguments


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


def test_stage_one_validation_gives_the_detection_auc_of_authentic_against_forged_images(tiny_dataset_dir):
    from datasets import concatenate_datasets, load_dataset

    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.data.methods import AUTHENTIC
    from forgerytalker.evaluation.detection_metrics import forged_labels, roc_auc
    from forgerytalker.image_utils import load_rgb
    from forgerytalker.tiny import build_tiny_processor, tiny_prompter_config
    from forgerytalker.training.data import undecoded
    from forgerytalker.training.validation import validate_prompter

    rows = load_dataset(str(tiny_dataset_dir))
    split = undecoded(concatenate_datasets([rows["train"], rows["validation"]]))
    labels = forged_labels(split["method"])
    assert 0 < labels.sum() < len(labels)
    image_processor = build_tiny_processor().image_processor
    torch.manual_seed(0)
    prompter = ForgeryTalkerPrompterNetwork(tiny_prompter_config()).eval()
    with torch.no_grad():
        pixel_values = image_processor([load_rgb(example["image"]["bytes"]) for example in split], return_tensors="pt")["pixel_values"]
        scores = torch.sigmoid(prompter(pixel_values).region_logits).max(-1).values.numpy()
    batch_size = next(size for size in (3, 4, 5) if len(split) % size)  # the last batch is short
    assert validate_prompter(prompter, image_processor, split, batch_size=batch_size)["AUC"] == pytest.approx(roc_auc(scores, labels))
    forged_only = split.filter(lambda method: method != AUTHENTIC, input_columns="method")
    assert "AUC" not in validate_prompter(prompter, image_processor, forged_only, batch_size=4)


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


# -- stage-2 options: what the instruction names while training, the mask-only baseline, augmentation ----------


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


# -- unreadable and unusual images --------------------------------------------------------------------------------


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


# -- LoRA, gradient checkpointing, benchmark ---------------------------------------------------------------------


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


def test_stage_one_keeps_the_checkpoint_with_the_best_validation_auc(tmp_path):
    from datasets import load_dataset
    from recipe_datasets import parquet_folder, recipe_rows
    from training_runs import run_cli, tiny

    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.training.data import undecoded
    from forgerytalker.training.validation import validate_prompter
    from transformers import AutoImageProcessor

    methods = ["authentic", "face_swap", "classical_inpainting", "authentic", "region_transplant"]
    dataset = parquet_folder(tmp_path / "data", {"train": recipe_rows(methods * 2, "t"), "validation": recipe_rows(methods, "v")})
    out = tmp_path / "out"
    assert run_cli(*tiny("prompter", dataset, out, "--best_metric", "AUC", "--eval_steps", "1", "--save_steps", "2")) == 0
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    aucs = [record["validation"]["AUC"] for record in logged if "validation" in record]
    assert len(aucs) == 6 and len(set(aucs)) > 1
    best = ForgeryTalkerPrompterNetwork.from_pretrained(out / "best")
    split = undecoded(load_dataset(str(dataset), split="validation"))
    assert validate_prompter(best, AutoImageProcessor.from_pretrained(out / "best"), split, batch_size=4)["AUC"] == pytest.approx(max(aucs))
