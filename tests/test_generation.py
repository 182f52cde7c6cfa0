"""Generation: the checkpoint's generation config, report-token lengths, the repetition penalty in a batch, and
results paired with their own image (issue 8 "Generation", issue 7 item 5), with decoder-only and T5 backbones."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_image

from forgerytalker import GENERATION_DEFAULTS, ForgeryTalkerForConditionalGeneration
from forgerytalker.released_weights import DFF_GENERATION_SETTINGS
from forgerytalker.tiny import build_tiny_model_and_processor

LANGUAGE_MODELS = ["llama", "opt", "t5"]
# The release's inference settings, written out from its code (`scripts/evaluation/evaluate.py` and
# `Blip2T5Instruct.generate`'s defaults): do_sample=False, num_beams=5, max_length=100 (new tokens), min_length=5,
# which counts the T5 decoder's start token (4 report tokens), repetition_penalty=1.5, length_penalty=1.0.
RELEASED_GENERATION = dict(
    do_sample=False, num_beams=5, max_new_tokens=100, min_new_tokens=4, repetition_penalty=1.5, length_penalty=1.0
)
# instructions of different lengths, so a batch is padded
REGIONS = [["eye", "lip", "nose", "chin"], [], ["forehead"]]


@pytest.fixture(scope="module", params=LANGUAGE_MODELS)
def backbone(request):
    # a random tiny model often writes one report for every image; with this seed each backbone writes at least
    # two different ones, greedy and with beams, which the batch-vs-single tests need to mean anything
    model, processor = build_tiny_model_and_processor(request.param, seed=2)
    return model.eval(), processor


def images() -> list:
    return [random_image(seed, 40 + 8 * seed, 48) for seed in range(3)]


def test_generation_config_holds_the_authors_defaults_and_is_saved(tmp_path, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    assert type(model).can_generate()
    fresh = ForgeryTalkerForConditionalGeneration(model.config)
    for name, value in RELEASED_GENERATION.items():
        assert getattr(fresh.generation_config, name) == value, name
    assert GENERATION_DEFAULTS == DFF_GENERATION_SETTINGS == RELEASED_GENERATION

    fresh.generation_config.num_beams = 4
    fresh.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["num_beams"] == 4 and saved["max_new_tokens"] == 100
    assert ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path).generation_config.num_beams == 4


def test_plain_generate_uses_the_generation_config_and_does_not_stop_at_20_tokens(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model = ForgeryTalkerForConditionalGeneration(model.config).eval()  # the authors' defaults, not the tiny ones
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]  # the report cannot end early
    output = model.generate(**processor(images=images()[:1]), return_dict_in_generate=True, output_scores=True)
    assert output.sequences.shape == (1, 100)
    assert output.sequences_scores is not None  # beam search, from generation_config.num_beams


@pytest.mark.parametrize("language_model", LANGUAGE_MODELS)
def test_max_and_min_length_count_report_tokens(language_model):
    model, processor = build_tiny_model_and_processor(language_model)
    model.eval()
    eos = processor.tokenizer.eos_token_id
    inputs = processor(images=images()[:2], regions=REGIONS[:2])
    assert model.generate(**inputs, max_length=5, suppress_tokens=[eos]).sequences.shape == (2, 5)
    # EOS is made the most likely token, so only min_length keeps the report going
    eager_to_stop = {"sequence_bias": {(eos,): 100.0}, "max_new_tokens": 12}
    assert (model.generate(**inputs, **eager_to_stop, min_new_tokens=0).sequences[:, 0] == eos).all()
    sequences = model.generate(**inputs, **eager_to_stop, min_length=6).sequences
    assert (sequences[:, :6] != eos).all() and (sequences[:, 6] == eos).all()


def test_a_maximum_below_the_minimum_gives_exactly_the_maximum_without_a_warning(tiny_model_and_processor):
    """The release's minimum is 4 report tokens; `max_new_tokens=2` (a quick look) wins, as in transformers, and
    transformers' warning about unreachable lengths (which would count the hidden instruction tokens) is not raised."""
    import warnings

    model, processor = tiny_model_and_processor
    model = ForgeryTalkerForConditionalGeneration(model.config).eval()  # the release's min_new_tokens=4
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sequences = model.generate(**processor(images=images()[:1]), max_new_tokens=2, num_beams=1).sequences
    assert sequences.shape == (1, 2)


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beams"])
def test_repetition_penalty_gives_a_batch_the_answers_of_single_calls(backbone, num_beams):
    model, processor = backbone
    settings = {"num_beams": num_beams, "repetition_penalty": 1.8, "max_new_tokens": 8, "min_new_tokens": 8}
    batch = model.generate(**processor(images=images(), regions=REGIONS), **settings)
    reports = processor.batch_decode(batch)
    for index, image in enumerate(images()):
        single = model.generate(**processor(images=[image], regions=[REGIONS[index]]), **settings)
        assert reports[index] == processor.batch_decode(single)[0], f"image {index}"
    assert len(set(reports)) > 1


