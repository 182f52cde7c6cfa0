"""ForgeryTalker behaves like a transformers model (issue 8): the behaviours transformers' own common model and
config tests check on every model, written here for this model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import random_image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, InstructBlipConfig

from forgerytalker import REGION_NAMES, ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, ForgeryTalkerPrompterConfig
from forgerytalker.tiny import build_tiny_model_and_processor

LANGUAGE_MODELS = ["llama", "opt", "t5"]


def training_inputs(processor):
    images = [random_image(0, 40, 50), random_image(1, 36, 36)]
    return processor(images=images, reports=["the left eye looks blurry", "the lips are too smooth"])


# -- configuration -------------------------------------------------------------------------------------------


def test_default_config_is_the_released_model():
    config = ForgeryTalkerConfig()
    assert config.to_dict() == AutoConfig.for_model("forgerytalker").to_dict()
    backbone = config.instructblip_config
    text = config.get_text_config()
    assert (text.model_type, text.d_model, text.num_layers, text.num_heads, text.vocab_size) == ("t5", 2048, 24, 32, 32128)
    assert (backbone.vision_config.hidden_size, backbone.vision_config.num_hidden_layers, backbone.vision_config.patch_size) == (1408, 39, 14)
    assert (backbone.qformer_config.hidden_size, backbone.qformer_config.vocab_size) == (768, 30523)
    assert config.num_query_tokens == 32 and backbone.image_token_index == 32100 < text.vocab_size
    assert (config.mask_threshold, config.region_threshold, config.region_source) == (0.5, 0.5, "predicted")
    with torch.device("meta"):
        model = ForgeryTalkerForConditionalGeneration(config)
    backbone_parameters = sum(p.numel() for p in model.instructblip.parameters())
    assert 3.9e9 < backbone_parameters < 4.1e9  # InstructBLIP-Flan-T5-XL


def test_config_round_trips_through_json_and_folders(tmp_path, tiny_model_and_processor):
    config = tiny_model_and_processor[0].config
    assert ForgeryTalkerConfig.from_dict(json.loads(config.to_json_string())).to_dict() == config.to_dict()
    config.to_json_file(tmp_path / "config.json")
    assert ForgeryTalkerConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "folder" / "sub")
    loaded = AutoConfig.from_pretrained(tmp_path / "folder", subfolder="sub")
    assert type(loaded) is ForgeryTalkerConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    assert loaded.get_text_config().model_type == "llama" and isinstance(loaded.instructblip_config, InstructBlipConfig)


def test_get_text_config_is_the_language_models(tiny_model_and_processor):
    config = tiny_model_and_processor[0].config
    assert config.get_text_config() is config.instructblip_config.text_config
    assert config.get_text_config(decoder=True) is config.instructblip_config.text_config


def test_config_rejects_what_the_model_cannot_use(tiny_model_and_processor):
    config = tiny_model_and_processor[0].config
    with pytest.raises(ValueError, match=r"`region_names` must be the 21 regions of forgerytalker.REGION_NAMES"):
        ForgeryTalkerPrompterConfig(region_names=list(REGION_NAMES[::-1]))
    with pytest.raises(ValueError, match="mask_threshold"):
        ForgeryTalkerConfig(mask_threshold=1.5)
    with pytest.raises(ValueError, match="region_source"):
        ForgeryTalkerConfig(region_source="guessed")
    with pytest.raises(ValueError, match="region_threshold"):
        config.region_threshold = 0.0
    config.region_threshold = 0.3
    assert config.prompter_config.region_threshold == 0.3


# -- weight initialisation -----------------------------------------------------------------------------------


def with_initializers(config, value: float, text_value: float | None = None):
    """A copy of `config` whose every initialiser scale (`*_range`, `*_std`, `initializer_factor`) is `value`
    (`text_value` for the language model's)."""
    config = copy.deepcopy(config)

    def visit(part, scale):
        for key, item in list(vars(part).items()):
            if isinstance(item, type(config).__mro__[1]):
                visit(item, text_value if text_value is not None and item is config.get_text_config() else scale)
            elif ("_range" in key or "_std" in key or key == "initializer_factor") and isinstance(item, float):
                setattr(part, key, scale)

    visit(config, value)
    return config


def uninitialised(model) -> list[str]:
    """Parameters an `_init_weights` did not set: with every scale ~0 each is then all zeros or all ones."""
    return [name for name, p in model.named_parameters() if round(p.detach().mean().item() * 1e9) / 1e9 not in (0.0, 1.0)]


@pytest.mark.parametrize("language_model", LANGUAGE_MODELS)
def test_init_weights_cover_every_parameter(language_model):
    config = with_initializers(build_tiny_model_and_processor(language_model)[0].config, 1e-10)
    assert uninitialised(ForgeryTalkerForConditionalGeneration(config)) == []
    # the path a checkpoint that lacks weights takes: every missing weight is initialised by `_init_weights`
    assert uninitialised(ForgeryTalkerForConditionalGeneration.from_pretrained(None, config=config, state_dict={})) == []


def test_added_modules_use_the_forgerytalker_initializer_range(tiny_model_and_processor):
    config = with_initializers(tiny_model_and_processor[0].config, 1e-10, text_value=1e-10)
    config.initializer_range = 0.5
    model = ForgeryTalkerForConditionalGeneration(config)
    decoder = model.mask_decoder
    for linear in (decoder.vision_projection, decoder.prompt_fusion.q_proj, decoder.decoder.upscale_conv1):
        assert linear.weight.std().item() == pytest.approx(0.5, rel=0.25)
    assert decoder.decoder.iou_token.weight.abs().max() > 0.05
    assert model.instructblip.language_model.model.layers[0].mlp.up_proj.weight.abs().max() < 1e-6


def test_missing_weights_are_initialised_and_given_ones_kept(tiny_model_and_processor):
    model = tiny_model_and_processor[0]
    kept = {name: value for name, value in model.state_dict().items() if not name.startswith("mask_decoder.")}
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(None, config=model.config, state_dict=kept)
    for name, value in loaded.state_dict().items():
        if name in kept:
            assert torch.equal(value, kept[name]), name
    decoder = loaded.mask_decoder
    assert torch.equal(decoder.prompt_fusion_layer_norm.weight, torch.ones_like(decoder.prompt_fusion_layer_norm.weight))
    assert not decoder.vision_projection.bias.any()
    assert decoder.vision_projection.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.25)


