"""The region instruction (paper §4.3): its wording, its tokenised pieces and how they are assembled.

The instruction names the regions the prompter (or the caller) flags. Those regions are only known inside the
model's forward pass, so the processor tokenises the instruction once as *pieces* and the model assembles each
sample's token ids from them. Training and generation both go through `assemble_instruction_ids`, so they see
the same tokens by construction.

The pieces are cut at the spaces of the rendered text, so that the ids of the pieces, put together, are the ids
of the whole text for every tokenizer that splits words at spaces before it tokenises them (SentencePiece /
Metaspace tokenizers like T5's and Llama's, byte-level BPE like OPT's and GPT-2's, BERT's WordPiece). For
regions `r1 ... rn` the text is

    prefix + " " + r1 + separator + " " + ... + " " + rn + suffix

and its pieces are the prefix, `" r_i" + separator` for every region but the last, and `" r_n" + suffix` for
the last. With no region the text is `prefix + " " + empty_regions_text + suffix`, or a sentence of its own
(`empty_regions_instruction`, as the authors' release words it), which is then one whole piece.
`ForgeryTalkerProcessor` checks at construction that its tokenizers really compose this way.

Piece tensors have shape `(batch_size, NUM_PIECES, max_piece_length)` (one identical copy per sample, so that
a batch can be sliced, collated and split like any other) and are padded with `PIECE_PADDING` (-1). Rows are
laid out as the `*_ROW` constants say.
"""

from __future__ import annotations

from collections.abc import Sequence

from .regions import NUM_REGIONS, REGION_NAMES

REGION_SOURCES: tuple[str, ...] = ("predicted", "ground_truth", "none", "explicit")
"""Where the instruction's regions come from: the prompter's prediction, the sample's `region_labels` (the paper's
FPN-GT oracle), none (the plain instruction of its w/o-FPN ablation), or regions the caller names."""
DATASET_REGION_SOURCES: tuple[str, ...] = REGION_SOURCES[:3]
"""The sources a run over a dataset can use (the rows of the paper's Table 3); `"explicit"` needs a caller."""

DEFAULT_INSTRUCTION_PREFIX = "These facial areas may be manipulated by AI:"
DEFAULT_INSTRUCTION_SUFFIX = ". Please describe the specific issues in these areas."
DEFAULT_REGION_SEPARATOR = ","
DEFAULT_NO_REGION_INSTRUCTION = "Is this face manipulated by AI? Please describe the specific issues."
DEFAULT_EMPTY_REGIONS_TEXT = "none"

# The authors' released DFF model words its instruction this way (`Blip2T5Instruct._get_multimodal_context`); with no
# region flagged it uses a sentence of its own, without the colon and the list.
DFF_INSTRUCTION_PREFIX = "The following facial areas may have been modified by AI:"
DFF_INSTRUCTION_SUFFIX = (
    ". These areas might have been manipulated either by replacing the entire face or by altering specific facial "
    "features. Please identify these areas and describe why they appear unnatural."
)
DFF_EMPTY_REGIONS_INSTRUCTION = (
    "The following facial areas may have been modified by AI. These areas might have been manipulated either by "
    "replacing the entire face or by altering specific facial features. Please identify these areas and describe why "
    "they appear unnatural."
)
DFF_INSTRUCTION_WORDING = {
    "instruction_prefix": DFF_INSTRUCTION_PREFIX,
    "region_separator": ",",
    "instruction_suffix": DFF_INSTRUCTION_SUFFIX,
    "empty_regions_instruction": DFF_EMPTY_REGIONS_INSTRUCTION,
    # the release has no prompter-less mode; its no-region sentence is the closest plain instruction
    "no_region_instruction": DFF_EMPTY_REGIONS_INSTRUCTION,
}
"""`ForgeryTalkerProcessor` keyword arguments that give the authors' released wording."""