def test_the_penalty_sees_the_instruction_and_nothing_else(tiny_model_and_processor):
    """The language model gets the prompt ids with the embeddings, so `repetition_penalty` covers the
    instruction's tokens; padding adds no token the sample's own prompt lacks, so a padded row is penalised
    exactly as the sample alone."""
    model, processor = tiny_model_and_processor
    seen = []
    original = model.instructblip.language_model.generate

    def generate(**kwargs):
        seen.append(kwargs["input_ids"])
        return original(**kwargs)

    model.instructblip.language_model.generate = generate
    try:
        inputs = processor(images=images(), regions=REGIONS)
        settings = {"max_new_tokens": 1, "return_dict_in_generate": True, "output_scores": True}
        plain = model.generate(**inputs, **settings, repetition_penalty=1.0).scores[0]
        penalised = model.generate(**inputs, **settings, repetition_penalty=3.0).scores[0]
    finally:
        model.instructblip.language_model.generate = original
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    for row, names in enumerate(REGIONS):
        prompt = [image_token] * model.config.num_query_tokens + processor.tokenizer(processor.build_instruction(names))["input_ids"]
        assert set(seen[0][row].tolist()) == set(prompt), f"row {row}"
        changed = {int(token) for token in torch.nonzero(plain[row] != penalised[row]).flatten()}
        assert changed == set(prompt), f"row {row}"
    assert len({len(ids) for ids in seen[0]}) == 1 and len(set(map(len, (processor.build_instruction(n) for n in REGIONS)))) > 1


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_penalize_instruction_false_counts_report_tokens_only_as_the_release(language_model):
    """With `penalize_instruction=False` the first report token is scored without penalising the instruction's words,
    as the release's Flan-T5 does (an encoder-decoder's penalty never sees them); by default a decoder-only language
    model's penalty counts them."""
    model, processor = build_tiny_model_and_processor(language_model, seed=2)
    model.eval()
    inputs = processor(images=images(), regions=REGIONS)
    settings = {"max_new_tokens": 3, "min_new_tokens": 3, "return_dict_in_generate": True, "output_scores": True,
                "num_beams": 1, "do_sample": False}
    plain = model.generate(**inputs, **settings, repetition_penalty=1.0)
    release = model.generate(**inputs, **settings, repetition_penalty=3.0, penalize_instruction=False)
    counted = model.generate(**inputs, **settings, repetition_penalty=3.0)

    def penalised(output):
        return {int(token) for token in torch.nonzero(output.scores[0] != plain.scores[0])[:, 1]}

    # before the first report token only T5's decoder start token has been "written" (the release penalises it too)
    start = {model.config.get_text_config().decoder_start_token_id} if language_model == "t5" else set()
    assert penalised(release) == start
    assert (penalised(counted) == start) == (language_model == "t5") and len(penalised(counted)) > 3 * (language_model != "t5")
    assert release.sequences.shape == counted.sequences.shape == (3, 3)
    if language_model != "t5":  # nothing penalised yet: the first report token is the unpenalised one
        assert torch.equal(release.sequences[:, 0], plain.sequences[:, 0])
    from transformers import pipeline

    analyze = pipeline("forgery-analysis", model=model, processor=processor)
    expected = processor.batch_decode(release.sequences, skip_special_tokens=True)[0].strip()
    result = analyze(images()[0], regions=REGIONS[0], **settings, repetition_penalty=3.0, penalize_instruction=False)
    assert result["report"].strip() == expected


