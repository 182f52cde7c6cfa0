"""`generate` and training against what transformers' common model and generation tests check (issue 22): what
ForgeryTalker's `generate` shares with InstructBLIP's, where it differs on purpose, and the behaviours of
`resize_token_embeddings` and gradient checkpointing, which those tests reach through an `input_ids` the model does
not take."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_image
from transformers import StaticCache

from forgerytalker.modeling_forgerytalker_checks import LANGUAGE_MODEL_INPUTS
from forgerytalker.tiny import build_tiny_model_and_processor

LANGUAGE_MODELS = ["llama", "opt", "t5"]
DECODING = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "sample": {"num_beams": 1, "do_sample": True, "top_k": 10, "temperature": 0.7},
    "beam_search": {"num_beams": 2, "do_sample": False, "num_return_sequences": 2, "length_penalty": 2.0},
    "beam_sample": {"num_beams": 2, "do_sample": True, "top_k": 10},
}
# four report tokens exactly, a penalty on what came before, every step's scores and logits
SETTINGS = {
    "max_new_tokens": 4, "min_new_tokens": 4, "repetition_penalty": 1.3,
    "return_dict_in_generate": True, "output_scores": True, "output_logits": True,
}


@pytest.fixture(scope="module", params=LANGUAGE_MODELS)
def backbone(request):
    model, processor = build_tiny_model_and_processor(request.param, seed=2)
    return model.eval(), processor


def _inputs(processor, regions=(("eye", "nose"), ("eye", "nose")), **extra):
    # the same regions for every image: prompts of one length, so InstructBLIP's batch needs no padding
    images = [random_image(seed, 40, 40) for seed in range(len(regions))]
    return processor(images=images, regions=[list(names) for names in regions], **extra)


def _instructblip_generate(model, inputs, regions, **settings):
    """InstructBLIP's own `generate`, on ForgeryTalker's backbone, given the prompt ForgeryTalker writes for
    `regions`; returns `(output, prompt_ids)`."""
    language = model.build_language_inputs(
        inputs["instruction_input_ids"], inputs["instruction_qformer_input_ids"], regions, for_generation=True
    )
    assert language["attention_mask"].all()  # no padding: the prompts are the same length
    generation_config = copy.deepcopy(model.generation_config)
    model_kwargs = generation_config.update(**settings)
    output = model.instructblip.generate(
        pixel_values=inputs["pixel_values"],
        qformer_input_ids=language["qformer_input_ids"],
        qformer_attention_mask=language["qformer_attention_mask"],
        input_ids=language["input_ids"],
        attention_mask=language["attention_mask"],
        generation_config=generation_config,
        **model_kwargs,
    )
    return output, language["input_ids"]


@pytest.mark.parametrize("decoding", DECODING)
def test_generate_is_instructblips_generate_on_its_own_instruction_without_the_prompt(backbone, decoding):
    model, processor = backbone
    inputs = _inputs(processor)
    settings = {**SETTINGS, **DECODING[decoding]}
    torch.manual_seed(0)
    ours = model.generate(**inputs, **settings)
    torch.manual_seed(0)
    theirs, prompt = _instructblip_generate(model, inputs, ours.instruction_regions, **settings)

    if model.config.instructblip_config.use_decoder_only_language_model:
        # InstructBLIP returns the prompt it was given, then the new tokens; ForgeryTalker the new tokens only
        rows = theirs.sequences.shape[0]
        torch.testing.assert_close(theirs.sequences[:, : prompt.shape[1]], prompt.repeat_interleave(rows // len(prompt), 0))
        report = theirs.sequences[:, prompt.shape[1] :]
    else:  # T5's decoder start token, first in InstructBLIP's sequences
        assert (theirs.sequences[:, 0] == model.config.get_text_config().decoder_start_token_id).all()
        report = theirs.sequences[:, 1:]
    torch.testing.assert_close(ours.sequences, report)
    assert ours.sequences.shape == (2 * settings.get("num_return_sequences", 1), SETTINGS["max_new_tokens"])
    for name in ("scores", "logits"):
        assert len(getattr(ours, name)) == SETTINGS["max_new_tokens"]
        for step, (mine, reference) in enumerate(zip(getattr(ours, name), getattr(theirs, name))):
            torch.testing.assert_close(mine, reference, msg=f"{name}[{step}]")
    if settings["num_beams"] > 1:
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores)
        torch.testing.assert_close(ours.beam_indices, theirs.beam_indices)
    # the mask and the regions come with every report
    assert ours.pred_masks.shape[0] == ours.region_logits.shape[0] == 2


def test_generate_with_a_static_cache_writes_the_same_reports(backbone):
    """transformers' static-cache tests skip ForgeryTalker (its forward, which writes each image's instruction in
    Python, cannot compile without graph breaks); the cache itself is the language model's and works."""
    model, processor = backbone
    inputs = _inputs(processor, regions=[["nose"], []])
    settings = {"max_new_tokens": 5, "min_new_tokens": 5, "num_beams": 1, "return_dict_in_generate": True}
    dynamic = model.generate(**inputs, **settings)
    static = model.generate(**inputs, **settings, cache_implementation="static")
    torch.testing.assert_close(static.sequences, dynamic.sequences)
    cache = static.past_key_values
    assert isinstance(getattr(cache, "self_attention_cache", cache), StaticCache)


