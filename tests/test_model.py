"""ForgeryTalker model and processor: loading, batching, region modes, training signal and errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import random_image

from forgerytalker import REGION_NAMES, ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.tiny import build_tiny_model_and_processor

MAX_NEW_TOKENS = 6


def run_python(code: str) -> str:
    """Runs `code` in a fresh interpreter (so nothing imported here leaks in) and returns its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def outputs_of(model, processor, images) -> dict:
    inputs = processor(images=images, reports=["the left eye looks blurry"] * len(images))
    with torch.no_grad():
        logits = model(**inputs).logits
    generated = model.generate(**processor(images=images), max_new_tokens=MAX_NEW_TOKENS)
    return {
        "logits": logits.tolist(),
        "sequences": generated.sequences.tolist(),
        "pred_masks": generated.pred_masks.tolist(),
        "region_logits": generated.region_logits.tolist(),
    }


LOAD_AND_RUN = """
    import json, sys
    import numpy as np, torch
    from PIL import Image
    {imports}
    from transformers import AutoModel, AutoProcessor
    model = AutoModel.from_pretrained({path!r}{kwargs}).eval()
    processor = AutoProcessor.from_pretrained({path!r}{kwargs})
    print(json.dumps([type(model).__name__, type(processor).__name__]))
    images = [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)) for seed in (0, 1)]
    inputs = processor(images=images, reports=["the left eye looks blurry"] * 2)
    with torch.no_grad():
        logits = model(**inputs).logits
    generated = model.generate(**processor(images=images), max_new_tokens={max_new_tokens})
    print(json.dumps({{"logits": logits.tolist(), "sequences": generated.sequences.tolist(),
                      "pred_masks": generated.pred_masks.tolist(), "region_logits": generated.region_logits.tolist()}}))
"""


@pytest.mark.parametrize("remote_code", [False, True], ids=["import-package", "trust-remote-code"])
def test_save_and_load_in_fresh_process_gives_identical_outputs(tmp_path, tiny_model_and_processor, remote_code):
    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    expected = outputs_of(model, processor, [random_image(0, 40, 50), random_image(1, 40, 50)])

    code = LOAD_AND_RUN.format(
        imports="" if remote_code else "import forgerytalker",
        path=str(tmp_path),
        kwargs=", trust_remote_code=True" if remote_code else "",
        max_new_tokens=MAX_NEW_TOKENS,
    )
    names_line, outputs_line = run_python(code).strip().splitlines()[-2:]
    assert json.loads(names_line) == ["ForgeryTalkerForConditionalGeneration", "ForgeryTalkerProcessor"]
    assert json.loads(outputs_line) == json.loads(json.dumps(expected))


