"""Processor for ForgeryTalker: images, instruction, reports, masks and region labels in; readable results out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from .configuration_forgerytalker import DEFAULT_MASK_THRESHOLD
from .instruction import (
    DEFAULT_EMPTY_REGIONS_TEXT,
    DEFAULT_INSTRUCTION_PREFIX,
    DEFAULT_INSTRUCTION_SUFFIX,
    DEFAULT_NO_REGION_INSTRUCTION,
    DEFAULT_REGION_SEPARATOR,
    IGNORE_INDEX,
    PIECE_PADDING,
    render_instruction,
)
from .modeling_forgerytalker import resolve_local_path
from .regions import REGION_NAMES, labels_to_regions, regions_to_labels


class ForgeryTalkerProcessor(ProcessorMixin):
    r"""
    Owns what turns a face photo into model inputs and model outputs into answers: the image processor, the
    language model's tokenizer, the Q-Former's tokenizer and the region instruction.

    Args:
        image_processor ([`BlipImageProcessor`]):
            Resizes and normalises images for the vision encoder (and the prompter).
        tokenizer ([`PreTrainedTokenizerBase`]):
            The language model's tokenizer; it must know `image_token`.
        qformer_tokenizer ([`PreTrainedTokenizerBase`]):
            The Q-Former's (BERT-style) tokenizer.
        num_query_tokens (`int`, *optional*, defaults to 32):
            How many `image_token`s precede the instruction; must equal the model's `num_query_tokens`.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder the Q-Former's outputs replace in the language model's input.
        instruction_prefix, region_separator, instruction_suffix, no_region_instruction, empty_regions_text (`str`, *optional*):
            The instruction's wording (see `forgerytalker.instruction.render_instruction`). The defaults give the
            paper's "These facial areas may be manipulated by AI: [R]. Please describe the specific issues in
            these areas."
        max_report_length (`int`, *optional*, defaults to 160):
            Report tokens kept for training (longer reports are truncated; the EOS token is always kept).
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        qformer_tokenizer,
        num_query_tokens: int = 32,
        image_token: str = "<image>",
        instruction_prefix: str = DEFAULT_INSTRUCTION_PREFIX,
        region_separator: str = DEFAULT_REGION_SEPARATOR,
        instruction_suffix: str = DEFAULT_INSTRUCTION_SUFFIX,
        no_region_instruction: str = DEFAULT_NO_REGION_INSTRUCTION,
        empty_regions_text: str = DEFAULT_EMPTY_REGIONS_TEXT,
        max_report_length: int = 160,
        **kwargs,
    ):
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([image_token], special_tokens=True)
        self.num_query_tokens = num_query_tokens
        self.image_token = image_token
        self.instruction_prefix = instruction_prefix
        self.region_separator = region_separator
        self.instruction_suffix = instruction_suffix
        self.no_region_instruction = no_region_instruction
        self.empty_regions_text = empty_regions_text
        self.max_report_length = max_report_length
        super().__init__(image_processor, tokenizer, qformer_tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        return super().from_pretrained(resolve_local_path(pretrained_model_name_or_path), *args, **kwargs)

    @classmethod
    def from_instructblip(cls, instructblip_name_or_path: str | os.PathLike, **kwargs) -> ForgeryTalkerProcessor:
        """Wraps the image processor and both tokenizers of an InstructBLIP processor folder."""
        from transformers import InstructBlipProcessor

        source = InstructBlipProcessor.from_pretrained(resolve_local_path(instructblip_name_or_path, "instructblip_name_or_path"))
        kwargs.setdefault("num_query_tokens", source.num_query_tokens)
        kwargs.setdefault("image_token", str(getattr(source.tokenizer, "image_token", "<image>")))
        return cls(source.image_processor, source.tokenizer, source.qformer_tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "instruction_input_ids", "instruction_qformer_input_ids"]

    # -- the instruction -----------------------------------------------------------------------------------

    def build_instruction(self, regions: Sequence[str] | None) -> str:
        """The instruction text for `regions` (`None`: the plain instruction without regions)."""
        return render_instruction(
            regions,
            self.instruction_prefix,
            self.region_separator,
            self.instruction_suffix,
            self.no_region_instruction,
            self.empty_regions_text,
        )

    @cached_property
    def instruction_input_ids(self) -> torch.Tensor:
        """The instruction's pieces in the language model's vocabulary, `(num_pieces, piece_length)`."""
        image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return self._instruction_pieces(self.tokenizer, [image_token_id] * self.num_query_tokens)

    @cached_property
    def instruction_qformer_input_ids(self) -> torch.Tensor:
        """The instruction's pieces in the Q-Former's vocabulary, `(num_pieces, piece_length)`."""
        return self._instruction_pieces(self.qformer_tokenizer, [])

    def _instruction_pieces(self, tokenizer, image_tokens: list[int]) -> torch.Tensor:
        leading, trailing = _special_tokens_around(tokenizer)

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        rows = [
            image_tokens + leading + encode(self.instruction_prefix),
            encode(self.region_separator),
            encode(self.instruction_suffix) + trailing,
            image_tokens + leading + encode(self.no_region_instruction) + trailing,
            encode(" " + self.empty_regions_text),
        ] + [encode(" " + name) for name in REGION_NAMES]
        pieces = torch.full((len(rows), max(len(row) for row in rows)), PIECE_PADDING, dtype=torch.long)
        for index, row in enumerate(rows):
            pieces[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return pieces

    # -- inputs --------------------------------------------------------------------------------------------

    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        regions: Sequence[Sequence[str]] | None = None,
        region_labels=None,
        masks=None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        Prepares a batch for [`ForgeryTalkerForConditionalGeneration`].

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The face images, of any sizes.
            text (`str` or `list[str]`, *optional*):
                Reference reports (training targets), one per image; they become `labels`.
            regions (`list[list[str]]`, *optional*):
                Regions to name in each image's instruction instead of the prompter's prediction (a user
                correcting the model); they become `instruction_regions`.
            region_labels (`list[list[str]]` or a `(batch, 21)` 0/1 array, *optional*):
                Ground-truth regions, for the prompter's loss and the `"ground_truth"` region source.
            masks (`PIL.Image.Image`, `np.ndarray` or a list of them, *optional*):
                Ground-truth masks (pixel > 0 means forged), resized with nearest neighbour to the model input.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch, 3, size, size)`, the instruction pieces, and
            `labels` `(batch, length)`, `instruction_regions` `(batch, 21)`, `region_labels` `(batch, 21)`,
            `masks` `(batch, 1, size, size)` for the arguments given.
        """
        if images is None:
            raise ValueError("`images` is required: ForgeryTalker analyses face images")
        images = _as_list(images)
        count = len(images)
        data = {
            "pixel_values": self.image_processor(images, return_tensors="pt", **kwargs)["pixel_values"],
            "instruction_input_ids": self.instruction_input_ids,
            "instruction_qformer_input_ids": self.instruction_qformer_input_ids,
        }
        if text is not None:
            data["labels"] = self._encode_reports(_matching(text, count, "text", str))
        if regions is not None:
            data["instruction_regions"] = torch.tensor(
                [regions_to_labels(names) for names in _matching(regions, count, "regions")], dtype=torch.long
            )
        if region_labels is not None:
            data["region_labels"] = _region_label_tensor(_matching(region_labels, count, "region_labels"))
        if masks is not None:
            size = data["pixel_values"].shape[-2:]
            data["masks"] = torch.stack([_mask_tensor(mask, size) for mask in _matching(masks, count, "masks")])
        return BatchFeature(data, tensor_type=return_tensors)

    def _encode_reports(self, reports: list[str]) -> torch.Tensor:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("The language model's tokenizer has no EOS token, so reports cannot end")
        rows = [
            self.tokenizer(report.strip(), add_special_tokens=False)["input_ids"][: self.max_report_length - 1] + [eos]
            for report in reports
        ]
        labels = torch.full((len(rows), max(len(row) for row in rows)), IGNORE_INDEX, dtype=torch.long)
        for index, row in enumerate(rows):
            labels[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return labels

    # -- outputs -------------------------------------------------------------------------------------------

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """Report texts of generated token ids (special tokens and surrounding spaces removed)."""
        kwargs.setdefault("skip_special_tokens", True)
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, **kwargs)]

    def post_process_masks(
        self,
        pred_masks: torch.Tensor,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        threshold: float | None = DEFAULT_MASK_THRESHOLD,
    ) -> list[torch.Tensor]:
        """Resizes mask logits to each image's size and thresholds them.

        Args:
            pred_masks: `(batch, 1, h, w)` mask logits from the model.
            target_sizes: `(height, width)` of each original image; `None` keeps the model's resolution.
            threshold: probability above which a pixel is forged (pass `model.config.mask_threshold` if you
                changed it); `None` returns probabilities instead.

        Returns:
            One `(height, width)` tensor per image: boolean, or float probabilities when `threshold` is `None`.
        """
        if target_sizes is not None and len(target_sizes) != len(pred_masks):
            raise ValueError(f"`target_sizes` has {len(target_sizes)} entries but there are {len(pred_masks)} masks")
        results = []
        for index, logits in enumerate(pred_masks.float()):
            logits = logits[None]
            if target_sizes is not None:
                height, width = (int(v) for v in target_sizes[index])
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = torch.sigmoid(logits[0, 0])
            results.append(probabilities if threshold is None else probabilities > threshold)
        return results

    def post_process_regions(self, outputs) -> list[dict]:
        """Per image: the flagged region names and every region's probability (highest first)."""
        results = []
        for probabilities, flagged in zip(outputs.region_probs.tolist(), outputs.predicted_regions.tolist()):
            ranked = sorted(zip(REGION_NAMES, probabilities), key=lambda item: -item[1])
            results.append({"regions": labels_to_regions(flagged), "probabilities": dict(ranked)})
        return results

    def post_process_generation(
        self, outputs, target_sizes: Sequence[tuple[int, int]] | None = None, threshold: float = DEFAULT_MASK_THRESHOLD
    ) -> list[dict]:
        """Everything `generate` answered, per image: report, regions, probabilities, mask and its confidence."""
        reports = self.batch_decode(outputs.sequences)
        masks = self.post_process_masks(outputs.pred_masks, target_sizes, threshold)
        regions = self.post_process_regions(outputs)
        instruction = outputs.instruction_regions
        return [
            {
                "report": report,
                "regions": region["regions"],
                "region_probabilities": region["probabilities"],
                "instruction_regions": None if instruction is None else labels_to_regions(instruction[index].tolist()),
                "mask": mask,
                "mask_confidence": float(outputs.iou_scores[index, 0]),
            }
            for index, (report, mask, region) in enumerate(zip(reports, masks, regions))
        ]


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a text (e.g. `[CLS]`/`[SEP]`, `<s>`, `</s>`)."""
    plain = tokenizer("face", add_special_tokens=False)["input_ids"]
    full = tokenizer("face", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"Cannot tell which special tokens {type(tokenizer).__name__} adds around a text")


def _as_list(items) -> list:
    if isinstance(items, (list, tuple)):
        return list(items)
    if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim == 4:
        return list(items)
    return [items]


def _matching(items, count: int, name: str, single_type: type | None = None) -> list:
    """`items` as a list with one entry per image, or a `ValueError` naming the argument."""
    if single_type is not None and isinstance(items, single_type):
        items = [items]
    items = list(items)
    if len(items) != count:
        raise ValueError(f"`{name}` has {len(items)} entries but {count} images were given; give one per image")
    return items


def _region_label_tensor(rows: list) -> torch.Tensor:
    """`(batch, 21)` float 0/1 labels from rows of region names or of 21 numbers."""
    vectors = []
    for row in rows:
        row = list(row)
        if all(isinstance(value, str) for value in row):
            vectors.append(regions_to_labels(row))
            continue
        if len(row) != len(REGION_NAMES):
            raise ValueError(f"`region_labels` rows need {len(REGION_NAMES)} numbers or region names, got {row!r}")
        vectors.append([float(value) for value in row])
    return torch.tensor(vectors, dtype=torch.float32)


def _mask_tensor(mask, size: tuple[int, int]) -> torch.Tensor:
    """A ground-truth mask as a `(1, height, width)` 0/1 float tensor at the model's input size."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    array = torch.from_numpy(np.array(mask))
    if array.ndim == 3:
        array = array.amax(dim=-1) if array.shape[-1] in (1, 3, 4) else array[0]
    forged = (array > 0).float()[None, None]
    return F.interpolate(forged, size=tuple(size), mode="nearest")[0]


__all__ = ["ForgeryTalkerProcessor"]
