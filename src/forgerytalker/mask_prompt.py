"""The region-name prompt of the `"dff"` mask decoder: its tokenised pieces and how they are assembled.

The authors' released DFF model prompts its mask decoder with the names of the regions named in the instruction,
joined by spaces (`"eye nose"`, `""` when none), tokenised by the language model's tokenizer to a fixed length:
cut from the left when longer, the tokenizer's special tokens kept, right-padded. As for the instruction
(`forgerytalker.instruction`), the regions are only known inside the model's forward pass, so the processor
tokenises the pieces once and the model assembles each sample's ids with `assemble_mask_prompt_ids`.

A region's piece is its name as the first word (`name`) or after another one (`" " + name`), so the pieces put
together are the whole text's ids for tokenizers that split words at spaces; `ForgeryTalkerProcessor` checks
this, truncation included, when it is built with a `mask_prompt_length`. Piece tensors have shape
`(batch_size, NUM_MASK_PROMPT_PIECES, max_piece_length)`, padded with `instruction.PIECE_PADDING`, rows laid out as the
`*_ROW` constants say.
"""

from __future__ import annotations

from collections.abc import Sequence

from .regions import NUM_REGIONS, REGION_NAMES

LEADING_ROW = 0
"""The special tokens the tokenizer puts before a text (none for T5)."""
TRAILING_ROW = 1
"""The special tokens the tokenizer puts after a text (`</s>` for T5)."""
PADDING_ROW = 2
"""One token: the tokenizer's padding id."""
FIRST_NAME_ROW_OFFSET = 3
"""Row `FIRST_NAME_ROW_OFFSET + i`: `REGION_NAMES[i]` as the prompt's first word."""
LATER_NAME_ROW_OFFSET = FIRST_NAME_ROW_OFFSET + NUM_REGIONS
"""Row `LATER_NAME_ROW_OFFSET + i`: `" " + REGION_NAMES[i]`, a name after another one."""
NUM_MASK_PROMPT_PIECES = LATER_NAME_ROW_OFFSET + NUM_REGIONS


def render_mask_prompt(region_names: Sequence[str] | None) -> str:
    """The mask prompt as text: the names joined by spaces (`None`, the plain instruction, names none)."""
    return " ".join(region_names or ())


def mask_prompt_name_texts() -> list[str]:
    """The text of every name row, in row order from `FIRST_NAME_ROW_OFFSET` (`2 * NUM_REGIONS` strings)."""
    return [*REGION_NAMES, *(f" {name}" for name in REGION_NAMES)]


def assemble_mask_prompt_ids(pieces: list[list[int]], flagged: Sequence[int | bool] | None, length: int) -> list[int]:
    """The `length` token ids of one sample's mask prompt.

    Args:
        pieces: that sample's unpadded pieces (`instruction.piece_rows`).
        flagged: 0/1 per region (`NUM_REGIONS` entries) naming the regions, or `None` for none.
        length: the prompt's length; longer prompts lose their first tokens, shorter ones are right-padded.
    """
    leading, trailing, padding = pieces[LEADING_ROW], pieces[TRAILING_ROW], pieces[PADDING_ROW]
    named = [] if flagged is None else [index for index, value in enumerate(flagged) if value]
    content = []
    for position, index in enumerate(named):
        content += pieces[(LATER_NAME_ROW_OFFSET if position else FIRST_NAME_ROW_OFFSET) + index]
    room = max(length - len(leading) - len(trailing), 0)
    ids = (leading + content[max(len(content) - room, 0) :] + trailing)[:length]
    return ids + padding * (length - len(ids))


__all__ = [
    "NUM_MASK_PROMPT_PIECES",
    "assemble_mask_prompt_ids",
    "mask_prompt_name_texts",
    "render_mask_prompt",
]