def test_several_reports_per_image_are_paired_with_their_own_image(backbone):
    model, processor = backbone
    settings = {"num_beams": 3, "num_return_sequences": 3, "max_new_tokens": 6}
    pictures = images()
    sizes = [(image.height, image.width) for image in pictures]
    batch = model.generate(**processor(images=pictures, regions=REGIONS), **settings)
    assert batch.sequences.shape[0] == 9 and batch.pred_masks.shape[0] == 3
    results = processor.post_process_generation(batch, target_sizes=sizes)
    assert len(results) == 9
    for index, image in enumerate(pictures):
        single = model.generate(**processor(images=[image], regions=[REGIONS[index]]), **settings)
        expected = processor.post_process_generation(single, target_sizes=[sizes[index]])
        for result, alone in zip(results[3 * index : 3 * index + 3], expected):
            assert result["report"] == alone["report"]
            assert result["instruction_regions"] == REGIONS[index]
            assert result["mask"].shape == sizes[index] and torch.equal(result["mask"], alone["mask"])
            assert result["region_probabilities"] == pytest.approx(alone["region_probabilities"], abs=1e-5)


def test_return_dict_in_generate_with_scores_post_processes_like_a_plain_call(backbone):
    model, processor = backbone
    inputs = processor(images=images()[:2], regions=REGIONS[:2])
    plain = model.generate(**inputs, max_new_tokens=5)
    detailed = model.generate(**inputs, max_new_tokens=5, return_dict_in_generate=True, output_scores=True)
    assert torch.equal(plain.sequences, detailed.sequences)
    assert len(detailed.scores) == detailed.sequences.shape[1]
    # each score row picks the token of its column (greedy)
    for step, scores in enumerate(detailed.scores):
        assert torch.equal(scores.argmax(-1), detailed.sequences[:, step])
    plain_results = processor.post_process_generation(plain)
    detailed_results = processor.post_process_generation(detailed)
    for a, b in zip(plain_results, detailed_results):
        assert a["report"] == b["report"] and torch.equal(a["mask"], b["mask"])


def test_post_processing_uses_the_checkpoints_thresholds(tmp_path, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model.config.mask_threshold = 0.3
    model.config.region_threshold = 0.45
    model.save_pretrained(tmp_path)
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    output = loaded.generate(**processor(images=images()[:1]), max_new_tokens=2)
    assert (output.mask_threshold, output.region_threshold) == (0.3, 0.45)
    result = processor.post_process_generation(output)[0]
    assert (result["mask_threshold"], result["region_threshold"]) == (0.3, 0.45)
    probabilities = torch.sigmoid(output.pred_masks[0, 0].float())
    assert torch.equal(result["mask"], probabilities > 0.3)
    expected_regions = [name for name, p in result["region_probabilities"].items() if p > 0.45]
    assert result["regions"] == expected_regions
    assert output.predicted_regions[0].sum() == len(expected_regions)
    overridden = processor.post_process_generation(output, mask_threshold=0.9, region_threshold=0.99)[0]
    assert torch.equal(overridden["mask"], probabilities > 0.9) and overridden["mask_threshold"] == 0.9
    assert overridden["regions"] == [name for name, p in result["region_probabilities"].items() if p > 0.99]