@pytest.mark.parametrize("name", LANGUAGE_MODEL_INPUTS)
def test_generate_refuses_a_language_model_prompt_and_accepts_none(tiny_model_and_processor, name):
    model, processor = tiny_model_and_processor
    inputs = _inputs(processor)
    with pytest.raises(ValueError, match=f"`{name}`.*instruction_input_ids"):
        model.generate(**inputs, **{name: torch.ones(2, 3, dtype=torch.long)}, max_new_tokens=2)
    plain = model.generate(**inputs, max_new_tokens=2, min_new_tokens=2)
    given_none = model.generate(**inputs, **{name: None}, max_new_tokens=2, min_new_tokens=2)
    torch.testing.assert_close(given_none.sequences, plain.sequences)


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_resize_token_embeddings_resizes_the_language_model_and_the_model_still_runs(language_model):
    model, processor = build_tiny_model_and_processor(language_model)
    text_config = model.config.get_text_config()
    vocab_size = text_config.vocab_size
    model.resize_token_embeddings(vocab_size + 10)
    assert model.config.get_text_config().vocab_size == vocab_size + 10
    assert model.get_input_embeddings().weight.shape[0] == vocab_size + 10
    assert model.get_output_embeddings().weight.shape[0] == vocab_size + 10

    # a report holding the newest token trains, and the language model scores every token of the new vocabulary
    report = processor.tokenizer("the eye is blurry", return_tensors="pt").input_ids
    report[0, 1] = vocab_size + 9
    inputs = _inputs(processor, regions=[["eye"]], masks=[np.ones((40, 40))])
    model.train()
    output = model(**inputs, labels=report)
    assert output.logits.shape[-1] == vocab_size + 10 and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.get_input_embeddings().weight.grad[vocab_size + 9].abs().sum() > 0

    model.eval()
    generated = model.generate(**_inputs(processor), max_new_tokens=3, min_new_tokens=3)
    assert generated.sequences.shape == (2, 3) and generated.sequences.max() < vocab_size + 10


def test_loss_trains_everything_but_the_region_head_which_the_region_loss_trains_alone():
    """transformers' gradient-checkpointing tests expect every parameter to get a gradient from `loss`. The
    prompter's region head does not: its regions pick the instruction's words (a discrete choice), and it learns in
    stage 1 from the region loss, which `loss` (L_text + L_mask, the paper's stage 2) leaves out."""
    model, processor = build_tiny_model_and_processor()
    model.train()
    batch = _inputs(
        processor, regions=[["eye"]], reports=["the eye is blurry"], masks=[np.ones((40, 40))],
        region_labels=[["eye", "lip"]],
    )

    def gradients(loss_name):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        getattr(model(**batch), loss_name).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients("loss")
    without = {name for name, p in model.named_parameters() if name not in plain}
    assert without == {"prompter.region_head.weight", "prompter.region_head.bias"}
    assert all(gradients("region_loss")[name].any() for name in without)

    model.activation_checkpointing_enable()
    checkpointed = gradients("loss")
    assert checkpointed.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


@pytest.mark.parametrize("language_model, penalize_instruction", [("llama", True), ("llama", False), ("t5", True)])
def test_once_words_are_written_once_and_the_report_is_otherwise_the_same(images, language_model, penalize_instruction):
    """`generation_config.once_words_ids`: a token the report repeats is written once and never again; until its
    second place the report is unchanged (the prompt, which the decoder-only model's processors also see, does not
    count)."""
    from collections import Counter

    model, processor = build_tiny_model_and_processor(language_model)
    model.eval()
    inputs = processor(images=images[:2])
    settings = dict(max_new_tokens=60, min_new_tokens=60, repetition_penalty=1.0, penalize_instruction=penalize_instruction)
    plain = model.generate(**inputs, **settings).sequences
    token, count = Counter(plain[0].tolist()).most_common(1)[0]
    assert count > 1
    once = model.generate(**inputs, **settings, once_words_ids=[[[token]]]).sequences
    for before, after in zip(plain.tolist(), once.tolist()):
        if token in before:
            assert after.count(token) == 1
            second = before.index(token, before.index(token) + 1) if before.count(token) > 1 else len(before)
            assert after[:second] == before[:second]


