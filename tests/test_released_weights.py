"""Issue 13: the authors' released checkpoints, converted once, run as a ForgeryTalker model.

Tiny stand-ins with the release's key names (`released_checkpoints`) are converted; the converted modules are checked
against straightforward forwards written from the published description (`released_reference`), in float64 so that
the tolerance of 1e-5 measures structure, not rounding.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image
from released_checkpoints import FACE_VIT, IMAGE_SIZE, MASK_PATH, convert, face_vit_state_dict, write_released_files
from released_reference import dff_mask_logits, face_vit_logits
from safetensors.torch import load_file
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.cli import main
from forgerytalker.configuration_forgerytalker import RELEASE_FP32_MODULES
from forgerytalker.released_weights import CheckpointConversionError
from forgerytalker.released_weights.files import RUNNER_TRAINING_STATE

REGIONS = ["eye", "nose", "mouth"]


def dff_model_state(path) -> dict[str, torch.Tensor]:
    loaded = torch.load(path, weights_only=True)
    return loaded["model"] if "model" in loaded else loaded


def face_vit_as_run(files: dict) -> dict[str, torch.Tensor]:
    """Face-ViT as LAVIS runs it: the `.bin`, overridden by the DFF checkpoint's `multi_label_classifier.*`."""
    state = dict(torch.load(files["face_vit"], weights_only=True))
    prefix = "multi_label_classifier."
    state.update({key[len(prefix) :]: value for key, value in dff_model_state(files["dff"]).items() if key.startswith(prefix)})
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return write_released_files(tmp_path_factory.mktemp("released"))


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "forgerytalker-dff"
    report = convert(released, out)
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(out).eval()
    return out, report, model, ForgeryTalkerProcessor.from_pretrained(out)


@pytest.mark.parametrize(
    "form, dtype, stage",
    [("runner", "float32", "finetune"), ("runner", "float16", "finetune"), ("flat", "float32", "pretrain"), ("flat", "float16", "pretrain")],
)
def test_every_form_converts_with_every_key_accounted_for(tmp_path, form, dtype, stage):
    files = write_released_files(tmp_path / "released", form, dtype, stage)
    report = convert(files, tmp_path / "out")
    face_vit = torch.load(files["face_vit"], weights_only=True)
    dff = dff_model_state(files["dff"])

    assert report.mapped[str(files["face_vit"])] == len(face_vit)
    assert report.mapped[str(files["dff"])] + len([key for key in report.dropped if key in dff]) == len(dff)
    assert set(report.dropped) - set(dff) == (set(RUNNER_TRAINING_STATE) if form == "runner" else set())
    dropped_prefixes = {key.split(".")[0] for key in report.dropped if key in dff}
    assert {"gate_cross_attention_layer", "seg_proj", "mlm_head", "text_proj", "trans_layer", "fc_layer"} <= dropped_prefixes
    assert ("bert_model" in dropped_prefixes) == (stage == "finetune")
    assert json.loads((tmp_path / "out" / "conversion_report.json").read_text())["dropped"] == report.dropped

    written = load_file(tmp_path / "out" / "model.safetensors")
    base = load_file(files["instructblip"] / "model.safetensors")
    expect = {
        "instructblip.qformer.encoder.layer.0.crossattention.attention.key.weight": dff["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"],
        "instructblip.qformer.encoder.layer.1.output_query.LayerNorm.bias": dff["Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias"],
        "instructblip.language_projection.weight": dff["t5_proj.weight"],
        "mask_decoder.transformer.layers.1.layer_norm3.weight": dff["mask_decoder.transformer.layers.1.norm3.weight"],
        "mask_decoder.output_hypernetworks_mlp.layers.0.weight": dff["mask_decoder.output_hypernetworks_mlps.layers.1.weight"],
        "mask_decoder.prompt_attention.in_proj_weight": dff["cross_attention_layer.in_proj_weight"],
        # Face-ViT's BatchNorm statistics as DFF training left them, not the .bin's
        "prompter.conv_branch.0.norm.running_var": dff["multi_label_classifier.coord_conv_branch.1.running_var"],
        # a finetune-stage checkpoint holds all of Face-ViT, and LAVIS loads it after the .bin: its copies win
        "prompter.layers.2.attention.o_proj.weight": dff["multi_label_classifier.transformer.encoder.layer.2.attn.out.weight"]
        if stage == "finetune" else face_vit["transformer.encoder.layer.2.attn.out.weight"],
        "instructblip.vision_model.encoder.layers.1.self_attn.qkv.weight": base["vision_model.encoder.layers.1.self_attn.qkv.weight"],
        "instructblip.language_model.lm_head.weight": base["language_model.lm_head.weight"],  # Flan-T5's own head
        "instructblip.language_model.shared.weight": base["language_model.shared.weight"],
        "instructblip.query_tokens": dff["query_tokens"] if stage == "finetune" else base["query_tokens"],
    }
    for key, value in expect.items():
        assert torch.equal(written[key], value.float()), key
    assert not torch.equal(written["prompter.conv_branch.0.norm.running_var"], face_vit["coord_conv_branch.1.running_var"])
    assert report.from_instructblip == ([] if stage == "finetune" else [
        "instructblip.query_tokens", "instructblip.vision_model.post_layernorm.weight", "instructblip.vision_model.post_layernorm.bias"
    ])


