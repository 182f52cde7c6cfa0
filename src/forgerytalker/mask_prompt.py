"""The region-name prompt of the `"dff"` mask decoder: its tokenised pieces and how they are assembled.

The authors' released DFF model prompts its mask decoder with the names of the regions named in the instruction,
joined by spaces (`"eye nose"`, `""` when none), tokenised by the language model's tokenizer to a fixed length:
cut from the left when longer, the tokenizer's special tokens kept, right-padded. As for the instruction
(`forgerytalker.instruction`), the regions are only known inside the model's forward pass, so the processor
tokenises the pieces once and the model assembles each sample's ids with `MaskPromptPieces.assemble`.

A region's piece is its name as the first word (`name`) or after another one (`" " + name`), so the pieces put
together are the whole text's ids for tokenizers that split words at spaces; `MaskPromptPieces.check` (run by
`ForgeryTalkerProcessor` when it is built with a `mask_prompt_length`) makes sure of it, truncation included.
Piece tensors have shape `(batch_size, MaskPromptPieces.NUM_ROWS, max_piece_length)`, padded with
`instruction.PIECE_PADDING`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .instruction import CHECKED_REGION_SETS, PieceTable
from .regions import NUM_REGIONS, REGION_NAMES, regions_to_labels


def render_mask_prompt(region_names: Sequence[str] | None) -> str:
    """The mask prompt as text: the names joined by spaces (`None`, the plain instruction, names none)."""
    return " ".join(region_names or ())


class MaskPromptPieces(PieceTable):
    """The mask prompt's piece table at one prompt length: its row layout, its tensor and its assembly.

    Rows, in order: `LEADING_ROW`, `TRAILING_ROW`, `PADDING_ROW`, then `NUM_REGIONS` rows from
    `FIRST_NAME_ROW_OFFSET` and `NUM_REGIONS` rows from `LATER_NAME_ROW_OFFSET`.
    """

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
    NUM_ROWS = LATER_NAME_ROW_OFFSET + NUM_REGIONS

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"`mask_prompt_length` must be at least 1, got {length}")
        self.length = length

    @classmethod
    def name_texts(cls) -> list[str]:
        """The text of every name row, in row order from `FIRST_NAME_ROW_OFFSET` (`2 * NUM_REGIONS` strings)."""
        return [*REGION_NAMES, *(f" {name}" for name in REGION_NAMES)]

    def encode(self, tokenizer):
        """One sample's pieces in `tokenizer`'s vocabulary, a `(NUM_ROWS, piece_length)` tensor."""
        if tokenizer.pad_token_id is None:
            raise ValueError(f"The mask prompt is right-padded, but the tokenizer {tokenizer.name_or_path!r} has no pad token")
        rows = [[]] * self.NUM_ROWS
        rows[self.LEADING_ROW], rows[self.TRAILING_ROW] = self.special_tokens_around(tokenizer)
        rows[self.PADDING_ROW] = [tokenizer.pad_token_id]
        for offset, text in enumerate(self.name_texts()):
            rows[self.FIRST_NAME_ROW_OFFSET + offset] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tensor(rows)

    def assemble(self, pieces, flagged: Sequence[int | bool] | None) -> list[int]:
        """The `length` token ids of one sample's mask prompt.

        Args:
            pieces: that sample's pieces, a `(NUM_ROWS, piece_length)` tensor or its `rows`.
            flagged: 0/1 per region (`NUM_REGIONS` entries) naming the regions, or `None` for none. Longer prompts
                lose their first tokens, shorter ones are right-padded.
        """
        if not isinstance(pieces, list):
            pieces = self.rows(pieces)
        leading, trailing, padding = pieces[self.LEADING_ROW], pieces[self.TRAILING_ROW], pieces[self.PADDING_ROW]
        named = [] if flagged is None else [index for index, value in enumerate(flagged) if value]
        content = []
        for position, index in enumerate(named):
            content += pieces[(self.LATER_NAME_ROW_OFFSET if position else self.FIRST_NAME_ROW_OFFSET) + index]
        room = max(self.length - len(leading) - len(trailing), 0)
        ids = (leading + content[max(len(content) - room, 0) :] + trailing)[: self.length]
        return ids + padding * (self.length - len(ids))

    def expected_ids(self, tokenizer, regions: Sequence[str] | None) -> list[int]:
        """The ids the model must see for `regions`, from the whole text as the authors' release makes them:
        `tokenizer(" ".join(regions), padding="max_length", truncation=True, max_length=length)` with the
        tokenizer truncating from the left."""
        return self.tokenized_cut_from_the_left(tokenizer, render_mask_prompt(regions), self.length, padding="max_length")

    def check(self, tokenizer, pieces) -> None:
        """Raises a `ValueError` unless the assembled `pieces` (`encode(tokenizer)`) equal the whole text's ids for
        every checked region set (the instruction's `CHECKED_REGION_SETS`, all 21 names being longer than the
        prompt)."""
        rows = self.rows(pieces)
        for regions in (None, *CHECKED_REGION_SETS):
            assembled = self.assemble(rows, None if regions is None else regions_to_labels(regions))
            expected = self.expected_ids(tokenizer, regions)
            if assembled != expected:
                raise ValueError(
                    f"The processor's tokenizer ({type(tokenizer).__name__}, {tokenizer.name_or_path!r}) "
                    f"does not tokenise the mask prompt in pieces the way it tokenises the whole text: for regions "
                    f"{None if regions is None else list(regions)} the pieces give {assembled} but "
                    f"{render_mask_prompt(regions)!r} gives {expected}"
                )


__all__ = ["MaskPromptPieces", "render_mask_prompt"]