def test_from_pretrained_without_a_folder_takes_config_and_state_dict(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    inputs = training_inputs(processor)
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(None, config=model.config, state_dict=model.state_dict()).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


# -- embeddings and outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_input_embeddings_and_resizing_them(tmp_path, language_model):
    model, processor = build_tiny_model_and_processor(language_model)
    model.eval()
    embeddings = model.get_input_embeddings()
    assert embeddings is model.instructblip.language_model.get_input_embeddings()
    replacement = torch.nn.Embedding(*embeddings.weight.shape)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    model.set_input_embeddings(embeddings)

    size = len(processor.tokenizer)
    processor.tokenizer.add_tokens(["<forged-seam>"])
    model.resize_token_embeddings(len(processor.tokenizer))
    assert model.get_input_embeddings().weight.shape[0] == size + 1
    assert model.get_output_embeddings().weight.shape[0] == size + 1
    assert model.config.get_text_config().vocab_size == size + 1
    inputs = processor(images=[random_image(0, 32, 32)], reports=["a <forged-seam> at the jaw"])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == size + 1
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path).eval()(**inputs).logits, logits)


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_output_flags_reach_every_part(language_model):
    model, processor = build_tiny_model_and_processor(language_model, attn_implementation="eager")
    model.eval()
    inputs = training_inputs(processor)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True, output_hidden_states=True)
        plain = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    backbone = model.config.instructblip_config
    assert len(output.vision_outputs.attentions) == backbone.vision_config.num_hidden_layers
    assert len(output.vision_outputs.hidden_states) == backbone.vision_config.num_hidden_layers + 1
    assert len(output.qformer_outputs.hidden_states) == backbone.qformer_config.num_hidden_layers + 1
    assert len(output.qformer_outputs.cross_attentions) == backbone.qformer_config.num_hidden_layers
    language_model_output = output.language_model_outputs
    if language_model == "t5":
        assert len(language_model_output.encoder_attentions) == len(language_model_output.decoder_attentions) == 2
    else:
        assert len(language_model_output.attentions) == 2 and len(language_model_output.hidden_states) == 3
    prompter_layers = model.config.prompter_config.num_hidden_layers
    assert len(output.prompter_outputs.attentions) == prompter_layers
    assert len(output.prompter_outputs.hidden_states) == prompter_layers + 1
    # prompt fusion, 3 attentions in each of the 2 two-way blocks, the final token-to-image attention
    assert len(output.mask_decoder_attentions) == 1 + 3 * model.config.mask_decoder_config.num_hidden_layers + 1
    assert all(attention.dim() == 4 for attention in output.mask_decoder_attentions)
    assert plain.mask_decoder_attentions is None and plain.prompter_outputs.attentions is None
    assert plain.vision_outputs.attentions is None
    model.config.output_hidden_states = True
    with torch.no_grad():
        from_config = model(**inputs)
    assert len(from_config.prompter_outputs.hidden_states) == prompter_layers + 1
    assert len(from_config.vision_outputs.hidden_states) == backbone.vision_config.num_hidden_layers + 1
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], plain.loss)
    torch.testing.assert_close(output.logits, plain.logits)