def _written_dtypes(folder) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as weights:
        return {key: weights.get_slice(key).get_dtype() for key in weights.keys()}


def test_float16_conversion_warns_and_keeps_flan_t5s_wo_in_float32(released, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="forgerytalker.released_weights.convert"):
        convert(released, tmp_path / "fp16", dtype="float16", keep_in_fp32_modules=())
    assert any("float16" in record.message and "bfloat16" in record.message for record in caplog.records)
    dtypes = _written_dtypes(tmp_path / "fp16")
    wo = [key for key in dtypes if key.endswith(".wo.weight")]
    assert wo and all(dtypes[key] == "F32" for key in wo)
    assert dtypes["instructblip.language_model.shared.weight"] == "F16" and dtypes["mask_decoder.prompt_proj.weight"] == "F16"
    with caplog.at_level("WARNING", logger="forgerytalker.precision"):
        ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "fp16", dtype=torch.float16)
    assert any("Flan-T5 runs in float16" in record.message for record in caplog.records)


def test_a_half_precision_conversion_keeps_the_releases_float32_modules(released, tmp_path):
    """The release runs only Flan-T5 in bfloat16: a bfloat16 conversion writes the rest in float32 and says so in the
    config, so that loading it in bfloat16 keeps the mix."""
    report = convert(released, tmp_path / "bf16", dtype="bfloat16")
    dtypes = _written_dtypes(tmp_path / "bf16")
    language_model = {dtype for key, dtype in dtypes.items() if key.startswith("instructblip.language_model.")}
    rest = {dtype for key, dtype in dtypes.items() if not key.startswith("instructblip.language_model.") and "num_batches" not in key}
    assert language_model == {"BF16"} and rest == {"F32"}
    assert dtypes["prompter.conv_branch.0.norm.num_batches_tracked"] == "I64"
    assert report.float32_modules == list(RELEASE_FP32_MODULES) and "float32: prompter" in report.summary()
    saved = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert saved["keep_in_fp32_modules"] == list(RELEASE_FP32_MODULES)


def test_pixel_conv_branch_prompter_matches_the_release(converted, released):
    _, _, model, _ = converted
    prompter = model.prompter.double()
    images = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    state = {key: value.double() for key, value in face_vit_as_run(released).items()}
    with torch.no_grad():
        ours = prompter(images).region_logits
    reference = face_vit_logits(state, images, FACE_VIT["heads"])
    model.float()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 0.1