def test_remote_code_checkpoint_carries_its_code(tmp_path, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_forgerytalker.ForgeryTalkerForConditionalGeneration"
    for module in ("modeling_forgerytalker", "configuration_forgerytalker", "processing_forgerytalker", "regions", "instruction"):
        assert (tmp_path / f"{module}.py").is_file(), module


@pytest.mark.parametrize("explicit", [False, True], ids=["predicted-regions", "explicit-regions"])
def test_batch_generation_matches_single_image_calls(tiny_model_and_processor, images, explicit):
    model, processor = tiny_model_and_processor
    # Different numbers of regions give instructions of different lengths, so left padding is exercised.
    regions = [["eye", "lip", "nose"], [], ["forehead"]] if explicit else None
    kwargs = {"regions": regions} if explicit else {}
    batch = model.generate(**processor(images=images, **kwargs), max_new_tokens=MAX_NEW_TOKENS)
    singles = [
        model.generate(**processor(images=[image], **({"regions": [regions[i]]} if explicit else {})), max_new_tokens=MAX_NEW_TOKENS)
        for i, image in enumerate(images)
    ]
    sizes = [image.size[::-1] for image in images]
    batch_results = processor.post_process_generation(batch, target_sizes=sizes)
    if explicit:  # instructions of different lengths, so the batch really is left-padded
        pieces = processor(images=images)
        attention_mask = model.build_language_inputs(
            pieces["instruction_input_ids"], pieces["instruction_qformer_input_ids"], batch.instruction_regions,
            for_generation=True,
        )["attention_mask"]
        assert len(set(attention_mask.sum(-1).tolist())) > 1 and (attention_mask[:, 0] == 0).any()
    for index, single in enumerate(singles):
        single_result = processor.post_process_generation(single, target_sizes=[sizes[index]])[0]
        assert batch_results[index]["report"] == single_result["report"]
        assert batch_results[index]["regions"] == single_result["regions"]
        assert batch_results[index]["instruction_regions"] == single_result["instruction_regions"]
        assert torch.equal(batch_results[index]["mask"], single_result["mask"])
        assert batch_results[index]["mask"].shape == sizes[index]
        torch.testing.assert_close(batch.region_probs[index], single.region_probs[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batch.pred_masks[index], single.pred_masks[0], rtol=1e-4, atol=1e-5)
    if explicit:
        assert [result["instruction_regions"] for result in batch_results] == regions


def decoded_instruction(model, processor, regions: torch.Tensor | None) -> tuple[str, str]:
    pieces = processor(images=[random_image(0, 8, 8)])
    inputs = model.build_language_inputs(pieces["instruction_input_ids"], pieces["instruction_qformer_input_ids"], regions)
    return (
        processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True),
        processor.qformer_tokenizer.decode(inputs["qformer_input_ids"][0], skip_special_tokens=True),
    )


def normalised(text: str) -> str:
    """Lower case without the spaces a word-level decoder leaves before punctuation."""
    return re.sub(r"\s+([,.:?])", r"\1", text.lower())


def region_words(text: str) -> set[str]:
    return {word for word in text.replace(",", " ").replace(".", " ").split() if word in REGION_NAMES}


def test_all_region_modes_run_and_name_the_right_regions(tiny_model_and_processor, images):
    model, processor = tiny_model_and_processor
    region_labels = [["eye"], ["lip", "chin"], []]
    for source in ("predicted", "ground_truth", "none"):
        output = model.generate(
            **processor(images=images, region_labels=region_labels), region_source=source, max_new_tokens=3
        )
        assert output.sequences.shape[0] == 3
        if source == "ground_truth":
            assert output.instruction_regions.tolist() == processor(images=images, region_labels=region_labels)["region_labels"].long().tolist()
        if source == "none":
            assert output.instruction_regions is None
        if source == "predicted":
            assert torch.equal(output.instruction_regions, output.predicted_regions)

    text, qformer_text = decoded_instruction(model, processor, None)
    assert region_words(text) == set() and region_words(qformer_text) == set()
    assert normalised(text) == normalised(processor.build_instruction(None))

    explicit = processor(images=images[:1], regions=[["nose", "Eyebrow", "tooth"]])
    output = model.generate(**explicit, max_new_tokens=3)
    assert processor.post_process_generation(output)[0]["instruction_regions"] == ["nose", "eyebrow", "tooth"]
    text, qformer_text = decoded_instruction(model, processor, output.instruction_regions)
    assert region_words(text) == region_words(qformer_text) == {"nose", "eyebrow", "tooth"}
    assert normalised(text) == normalised(processor.build_instruction(["nose", "eyebrow", "tooth"]))


def test_ground_truth_source_without_labels_is_a_clear_error(tiny_model_and_processor, images):
    model, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match="region_labels"):
        model.generate(**processor(images=images), region_source="ground_truth", max_new_tokens=2)


def training_batch(processor):
    images = [random_image(10, 48, 48), random_image(11, 40, 56)]
    masks = [np.zeros((48, 48), np.uint8), np.zeros((40, 56), np.uint8)]
    masks[0][10:30, 12:36] = 255
    masks[1][5:20, 30:50] = 255
    return processor(
        images=images,
        reports=["the left eye looks blurry and the lips are too smooth", "no signs of manipulation are visible"],
        region_labels=[["eye", "lip"], []],
        masks=masks,
    )


def optimise(model, batch, loss_of, steps: int, lr: float) -> tuple[list[float], dict[str, torch.Tensor]]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        losses = loss_of(model, batch)
        losses[0].backward()
        history.append([loss.item() for loss in losses])
        optimizer.step()
    return history


def test_stage_one_trains_only_the_prompter_and_lowers_its_loss(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    batch = training_batch(processor)
    model.freeze_for_stage("prompter")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("prompter.") for name in trainable)
    assert trainable == {name for name, _ in model.named_parameters() if name.startswith("prompter.")}

    history = optimise(model, batch, lambda m, b: [m.prompter(b["pixel_values"], region_labels=b["region_labels"]).loss], 40, 1e-2)
    assert history[-1][0] < 0.5 * history[0][0]


