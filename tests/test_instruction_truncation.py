"""Issue 21: the instruction is cut to `max_instruction_length` tokens from the left, as the authors' release cuts
it (`max_txt_len=128`, `truncation_side="left"`, for Flan-T5's and the Q-Former's tokenizers alike), and how long
the longest instruction really is under Flan-T5's and bert-base-uncased's own tokenizers.

The cut is read where the model hands the ids to the language model and the Q-Former (`CapturedInputs`), for every
kind of tokenizer the package supports; the real Flan-T5 tokenizer is the fixture in `fixtures/flan_t5_tokenizer`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import random_image
from test_instruction_tokenization import (
    IMAGE_TOKEN,
    LANGUAGE_MODELS,
    NUM_QUERY_TOKENS,
    build,
    llama_tokenizer,
    region_sets,
    released_ids,
    run,
)
from tokenizers import Tokenizer
from transformers import BlipImageProcessorPil, T5TokenizerFast

from forgerytalker import REGION_NAMES, ForgeryTalkerProcessor
from forgerytalker.instruction import DFF_INSTRUCTION_WORDING, DFF_MAX_INSTRUCTION_LENGTH, InstructionPieces
from forgerytalker.regions import regions_to_labels
from forgerytalker.tiny import build_tiny_qformer_tokenizer

FLAN_T5_TOKENIZER = Path(__file__).parent / "fixtures" / "flan_t5_tokenizer" / "tokenizer.json.gz"
SHORT_LIMIT = 30
"""Shorter than the instruction naming all 21 regions under any test tokenizer."""


@pytest.mark.parametrize("path", ["generate", "forward"])
@pytest.mark.parametrize("language_model", list(LANGUAGE_MODELS))
def test_the_model_sees_the_instruction_cut_from_the_left_as_the_release_cuts_it(language_model, path):
    model, uncut = build(language_model)
    regions = [None, *region_sets()]
    lengths = [[len(tokenizer(uncut.build_instruction(names))["input_ids"]) for names in regions]
               for tokenizer in (uncut.tokenizer, uncut.qformer_tokenizer)]
    limit = max(min(counts) for counts in lengths)  # the shortest instructions are whole, the longest cut
    processor = ForgeryTalkerProcessor(
        uncut.image_processor, uncut.tokenizer, uncut.qformer_tokenizer, num_query_tokens=NUM_QUERY_TOKENS,
        image_token=IMAGE_TOKEN, max_instruction_length=limit,
    )
    inputs = processor(images=[random_image(0, 32, 32)] * (len(regions) - 1), regions=regions[1:])
    captured = run(model, inputs, path)
    plain = run(model, processor(images=[random_image(1, 32, 32)]), path, region_source="none")
    seen_language_model = plain.language_model_ids() + captured.language_model_ids()
    seen_qformer = plain.qformer + captured.qformer
    image_tokens = [processor.image_token_id] * NUM_QUERY_TOKENS
    cut = {"tokenizer": 0, "qformer_tokenizer": 0}
    for names, language_model_ids, qformer_ids in zip(regions, seen_language_model, seen_qformer):
        text = processor.build_instruction(names)
        assert language_model_ids == image_tokens + released_ids(processor.tokenizer, text, limit), names
        assert qformer_ids == released_ids(processor.qformer_tokenizer, text, limit), names
        for name in cut:
            cut[name] += len(getattr(processor, name)(text)["input_ids"]) > limit
    assert all(0 < count < len(regions) for count in cut.values()), f"cut and uncut instructions both needed: {cut}"


def test_the_limit_is_saved_with_the_processor_and_loaded_back(tmp_path):
    model, processor = build("t5", max_instruction_length=SHORT_LIMIT)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["max_instruction_length"] == SHORT_LIMIT
    loaded = ForgeryTalkerProcessor.from_pretrained(tmp_path)
    assert loaded.max_instruction_length == SHORT_LIMIT
    assert torch.equal(loaded.instruction_input_ids, processor.instruction_input_ids)
    assert torch.equal(loaded.instruction_qformer_input_ids, processor.instruction_qformer_input_ids)
    uncut = ForgeryTalkerProcessor.from_pretrained(tmp_path, max_instruction_length=None)
    every_region = [1] * len(REGION_NAMES)
    text = uncut.build_instruction(REGION_NAMES)
    assert InstructionPieces.assemble(uncut.instruction_input_ids, every_region)[NUM_QUERY_TOKENS:] == uncut.tokenizer(text)["input_ids"]
    assert len(InstructionPieces.assemble(loaded.instruction_input_ids, every_region)) == NUM_QUERY_TOKENS + SHORT_LIMIT


def test_by_default_nothing_is_cut():
    _, processor = build("llama")
    assert processor.max_instruction_length is None
    assert InstructionPieces.rows(processor.instruction_input_ids)[InstructionPieces.TRUNCATION_ROW] == []


@pytest.mark.parametrize("limit", [0, -5, 12.5, "128", True])
def test_a_limit_that_is_not_a_positive_count_is_refused(limit):
    with pytest.raises(ValueError, match="max_instruction_length"):
        build("llama", max_instruction_length=limit)


def test_a_limit_that_leaves_no_room_after_the_special_tokens_is_refused():
    """BERT adds `[CLS]` and `[SEP]`: a limit of 2 would keep no word of the instruction."""
    with pytest.raises(ValueError, match=r"max_instruction_length=2.*BertTokenizer.*2 special tokens"):
        ForgeryTalkerProcessor(
            BlipImageProcessorPil(size={"height": 32, "width": 32}), llama_tokenizer(),
            build_tiny_qformer_tokenizer(qformer_tokenizer="minilm"), num_query_tokens=NUM_QUERY_TOKENS,
            image_token=IMAGE_TOKEN, max_instruction_length=2,
        )


def flan_t5_tokenizer() -> T5TokenizerFast:
    with gzip.open(FLAN_T5_TOKENIZER, "rt", encoding="utf-8") as file:
        return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(file.read()), extra_ids=100)


def test_the_fixture_is_t5s_tokenizer():
    tokenizer = flan_t5_tokenizer()
    assert len(tokenizer) == 32100
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([3, 5, 6, 8, 32000, 32099]) == ["▁", ".", ",", "▁the", "<extra_id_99>", "<extra_id_0>"]
    # the example of T5's documentation
    assert tokenizer("translate English to German: The house is wonderful.")["input_ids"] == [13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5, 1]


@pytest.mark.parametrize(
    "settings, flan_t5_tokens, bert_tokens",
    [({**DFF_INSTRUCTION_WORDING, "mask_prompt_length": 21}, 93, 90), ({}, 68, 67)],
    ids=["released wording", "paper wording"],
)
def test_the_longest_instruction_is_shorter_than_the_releases_limit(settings, flan_t5_tokens, bert_tokens):
    """All 21 regions named, counted with Flan-T5's and bert-base-uncased's own tokenizers (`</s>`, `[CLS]` and
    `[SEP]` included, the 32 image tokens not): the release's cut to 128 never changes an instruction of its own.
    Building the processor also checks that both real tokenizers compose the instruction's pieces (and Flan-T5 the
    release's 21-token mask prompt's) into the whole texts' ids."""
    processor = ForgeryTalkerProcessor(
        BlipImageProcessorPil(), flan_t5_tokenizer(), build_tiny_qformer_tokenizer(qformer_tokenizer="minilm"), **settings
    )
    every_region = regions_to_labels(REGION_NAMES)
    text = processor.build_instruction(REGION_NAMES)
    language_model_ids = InstructionPieces.assemble(processor.instruction_input_ids, every_region)
    qformer_ids = InstructionPieces.assemble(processor.instruction_qformer_input_ids, every_region)
    assert language_model_ids == [processor.image_token_id] * processor.num_query_tokens + processor.tokenizer(text)["input_ids"]
    assert qformer_ids == processor.qformer_tokenizer(text)["input_ids"]
    assert (len(language_model_ids) - processor.num_query_tokens, len(qformer_ids)) == (flan_t5_tokens, bert_tokens)
    assert max(flan_t5_tokens, bert_tokens) < DFF_MAX_INSTRUCTION_LENGTH