def test_dff_mask_path_matches_the_release(converted, released):
    _, _, model, _ = converted
    decoder = model.mask_decoder.double()
    generator = torch.Generator().manual_seed(1)
    vision_tokens = torch.randn(2, 1 + (IMAGE_SIZE // 8) ** 2, 48, generator=generator, dtype=torch.float64)
    prompt = torch.randn(2, MASK_PATH["prompt_length"], 40, generator=generator, dtype=torch.float64)
    state = {key: value.double() for key, value in dff_model_state(released["dff"]).items()}
    with torch.no_grad():
        ours, iou_scores = decoder(vision_tokens, prompt)
    reference = dff_mask_logits(state, vision_tokens, prompt, MASK_PATH["heads"])
    model.float()
    assert ours.shape == (2, 1, MASK_PATH["mask_size"], MASK_PATH["mask_size"]) and iou_scores is None
    torch.testing.assert_close(ours[:, 0], reference, atol=1e-5, rtol=0)


def test_generate_uses_the_release_transform_and_region_name_prompt(converted, released):
    """End to end: the processor's pixels are the release's transform, the mask comes from the embeddings of
    `tokenizer(" ".join(regions))` cut to 21 tokens, the regions from Face-ViT."""
    _, _, model, processor = converted
    photo = random_image(3, 45, 61)
    inputs = processor(images=[photo], regions=[REGIONS])
    pixels = np.asarray(photo.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float64) / 255
    pixels = (pixels - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(inputs["pixel_values"][0].numpy(), pixels.transpose(2, 0, 1), atol=1e-6)

    inputs["pixel_values"] = inputs["pixel_values"].double()
    model.double()
    try:
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=4)
            vision_tokens = model.instructblip.vision_model(inputs["pixel_values"].double()).last_hidden_state
            tokenizer = processor.tokenizer
            tokenizer.truncation_side = "left"
            ids = tokenizer(" ".join(REGIONS), padding="max_length", truncation=True, max_length=MASK_PATH["prompt_length"], return_tensors="pt")
            embeddings = model.get_input_embeddings()(ids["input_ids"])
    finally:
        model.float()
    state = {key: value.double() for key, value in dff_model_state(released["dff"]).items()}
    torch.testing.assert_close(generated.pred_masks[:, 0], dff_mask_logits(state, vision_tokens, embeddings, MASK_PATH["heads"]), atol=1e-5, rtol=0)
    run_state = {key: value.double() for key, value in face_vit_as_run(released).items()}
    reference_logits = face_vit_logits(run_state, inputs["pixel_values"].double(), FACE_VIT["heads"])
    torch.testing.assert_close(generated.region_logits, reference_logits, atol=1e-5, rtol=0)
    assert generated.iou_scores is None and generated.sequences.shape[1] >= 4


def test_the_converted_processor_cuts_the_instruction_as_the_release_does(converted):
    """The release cuts the instruction to `max_txt_len=128` tokens from the left; the converted processor keeps that
    setting in its `processor_config.json`."""
    out, _, _, processor = converted
    assert json.loads((Path(out) / "processor_config.json").read_text())["max_instruction_length"] == 128
    assert processor.max_instruction_length == 128


FRESH_PROCESS = """
    import json
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor
    model = AutoModel.from_pretrained({path!r}, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained({path!r}, trust_remote_code=True)
    photo = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 52, 3), dtype=np.uint8))
    generated = model.generate(**processor(images=[photo]))
    result = processor.post_process_generation(generated, target_sizes=[(40, 52)])[0]
    print(json.dumps({{"classes": [type(model).__name__, type(processor).__name__], "module": type(model).__module__,
                      "report": result["report"], "mask": list(result["mask"].shape), "regions": result["regions"],
                      "probabilities": list(result["region_probabilities"].values()),
                      "sequences": generated.sequences.tolist(), "pred_masks": generated.pred_masks.tolist(),
                      "generation": [model.generation_config.num_beams, model.generation_config.max_new_tokens,
                                     model.generation_config.min_new_tokens, model.generation_config.repetition_penalty]}}))
"""


def test_converted_model_loads_with_remote_code_in_a_fresh_process_and_generates(converted):
    out, _, model, processor = converted
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_PROCESS.format(path=str(out)))], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["classes"] == ["ForgeryTalkerForConditionalGeneration", "ForgeryTalkerProcessor"]
    assert answer["module"].startswith("transformers_modules.")  # the checkpoint's own code, not this package
    assert answer["report"] and answer["mask"] == [40, 52] and len(answer["probabilities"]) == 21
    assert answer["generation"] == [5, 100, 4, 1.5]

    photo = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 52, 3), dtype=np.uint8))
    generated = model.generate(**processor(images=[photo]))
    assert answer["sequences"] == generated.sequences.tolist()
    # float32 logits of size 20-50 differ by up to ~1e-5 between processes (thread count and summation order)
    np.testing.assert_allclose(answer["pred_masks"], generated.pred_masks.numpy(), rtol=1e-4, atol=1e-4)


