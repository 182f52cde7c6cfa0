"""Processor for ForgeryTalker: images, reports, masks and region labels in; readable results out."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import ProcessingKwargs, Unpack

from .configuration_forgerytalker import DEFAULT_MASK_THRESHOLD
from .image_processor_backend import IMAGE_PROCESSOR_BACKEND, with_backend
from .image_utils import forged_pixels, to_rgb
from .instruction import IGNORE_INDEX, InstructionPieces, InstructionWording
from .mask_prompt import MaskPromptPieces
from .paths import resolve_local_path
from .region_decision import flag_regions
from .regions import REGION_NAMES, REGION_WORD_FORMS, labels_to_regions, regions_to_labels


class ForgeryTalkerProcessorKwargs(ProcessingKwargs, total=False):
    """`text_kwargs` (`padding`, `truncation`, `max_length`, `return_tensors`) apply to the training reports;
    `images_kwargs` go to the image processor."""


class ForgeryTalkerProcessor(ProcessorMixin):
    r"""
    Owns what turns a face photo into model inputs and model outputs into answers: the image processor, the
    language model's tokenizer, the Q-Former's tokenizer and the region instruction.

    Args:
        image_processor ([`BlipImageProcessor`]):
            Resizes and normalises images for the vision encoder (and the prompter).
        tokenizer ([`PreTrainedTokenizerBase`]):
            The language model's tokenizer; `image_token` is added to it if it lacks it.
        qformer_tokenizer ([`PreTrainedTokenizerBase`]):
            The Q-Former's (BERT-style) tokenizer.
        num_query_tokens (`int`, *optional*, defaults to 32):
            How many `image_token`s precede the instruction; must equal the model's `num_query_tokens`.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder the Q-Former's outputs replace in the language model's input.
        instruction_wording ([`InstructionWording`], *optional*):
            The instruction's wording; the default gives the paper's "These facial areas may be manipulated by AI:
            [R]. Please describe the specific issues in these areas." `forgerytalker.instruction.DFF_WORDING` gives
            the authors' released one. Its fields can also be given one by one as keyword arguments
            (`instruction_prefix=...`, `**DFF_INSTRUCTION_WORDING`), which is how `processor_config.json` stores them.
        mask_prompt_length (`int`, *optional*):
            For models with the `"dff"` mask decoder: also return `mask_prompt_input_ids`, the pieces of the
            region-name prompt (`forgerytalker.mask_prompt`), checked against the tokenizer at this length. It
            must equal the model's `config.mask_prompt_length`.
        max_report_length (`int`, *optional*, defaults to 160):
            Report tokens kept for training when the call gives no `max_length` (the EOS token is always kept).
        max_instruction_length (`int`, *optional*):
            Cut the instruction, for both tokenizers, to this many tokens (their special tokens included, the image
            tokens not) from the left, as the authors' release cuts it to 128 (`instruction.DFF_MAX_INSTRUCTION_LENGTH`,
            set in converted released checkpoints); the model applies the cut when it assembles each sample's
            instruction, in training and in generation alike. `None` (the default) never cuts: the instruction is
            what the model is asked, and the built-in wordings are at most 93 tokens long.

    Raises:
        ValueError: a tokenizer does not tokenise the instruction's pieces into the ids of the whole text (see
            `forgerytalker.instruction`); the message names the tokenizer and a region set where it differs.
    """

    valid_processor_kwargs = ForgeryTalkerProcessorKwargs
    text_kwargs = {"padding": "longest", "truncation": True, "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    def __init__(
        self,
        image_processor,
        tokenizer,
        qformer_tokenizer,
        num_query_tokens: int = 32,
        image_token: str = "<image>",
        instruction_wording: InstructionWording | None = None,
        mask_prompt_length: int | None = None,
        max_report_length: int = 160,
        max_instruction_length: int | None = None,
        **kwargs,
    ):
        self.instruction_wording = InstructionWording.pop_from(kwargs, instruction_wording)
        self.max_instruction_length = max_instruction_length
        self.mask_prompt_pieces = None if mask_prompt_length is None else MaskPromptPieces(mask_prompt_length)
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([image_token], special_tokens=True)
        self.num_query_tokens = num_query_tokens
        self.image_token = image_token
        self.mask_prompt_length = mask_prompt_length
        self.max_report_length = max_report_length
        super().__init__(image_processor, tokenizer, qformer_tokenizer, **kwargs)
        self.instruction_pieces.check(self.tokenizer, self.instruction_input_ids, "tokenizer", self._image_tokens)
        self.instruction_pieces.check(self.qformer_tokenizer, self.instruction_qformer_input_ids, "qformer_tokenizer")
        if self.mask_prompt_pieces is not None:
            self.mask_prompt_pieces.check(self.tokenizer, self.mask_prompt_input_ids)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *args, image_processor_backend: str = IMAGE_PROCESSOR_BACKEND, **kwargs
    ):
        """`ProcessorMixin.from_pretrained`; the image processor resizes with PIL (`image_processor_backend`), as
        the checkpoint was trained, also where transformers would pick torchvision's."""
        path = resolve_local_path(pretrained_model_name_or_path)
        processor = super().from_pretrained(path, *args, **kwargs)
        processor.image_processor = with_backend(processor.image_processor, path, image_processor_backend, **kwargs)
        return processor

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict, **kwargs):
        """`ProcessorMixin.from_args_and_dict`, with the wording's fields (stored flat by `to_dict`, or given to
        `from_pretrained`) gathered into `instruction_wording`."""
        processor_dict = dict(processor_dict)
        wording = InstructionWording.pop_from(processor_dict)
        kwargs["instruction_wording"] = InstructionWording.pop_from(kwargs, kwargs.get("instruction_wording") or wording)
        return super().from_args_and_dict(args, processor_dict, **kwargs)

    def to_dict(self) -> dict:
        """`ProcessorMixin.to_dict`, with the wording's fields stored flat (the keys `__init__` accepts)."""
        output = super().to_dict()
        output.pop("instruction_wording", None)
        return {**output, **self.instruction_wording.to_dict()}

    @classmethod
    def from_instructblip(
        cls, instructblip_name_or_path: str | os.PathLike, image_processor_backend: str = IMAGE_PROCESSOR_BACKEND, **kwargs
    ) -> ForgeryTalkerProcessor:
        """Wraps the image processor (with PIL's resize, see `from_pretrained`) and both tokenizers of an InstructBLIP
        processor folder."""
        from transformers import InstructBlipProcessor

        path = resolve_local_path(instructblip_name_or_path, "instructblip_name_or_path")
        source = InstructBlipProcessor.from_pretrained(path)
        kwargs.setdefault("num_query_tokens", source.num_query_tokens)
        kwargs.setdefault("image_token", str(getattr(source.tokenizer, "image_token", "<image>")))
        image_processor = with_backend(source.image_processor, path, image_processor_backend)
        return cls(image_processor, source.tokenizer, source.qformer_tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = ["pixel_values", "instruction_input_ids", "instruction_qformer_input_ids"]
        return names if self.mask_prompt_length is None else [*names, "mask_prompt_input_ids"]

    # -- the instruction -----------------------------------------------------------------------------------

    @property
    def instruction_pieces(self) -> InstructionPieces:
        """The instruction's piece table for this processor's wording and `max_instruction_length`."""
        return InstructionPieces(self.instruction_wording, self.max_instruction_length)

    def build_instruction(self, regions: Sequence[str] | None) -> str:
        """The instruction text for `regions` (`None`: the plain instruction without regions)."""
        return self.instruction_wording.render(regions)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def _image_tokens(self) -> list[int]:
        return [self.image_token_id] * self.num_query_tokens

    @cached_property
    def instruction_input_ids(self) -> torch.Tensor:
        """One sample's instruction pieces in the language model's vocabulary, `(InstructionPieces.NUM_ROWS, piece_length)`."""
        return self.instruction_pieces.encode(self.tokenizer, self._image_tokens)

    @cached_property
    def instruction_qformer_input_ids(self) -> torch.Tensor:
        """One sample's instruction pieces in the Q-Former's vocabulary, `(InstructionPieces.NUM_ROWS, piece_length)`."""
        return self.instruction_pieces.encode(self.qformer_tokenizer)

    @cached_property
    def mask_prompt_input_ids(self) -> torch.Tensor:
        """One sample's mask-prompt pieces in the language model's vocabulary, `(MaskPromptPieces.NUM_ROWS, piece_length)`."""
        if self.mask_prompt_pieces is None:
            raise ValueError("This processor makes no mask prompt: build it with `mask_prompt_length`")
        return self.mask_prompt_pieces.encode(self.tokenizer)

    # -- inputs --------------------------------------------------------------------------------------------

    def __call__(
        self,
        images=None,
        text=None,
        reports: str | Sequence[str] | None = None,
        regions: Sequence[str] | Sequence[Sequence[str]] | None = None,
        region_labels=None,
        masks=None,
        **kwargs: Unpack[ForgeryTalkerProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepares a batch for [`ForgeryTalkerForConditionalGeneration`]. Every tensor it returns has one row per
        image, so a batch can be sliced, collated (`default_data_collator`) and split like any other.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The face images, of any sizes and modes: each is made 8-bit RGB by `image_utils.to_rgb`
                (16-bit scaled by its range, transparency composited on white, grayscale/CMYK converted, EXIF
                orientation applied).
            text:
                Not used: ForgeryTalker writes its own instruction. Passing it is an error (give training
                reports as `reports`).
            reports (`str` or `list[str]`, *optional*):
                Reference reports (training targets), one per image; they become `labels` (EOS-terminated,
                padded with -100). `padding`, `truncation` and `max_length` apply to them; `max_length`
                defaults to `max_report_length`.
            regions (`list[str]` or `list[list[str]]`, *optional*):
                Regions to name in the instruction instead of the prompter's prediction (a user correcting the
                model): one list per image, or one list of names for every image. They become
                `instruction_regions`.
            region_labels (`list[list[str]]` or a `(batch, 21)` 0/1 array, *optional*):
                Ground-truth regions, for the prompter's loss and the `"ground_truth"` region source.
            masks (`PIL.Image.Image`, `np.ndarray` or a list of them, *optional*):
                Ground-truth masks at their image's size; a pixel is forged where `image_utils.forged_pixels`
                says so (any colour band > 0). Resized with nearest neighbour to the model input.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch, 3, size, size)`, `instruction_input_ids`
            `(batch, InstructionPieces.NUM_ROWS, piece_length)`, `instruction_qformer_input_ids` `(batch,
            InstructionPieces.NUM_ROWS, qformer_piece_length)`, with `mask_prompt_length` `mask_prompt_input_ids`
            `(batch, MaskPromptPieces.NUM_ROWS, piece_length)`, and for the arguments given `labels` `(batch, length)`,
            `instruction_regions` `(batch, 21)`, `region_labels` `(batch, 21)`, `masks` `(batch, 1, size, size)`.
        """
        if text is not None:
            raise ValueError(
                "ForgeryTalkerProcessor does not take `text`: the model writes its own instruction from the regions. "
                "Give training reports as `reports=`, and regions to name as `regions=`."
            )
        if images is None:
            raise ValueError("`images` is required: ForgeryTalker analyses face images")
        images = _as_list(images)
        if not images:
            raise ValueError("`images` is empty: give at least one face image")
        rgb = []
        for index, image in enumerate(images):
            try:
                rgb.append(to_rgb(image))
            except (ValueError, TypeError) as error:
                raise ValueError(f"`images[{index}]`: {error}") from error
        count = len(rgb)
        output_kwargs = self._merge_kwargs(ForgeryTalkerProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs = output_kwargs["text_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        images_kwargs = {**output_kwargs["images_kwargs"], "return_tensors": "pt"}
        data = {
            "pixel_values": self.image_processor(rgb, **images_kwargs)["pixel_values"],
            "instruction_input_ids": self.instruction_input_ids.expand(count, -1, -1).clone(),
            "instruction_qformer_input_ids": self.instruction_qformer_input_ids.expand(count, -1, -1).clone(),
        }
        if self.mask_prompt_length is not None:
            data["mask_prompt_input_ids"] = self.mask_prompt_input_ids.expand(count, -1, -1).clone()
        if reports is not None:
            data["labels"] = self._encode_reports(_matching(reports, count, "reports", str), **text_kwargs)
        if regions is not None:
            if all(isinstance(name, str) for name in regions):
                regions = [list(regions)] * count
            data["instruction_regions"] = torch.tensor(
                [regions_to_labels(names) for names in _matching(regions, count, "regions")], dtype=torch.long
            )
        if region_labels is not None:
            data["region_labels"] = _region_label_tensor(_matching(region_labels, count, "region_labels"))
        if masks is not None:
            size = tuple(data["pixel_values"].shape[-2:])
            data["masks"] = torch.stack(
                [_mask_tensor(mask, image, size, index) for index, (mask, image) in enumerate(zip(_matching(masks, count, "masks"), rgb))]
            )
        return BatchFeature(data, tensor_type=return_tensors)

    def _encode_reports(
        self, reports: list[str], padding="longest", truncation=True, max_length: int | None = None, **_
    ) -> torch.Tensor:
        """`(batch, length)` report ids ending with EOS, padded with -100 (`padding` `"longest"` or `"max_length"`)."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("The language model's tokenizer has no EOS token, so reports cannot end")
        max_length = self.max_report_length if max_length is None else max_length
        rows = []
        for report in reports:
            ids = self.tokenizer(report.strip(), add_special_tokens=False)["input_ids"]
            if truncation not in (False, "do_not_truncate"):
                ids = ids[: max_length - 1]
            rows.append(ids + [eos])
        if padding in (True, "longest"):
            length = max(len(row) for row in rows)
        elif padding == "max_length":
            length = max(max_length, max(len(row) for row in rows))
        elif len({len(row) for row in rows}) == 1:
            length = len(rows[0])
        else:
            raise ValueError(f"`padding={padding!r}` leaves reports of different lengths; use 'longest' or 'max_length'")
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for index, row in enumerate(rows):
            labels[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return labels

    def region_word_ids(self) -> list[list[list[int]]]:
        """One group per region (`REGION_NAMES` order): the language model's token ids of each way a report writes its
        name (`REGION_WORD_FORMS`, lower case and capitalised, alone and followed by punctuation, which a tokenizer may
        fold into the word's token: `▁cheeks,`), as they are tokenised after another word. Set as
        `model.generation_config.once_words_ids`, no report names a region twice
        (`generation_forgerytalker.ForgeryTalkerOnceWordsLogitsProcessor`)."""
        tokenizer = self.tokenizer
        head = tokenizer("the", add_special_tokens=False)["input_ids"]
        groups = []
        for name in REGION_NAMES:
            sequences = []
            for form in REGION_WORD_FORMS[name]:
                for word in (written + ending for written in (form, form.capitalize()) for ending in ("", *_PUNCTUATION)):
                    full = tokenizer(f"the {word}", add_special_tokens=False)["input_ids"]
                    # the word's ids after another word and a space, where the two tokenisations share that start
                    ids = full[len(head) :] if full[: len(head)] == head else []
                    if ids and ids not in sequences and tokenizer.unk_token_id not in ids:
                        sequences.append(ids)
            groups.append(sequences)
        return groups

    # -- outputs -------------------------------------------------------------------------------------------

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """Report texts of generated token ids, or of `generate`'s output object (its `sequences`).

        Special tokens and surrounding spaces are removed.
        """
        sequences = getattr(sequences, "sequences", sequences)
        kwargs.setdefault("skip_special_tokens", True)
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, **kwargs)]

    def post_process_masks(
        self,
        pred_masks: torch.Tensor,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        mask_threshold: float = DEFAULT_MASK_THRESHOLD,
        binarize: bool = True,
    ) -> list[torch.Tensor]:
        """Resizes mask logits to each image's size (bilinear) and thresholds their probabilities.

        Args:
            pred_masks: `(batch, 1, h, w)` mask logits from the model.
            target_sizes: `(height, width)` of each original image; `None` keeps the model's resolution.
            mask_threshold: probability above which a pixel is forged (a model's is `config.mask_threshold`).
            binarize: `False` returns the probabilities instead of the boolean mask.

        Returns:
            One `(height, width)` tensor per image: boolean, or float32 probabilities when `binarize=False`.
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
            results.append(probabilities > mask_threshold if binarize else probabilities)
        return results

    def post_process_regions(
        self, outputs, region_threshold: float | None = None, located_region_threshold: float | None = None
    ) -> list[dict]:
        """Per image: the flagged region names, every region's probability and, for a model with a region map,
        every region's located probability (`None` otherwise), all in `REGION_NAMES` order.

        Regions are flagged by `forgerytalker.region_decision.flag_regions`; the thresholds default to the ones
        `generate` used (`outputs.region_threshold`, `outputs.located_region_threshold`).
        """
        threshold = _threshold(region_threshold, outputs, "region_threshold")
        located = getattr(outputs, "located_region_probs", None)
        located_threshold = None if located is None else _threshold(located_region_threshold, outputs, "located_region_threshold")
        flagged = flag_regions(outputs.region_probs.float(), threshold, None if located is None else located.float(), located_threshold)
        results = []
        for index, probabilities in enumerate(outputs.region_probs.float().tolist()):
            results.append(
                {
                    "regions": labels_to_regions(flagged[index].tolist()),
                    "probabilities": dict(zip(REGION_NAMES, probabilities)),
                    "located_probabilities": None if located is None else dict(zip(REGION_NAMES, located[index].float().tolist())),
                }
            )
        return results

    def post_process_generation(
        self,
        outputs,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        mask_threshold: float | None = None,
        region_threshold: float | None = None,
        return_mask_probabilities: bool = False,
        located_region_threshold: float | None = None,
    ) -> list[dict]:
        """Everything `generate` answered, one dict per generated report.

        With `num_return_sequences=k`, result `i * k + j` is image `i`'s `j`-th report, paired with image `i`'s
        mask and regions. Thresholds default to the ones `generate` used (the checkpoint's config); an explicit
        argument overrides them.

        Args:
            outputs ([`ForgeryTalkerGenerationOutput`]): what `model.generate` returned.
            target_sizes: `(height, width)` of each image (one per image, not per report).
            mask_threshold, region_threshold, located_region_threshold: override the thresholds of `outputs`.
            return_mask_probabilities: also return each pixel's probability (`mask_probabilities`).

        Returns:
            Dicts with `report`, `regions`, `region_probabilities` (all 21, `REGION_NAMES` order),
            `located_region_probabilities` (the same for a model with a region map, else `None`),
            `instruction_regions` (`None` for the plain instruction), `mask` (bool `(H, W)`), `mask_confidence`
            (the IoU head's estimate; `None` for a `"dff"` mask decoder, which has none, and for a mask emptied by
            `config.empty_untouched_masks`),
            `mask_threshold`, `region_threshold`, `located_region_threshold` (the values used; `None` without a region
            map) and, if asked, `mask_probabilities`
            (float32 `(H, W)`).
        """
        num_images = len(outputs.pred_masks)
        reports = self.batch_decode(outputs.sequences)
        if len(reports) % num_images:
            raise ValueError(f"{len(reports)} generated reports cannot be shared out over {num_images} images")
        per_image = len(reports) // num_images
        mask_threshold = _threshold(mask_threshold, outputs, "mask_threshold")
        region_threshold = _threshold(region_threshold, outputs, "region_threshold")
        if getattr(outputs, "located_region_probs", None) is not None:
            located_region_threshold = _threshold(located_region_threshold, outputs, "located_region_threshold")
        else:
            located_region_threshold = None
        probabilities = self.post_process_masks(outputs.pred_masks, target_sizes, binarize=False)
        regions = self.post_process_regions(outputs, region_threshold, located_region_threshold)
        instruction = outputs.instruction_regions
        results = []
        for index, report in enumerate(reports):
            image = index // per_image
            result = {
                "report": report,
                "regions": regions[image]["regions"],
                "region_probabilities": regions[image]["probabilities"],
                "located_region_probabilities": regions[image]["located_probabilities"],
                "instruction_regions": None if instruction is None else labels_to_regions(instruction[image].tolist()),
                "mask": probabilities[image] > mask_threshold,
                "mask_confidence": _mask_confidence(outputs.iou_scores, image),
                "mask_threshold": mask_threshold,
                "region_threshold": region_threshold,
                "located_region_threshold": located_region_threshold,
            }
            if return_mask_probabilities:
                result["mask_probabilities"] = probabilities[image]
            results.append(result)
        return results


_PUNCTUATION = (",", ".", ";", ":")
"""What may follow a region's name inside one token (a Unigram vocabulary learnt from reports has `▁cheeks,`)."""


def _mask_confidence(iou_scores: torch.Tensor | None, image: int) -> float | None:
    """The IoU head's estimate for an image's mask; `None` without an IoU head or for an emptied mask (NaN)."""
    if iou_scores is None:
        return None
    confidence = float(iou_scores[image, 0])
    return None if math.isnan(confidence) else confidence


def _threshold(explicit: float | None, outputs, name: str) -> float:
    """The explicit threshold, else the one carried by `outputs`, else a clear error naming the argument."""
    if explicit is not None:
        return float(explicit)
    carried = getattr(outputs, name, None)
    if carried is None:
        raise ValueError(f"`{name}` is needed: these outputs do not say which one the model used")
    return float(carried)


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


def _mask_tensor(mask, image, size: tuple[int, int], index: int) -> torch.Tensor:
    """A ground-truth mask as a `(1, height, width)` 0/1 float tensor at the model's input size."""
    forged = forged_pixels(mask)
    if forged.shape != (image.height, image.width):
        raise ValueError(
            f"`masks[{index}]` is {forged.shape[1]}×{forged.shape[0]} but `images[{index}]` is "
            f"{image.width}×{image.height}; a mask must have its image's size"
        )
    tensor = torch.from_numpy(forged.astype(np.float32))[None, None]
    return F.interpolate(tensor, size=size, mode="nearest")[0]


__all__ = ["ForgeryTalkerProcessor", "ForgeryTalkerProcessorKwargs"]
