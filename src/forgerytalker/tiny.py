"""Tiny ForgeryTalker models and tokenizers built offline from a local vocabulary (tests, demos, CI).

Nothing here touches the model hub: the language model's tokenizer is a word-level `tokenizers` model and
the Q-Former's a BERT WordPiece tokenizer, both over a vocabulary of the instruction, the region names and
common report words (plus any texts passed in, e.g. a dataset's reports).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizerFast, BlipImageProcessorPil, PreTrainedTokenizerFast

from .configuration_forgerytalker import ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
from .instruction import (
    DEFAULT_EMPTY_REGIONS_TEXT,
    DEFAULT_INSTRUCTION_PREFIX,
    DEFAULT_INSTRUCTION_SUFFIX,
    DEFAULT_NO_REGION_INSTRUCTION,
)
from .modeling_forgerytalker import ForgeryTalkerForConditionalGeneration
from .processing_forgerytalker import ForgeryTalkerProcessor
from .regions import REGION_SYNONYMS

LANGUAGE_MODELS = ("llama", "opt", "t5")
IMAGE_TOKEN = "<image>"
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


def tiny_vocabulary(texts: Iterable[str] = ()) -> list[str]:
    """Sorted lower-case words and punctuation of the instruction, region names, report words and `texts`."""
    words = set(REPORT_WORDS)
    for synonyms in REGION_SYNONYMS.values():
        words.update(synonyms)
    fixed = (DEFAULT_INSTRUCTION_PREFIX, DEFAULT_INSTRUCTION_SUFFIX, DEFAULT_NO_REGION_INSTRUCTION, DEFAULT_EMPTY_REGIONS_TEXT, ",")
    for text in (*fixed, *texts):
        words.update(_WORD.findall(text.lower()))
    return sorted(words)


def build_tiny_language_tokenizer(vocabulary: list[str], language_model: str = "llama") -> PreTrainedTokenizerFast:
    """A word-level tokenizer with `<pad> <unk> <s> </s> <image>`; adds `<s>` in front (decoder-only LMs) or
    `</s>` at the end (T5), as those models' own tokenizers do."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN]
    vocab = {token: index for index, token in enumerate(specials + [w for w in vocabulary if w not in specials])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    if language_model == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    else:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_tiny_qformer_tokenizer(vocabulary: list[str]) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer (`[CLS] text [SEP]`) over `vocabulary`."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + vocabulary
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)


def tiny_config(
    vocab_size: int,
    qformer_vocab_size: int,
    image_token_index: int,
    language_model: str = "llama",
    image_size: int = 32,
    hidden_size: int = 32,
    num_query_tokens: int = 4,
    **config_kwargs,
) -> ForgeryTalkerConfig:
    """A ForgeryTalker config with every part a couple of layers of width `hidden_size`."""
    if language_model not in LANGUAGE_MODELS:
        raise ValueError(f"`language_model` must be one of {LANGUAGE_MODELS}, got {language_model!r}")
    heads = 4
    text_common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    text_configs = {
        "llama": dict(model_type="llama", hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False),
        "opt": dict(model_type="opt", hidden_size=hidden_size, ffn_dim=2 * hidden_size, num_hidden_layers=2,
                    num_attention_heads=heads, word_embed_proj_dim=hidden_size, max_position_embeddings=256),
        "t5": dict(model_type="t5", d_model=hidden_size, d_kv=hidden_size // heads, d_ff=2 * hidden_size, num_layers=2,
                   num_decoder_layers=2, num_heads=heads, decoder_start_token_id=0, relative_attention_num_buckets=8),
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
            image_token_index=image_token_index,
        ),
        prompter_config=tiny_prompter_config(image_size, hidden_size),
        mask_decoder_config=dict(hidden_size=hidden_size, mlp_dim=2 * hidden_size, num_hidden_layers=2,
                                 num_attention_heads=heads, iou_head_hidden_dim=hidden_size),
        **config_kwargs,
    )


def tiny_prompter_config(image_size: int = 32, hidden_size: int = 32) -> ForgeryTalkerPrompterConfig:
    """The tiny models' prompter: three ViT blocks of width `hidden_size` on a 4×4 patch grid (stage-1 CPU runs)."""
    return ForgeryTalkerPrompterConfig(image_size=image_size, patch_size=image_size // 4, hidden_size=hidden_size,
                                       num_hidden_layers=3, num_attention_heads=4, intermediate_size=2 * hidden_size)


def build_tiny_processor(
    language_model: str = "llama", image_size: int = 32, num_query_tokens: int = 4, texts: Iterable[str] = ()
) -> ForgeryTalkerProcessor:
    """A processor with tiny offline tokenizers whose vocabulary covers `texts` (e.g. a dataset's reports)."""
    vocabulary = tiny_vocabulary(texts)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return ForgeryTalkerProcessor(
        image_processor,
        build_tiny_language_tokenizer(vocabulary, language_model),
        build_tiny_qformer_tokenizer(vocabulary),
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
    **config_kwargs,
):
    """A randomly initialised tiny `ForgeryTalkerForConditionalGeneration` and its matching processor."""
    processor = build_tiny_processor(language_model, image_size, num_query_tokens, texts)
    config = tiny_config(
        vocab_size=len(processor.tokenizer),
        qformer_vocab_size=len(processor.qformer_tokenizer),
        image_token_index=processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        language_model=language_model,
        image_size=image_size,
        hidden_size=hidden_size,
        num_query_tokens=num_query_tokens,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = ForgeryTalkerForConditionalGeneration(config)
    return model, processor


__all__ = [
    "build_tiny_language_tokenizer",
    "build_tiny_model_and_processor",
    "build_tiny_processor",
    "build_tiny_qformer_tokenizer",
    "tiny_config",
    "tiny_prompter_config",
    "tiny_vocabulary",
]