def test_forgery_analysis_pipeline_runs_on_the_converted_model_in_bfloat16(converted):
    """A float32 conversion loads in bfloat16 with the release's mix: Flan-T5 (InstructBLIP's nested text config
    included) in bfloat16, everything else in float32, so the prompter's region probabilities are the float32 model's
    to the bit; it analyses photos."""
    from transformers import pipeline

    out, _, _, processor = converted
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(out).eval()
    analyze = pipeline("forgery-analysis", model=str(out), dtype=torch.bfloat16)
    dtypes = {name: parameter.dtype for name, parameter in analyze.model.named_parameters()}
    assert {dtype for name, dtype in dtypes.items() if name.startswith("instructblip.language_model.")} == {torch.bfloat16}
    assert {dtype for name, dtype in dtypes.items() if not name.startswith("instructblip.language_model.")} == {torch.float32}
    pixels = processor(images=[random_image(7, 30, 44)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert torch.equal(analyze.model.prompter(pixels).region_logits, model.prompter(pixels).region_logits)
    results = analyze([random_image(7, 30, 44), {"image": random_image(8, 50, 38), "regions": ["lip"]}], max_new_tokens=6)
    assert [result["mask"].size for result in results] == [(44, 30), (38, 50)]
    assert results[1]["instruction_regions"] == ["lip"]
    assert all(result["mask_confidence"] is None and len(result["region_probabilities"]) == 21 for result in results)
    assert all(isinstance(result["report"], str) for result in results)


def _rewrite_dff(files: dict, change) -> None:
    loaded = torch.load(files["dff"], weights_only=True)
    change(loaded["model"])
    torch.save(loaded, files["dff"])


@pytest.fixture
def fresh_files(tmp_path):
    return write_released_files(tmp_path / "released")


def test_unknown_extra_key_is_named(fresh_files, tmp_path):
    _rewrite_dff(fresh_files, lambda state: state.update({"mask_decoder.iou_prediction_head.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointConversionError, match=r"cannot be placed.*'mask_decoder\.iou_prediction_head\.weight'") as error:
        convert(fresh_files, tmp_path / "out")
    assert error.value.argument == "dff_checkpoint" and not (tmp_path / "out").exists()

    torch.save({**face_vit_state_dict(), "module.head.weight": torch.zeros(21, 24)}, fresh_files["face_vit"])
    with pytest.raises(CheckpointConversionError, match=r"face_vit_checkpoint: .*cannot be placed: 'module\.head\.weight'"):
        convert(fresh_files, tmp_path / "out")


def test_missing_required_key_is_named(fresh_files, tmp_path):
    _rewrite_dff(fresh_files, lambda state: state.pop("Qformer.bert.encoder.layer.1.intermediate_query.dense.bias"))
    with pytest.raises(CheckpointConversionError, match=r"missing required keys 'Qformer\.bert\.encoder\.layer\.1\.intermediate_query\.dense\.bias'"):
        convert(fresh_files, tmp_path / "out")

    files = write_released_files(tmp_path / "other")
    face_vit = face_vit_state_dict()
    del face_vit["conv_branch2.1.running_mean"]
    torch.save(face_vit, files["face_vit"])
    _rewrite_dff(files, lambda state: state.pop("multi_label_classifier.conv_branch2.1.running_mean"))
    with pytest.raises(CheckpointConversionError, match=r"face_vit_checkpoint: .*missing required keys 'conv_branch2\.1\.running_mean'"):
        convert(files, tmp_path / "out")


def test_wrong_shape_is_named(fresh_files, tmp_path):
    _rewrite_dff(fresh_files, lambda state: state.update({"prompt_proj.weight": torch.zeros(48, 41)}))
    with pytest.raises(CheckpointConversionError, match=r"'prompt_proj\.weight' has shape \(48, 41\) but 'mask_decoder\.prompt_proj\.weight' needs \(48, 40\)"):
        convert(fresh_files, tmp_path / "out")


def test_pickles_that_are_not_plain_tensor_dicts_are_refused_by_name(fresh_files, tmp_path):
    torch.save({"model": {"t5_proj.weight": torch.nn.Linear(2, 2)}}, fresh_files["dff"])
    with pytest.raises(CheckpointConversionError, match=r"2111_checkpoint_best\.pth: refused: this pickle needs torch\.nn\.modules\.linear\.Linear.*--allow-unsafe-pickle"):
        convert(fresh_files, tmp_path / "out")
    # allowed to load fully, it is still no state dict
    with pytest.raises(CheckpointConversionError, match=r"entry 't5_proj\.weight' holds a Linear, not a tensor"):
        convert(fresh_files, tmp_path / "out", allow_unsafe_pickle=True)
    torch.save([torch.zeros(1)], fresh_files["face_vit"])
    with pytest.raises(CheckpointConversionError, match=r"ViT-H_14-tiny_checkpoint\.bin: holds a list, not a state dict"):
        convert(fresh_files, tmp_path / "out")
    torch.save({"head.weight": "not a tensor"}, fresh_files["face_vit"])
    with pytest.raises(CheckpointConversionError, match=r"entry 'head\.weight' holds a str"):
        convert(fresh_files, tmp_path / "out")


def test_command_line_converts_and_names_the_flag_of_a_bad_input(fresh_files, tmp_path, capsys):
    arguments = [
        "convert-checkpoint", "--instructblip", str(fresh_files["instructblip"]), "--dff-checkpoint", str(fresh_files["dff"]),
        "--face-vit-checkpoint", str(fresh_files["face_vit"]), "--out", str(tmp_path / "out"),
        "--prompter-heads", str(FACE_VIT["heads"]), "--mask-decoder-heads", str(MASK_PATH["heads"]), "--dtype", "bfloat16",
    ]
    assert main(arguments) == 0
    assert "Wrote a ForgeryTalker checkpoint" in capsys.readouterr().out
    written = load_file(tmp_path / "out" / "model.safetensors")
    assert written["mask_decoder.mask_tokens"].dtype == torch.float32
    assert written["instructblip.language_model.shared.weight"].dtype == torch.bfloat16
    uniform = [str(tmp_path / "uniform") if value == str(tmp_path / "out") else value for value in arguments]
    assert main([*uniform, "--uniform-dtype"]) == 0
    assert load_file(tmp_path / "uniform" / "model.safetensors")["mask_decoder.mask_tokens"].dtype == torch.bfloat16
    assert json.loads((tmp_path / "uniform" / "config.json").read_text()).get("keep_in_fp32_modules") is None
    assert main(arguments) == 2
    assert "error: --out: " in capsys.readouterr().err
    torch.save({"model": {"t5_proj.weight": torch.nn.Linear(2, 2)}}, fresh_files["dff"])
    assert main([*arguments, "--overwrite"]) == 2
    assert "error: --dff-checkpoint: " in capsys.readouterr().err and (tmp_path / "out" / "model.safetensors").is_file()


def _convert_arguments(files: dict, out) -> list[str]:
    return [
        "convert-checkpoint", "--instructblip", str(files["instructblip"]), "--dff-checkpoint", str(files["dff"]),
        "--face-vit-checkpoint", str(files["face_vit"]), "--out", str(out),
        "--prompter-heads", str(FACE_VIT["heads"]), "--mask-decoder-heads", str(MASK_PATH["heads"]),
    ]


def test_overwrite_never_deletes_a_file_the_converter_did_not_write(fresh_files, tmp_path, capsys):
    """Issue 19 N9: `--out FOLDER --overwrite` where FOLDER holds the user's thesis replaced the whole folder."""
    users = tmp_path / "thesis"
    users.mkdir()
    (users / "thesis.tex").write_text("\\documentclass{article}")
    assert main([*_convert_arguments(fresh_files, users), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert "error: --out: " in error and "was not written by `forgerytalker convert-checkpoint`" in error
    assert sorted(path.name for path in users.iterdir()) == ["thesis.tex"]

    out = tmp_path / "out"
    assert main(_convert_arguments(fresh_files, out)) == 0
    (out / "thesis.tex").write_text("mine")
    assert main([*_convert_arguments(fresh_files, out), "--overwrite"]) == 2
    assert "holds files `forgerytalker convert-checkpoint` did not write (thesis.tex)" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "mine" and (out / "model.safetensors").is_file()
    (out / "thesis.tex").unlink()
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main([*_convert_arguments(fresh_files, out), "--overwrite"]) == 0  # its own folder is replaced
    assert (out / "model.safetensors").stat().st_mtime_ns != before
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_instructblip_safetensors_is_named_before_the_pickles_are_read(
    fresh_files, tmp_path, capsys, monkeypatch, damage
):
    """Issue 19 N13: a damaged download gave a traceback naming no file, after minutes of reading the pickles."""
    from forgerytalker.released_weights import convert as convert_module

    weights = next(Path(fresh_files["instructblip"]).glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100] if damage == "truncated" else b"\xff" * 16 + data[16:])
    read = []
    monkeypatch.setattr(convert_module, "load_pickle", lambda *args: read.append(args) or {})
    assert main(_convert_arguments(fresh_files, tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert f"error: --instructblip: {weights} is damaged or incomplete" in error and "Traceback" not in error
    assert read == [] and not (tmp_path / "out").exists()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _split_with_dim_mask_pixels():
    """Three images of odd sizes whose RGB masks are white in one corner and dark blue (grey value 23) elsewhere:
    forged under this package's rule (any band > 0), not under the release's (grey > 127). Returns the split and
    each sample's image and mask pictures."""
    from datasets import Dataset

    from forgerytalker.data.features import MMTT_FEATURES

    rng = np.random.default_rng(11)
    rows, pictures = [], {}
    for index, (height, width) in enumerate([(37, 53), (64, 48), (50, 50)]):
        mask = np.zeros((height, width, 3), dtype=np.uint8)
        mask[: height // 2, : width // 2] = 255
        mask[height // 2 :, width // 3 :] = (0, 0, 200)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image_id = f"sample-{index}"
        pictures[image_id] = (Image.fromarray(image), Image.fromarray(mask))
        rows.append({
            "image_id": image_id, "image": {"bytes": _png(image), "path": None},
            "mask": {"bytes": _png(mask), "path": None}, "caption": "the left eye looks blurry", "regions": [0],
            "method": "face_swap", "source": "synthetic", "extra": "{}",
        })
    return Dataset.from_list(rows, features=MMTT_FEATURES), pictures


@pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")
def test_official_protocol_scores_masks_as_the_released_evaluation(converted, tmp_path):
    """Protocol "official": the 16×16 (release: 224×224) mask is thresholded first, then resized with PIL's
    NEAREST; the ground truth is forged where its grey value is > 127. The default protocol resizes the
    probabilities first and counts any non-zero band as forged."""
    from forgerytalker.evaluation.runner import run_evaluation

    _, _, model, processor = converted
    split, pictures = _split_with_dim_mask_pixels()
    documents, recorded = {}, {}
    for protocol in ("official", "forgerytalker"):
        documents[protocol] = run_evaluation(
            model, processor, split, protocol=protocol, max_new_tokens=3, progress=False, output_dir=tmp_path / protocol
        )
        lines = (tmp_path / protocol / "predictions.jsonl").read_text().splitlines()
        recorded[protocol] = {record["image_id"]: record["mask_pixels"] for record in map(json.loads, lines)}
    official = documents["official"]
    assert official["protocol"] == "official" and official["run"]["protocol"] == "official"
    assert "NEAREST" in official["conventions"]["mask_resize"] and "> 127" in official["conventions"]["mask_binarization"]
    assert documents["forgerytalker"]["conventions"]["mask_resize"].startswith("A prediction whose (H, W) differs")
    assert "protocol 'official'" in (tmp_path / "official" / "metrics.md").read_text()

    for image_id, (image, mask) in pictures.items():
        with torch.no_grad():
            logits = model.generate(**processor(images=[image]), max_new_tokens=1).pred_masks[0, 0]
        thresholded = Image.fromarray((torch.sigmoid(logits) > 0.5).numpy().astype(np.uint8) * 255, mode="L")
        official_prediction = np.asarray(thresholded.resize(mask.size, Image.NEAREST)) > 127
        official_truth = np.asarray(mask.convert("L")) > 127
        default_prediction = processor.post_process_masks(logits[None, None], [(mask.height, mask.width)])[0].numpy()
        default_truth = (np.asarray(mask) > 0).any(-1)
        for protocol, prediction, truth in (("official", official_prediction, official_truth),
                                            ("forgerytalker", default_prediction, default_truth)):
            expected = {"intersection": int((prediction & truth).sum()), "predicted": int(prediction.sum()),
                        "target": int(truth.sum())}
            assert recorded[protocol][image_id] == expected, (protocol, image_id)
        assert official_truth.sum() < default_truth.sum()


@pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")
def test_evaluate_command_with_the_official_protocol_generates_as_the_release(converted, tiny_dataset_dir, tmp_path):
    out, _, _, _ = converted
    arguments = ["evaluate", "--model", str(out), "--data", str(tiny_dataset_dir), "--split", "validation",
                 "--out", str(tmp_path / "eval"), "--protocol", "official", "--no-meteor", "--no-progress", "--limit", "2"]
    assert main(arguments) == 0
    document = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert document["protocol"] == "official" and document["run"]["max_new_tokens"] == 100  # the checkpoint's
    assert document["overall"]["num_images"] == 2 and 0 <= document["overall"]["IoU"] <= 100


def test_convert_checkpoint_help_does_not_import_torch():
    from test_cli import imported_heavy_modules

    assert imported_heavy_modules("convert-checkpoint", "--help") == []


def test_analyze_writes_its_files_for_the_converted_model_which_has_no_mask_confidence(converted, tmp_path):
    """The released mask path has no IoU head: the record says so with `null` and the overlay is still drawn."""

    out, _, _, _ = converted
    photo = tmp_path / "photos" / "face.png"
    photo.parent.mkdir()
    random_image(9, 48, 40).save(photo)
    results = tmp_path / "results"
    code = main(["analyze", str(photo), "--model", str(out), "--out", str(results), "--no-progress",
                 "--faces", "whole", "--max-new-tokens", "4", "--num-threads", "1"])
    assert code == 0
    record = json.loads((results / "face.png.json").read_text())
    assert record["status"] == "ok" and record["mask_confidence"] is None
    assert Image.open(results / "face.png.mask.png").size == (40, 48)
    assert Image.open(results / "face.png.overlay.png").width > 40
