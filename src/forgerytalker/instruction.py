"""The region instruction (paper §4.3): its wording, its tokenised pieces and how they are assembled.

The instruction names the regions the prompter (or the caller) flags. Because those regions are only known
inside the model's forward pass, the processor tokenises the instruction once as *pieces* (prefix, separator,
suffix, each region name, ...) and the model assembles each sample's token ids from the pieces. Training and
generation both go through `assemble_instruction_ids`, so they see the same tokens by construction.

Piece tensors have shape `(NUM_FIXED_PIECES + num_regions, max_piece_length)` and are padded with
`PIECE_PADDING` (-1). Rows are laid out as the `*_ROW` constants say; region `i` is row `REGION_ROW_OFFSET + i`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_INSTRUCTION_PREFIX = "These facial areas may be manipulated by AI:"
DEFAULT_INSTRUCTION_SUFFIX = ". Please describe the specific issues in these areas."
DEFAULT_REGION_SEPARATOR = ","
DEFAULT_NO_REGION_INSTRUCTION = "Is this face manipulated by AI? Please describe the specific issues."
DEFAULT_EMPTY_REGIONS_TEXT = "none"

PREFIX_ROW = 0
SEPARATOR_ROW = 1
SUFFIX_ROW = 2
NO_REGION_ROW = 3
EMPTY_REGIONS_ROW = 4
REGION_ROW_OFFSET = 5
PIECE_PADDING = -1
# Label value of tokens the language-model loss ignores (report padding, the instruction itself).
IGNORE_INDEX = -100


def render_instruction(
    region_names: Sequence[str] | None,
    prefix: str = DEFAULT_INSTRUCTION_PREFIX,
    separator: str = DEFAULT_REGION_SEPARATOR,
    suffix: str = DEFAULT_INSTRUCTION_SUFFIX,
    no_region_instruction: str = DEFAULT_NO_REGION_INSTRUCTION,
    empty_regions_text: str = DEFAULT_EMPTY_REGIONS_TEXT,
) -> str:
    """The instruction as text. `None` gives the plain instruction (no prompter); `[]` names no region.

    The default wording renders the paper's template: "These facial areas may be manipulated by AI: [R].
    Please describe the specific issues in these areas."
    """
    if region_names is None:
        return no_region_instruction
    listed = f"{separator} ".join(region_names) if region_names else empty_regions_text
    return f"{prefix} {listed}{suffix}"


def pieces_to_lists(pieces: torch.Tensor) -> list[list[int]]:
    """Unpads a piece tensor `(num_pieces, max_piece_length)` into one list of token ids per piece."""
    return [[int(token) for token in row if token != PIECE_PADDING] for row in pieces.tolist()]


def assemble_instruction_ids(pieces: list[list[int]], regions: torch.Tensor | None, batch_size: int) -> list[list[int]]:
    """Token ids of each sample's instruction.

    Args:
        pieces: the unpadded pieces of one tokenizer (see `pieces_to_lists`); the prefix and the no-region
            rows carry the tokenizer's leading special tokens, the suffix and no-region rows its trailing ones.
        regions: `(batch_size, num_regions)` 0/1 tensor of the regions to name, or `None` for the plain
            instruction of every sample.
        batch_size: number of samples (used when `regions` is `None`).
    """
    if regions is None:
        return [list(pieces[NO_REGION_ROW]) for _ in range(batch_size)]
    assembled = []
    for row in regions.bool().tolist():
        named = [index for index, flagged in enumerate(row) if flagged]
        listed: list[int] = []
        for position, index in enumerate(named):
            if position:
                listed += pieces[SEPARATOR_ROW]
            listed += pieces[REGION_ROW_OFFSET + index]
        if not named:
            listed = list(pieces[EMPTY_REGIONS_ROW])
        assembled.append(pieces[PREFIX_ROW] + listed + pieces[SUFFIX_ROW])
    return assembled
