"""The region instruction (paper §4.3): its wording, its tokenised pieces and how they are assembled.

The instruction names the regions the prompter (or the caller) flags. Those regions are only known inside the
model's forward pass, so the processor tokenises the instruction once as *pieces* and the model assembles each
sample's token ids from them. Training and generation both go through `InstructionPieces.assemble`, so they see
the same tokens by construction.

The pieces are cut at the spaces of the rendered text, so that the ids of the pieces, put together, are the ids
of the whole text for every tokenizer that splits words at spaces before it tokenises them (SentencePiece /
Metaspace tokenizers like T5's and Llama's, byte-level BPE like OPT's and GPT-2's, BERT's WordPiece). For
regions `r1 ... rn` the text is

    prefix + " " + r1 + separator + " " + ... + " " + rn + suffix

and its pieces are the prefix, `" r_i" + separator` for every region but the last, and `" r_n" + suffix` for
the last. With no region the text is `prefix + " " + empty_regions_text + suffix`, or a sentence of its own
(`empty_regions_instruction`, as the authors' release words it), which is then one whole piece.
`InstructionPieces.check` (run by `ForgeryTalkerProcessor` at construction) makes sure its tokenizers really
compose this way. A processor with a `max_instruction_length` also has the model cut every assembled instruction to
that many tokens from the left, as the authors' release does (`DFF_MAX_INSTRUCTION_LENGTH`).

Two owners: `InstructionWording`, the frozen wording (adding a wording field means adding it there, and only
there), and `InstructionPieces`, which owns the row layout, the piece tensor and the assembly. Piece tensors have
shape `(batch_size, InstructionPieces.NUM_ROWS, max_piece_length)` (one identical copy per sample, so that a batch
can be sliced, collated and split like any other) and are padded with `PIECE_PADDING` (-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

from .regions import NUM_REGIONS, REGION_NAMES, regions_to_labels

REGION_SOURCES: tuple[str, ...] = ("predicted", "ground_truth", "none", "explicit")
"""Where the instruction's regions come from: the prompter's prediction, the sample's `region_labels` (the paper's
FPN-GT oracle), none (the plain instruction of its w/o-FPN ablation), or regions the caller names."""
DATASET_REGION_SOURCES: tuple[str, ...] = REGION_SOURCES[:3]
"""The sources a run over a dataset can use (the rows of the paper's Table 3); `"explicit"` needs a caller."""
MODEL_REGION_SOURCES: tuple[str, ...] = ("predicted", "none")
"""The sources where no one but the model says which regions are edited: with them, `config.empty_untouched_masks`
empties the mask of a face the model calls untouched. Regions a caller names (`"explicit"`, `"ground_truth"`) ask
where the edit lies in them, whatever the model's verdict."""

PIECE_PADDING = -1
IGNORE_INDEX = -100
"""Label value of tokens the language-model loss ignores (report padding, the instruction itself)."""

CHECKED_REGION_SETS: tuple[tuple[str, ...], ...] = (
    (),
    *((name,) for name in REGION_NAMES),
    (REGION_NAMES[0], REGION_NAMES[2]),
    REGION_NAMES,
)
"""Region sets a tokenizer is checked on (besides the plain instruction, `None`): none, each one, a pair, all 21."""


@dataclass(frozen=True)
class InstructionWording:
    """The instruction's wording; its field names are `ForgeryTalkerProcessor`'s keyword arguments and the keys of a
    saved `processor_config.json`.

    The defaults give the paper's "These facial areas may be manipulated by AI: [R]. Please describe the specific
    issues in these areas."; `DFF_WORDING` gives the authors' released one.

    Attributes:
        instruction_prefix: the text before the region list.
        region_separator: what follows every listed region but the last (then a space).
        instruction_suffix: the text after the list.
        no_region_instruction: the whole plain instruction, without regions (no prompter).
        empty_regions_text: the list when no region is named.
        empty_regions_instruction: the whole instruction when no region is named, instead of the template with
            `empty_regions_text` as its list (the authors' release has such a sentence); `None` uses the template.
    """

    instruction_prefix: str = "These facial areas may be manipulated by AI:"
    region_separator: str = ","
    instruction_suffix: str = ". Please describe the specific issues in these areas."
    no_region_instruction: str = "Is this face manipulated by AI? Please describe the specific issues."
    empty_regions_text: str = "none"
    empty_regions_instruction: str | None = None

    def __post_init__(self):
        if self.empty_regions_instruction is not None and not self.empty_regions_instruction.strip():
            raise ValueError("`empty_regions_instruction` must be a sentence or None, got an empty string")

    @classmethod
    def pop_from(cls, kwargs: dict, base: InstructionWording | dict | None = None) -> InstructionWording:
        """`base` (a wording, its `to_dict`, or the default wording) with the fields that `kwargs` names, which are
        removed from `kwargs`: how the processor reads its keyword arguments and its saved config."""
        base = cls(**base) if isinstance(base, dict) else base or cls()
        return replace(base, **{field.name: kwargs.pop(field.name) for field in fields(cls) if field.name in kwargs})

    def to_dict(self) -> dict[str, str | None]:
        """The fields as keyword arguments (`ForgeryTalkerProcessor(**wording.to_dict())`)."""
        return asdict(self)

    def render(self, region_names: Sequence[str] | None) -> str:
        """The instruction as text. `None` gives the plain instruction (no prompter); `[]` names no region, which
        renders `empty_regions_instruction` when given, else the template with `empty_regions_text` as the list."""
        if region_names is None:
            return self.no_region_instruction
        if not region_names and self.empty_regions_instruction is not None:
            return self.empty_regions_instruction
        listed = f"{self.region_separator} ".join(region_names) if region_names else self.empty_regions_text
        return f"{self.instruction_prefix} {listed}{self.instruction_suffix}"


# The authors' released DFF model words its instruction this way (`Blip2T5Instruct._get_multimodal_context`); with no
# region flagged it uses a sentence of its own, without the colon and the list.
_DFF_EMPTY_REGIONS_INSTRUCTION = (
    "The following facial areas may have been modified by AI. These areas might have been manipulated either by "
    "replacing the entire face or by altering specific facial features. Please identify these areas and describe why "
    "they appear unnatural."
)
DFF_WORDING = InstructionWording(
    instruction_prefix="The following facial areas may have been modified by AI:",
    region_separator=",",
    instruction_suffix=(
        ". These areas might have been manipulated either by replacing the entire face or by altering specific "
        "facial features. Please identify these areas and describe why they appear unnatural."
    ),
    empty_regions_instruction=_DFF_EMPTY_REGIONS_INSTRUCTION,
    # the release has no prompter-less mode; its no-region sentence is the closest plain instruction
    no_region_instruction=_DFF_EMPTY_REGIONS_INSTRUCTION,
)
"""The authors' released wording."""
DFF_MAX_INSTRUCTION_LENGTH = 128
"""The release's `max_txt_len`: both of its tokenizers (Flan-T5's for the language model, bert-base-uncased's for the
Q-Former) cut the instruction to 128 tokens, their special tokens included, from the left (`truncation_side="left"`).
Its longest instruction (all 21 regions) is 93 Flan-T5 and 90 bert-base-uncased tokens, so the cut only changes
longer wordings."""
DFF_INSTRUCTION_WORDING = {**DFF_WORDING.to_dict(), "max_instruction_length": DFF_MAX_INSTRUCTION_LENGTH}
"""`ForgeryTalkerProcessor` keyword arguments that give the authors' released instruction: its wording (`DFF_WORDING`)
and its length limit (`DFF_MAX_INSTRUCTION_LENGTH`)."""


class PieceTable:
    """Texts tokenised once as rows of pieces, from which the model assembles each sample's ids; subclasses own a
    row layout (`InstructionPieces`, `mask_prompt.MaskPromptPieces`)."""

    @staticmethod
    def rows(pieces) -> list[list[int]]:
        """One sample's pieces, a `(num_rows, max_piece_length)` tensor padded with -1, as one list of ids per row."""
        return [[int(token) for token in row if token != PIECE_PADDING] for row in pieces.tolist()]

    @staticmethod
    def tensor(rows: list[list[int]]):
        """Token rows as one `(len(rows), longest)` long tensor padded with `PIECE_PADDING`."""
        import torch  # here, so that the command line can read `REGION_SOURCES` without importing torch

        pieces = torch.full((len(rows), max(1, *(len(row) for row in rows))), PIECE_PADDING, dtype=torch.long)
        for index, row in enumerate(rows):
            pieces[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return pieces

    @staticmethod
    def tokenized_cut_from_the_left(tokenizer, text: str, max_length: int, **kwargs) -> list[int]:
        """`tokenizer(text, truncation=True, max_length=max_length, **kwargs)` with the tokenizer truncating from the
        left, as the authors' release sets its tokenizers (`truncation_side="left"`): the ids a piece table must
        assemble when it cuts its text to `max_length`."""
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            return list(tokenizer(text, truncation=True, max_length=max_length, **kwargs)["input_ids"])
        finally:
            tokenizer.truncation_side = side

    @staticmethod
    def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
        """The special tokens a tokenizer puts before and after a text (e.g. `[CLS]`/`[SEP]`, `<s>`, `</s>`)."""
        plain = tokenizer("face", add_special_tokens=False)["input_ids"]
        full = tokenizer("face", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start], full[start + len(plain) :]
        raise ValueError(f"Cannot tell which special tokens {type(tokenizer).__name__} adds around a text")


class InstructionPieces(PieceTable):
    """The instruction's piece table for one wording and length limit: its row layout, its tensor and its assembly.

    Rows, in order: `PREFIX_ROW`, `NO_REGION_ROW`, `EMPTY_REGIONS_ROW`, then `NUM_REGIONS` rows from
    `LISTED_REGION_ROW_OFFSET`, `NUM_REGIONS` rows from `LAST_REGION_ROW_OFFSET`, `EMPTY_INSTRUCTION_ROW` and
    `TRUNCATION_ROW`.

    Args:
        wording: the instruction's wording (the paper's by default).
        max_length: cut every instruction to this many tokens, the tokenizer's special tokens included and the image
            tokens not, from the left, as `tokenizer(text, truncation=True, max_length=max_length)` does with
            `truncation_side="left"` (the authors' release, `DFF_MAX_INSTRUCTION_LENGTH`); `None` never cuts.
    """

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
    TRUNCATION_ROW = EMPTY_INSTRUCTION_ROW + 1
    """Three numbers, not tokens, when the instruction is cut to `max_length`: `[kept_first, room, kept_last]`. Of the
    tokens between the first `kept_first` (image tokens and the tokenizer's leading special tokens) and the last
    `kept_last` (its trailing special tokens), only the last `room` are kept. Empty when nothing is cut."""
    NUM_ROWS = TRUNCATION_ROW + 1

    def __init__(self, wording: InstructionWording | None = None, max_length: int | None = None):
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"`max_instruction_length` must be a positive number of tokens or None, got {max_length!r}")
        self.wording = InstructionWording() if wording is None else wording
        self.max_length = max_length

    def texts(self) -> list[str]:
        """The text of every row, in row order (`NUM_ROWS` strings, without special tokens)."""
        wording = self.wording
        texts = [""] * self.NUM_ROWS
        texts[self.PREFIX_ROW] = wording.instruction_prefix
        texts[self.NO_REGION_ROW] = wording.no_region_instruction
        texts[self.EMPTY_REGIONS_ROW] = f" {wording.empty_regions_text}{wording.instruction_suffix}"
        texts[self.EMPTY_INSTRUCTION_ROW] = wording.empty_regions_instruction or ""
        for index, name in enumerate(REGION_NAMES):
            texts[self.LISTED_REGION_ROW_OFFSET + index] = f" {name}{wording.region_separator}"
            texts[self.LAST_REGION_ROW_OFFSET + index] = f" {name}{wording.instruction_suffix}"
        return texts

    def encode(self, tokenizer, image_tokens: Sequence[int] = ()):
        """One sample's pieces in `tokenizer`'s vocabulary, a `(NUM_ROWS, piece_length)` tensor; `image_tokens`
        (the language model's `num_query_tokens` image tokens) come first in every whole instruction."""
        leading, trailing = self.special_tokens_around(tokenizer)
        start = list(image_tokens) + leading
        rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in self.texts()]
        rows[self.PREFIX_ROW] = start + rows[self.PREFIX_ROW]
        whole = [self.NO_REGION_ROW]
        if self.wording.empty_regions_instruction is not None:
            whole.append(self.EMPTY_INSTRUCTION_ROW)
        for row in whole:
            rows[row] = start + rows[row] + trailing
        for row in [self.EMPTY_REGIONS_ROW, *range(self.LAST_REGION_ROW_OFFSET, self.LAST_REGION_ROW_OFFSET + NUM_REGIONS)]:
            rows[row] = rows[row] + trailing
        if self.max_length is not None:
            room = self.max_length - len(leading) - len(trailing)
            if room < 1:
                raise ValueError(
                    f"`max_instruction_length={self.max_length}` leaves no room for the instruction: "
                    f"{type(tokenizer).__name__} adds {len(leading) + len(trailing)} special tokens to it"
                )
            rows[self.TRUNCATION_ROW] = [len(start), room, len(trailing)]
        return self.tensor(rows)

    @classmethod
    def assemble(cls, pieces, flagged: Sequence[int | bool] | None) -> list[int]:
        """The token ids of one sample's instruction.

        Args:
            pieces: that sample's pieces for one tokenizer, a `(NUM_ROWS, piece_length)` tensor or its `rows`.
            flagged: 0/1 per region (`NUM_REGIONS` entries) naming the regions to list, or `None` for the plain
                instruction without regions.

        An instruction longer than the table's `max_length` loses its first words (`TRUNCATION_ROW`).
        """
        if not isinstance(pieces, list):
            pieces = cls.rows(pieces)
        ids = cls._joined(pieces, flagged)
        if not pieces[cls.TRUNCATION_ROW]:
            return ids
        kept_first, room, kept_last = pieces[cls.TRUNCATION_ROW]
        between = ids[kept_first : len(ids) - kept_last]
        return ids[:kept_first] + between[max(len(between) - room, 0) :] + ids[len(ids) - kept_last :]

    @classmethod
    def _joined(cls, pieces: list[list[int]], flagged: Sequence[int | bool] | None) -> list[int]:
        """The whole instruction's ids, before any cut."""
        if flagged is None:
            return list(pieces[cls.NO_REGION_ROW])
        named = [index for index, value in enumerate(flagged) if value]
        if not named:
            return list(pieces[cls.EMPTY_INSTRUCTION_ROW]) or pieces[cls.PREFIX_ROW] + pieces[cls.EMPTY_REGIONS_ROW]
        ids = list(pieces[cls.PREFIX_ROW])
        for index in named[:-1]:
            ids += pieces[cls.LISTED_REGION_ROW_OFFSET + index]
        return ids + pieces[cls.LAST_REGION_ROW_OFFSET + named[-1]]

    def expected_ids(self, tokenizer, regions: Sequence[str] | None, image_tokens: Sequence[int] = ()) -> list[int]:
        """The ids the model must see for `regions`, from the whole text: `image_tokens` followed by
        `tokenizer(instruction)`, as `InstructBlipProcessor` builds them, cut from the left to `max_length`."""
        text = self.wording.render(regions)
        if self.max_length is None:
            return list(image_tokens) + list(tokenizer(text)["input_ids"])
        return list(image_tokens) + self.tokenized_cut_from_the_left(tokenizer, text, self.max_length)

    def check(self, tokenizer, pieces, name: str, image_tokens: Sequence[int] = ()) -> None:
        """Raises a `ValueError` unless the assembled `pieces` (`encode(tokenizer, image_tokens)`) equal the whole
        text's ids for the plain instruction and every `CHECKED_REGION_SETS` entry; `name` names the tokenizer."""
        rows = self.rows(pieces)
        for regions in (None, *CHECKED_REGION_SETS):
            assembled = self.assemble(rows, None if regions is None else regions_to_labels(regions))
            expected = self.expected_ids(tokenizer, regions, image_tokens)
            if assembled != expected:
                raise ValueError(
                    f"The processor's {name} ({type(tokenizer).__name__}, {tokenizer.name_or_path!r}) does not "
                    f"tokenise the instruction in pieces the way it tokenises the whole text: for regions "
                    f"{None if regions is None else list(regions)} the pieces give {assembled} but "
                    f"{self.wording.render(regions)!r} gives {expected}. ForgeryTalker needs tokenizers "
                    "that split words at spaces before tokenising them (SentencePiece/Metaspace, byte-level BPE, "
                    "WordPiece)."
                )
