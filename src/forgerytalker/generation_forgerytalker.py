"""ForgeryTalker's generation settings: the release's values and the rule for report lengths."""

from __future__ import annotations

import copy

from transformers import GenerationConfig

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


__all__ = ["GENERATION_DEFAULTS", "LENGTH_SETTINGS", "generation_settings"]