def test_overfitting_one_batch_lowers_each_loss(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    batch = training_batch(processor)

    def losses(m, b):
        output = m(**b)
        return [output.loss + output.region_loss, output.language_model_loss, output.mask_loss, output.region_loss]

    history = optimise(model, batch, losses, 30, 3e-3)
    for name, start, end in zip(("total", "language model", "mask", "region"), history[0], history[-1]):
        assert end < 0.5 * start, f"{name} loss went from {start} to {end}"


def test_stage_two_trains_only_qformer_and_mask_decoder(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    batch = training_batch(processor)
    model.freeze_for_stage("joint")
    prompter_before = {k: v.clone() for k, v in model.prompter.state_dict().items()}

    def losses(m, b):
        output = m(**b)
        return [output.loss, output.language_model_loss, output.mask_loss]

    history = optimise(model, batch, losses, 10, 1e-2)
    for name, start, end in zip(("total", "language model", "mask"), history[0], history[-1]):
        assert end < start, f"{name} loss went from {start} to {end}"

    allowed = ("instructblip.qformer.", "instructblip.query_tokens", "instructblip.language_projection.", "mask_decoder.")
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_gradient and all(name.startswith(allowed) for name in with_gradient)
    # Every decoder parameter is trained, the IoU head included (no unused parameters under DDP).
    assert {name for name, _ in model.named_parameters() if name.startswith("mask_decoder.")} <= with_gradient
    for key, value in model.prompter.state_dict().items():
        assert torch.equal(value, prompter_before[key]), key


def test_from_instructblip_keeps_the_backbone_bit_for_bit(tmp_path, tiny_model_and_processor):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    model, processor = tiny_model_and_processor
    torch.manual_seed(123)
    backbone = InstructBlipForConditionalGeneration(model.config.instructblip_config)
    backbone.save_pretrained(tmp_path / "instructblip")
    InstructBlipProcessor(
        processor.image_processor, processor.tokenizer, processor.qformer_tokenizer, num_query_tokens=model.config.num_query_tokens
    ).save_pretrained(tmp_path / "instructblip")

    composed = ForgeryTalkerForConditionalGeneration.from_instructblip(tmp_path / "instructblip")
    expected = backbone.state_dict()
    loaded = composed.instructblip.state_dict()
    assert expected.keys() == loaded.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    composed_processor = ForgeryTalkerProcessor.from_instructblip(tmp_path / "instructblip")
    assert composed_processor.num_query_tokens == model.config.num_query_tokens
    output = composed.eval().generate(**composed_processor(images=[random_image(0, 32, 32)]), max_new_tokens=2)
    assert output.pred_masks.shape[0] == 1


def test_processor_rejects_counts_that_do_not_match_the_images(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"`reports` has 2 entries but 3 images"):
        processor(images=images, reports=["a", "b"])
    with pytest.raises(ValueError, match=r"`regions` has 1 entries but 3 images"):
        processor(images=images, regions=[["eye"]])
    with pytest.raises(ValueError, match=r"`masks` has 2 entries"):
        processor(images=images, masks=[np.zeros((4, 4))] * 2)


def test_unknown_region_name_is_a_clear_error(tiny_model_and_processor, images):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"Unknown region name 'elbow'.*known regions are: eye, pupil"):
        processor(images=images[:1], regions=[["eye", "elbow"]])


def test_processor_and_model_with_different_query_token_counts_fail_clearly(images):
    model, _ = build_tiny_model_and_processor("llama", num_query_tokens=4)
    _, other_processor = build_tiny_model_and_processor("llama", num_query_tokens=3)
    with pytest.raises(ValueError, match=r"3 image tokens .* num_query_tokens=4"):
        model.generate(**other_processor(images=images), max_new_tokens=2)


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    from transformers import AutoModel

    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        ForgeryTalkerForConditionalGeneration.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        ForgeryTalkerProcessor.from_pretrained(str(missing))
    with pytest.raises(OSError, match="no-such-checkpoint"):
        AutoModel.from_pretrained(str(missing))


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_other_language_models_train_and_generate(language_model, images):
    model, processor = build_tiny_model_and_processor(language_model)
    batch = training_batch(processor)
    output = model(**batch)
    assert torch.isfinite(output.loss) and output.language_model_loss is not None
    model.eval()
    generated = model.generate(**processor(images=images), max_new_tokens=3)
    assert len(processor.batch_decode(generated.sequences)) == 3


def test_load_prompter_refuses_a_prompter_of_another_width_naming_both(tiny_model_and_processor, tmp_path):
    from forgerytalker import ForgeryTalkerPrompterNetwork
    from forgerytalker.tiny import tiny_prompter_config

    model, _ = tiny_model_and_processor
    width = model.config.prompter_config.hidden_size
    ForgeryTalkerPrompterNetwork(tiny_prompter_config(hidden_size=2 * width)).save_pretrained(tmp_path / "wide")
    before = {name: tensor.clone() for name, tensor in model.prompter.state_dict().items()}
    with pytest.raises(ValueError, match=rf"wide.*prompter is {2 * width} wide.*this model's prompter is {width} wide"):
        model.load_prompter(tmp_path / "wide")
    assert all(torch.equal(before[name], tensor) for name, tensor in model.prompter.state_dict().items())

    same = ForgeryTalkerPrompterNetwork(tiny_prompter_config(hidden_size=width))
    same.save_pretrained(tmp_path / "same")
    model.load_prompter(tmp_path / "same")
    assert all(torch.equal(same.state_dict()[name], tensor) for name, tensor in model.prompter.state_dict().items())


def test_a_frozen_prompter_stays_in_eval_mode_so_its_batchnorm_statistics_do_not_drift(tiny_model_and_processor):
    from forgerytalker import ForgeryTalkerPrompterNetwork, ForgeryTalkerPrompterConfig

    model, _ = tiny_model_and_processor
    # the release's pixel branch, whose BatchNorm keeps running statistics
    model.prompter = ForgeryTalkerPrompterNetwork(ForgeryTalkerPrompterConfig(
        image_size=32, patch_size=8, hidden_size=model.config.prompter_config.hidden_size, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=64, conv_branch_type="pixel", conv_kernel_sizes=[3, 5]))
    pixels = torch.randn(2, 3, 32, 32)
    model.freeze_for_stage("joint")
    model.train()
    statistics = {name: value.clone() for name, value in model.prompter.named_buffers() if "running" in name}
    assert statistics and not any(module.training for module in model.prompter.modules())
    assert model.instructblip.qformer.training and model.mask_decoder.training
    model.prompter(pixels)
    assert all(torch.equal(value, dict(model.prompter.named_buffers())[name]) for name, value in statistics.items())

    model.freeze_for_stage("prompter")
    model.train()
    assert all(module.training for module in model.prompter.modules())
    model.prompter(pixels)
    assert not all(torch.equal(value, dict(model.prompter.named_buffers())[name]) for name, value in statistics.items())


def test_coordinate_channels_are_x_then_y_or_rows_first():
    """One owner for both CoordConv orders: `[x, y]` for the grid branch, `[row, column]` for the pixel branch."""
    from forgerytalker.modeling_forgerytalker_prompter import coordinate_channels

    features = torch.zeros(2, 5, 3, 4)
    xy = coordinate_channels(features)
    assert xy.shape == (2, 2, 3, 4)
    assert torch.equal(xy[0, 0, 1], torch.linspace(-1, 1, 4)) and torch.equal(xy[0, 1, :, 2], torch.linspace(-1, 1, 3))
    assert torch.equal(coordinate_channels(features, rows_first=True), xy.flip(1))


def test_the_earlier_prompter_names_still_import_with_a_deprecation_warning():
    import forgerytalker
    import forgerytalker.modeling_forgerytalker_prompter as prompter

    for old, new in (("ForgeryPrompterNetwork", "ForgeryTalkerPrompterNetwork"), ("ForgeryPrompterOutput", "ForgeryTalkerPrompterOutput")):
        with pytest.warns(FutureWarning, match=new):
            assert getattr(prompter, old) is getattr(prompter, new)
        forgerytalker.__dict__.pop(old, None)
        with pytest.warns(FutureWarning, match=new):
            assert getattr(forgerytalker, old) is getattr(forgerytalker, new)
        assert old not in forgerytalker.__all__
    features = torch.randn(1, 3, 4, 5)
    with pytest.warns(FutureWarning, match="rows_first=True"):
        assert torch.equal(prompter.pixel_coordinate_channels(features), prompter.coordinate_channels(features, rows_first=True))
    with pytest.raises(AttributeError):
        prompter.ForgeryPrompterConvLayer