# -- placement, Auto classes, adapters ---------------------------------------------------------------------------


def test_no_split_modules_cover_every_part(tiny_model_and_processor):
    model = tiny_model_and_processor[0]
    assert {"ForgeryTalkerMaskDecoder", "ViTLayer", "ViTEmbeddings", "InstructBlipEncoderLayer", "InstructBlipQFormerLayer",
            "LlamaDecoderLayer"} <= set(model._no_split_modules)


@pytest.mark.parametrize("fraction", [0.3, 0.6], ids=["most-on-disk", "decoder-on-disk"])
def test_device_map_auto_with_disk_offload_gives_the_same_answers(tmp_path, tiny_model_and_processor, fraction):
    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path / "model")
    inputs = training_inputs(processor)
    images = processor(images=[random_image(0, 40, 50), random_image(1, 36, 36)])
    with torch.no_grad():
        expected = model(**inputs)
    expected_generation = model.generate(**images, max_new_tokens=4)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    offloaded = AutoModel.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": int(fraction * size)}, offload_folder=tmp_path / "offload"
    ).eval()
    device_map = offloaded.hf_device_map
    assert device_map["mask_decoder"] == "disk"
    no_split = set(model._no_split_modules)
    for name, module in offloaded.named_modules():
        if type(module).__name__ in no_split:
            assert not any(key.startswith(f"{name}.") for key in device_map), f"{name} was split"
    with torch.no_grad():
        output = offloaded(**inputs)
    torch.testing.assert_close(output.logits, expected.logits)
    torch.testing.assert_close(output.pred_masks, expected.pred_masks)
    generated = offloaded.generate(**images, max_new_tokens=4)
    assert torch.equal(generated.sequences, expected_generation.sequences)
    torch.testing.assert_close(generated.pred_masks, expected_generation.pred_masks)


def test_the_task_auto_class_loads_the_model(tmp_path, tiny_model_and_processor):
    model = tiny_model_and_processor[0]
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageTextToText"] == "modeling_forgerytalker.ForgeryTalkerForConditionalGeneration"
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path)) is ForgeryTalkerForConditionalGeneration


def test_peft_causal_lm_adapters_train_and_generate(tmp_path, tiny_model_and_processor):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, processor = tiny_model_and_processor
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    adapted = get_peft_model(model, lora)
    loss = adapted(**training_inputs(processor)).loss
    loss.backward()
    adapters = [p for name, p in adapted.named_parameters() if "lora_B" in name]
    assert adapters and all(p.grad is not None for p in adapters)
    images = processor(images=[random_image(0, 32, 32)])
    generated = adapted.eval().generate(**images, max_new_tokens=3)
    assert generated.sequences.shape == (1, 3)
    adapted.save_pretrained(tmp_path)
    base, _ = build_tiny_model_and_processor()
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    assert torch.equal(reloaded.generate(**images, max_new_tokens=3).sequences, generated.sequences)