def test_once_words_tell_a_word_from_the_longer_word_its_tokens_begin():
    """Group 0 is "eye" (`[5]`, or `[6]` capitalised), group 1 "eyebrow" (`[6, 7, 8]`: capitalised, it begins with
    "Eye"'s token), group 2 "nose" (`[9, 10]`). Two prompt tokens come first and do not count."""
    from forgerytalker.generation_forgerytalker import ForgeryTalkerOnceWordsLogitsProcessor

    processor = ForgeryTalkerOnceWordsLogitsProcessor([[[5], [6]], [[6, 7, 8]], [[9, 10]]], prompt_length=2)

    def banned(*report: int) -> set[int]:
        scores = processor(torch.tensor([[5, 9, *report]]), torch.zeros(1, 12))
        return set(torch.isinf(scores[0]).nonzero().flatten().tolist())

    assert banned() == set()  # the prompt's 5 and 9 are not the report's
    assert banned(1, 2) == set()
    assert banned(5, 1) == {5}  # "eye" written: not again; "Eye" (6) may still open "Eyebrow"
    assert banned(6, 7, 8, 1) == set()  # "Eyebrow" written, and no "eye" in it
    assert banned(6, 7, 8, 1, 6, 7) == {8}  # "Eye bro" again: it cannot become "Eyebrow"
    assert banned(6, 7) == set()  # "Eye bro" at the end is the unfinished "Eyebrow", not "Eye"
    assert banned(6, 1) == {5}  # "Eye" then another word: "eye" written; 6 still opens the unused "Eyebrow"
    assert banned(6, 7, 8, 5) == {5, 6}  # both written: 6 opens nothing unused any more
    assert banned(9, 10, 1, 9) == {10}  # "nose" written: it cannot be completed again


@pytest.mark.parametrize("language_model", ["llama", "opt", "t5"])
def test_region_word_ids_are_each_region_name_and_plural_as_a_report_tokenises_them(language_model):
    from forgerytalker.regions import REGION_NAMES, REGION_WORD_FORMS
    from forgerytalker.tiny import build_tiny_processor

    # reports whose vocabulary folds the comma into the word (`▁cheeks,` in a Unigram one)
    processor = build_tiny_processor(language_model, texts=["The cheeks, teeth and nose look blurred."] * 50)
    tokenizer = processor.tokenizer
    groups = processor.region_word_ids()
    assert len(groups) == len(REGION_NAMES)
    for name, group in zip(REGION_NAMES, groups):
        plain = {word for form in REGION_WORD_FORMS[name] for word in (form, form.capitalize())}
        words = {word + ending for word in plain for ending in ("", ",", ".", ";", ":")}
        written = {tokenizer.decode(tokenizer("the", add_special_tokens=False)["input_ids"] + ids).split(" ", 1)[1] for ids in group}
        # every form, also with the punctuation the vocabulary knows (this one has no ";" or ":")
        assert plain | {word + "," for word in plain} | {word + "." for word in plain} <= written <= words
    report = tokenizer("The cheeks, teeth and nose look soft and the teeth are blurred.", add_special_tokens=False)["input_ids"]
    cheek, tooth = groups[REGION_NAMES.index("cheek")], groups[REGION_NAMES.index("tooth")]
    assert any(tuple(ids) == tuple(report[i : i + len(ids)]) for ids in cheek for i in range(len(report)))
    assert any(tuple(ids) == tuple(report[i : i + len(ids)]) for ids in tooth for i in range(len(report)))


def test_once_words_survive_saving_a_checkpoint_whose_generation_config_says_it_came_from_the_model_config(tmp_path):
    """Checkpoints saved before `once_words_ids` existed mark their generation config `_from_model_config`, and
    transformers drops settings it does not know when it loads such a config: loading marks it otherwise."""
    import json

    from forgerytalker import ForgeryTalkerForConditionalGeneration

    model, processor = build_tiny_model_and_processor()
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_from_model_config": True}))
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "old")
    loaded.generation_config.once_words_ids = [[[5]]]
    loaded.save_pretrained(tmp_path / "new")
    reloaded = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "new")
    assert reloaded.generation_config.once_words_ids == [[[5]]]
