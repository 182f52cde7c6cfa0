"""What transformers' own common model and generation tests expect of ForgeryTalker (issue 22), as project tests."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from conftest import random_image
from forgerytalker.tiny import LANGUAGE_MODELS, build_tiny_language_tokenizer, build_tiny_model_and_processor, tiny_config


def _inputs(processor, count: int = 2):
    return processor(images=[random_image(seed, 40, 40) for seed in range(count)], regions=[["nose"]] * count)


def test_set_attn_implementation_reaches_the_prompters_vit(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model.set_attn_implementation("eager")
    with torch.no_grad():
        output = model(**_inputs(processor), output_attentions=True)
    attentions = output.prompter_outputs.attentions
    assert len(attentions) == model.config.prompter_config.num_hidden_layers
    heads, tokens = model.config.prompter_config.num_attention_heads, 1 + 16  # class token + 4x4 patches
    assert all(layer.shape == (2, heads, tokens, tokens) for layer in attentions)


@pytest.mark.parametrize("language_model", LANGUAGE_MODELS)
def test_generate_keeps_attentions_and_hidden_states_when_asked(language_model):
    model, processor = build_tiny_model_and_processor(language_model)
    model.eval().set_attn_implementation("eager")
    output = model.generate(
        **_inputs(processor), max_new_tokens=3, min_new_tokens=3, num_beams=1,
        return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, output_scores=True,
    )
    layers = model.config.get_text_config().num_hidden_layers
    if language_model == "t5":
        assert len(output.encoder_attentions) == layers and len(output.encoder_hidden_states) == layers + 1
        steps = (output.decoder_attentions, output.cross_attentions, output.decoder_hidden_states)
    else:
        steps = (output.attentions, output.hidden_states)
    assert all(len(per_step) == len(output.scores) == 3 for per_step in steps)
    assert all(len(step) in (layers, layers + 1) for per_step in steps for step in per_step)
    assert output.past_key_values is not None


def test_image_token_id_is_on_the_top_level_config(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    assert model.config.image_token_id == model.config.instructblip_config.image_token_index == processor.image_token_id


def test_get_encoder_and_get_decoder_are_the_backbones(tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    backbone = model.instructblip
    assert model.get_decoder() is backbone.language_model.get_decoder() is not model
    assert model.get_encoder(modality="image") is backbone.vision_model
    assert model.get_encoder() is backbone.get_encoder()


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention"])
def test_attention_implementations_the_mask_decoder_lacks_are_refused(tiny_model_and_processor, implementation):
    model, _ = tiny_model_and_processor
    assert model._supports_sdpa and not model._supports_flash_attn and not model._supports_flex_attn
    with pytest.raises(ValueError, match="does not support"):
        model.set_attn_implementation(implementation)


def test_save_pretrained_leaves_the_models_config_as_it_was(tmp_path, tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    before = model.config.to_dict()
    model.save_pretrained(tmp_path)
    assert model.config.to_dict() == before
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "AutoModelForImageTextToText" in saved["auto_map"] and "forgery-analysis" in saved["custom_pipelines"]


def test_forward_declares_only_what_it_takes_and_refuses_language_model_tensors(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    parameters = inspect.signature(model.forward).parameters
    assert not {"input_ids", "attention_mask", "inputs_embeds"} & set(parameters)
    inputs = _inputs(processor)
    with torch.no_grad():
        # what PEFT's CAUSAL_LM wrapper passes
        plain = model(**inputs).logits
        wrapped = model(**inputs, input_ids=None, attention_mask=None, inputs_embeds=None).logits
    torch.testing.assert_close(plain, wrapped)
    with pytest.raises(ValueError, match="attention_mask"):
        model(**inputs, attention_mask=torch.ones(2, 5, dtype=torch.long))


def test_forward_refuses_pre_shifted_labels_instead_of_ignoring_them(tiny_model_and_processor):
    """Sequence-parallel trainers pass `shift_labels` and expect the loss to use them; ForgeryTalker builds the
    sequence they would index, so it refuses them (it ignored them before, training on its own shift of `labels`)."""
    model, processor = tiny_model_and_processor
    inputs = _inputs(processor)
    report = processor.tokenizer(["the nose looks blurred"] * 2, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(**inputs, labels=report).loss
        assert torch.equal(model(**inputs, labels=report, shift_labels=None).loss, loss)
        with pytest.raises(ValueError, match="shift_labels"):
            model(**inputs, labels=report, shift_labels=torch.zeros(2, 40, dtype=torch.long))


@pytest.mark.parametrize("implementation", [None, "eager"])
def test_from_pretrained_gives_every_sub_model_the_attention_implementation(saved_tiny_checkpoint, implementation):
    """transformers' composite-SDPA check looks for `vision_model` / `language_model` on the top-level model; here
    they sit under `instructblip`, next to the prompter (and its ViT) and the mask decoder: every one of them gets
    SDPA by default and eager when asked."""
    from forgerytalker import ForgeryTalkerForConditionalGeneration

    kwargs = {} if implementation is None else {"attn_implementation": implementation}
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(saved_tiny_checkpoint, **kwargs)
    implementations = {
        name: module.config._attn_implementation
        for name, module in model.named_modules()
        if hasattr(getattr(module, "config", None), "_attn_implementation")
    }
    assert {"instructblip.vision_model", "instructblip.qformer", "instructblip.language_model", "prompter"} <= set(implementations)
    assert any(name.startswith("prompter.") for name in implementations)  # the prompter's ViT
    assert any(name.startswith("mask_decoder.") for name in implementations)
    assert set(implementations.values()) == {implementation or "sdpa"}


def test_report_lengths_follow_one_rule(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    inputs = _inputs(processor)
    eos = processor.tokenizer.eos_token_id
    never_stop = {"suppress_tokens": [eos], "num_beams": 1}
    # `max_length` bounds the returned sequence, which is the report; a `max_new_tokens` of the same call wins
    assert model.generate(**inputs, **never_stop, max_length=4).sequences.shape[1] == 4
    assert model.generate(**inputs, **never_stop, max_length=4, max_new_tokens=6).sequences.shape[1] == 6
    # a generation config's own `max_length` counts the same way when it has no `max_new_tokens`
    config = GenerationConfig(max_length=5, num_beams=1)
    assert model.generate(**inputs, generation_config=config, suppress_tokens=[eos]).sequences.shape[1] == 5
    # a minimum above the maximum gives the maximum, as in transformers
    assert model.generate(**inputs, **never_stop, max_new_tokens=2, min_new_tokens=5).sequences.shape[1] == 2


def test_tiny_config_old_argument_order_still_works_with_a_warning():
    tokenizer = build_tiny_language_tokenizer(language_model="opt")
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    with pytest.warns(FutureWarning, match="tokenizer first"):
        old = tiny_config(len(tokenizer), 60, image_token, "opt", hidden_size=64)
    text = old.instructblip_config.text_config
    assert (text.model_type, text.vocab_size, text.hidden_size) == ("opt", len(tokenizer), 64)
    assert (old.instructblip_config.image_token_index, text.pad_token_id, text.eos_token_id) == (image_token, 0, 3)
    with pytest.warns(FutureWarning):
        by_name = tiny_config(vocab_size=len(tokenizer), qformer_vocab_size=60, image_token_index=image_token,
                              language_model="opt", hidden_size=64)
    assert by_name.to_dict() == old.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        current = tiny_config(tokenizer, 60, "opt", hidden_size=64)
    assert current.instructblip_config.image_token_index == image_token


def test_a_loaded_config_does_not_depend_on_what_was_imported_before(tmp_path, tiny_model_and_processor):
    """The copy of the config's code next to the weights (trust_remote_code) reads a checkpoint the same before and
    after the package registers its pipeline, keeping `custom_pipelines` for remote-code users; the installed
    package's class leaves them out (its registered pipeline serves the task)."""
    model, _ = tiny_model_and_processor
    model.save_pretrained(tmp_path)
    code = textwrap.dedent(f"""
        import json
        from transformers import AutoConfig
        remote_class = type(AutoConfig.from_pretrained({str(tmp_path)!r}, trust_remote_code=True))
        assert remote_class.__module__.startswith("transformers_modules")
        def load(config_class):
            return sorted(config_class.from_pretrained({str(tmp_path)!r}).to_dict())
        remote_before = load(remote_class)
        import transformers.pipelines
        import forgerytalker
        from forgerytalker import ForgeryTalkerConfig, PIPELINE_TASK
        from transformers.pipelines import PIPELINE_REGISTRY
        assert PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks()
        package = load(ForgeryTalkerConfig)
        print(json.dumps([remote_before, load(remote_class), "custom_pipelines" in remote_before, "custom_pipelines" in package]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    remote_before, remote_after, remote_has_pipeline, package_has_pipeline = json.loads(run.stdout.splitlines()[-1])
    assert remote_before == remote_after and remote_has_pipeline and not package_has_pipeline


def test_a_process_without_the_package_loads_the_processor_with_trust_remote_code(saved_tiny_checkpoint):
    """What the README says of a process that never imported forgerytalker."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "`AutoProcessor.from_pretrained(path)` and `AutoConfig.from_pretrained(path)` need `trust_remote_code=True`" in readme
    code = textwrap.dedent(f"""
        from transformers import AutoProcessor
        try:
            AutoProcessor.from_pretrained({str(saved_tiny_checkpoint)!r})
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("loaded without trust_remote_code")
        processor = AutoProcessor.from_pretrained({str(saved_tiny_checkpoint)!r}, trust_remote_code=True)
        print(type(processor).__name__, processor.num_query_tokens)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-2:] == ["ForgeryTalkerProcessor", "4"]


def test_trainer_evaluate_reports_eval_loss_with_the_documented_label_names(tmp_path, tiny_model_and_processor):
    """README: `label_names=["labels", "masks"]` gives `eval_loss` for batches without `region_labels`; Trainer's
    default label names (every forward argument containing "label") include `region_labels` and give none."""
    from transformers import Trainer, TrainingArguments

    model, processor = tiny_model_and_processor
    inputs = _inputs(processor)
    report = processor.tokenizer(["the nose looks blurred"] * 2, return_tensors="pt").input_ids
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:20, 8:20] = 1
    samples = [{**{k: v[i] for k, v in inputs.items()}, "labels": report[i], "masks": masks[i]} for i in range(2)]
    with torch.no_grad():
        expected = model(**{k: torch.stack([s[k] for s in samples]) for k in samples[0]}).loss.item()

    def evaluate(**settings):
        args = TrainingArguments(tmp_path / "trainer", per_device_eval_batch_size=2, report_to=[], use_cpu=True, **settings)
        return Trainer(model=model, args=args, eval_dataset=samples).evaluate()

    assert "eval_loss" not in evaluate()
    assert evaluate(label_names=["labels", "masks"])["eval_loss"] == pytest.approx(expected, rel=1e-5)
