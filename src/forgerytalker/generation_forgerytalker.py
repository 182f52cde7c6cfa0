"""ForgeryTalker's generation settings: the release's values, the rule for report lengths, and words written once."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor

GENERATION_DEFAULTS = {
    "num_beams": 5,
    "max_new_tokens": 100,
    # the release's `min_length=5` counts the T5 decoder's start token: at least 4 report tokens before the end
    "min_new_tokens": 4,
    "repetition_penalty": 1.5,
    "length_penalty": 1.0,
    "do_sample": False,
}
"""The authors' released inference settings, the one owner of them (`scripts/evaluation/evaluate.py` with
`Blip2T5Instruct.generate`'s defaults): beam search with 5 beams, 4 to 100 report tokens, penalty 1.5. Every model's
`generation_config` starts from them; report lengths follow `generation_settings`."""


ONCE_WORDS_SETTING = "once_words_ids"
"""The `generation_config` setting (token ids, like transformers' `bad_words_ids`): groups of words a report writes at
most once, each group a list of token-id sequences (the ways one word is written). `ForgeryTalkerProcessor.
region_word_ids()` gives one group per region (its name and plural), so that no report names a region twice."""


LENGTH_SETTINGS = (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens"))
"""Pairs of transformers' whole-sequence length and new-token length settings."""


def generation_settings(generation_config: GenerationConfig, kwargs: dict) -> tuple[GenerationConfig, dict]:
    """A copy of `generation_config` updated with a `generate` call's `kwargs`; returns it and the kwargs that are
    not generation settings (the language model's inputs).

    Lengths count report tokens. `generate` returns the report alone (its `sequences` hold neither the instruction
    nor a decoder start token), so transformers' rule that `max_length` / `min_length` bound the whole returned
    sequence makes them bounds on the report, the same as `max_new_tokens` / `min_new_tokens`. Which one wins:
    a `*_new_tokens` given in the call, else a `*_length` given in the call, else the config's `*_new_tokens`, else
    the config's `*_length`. The language model then gets only `max_new_tokens` / `min_new_tokens` (its own
    `max_length` would also count the hidden image tokens and instruction). A minimum above the maximum is not an
    error: the report then has exactly the maximum's length, as in transformers (the minimum is lowered to the
    maximum, so transformers does not warn).
    """
    config = copy.deepcopy(generation_config)
    if ONCE_WORDS_SETTING in kwargs:  # not one of transformers' settings, which `update` would hand back
        setattr(config, ONCE_WORDS_SETTING, kwargs.pop(ONCE_WORDS_SETTING))
    call_lengths = {whole: kwargs.pop(whole) for whole, _ in LENGTH_SETTINGS if kwargs.get(whole) is not None}
    model_kwargs = config.update(**kwargs)
    for whole, new in LENGTH_SETTINGS:
        if whole in call_lengths and kwargs.get(new) is None:
            setattr(config, new, call_lengths[whole])
        elif getattr(config, new) is None and getattr(config, whole):
            setattr(config, new, getattr(config, whole))
        setattr(config, whole, None)
    if config.max_new_tokens is not None and (config.min_new_tokens or 0) > config.max_new_tokens:
        # the same report (exactly the maximum's length), without transformers' warning about a minimum it cannot
        # reach, which counts the hidden image and instruction tokens and so names lengths the caller never gave
        config.min_new_tokens = config.max_new_tokens
    return config, model_kwargs


class ForgeryTalkerOnceWordsLogitsProcessor(LogitsProcessor):
    """Once a word of a group has been generated, no word of that group can be completed again: the last token of
    each of its sequences is forbidden wherever the tokens before it have just been written.

    Words whose tokens begin another group's longer word (a tokenizer may write "Eye" and "Eyebrow" as `▁Eye` and
    `▁Eye bro w`) are told apart: an occurrence that the longer word's tokens continue counts for the longer word
    only, and a token that would also start an unused group's word is not forbidden.

    Args:
        once_words_ids: the groups (`ONCE_WORDS_SETTING`).
        prompt_length: leading tokens of `input_ids` that are not generated text (the prompt a decoder-only
            language model returns, a decoder's start token).
    """

    def __init__(self, once_words_ids: Sequence[Sequence[Sequence[int]]], prompt_length: int):
        self.groups = [[tuple(int(token) for token in sequence) for sequence in group if len(sequence)]
                       for group in once_words_ids]
        if not all(self.groups):
            raise ValueError(f"`{ONCE_WORDS_SETTING}` needs every group to hold at least one non-empty token sequence")
        self.prompt_length = prompt_length
        # sequence -> (group, longer sequence) of every other group's sequence that begins with it
        self.extensions = {
            sequence: [(other, longer) for other, group in enumerate(self.groups) for longer in group
                       if len(longer) > len(sequence) and longer[: len(sequence)] == sequence]
            for group in self.groups for sequence in group
        }

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, tokens in enumerate(input_ids[:, self.prompt_length :].tolist()):
            present = set(tokens)  # most words are not in the report at all: skip them without a scan
            used = {index for index, group in enumerate(self.groups)
                    if any(sequence[0] in present and self._written(sequence, tokens) for sequence in group)}
            for index in used:
                for sequence in self.groups[index]:
                    completes = len(sequence) == 1 or tuple(tokens[len(tokens) - len(sequence) + 1 :]) == sequence[:-1]
                    opens_unused = any(other not in used for other, _ in self.extensions[sequence])
                    if completes and not opens_unused:
                        scores[row, sequence[-1]] = -float("inf")
        return scores

    def _written(self, sequence: tuple[int, ...], tokens: list[int]) -> bool:
        """Whether `sequence` occurs in `tokens` as itself: not continued into a longer word of another group (nor at
        the very end, where it still may be)."""
        width = len(sequence)
        for start in range(len(tokens) - width + 1):
            if tuple(tokens[start : start + width]) != sequence:
                continue
            rest = tokens[start + width :]
            continued = any(tuple(rest[: len(longer) - width]) == longer[width:][: len(rest)]
                            for _, longer in self.extensions[sequence])
            if not continued:
                return True
        return False


def once_words_processors(generation_config: GenerationConfig, prompt_length: int) -> list[LogitsProcessor]:
    """Removes `ONCE_WORDS_SETTING` from `generation_config` (a copy, from `generation_settings`: the language
    model's `generate` does not know it) and returns the logits processor it asks for, or none."""
    once_words_ids = getattr(generation_config, ONCE_WORDS_SETTING, None)
    if hasattr(generation_config, ONCE_WORDS_SETTING):
        delattr(generation_config, ONCE_WORDS_SETTING)
    return [ForgeryTalkerOnceWordsLogitsProcessor(once_words_ids, prompt_length)] if once_words_ids else []


__all__ = [
    "GENERATION_DEFAULTS",
    "LENGTH_SETTINGS",
    "ONCE_WORDS_SETTING",
    "ForgeryTalkerOnceWordsLogitsProcessor",
    "generation_settings",
    "once_words_processors",
]