PREFIX_ROW = 0
"""The prefix, after the image tokens and the tokenizer's leading special tokens."""
NO_REGION_ROW = 1
"""The whole plain instruction (no prompter), with image tokens and leading and trailing special tokens."""
EMPTY_REGIONS_ROW = 2
"""`" " + empty_regions_text + suffix` and the trailing special tokens: the list when no region is named."""
LISTED_REGION_ROW_OFFSET = 3
"""Row `LISTED_REGION_ROW_OFFSET + i`: `" " + REGION_NAMES[i] + separator`, region i followed by another."""
LAST_REGION_ROW_OFFSET = LISTED_REGION_ROW_OFFSET + NUM_REGIONS
"""Row `LAST_REGION_ROW_OFFSET + i`: `" " + REGION_NAMES[i] + suffix` and the trailing special tokens."""
EMPTY_INSTRUCTION_ROW = LAST_REGION_ROW_OFFSET + NUM_REGIONS
"""The whole instruction for an empty region list when the wording has a sentence of its own for it
(`empty_regions_instruction`), with image tokens and leading and trailing special tokens; otherwise empty."""
NUM_PIECES = EMPTY_INSTRUCTION_ROW + 1
PIECE_PADDING = -1
IGNORE_INDEX = -100
"""Label value of tokens the language-model loss ignores (report padding, the instruction itself)."""


def render_instruction(
    region_names: Sequence[str] | None,
    prefix: str = DEFAULT_INSTRUCTION_PREFIX,
    separator: str = DEFAULT_REGION_SEPARATOR,
    suffix: str = DEFAULT_INSTRUCTION_SUFFIX,
    no_region_instruction: str = DEFAULT_NO_REGION_INSTRUCTION,
    empty_regions_text: str = DEFAULT_EMPTY_REGIONS_TEXT,
    empty_regions_instruction: str | None = None,
) -> str:
    """The instruction as text. `None` gives the plain instruction (no prompter); `[]` names no region, which
    renders `empty_regions_instruction` when given, else the template with `empty_regions_text` as the list.

    The default wording renders the paper's template: "These facial areas may be manipulated by AI: [R].
    Please describe the specific issues in these areas."
    """
    if region_names is None:
        return no_region_instruction
    if not region_names and empty_regions_instruction is not None:
        return empty_regions_instruction
    listed = f"{separator} ".join(region_names) if region_names else empty_regions_text
    return f"{prefix} {listed}{suffix}"


def instruction_piece_texts(
    prefix: str = DEFAULT_INSTRUCTION_PREFIX,
    separator: str = DEFAULT_REGION_SEPARATOR,
    suffix: str = DEFAULT_INSTRUCTION_SUFFIX,
    no_region_instruction: str = DEFAULT_NO_REGION_INSTRUCTION,
    empty_regions_text: str = DEFAULT_EMPTY_REGIONS_TEXT,
    empty_regions_instruction: str | None = None,
) -> list[str]:
    """The text of every piece, in row order (`NUM_PIECES` strings; special tokens are added by the processor)."""
    texts = [""] * NUM_PIECES
    texts[PREFIX_ROW] = prefix
    texts[NO_REGION_ROW] = no_region_instruction
    texts[EMPTY_REGIONS_ROW] = f" {empty_regions_text}{suffix}"
    texts[EMPTY_INSTRUCTION_ROW] = empty_regions_instruction or ""
    for index, name in enumerate(REGION_NAMES):
        texts[LISTED_REGION_ROW_OFFSET + index] = f" {name}{separator}"
        texts[LAST_REGION_ROW_OFFSET + index] = f" {name}{suffix}"
    return texts


def piece_rows(pieces) -> list[list[int]]:
    """One sample's pieces, `(NUM_PIECES, max_piece_length)` padded with -1, as one list of ids per piece."""
    return [[int(token) for token in row if token != PIECE_PADDING] for row in pieces.tolist()]


def assemble_instruction_ids(pieces: list[list[int]], flagged: Sequence[int | bool] | None) -> list[int]:
    """The token ids of one sample's instruction.

    Args:
        pieces: that sample's unpadded pieces for one tokenizer (`piece_rows`).
        flagged: 0/1 per region (`NUM_REGIONS` entries) naming the regions to list, or `None` for the plain
            instruction without regions.
    """
    if flagged is None:
        return list(pieces[NO_REGION_ROW])
    named = [index for index, value in enumerate(flagged) if value]
    if not named:
        return list(pieces[EMPTY_INSTRUCTION_ROW]) or pieces[PREFIX_ROW] + pieces[EMPTY_REGIONS_ROW]
    ids = list(pieces[PREFIX_ROW])
    for index in named[:-1]:
        ids += pieces[LISTED_REGION_ROW_OFFSET + index]
    return ids + pieces[LAST_REGION_ROW_OFFSET + named[-1]]
