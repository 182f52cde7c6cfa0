"""ForgeryTalker (arXiv 2412.19685): InstructBLIP + Forgery Prompter Network + SAM-style mask decoder."""

from __future__ import annotations

import copy
import logging
import os
from typing import NamedTuple

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, InstructBlipForConditionalGeneration, LogitsProcessorList, PreTrainedModel
from transformers import initialization as init
from transformers.models.sam.modeling_sam import SamAttention, SamLayerNorm
from transformers.utils import ModelOutput
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_forgerytalker import PIPELINE_TASK, ForgeryTalkerConfig
from .generation_forgerytalker import GENERATION_DEFAULTS, generation_settings, once_words_processors
from .instruction import IGNORE_INDEX, MODEL_REGION_SOURCES, InstructionPieces
from .mask_prompt import MaskPromptPieces
from .modeling_forgerytalker_checks import check_batch, refuse_language_model_inputs, refuse_shift_labels
from .modeling_forgerytalker_dff_mask_decoder import ForgeryTalkerDffMaskDecoder
from .modeling_forgerytalker_mask_decoder import ForgeryTalkerMaskDecoder, forgery_mask_loss
from .modeling_forgerytalker_outputs import ForgeryTalkerGenerationOutput, ForgeryTalkerOutput
from .modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork, ForgeryTalkerPrompterOutput
from .paths import resolve_local_path
from .precision import check_module_names, fp32_patterns, warn_if_t5_in_float16
from .region_decision import empty_untouched_masks, flag_regions

logger = logging.getLogger(__name__)

TRAINING_STAGES = ("prompter", "joint")
_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states")


class ForgeryTalkerPreTrainedModel(PreTrainedModel):
    """Base class of ForgeryTalker models: the config class, weight initialisation, loading and saving.

    `from_pretrained` / `save_pretrained` come from [`PreTrainedModel`]; `_init_weights` initialises only what
    ForgeryTalker adds around its sub-models (the mask decoder and its projections), since the InstructBLIP
    backbone and the prompter bring their own initialisation and `_no_split_modules`.
    """

    config: ForgeryTalkerConfig
    config_class = ForgeryTalkerConfig
    base_model_prefix = "forgerytalker"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # SAM's attention, in the mask decoder, has eager and SDPA implementations only
    _supports_flash_attn = False
    _supports_flex_attn = False
    # The backbone's and the prompter's own lists are gathered from them by `post_init`.
    _no_split_modules = ["ForgeryTalkerMaskDecoder", "ForgeryTalkerDffMaskDecoder"]
    _can_record_outputs = {"mask_decoder_attentions": OutputRecorder(SamAttention, index=1)}

    @torch.no_grad()
    def _init_weights(self, module):
        """Initialises what ForgeryTalker adds around its sub-models (the mask decoder and its projections) from
        `config.initializer_range`; the backbone and the prompter are initialised by their own `_init_weights`."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):  # SAM's IoU and mask output tokens
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, SamLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):  # the "dff" decoder's prompt attention (torch's own init)
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, ForgeryTalkerDffMaskDecoder):
            init.normal_(module.mask_tokens, mean=0.0, std=std)
        else:
            super()._init_weights(module)


class ForgeryTalkerForConditionalGeneration(ForgeryTalkerPreTrainedModel, GenerationMixin):
    """ForgeryTalker: a face image in; a forgery mask, per-region probabilities and a written report out.

    The prompter scores the 21 facial regions; the regions it flags (or the ground truth, none, or regions
    the caller names) fill the instruction given to InstructBLIP's Q-Former and language model; the mask
    decoder fuses vision, Q-Former and prompter features into a mask (or, `mask_decoder_type="dff"`, vision
    features and the names of the instruction's regions). `generate` uses `generation_config` (by default the
    authors' settings, `GENERATION_DEFAULTS`), saved with every checkpoint.
    """

    def __init__(self, config: ForgeryTalkerConfig, instructblip: InstructBlipForConditionalGeneration | None = None):
        super().__init__(config)
        # SAM's attention modules read the implementation from their own (sub-)config
        config.mask_decoder_config._attn_implementation = config._attn_implementation
        if instructblip is None:
            # `from_pretrained(dtype=...)` sets the dtype of our sub-configs only, not of InstructBLIP's own vision,
            # Q-Former and text configs, which build their modules in the dtype they carry (a checkpoint whose base
            # was loaded in float32 carries "float32" there): they follow the backbone's
            for sub_config_key in config.instructblip_config.sub_configs:
                getattr(config.instructblip_config, sub_config_key).dtype = config.instructblip_config.dtype
            instructblip = InstructBlipForConditionalGeneration(config.instructblip_config)
        self.instructblip = instructblip
        self.prompter = ForgeryTalkerPrompterNetwork(config.prompter_config)
        if config.mask_decoder_type == "dff":
            self.mask_decoder = ForgeryTalkerDffMaskDecoder(config)
        else:
            self.mask_decoder = ForgeryTalkerMaskDecoder(config)
        self.generation_config.update(**GENERATION_DEFAULTS)
        # the release's settings, not ones derived from the model config; and a generation config marked as derived
        # from it loses, when loaded, the settings transformers does not know (`once_words_ids`)
        self.generation_config._from_model_config = False
        self.post_init()
        if config.keep_in_fp32_modules:
            check_module_names(self, config.keep_in_fp32_modules)
            self._keep_in_fp32_modules_strict = {*self._keep_in_fp32_modules_strict, *fp32_patterns(config.keep_in_fp32_modules)}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if pretrained_model_name_or_path is not None:
            pretrained_model_name_or_path = resolve_local_path(pretrained_model_name_or_path)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        warn_if_t5_in_float16(model)
        # as in `__init__`: a checkpoint saved before this marks its generation config as derived from the model
        # config, and a setting added to it (`once_words_ids`) would be lost the next time it is loaded
        model.generation_config._from_model_config = False
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus what `trust_remote_code` users need: the task Auto class and
        the `forgery-analysis` pipeline (its code is copied next to the model's). They are written into a copy of
        the config: the model's own config is left as it was."""
        from transformers.dynamic_module_utils import custom_object_save

        from .pipeline_forgerytalker import ForgeryAnalysisPipeline

        config, self.config = self.config, copy.deepcopy(self.config)
        module = type(self).__module__.split(".")[-1]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModelForImageTextToText": f"{module}.{type(self).__name__}",
        }
        pipeline_impl = f"{ForgeryAnalysisPipeline.__module__.split('.')[-1]}.{ForgeryAnalysisPipeline.__name__}"
        self.config.custom_pipelines = {PIPELINE_TASK: {"impl": pipeline_impl, "pt": ["AutoModel"], "type": "multimodal"}}
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config = config
        if kwargs.get("is_main_process", True):
            custom_object_save(ForgeryAnalysisPipeline, save_directory)

    @classmethod
    def from_instructblip(
        cls,
        instructblip_name_or_path: str | os.PathLike,
        prompter_config: dict | None = None,
        mask_decoder_config: dict | None = None,
        **config_kwargs,
    ) -> ForgeryTalkerForConditionalGeneration:
        """Builds a ForgeryTalker around an existing InstructBLIP checkpoint (what a user with real weights does).

        The InstructBLIP weights are kept as loaded; the prompter and mask decoder start from their own
        initialisation (or load a stage-1 prompter with `load_prompter`).
        """
        path = resolve_local_path(instructblip_name_or_path, "instructblip_name_or_path")
        instructblip = InstructBlipForConditionalGeneration.from_pretrained(path)
        if instructblip.config.image_token_index is None:
            raise ValueError(f"The InstructBLIP checkpoint at {path!r} has no `image_token_index` in its config")
        config = ForgeryTalkerConfig(
            instructblip_config=instructblip.config,
            prompter_config=prompter_config,
            mask_decoder_config=mask_decoder_config,
            **config_kwargs,
        )
        return cls(config, instructblip=instructblip)

    def load_prompter(self, prompter_name_or_path: str | os.PathLike) -> None:
        """Replaces the prompter with a stage-1 one saved by `ForgeryTalkerPrompterNetwork.save_pretrained`.

        Raises `ValueError` naming both widths when the prompter's `hidden_size` is not this model's (the mask
        decoder reads the prompter's tokens at that width, so `generate` would otherwise fail later)."""
        prompter = ForgeryTalkerPrompterNetwork.from_pretrained(resolve_local_path(prompter_name_or_path, "prompter_name_or_path"))
        expected = self.config.prompter_config.hidden_size
        if prompter.config.hidden_size != expected:
            raise ValueError(
                f"{prompter_name_or_path}: the prompter is {prompter.config.hidden_size} wide (hidden_size) but this "
                f"model's prompter is {expected} wide; train the prompter with hidden_size={expected} or build the "
                f"model with prompter_config.hidden_size={prompter.config.hidden_size}"
            )
        self.prompter = prompter.to(device=self.device, dtype=self.prompter.dtype)
        self.config.prompter_config = prompter.config

    def train(self, mode: bool = True):
        """As `nn.Module.train`, except that a frozen prompter (stage 2, see `freeze_for_stage`) stays in eval mode:
        its BatchNorm statistics would otherwise drift while the rest trains (the release keeps them fixed only by
        accident of its checkpoint order)."""
        super().train(mode)
        if mode and not any(parameter.requires_grad for parameter in self.prompter.parameters()):
            self.prompter.eval()
        return self

    def freeze_for_stage(self, stage: str, train_vision_encoder: bool = False, train_language_model: bool = False) -> None:
        """Sets `requires_grad` for one of the paper's two training stages.

        `"prompter"` (stage 1): only the prompter trains. `"joint"` (stage 2): the prompter is frozen; the
        Q-Former (with its query tokens and language projection) and the mask decoder train; the vision
        encoder and language model train only when asked.
        """
        if stage not in TRAINING_STAGES:
            raise ValueError(f"`stage` must be one of {TRAINING_STAGES}, got {stage!r}")
        self.requires_grad_(False)
        if stage == "prompter":
            self.prompter.requires_grad_(True)
            return
        backbone = self.instructblip
        for module in (backbone.qformer, backbone.language_projection, self.mask_decoder):
            module.requires_grad_(True)
        backbone.query_tokens.requires_grad_(True)
        backbone.vision_model.requires_grad_(train_vision_encoder)
        backbone.language_model.requires_grad_(train_language_model)

    # -- the language model's embeddings ---------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.instructblip.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.instructblip.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.instructblip.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.instructblip.set_output_embeddings(new_embeddings)

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        """InstructBLIP's: the language model's encoder (`modality=None`), or the vision encoder (`"image"`)."""
        return self.instructblip.get_encoder(modality=modality)

    def get_decoder(self) -> nn.Module:
        """The language model's decoder, as InstructBLIP's `get_decoder`."""
        return self.instructblip.get_decoder()

    # -- instruction assembly ------------------------------------------------------------------------------

    def _region_source(self, region_source: str | None, instruction_regions: torch.Tensor | None) -> str:
        """The source of the instruction's regions: `region_source`, else `"explicit"` when regions are given, else
        the config's."""
        if region_source is not None:
            return region_source
        return "explicit" if instruction_regions is not None else self.config.region_source

    def _instruction_regions(
        self,
        region_source: str | None,
        prompter_regions: _PrompterRegions,
        region_labels: torch.Tensor | None,
        instruction_regions: torch.Tensor | None,
    ) -> torch.Tensor | None:
        region_source = self._region_source(region_source, instruction_regions)
        if region_source == "predicted":
            return self._capped_regions(prompter_regions)
        if region_source == "ground_truth":
            if region_labels is None:
                raise ValueError('`region_source="ground_truth"` needs `region_labels`')
            return region_labels.long()
        if region_source == "explicit":
            if instruction_regions is None:
                raise ValueError('`region_source="explicit"` needs `instruction_regions` (processor(..., regions=...))')
            return instruction_regions.long()
        if region_source == "none":
            return None
        raise ValueError(f"`region_source` must be predicted, ground_truth, none or explicit, got {region_source!r}")

    def _prompter_regions(self, prompter_output: ForgeryTalkerPrompterOutput) -> _PrompterRegions:
        """The prompter's region probabilities, located-region probabilities and the regions it flags
        (`region_decision.flag_regions`, at the config's thresholds)."""
        region_probs = torch.sigmoid(prompter_output.region_logits)
        located = None if prompter_output.located_region_logits is None else torch.sigmoid(prompter_output.located_region_logits)
        flagged = flag_regions(
            region_probs, self.config.region_threshold, located, self.config.prompter_config.located_region_threshold
        )
        return _PrompterRegions(region_probs, located, flagged)

    def _capped_regions(self, prompter_regions: _PrompterRegions) -> torch.Tensor:
        """0/1 `(batch_size, num_regions)`: the flagged regions, at most `config.max_instruction_regions` of them per
        image, the most probable (by located probability when the prompter has a region map)."""
        regions = prompter_regions.flagged
        limit = self.config.max_instruction_regions
        if limit is None or limit >= regions.shape[-1]:
            return regions
        ranking = prompter_regions.region_probs if prompter_regions.located is None else prompter_regions.located
        kept = torch.zeros_like(regions).scatter_(-1, ranking.topk(limit, dim=-1).indices, 1)
        return regions * kept

    def _check_image_tokens(self, prompt: list[int]) -> None:
        image_token_id = self.config.instructblip_config.image_token_index
        count = sum(token == image_token_id for token in prompt)
        if count != self.config.num_query_tokens:
            raise ValueError(
                f"The processor puts {count} image tokens before the instruction but the model's config has "
                f"num_query_tokens={self.config.num_query_tokens}: the processor and the checkpoint do not belong "
                "together (build the processor with the model's num_query_tokens)"
            )

    def build_language_inputs(
        self,
        instruction_input_ids: torch.Tensor,
        instruction_qformer_input_ids: torch.Tensor,
        regions: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        for_generation: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Token ids for the Q-Former and the language model, with each sample's instruction naming its `regions`.

        Args:
            instruction_input_ids, instruction_qformer_input_ids: `(batch, InstructionPieces.NUM_ROWS, piece_length)` pieces.
            regions: `(batch, num_regions)` 0/1, or `None` for the plain instruction.
            labels: `(batch, report_length)` report ids padded with -100 (training).
            for_generation: left-pad the language model's prompt (decoder-only LMs).

        Decoder-only LMs get `image tokens + instruction (+ report)`, right-padded for training with the
        instruction masked out of the labels, left-padded for generation. Encoder-decoder LMs get the image
        tokens and instruction in the encoder and the report as `labels`.
        """
        for name, pieces in (("instruction_input_ids", instruction_input_ids), ("instruction_qformer_input_ids", instruction_qformer_input_ids)):
            if pieces.dim() != 3:
                raise ValueError(
                    f"`{name}` must be batch-first, (batch, num_pieces, piece_length), got shape {tuple(pieces.shape)}: "
                    "make the inputs with this version's ForgeryTalkerProcessor"
                )
        device = instruction_input_ids.device
        flagged = [None] * len(instruction_input_ids) if regions is None else regions.bool().tolist()
        qformer_ids = [InstructionPieces.assemble(p, f) for p, f in zip(instruction_qformer_input_ids, flagged)]
        prompts = [InstructionPieces.assemble(p, f) for p, f in zip(instruction_input_ids, flagged)]
        self._check_image_tokens(prompts[0])
        inputs = dict(zip(("qformer_input_ids", "qformer_attention_mask"), _pad(qformer_ids, 0, "right", device)))
        text_pad = self.config.get_text_config().pad_token_id or 0
        decoder_only = self.config.instructblip_config.use_decoder_only_language_model
        if labels is None or not decoder_only:
            side = "left" if for_generation and decoder_only else "right"
            inputs["input_ids"], inputs["attention_mask"] = _pad(prompts, text_pad, side, device)
            if labels is not None:
                inputs["labels"] = labels
            elif not decoder_only and not for_generation:
                # without a report, an encoder-decoder LM's forward scores the first report token
                start = self.config.get_text_config().decoder_start_token_id
                inputs["decoder_input_ids"] = torch.full((len(prompts), 1), start, dtype=torch.long, device=device)
            return inputs
        reports = [[token for token in row if token != IGNORE_INDEX] for row in labels.tolist()]
        sequences = [prompt + report for prompt, report in zip(prompts, reports)]
        targets = [[IGNORE_INDEX] * len(prompt) + report for prompt, report in zip(prompts, reports)]
        inputs["input_ids"], inputs["attention_mask"] = _pad(sequences, text_pad, "right", device)
        inputs["labels"], _ = _pad(targets, IGNORE_INDEX, "right", device)
        return inputs

    def build_mask_prompt_ids(self, mask_prompt_input_ids: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """The `"dff"` mask decoder's prompt: each sample's region names, `(batch, config.mask_prompt_length)` ids.

        Args:
            mask_prompt_input_ids: `(batch, MaskPromptPieces.NUM_ROWS, piece_length)` pieces from the processor.
            regions: `(batch, num_regions)` 0/1 regions of the instruction, or `None` (no names).
        """
        if mask_prompt_input_ids.dim() != 3:
            raise ValueError(
                "`mask_prompt_input_ids` must be batch-first, (batch, num_pieces, piece_length), got shape "
                f"{tuple(mask_prompt_input_ids.shape)}"
            )
        flagged = [None] * len(mask_prompt_input_ids) if regions is None else regions.bool().tolist()
        table = MaskPromptPieces(self.config.mask_prompt_length)
        rows = [table.assemble(pieces, names) for pieces, names in zip(mask_prompt_input_ids, flagged)]
        return torch.tensor(rows, dtype=torch.long, device=mask_prompt_input_ids.device)

    def _predict_mask(
        self,
        image_features: ModelOutput,
        prompter_output: ForgeryTalkerPrompterOutput,
        regions: torch.Tensor | None,
        mask_prompt_input_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(pred_masks, iou_scores)` from the mask decoder the config names."""
        if self.config.mask_decoder_type == "sam":
            if mask_prompt_input_ids is not None:
                raise ValueError(
                    "`mask_prompt_input_ids` belong to models with the \"dff\" mask decoder; this model's is \"sam\" "
                    "(make the inputs with this checkpoint's processor)"
                )
            return self.mask_decoder(
                image_features.last_hidden_state,
                image_features.qformer_outputs.last_hidden_state[:, : self.config.num_query_tokens],
                prompter_output.last_hidden_state,
            )
        if mask_prompt_input_ids is None:
            raise ValueError(
                'The "dff" mask decoder needs `mask_prompt_input_ids`: make the inputs with a processor built with '
                "`mask_prompt_length` (this checkpoint's own processor)"
            )
        prompt_ids = self.build_mask_prompt_ids(mask_prompt_input_ids, regions)
        return self.mask_decoder(image_features.last_hidden_state, self.get_input_embeddings()(prompt_ids))

    # -- forward and generate ------------------------------------------------------------------------------

    @capture_outputs
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        instruction_input_ids: torch.LongTensor,
        instruction_qformer_input_ids: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        masks: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
        instruction_regions: torch.Tensor | None = None,
        region_source: str | None = None,
        mask_prompt_input_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> ForgeryTalkerOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                Images from `ForgeryTalkerProcessor`.
            instruction_input_ids (`torch.LongTensor` of shape `(batch_size, num_pieces, piece_length)`):
                The instruction's pieces in the language model's vocabulary (from the processor).
            instruction_qformer_input_ids (`torch.LongTensor` of shape `(batch_size, num_pieces, piece_length)`):
                The instruction's pieces in the Q-Former's vocabulary (from the processor).
            labels (`torch.LongTensor` of shape `(batch_size, report_length)`, *optional*):
                Report token ids ending with EOS, padded with -100.
            masks (`torch.Tensor` of shape `(batch_size, 1, height, width)`, *optional*):
                0/1 ground-truth forgery masks.
            region_labels (`torch.Tensor` of shape `(batch_size, num_regions)`, *optional*):
                0/1 ground-truth regions (for the prompter's loss and the `"ground_truth"` region source).
            instruction_regions (`torch.Tensor` of shape `(batch_size, num_regions)`, *optional*):
                0/1 regions the caller names; given alone it selects the `"explicit"` region source.
            region_source (`str`, *optional*):
                `"predicted"`, `"ground_truth"`, `"none"` or `"explicit"`; defaults to `config.region_source`.
            mask_prompt_input_ids (`torch.LongTensor` of shape `(batch_size, num_pieces, piece_length)`, *optional*):
                The region-name prompt's pieces (from the processor); needed by the `"dff"` mask decoder only.
            output_attentions, output_hidden_states, return_dict:
                As in transformers: they reach the vision encoder, Q-Former, language model, prompter and
                (attentions) mask decoder.

        The language model's `input_ids`, `attention_mask` and `inputs_embeds` are not inputs: the model builds
        them from the instruction pieces and the images. Wrappers written for causal LMs (PEFT's
        `task_type="CAUSAL_LM"`) pass them as `None`, which is accepted; a tensor for any of them is an error.
        `shift_labels` (pre-shifted targets, for sequence parallelism) are an error too: the model shifts `labels`
        itself, inside the sequence it builds.
        """
        refuse_language_model_inputs(kwargs)
        refuse_shift_labels(kwargs)
        check_batch(
            pixel_values,
            instruction_input_ids=instruction_input_ids,
            instruction_qformer_input_ids=instruction_qformer_input_ids,
            labels=labels,
            masks=masks,
            region_labels=region_labels,
            instruction_regions=instruction_regions,
            mask_prompt_input_ids=mask_prompt_input_ids,
        )
        output_flags = {name: True for name in _OUTPUT_FLAGS if kwargs.get(name, getattr(self.config, name, False))}
        prompter_output = self.prompter(pixel_values, region_labels=region_labels, **output_flags)
        regions = self._instruction_regions(
            region_source, self._prompter_regions(prompter_output), region_labels, instruction_regions
        )
        language_inputs = self.build_language_inputs(instruction_input_ids, instruction_qformer_input_ids, regions, labels=labels)
        image_features = self._image_features(pixel_values, language_inputs, **output_flags)
        # InstructBLIP's forward would run its vision encoder and Q-Former without the output flags
        backbone_output = self.instructblip(
            pixel_values=None, mm_encoder_outputs={"image": image_features}, **language_inputs, **output_flags, return_dict=True
        )
        pred_masks, iou_scores = self._predict_mask(image_features, prompter_output, regions, mask_prompt_input_ids)
        language_model_loss = backbone_output.loss if labels is not None else None
        mask_loss = None
        if masks is not None:
            mask_loss = forgery_mask_loss(
                pred_masks,
                iou_scores,
                masks,
                self.config.mask_threshold,
                self.config.mask_dice_weight,
                self.config.mask_iou_loss_weight,
            )
        weighted = [language_model_loss, None if mask_loss is None else self.config.mask_loss_weight * mask_loss]
        parts = [part for part in weighted if part is not None]
        return ForgeryTalkerOutput(
            loss=sum(parts) if parts else None,
            language_model_loss=language_model_loss,
            mask_loss=mask_loss,
            region_loss=prompter_output.loss,
            logits=backbone_output.logits,
            pred_masks=pred_masks,
            iou_scores=iou_scores,
            region_logits=prompter_output.region_logits,
            instruction_regions=regions,
            vision_outputs=image_features.vision_outputs,
            qformer_outputs=image_features.qformer_outputs,
            language_model_outputs=backbone_output.language_model_outputs,
            prompter_outputs=prompter_output,
        )

    def _image_features(self, pixel_values: torch.Tensor, language_inputs: dict, **output_flags) -> ModelOutput:
        """InstructBLIP's vision encoder, Q-Former (reading the instruction) and language projection."""
        return self.instructblip.get_image_features(
            pixel_values,
            qformer_input_ids=language_inputs["qformer_input_ids"],
            qformer_attention_mask=language_inputs["qformer_attention_mask"],
            return_dict=True,
            **output_flags,
        )

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor,
        instruction_input_ids: torch.LongTensor,
        instruction_qformer_input_ids: torch.LongTensor,
        region_labels: torch.Tensor | None = None,
        instruction_regions: torch.Tensor | None = None,
        region_source: str | None = None,
        mask_prompt_input_ids: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        penalize_instruction: bool = True,
        **kwargs,
    ) -> ForgeryTalkerGenerationOutput:
        """Writes the report and predicts the mask and regions in one call.

        Takes the inputs of `forward` (without targets) and the usual generation arguments (`max_new_tokens`,
        `num_beams`, `num_return_sequences`, `return_dict_in_generate`, `output_scores`, ...), which override
        `generation_config` (default: `self.generation_config`). Lengths count report tokens
        (`generation_forgerytalker.generation_settings` owns the rule).
        A decoder-only language model receives the prompt ids together with their embeddings, as InstructBLIP
        passes them, so that `repetition_penalty` also counts the instruction's words (the regions it names
        among them); padding positions hold the image token, which every prompt already contains, so a sample is
        penalised the same in a batch as alone. `penalize_instruction=False` gives it the embeddings alone, so the
        penalty counts report tokens only: what the release does, and what an encoder-decoder language model
        (Flan-T5) always does, whose penalty sees the decoder's tokens only.

        Unlike InstructBLIP's `generate`, it takes no language-model prompt (`input_ids`, `attention_mask`,
        `inputs_embeds`): it writes the instruction itself from the regions, so a tensor for any of them is an error
        (`None` is accepted). Its `sequences` are InstructBLIP's for that instruction without the prompt (or T5's
        start token): the report alone.

        With `config.empty_untouched_masks`, the mask of a face the prompter does not call manipulated is empty, unless
        the caller named the instruction's regions (`instruction.MODEL_REGION_SOURCES`).

        Returns:
            [`ForgeryTalkerGenerationOutput`] (whatever `return_dict_in_generate` says: the mask and regions are
            always returned).
        """
        refuse_language_model_inputs(kwargs)
        check_batch(
            pixel_values,
            instruction_input_ids=instruction_input_ids,
            instruction_qformer_input_ids=instruction_qformer_input_ids,
            region_labels=region_labels,
            instruction_regions=instruction_regions,
            mask_prompt_input_ids=mask_prompt_input_ids,
        )
        generation_config, model_kwargs = generation_settings(
            generation_config if generation_config is not None else self.generation_config, kwargs
        )
        prompter_output = self.prompter(pixel_values)
        prompter_regions = self._prompter_regions(prompter_output)
        region_source = self._region_source(region_source, instruction_regions)
        regions = self._instruction_regions(region_source, prompter_regions, region_labels, instruction_regions)
        language_inputs = self.build_language_inputs(
            instruction_input_ids, instruction_qformer_input_ids, regions, for_generation=True
        )
        backbone = self.instructblip
        image_features = self._image_features(pixel_values, language_inputs)
        pred_masks, iou_scores = self._predict_mask(image_features, prompter_output, regions, mask_prompt_input_ids)
        if self.config.empty_untouched_masks and region_source in MODEL_REGION_SOURCES:
            pred_masks, iou_scores = empty_untouched_masks(pred_masks, prompter_regions.flagged, iou_scores)
        input_ids, attention_mask = language_inputs["input_ids"], language_inputs["attention_mask"]
        inputs_embeds = backbone.get_input_embeddings()(input_ids)
        image_positions = backbone.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
        inputs_embeds = inputs_embeds.masked_scatter(
            image_positions, image_features.pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)
        )
        language_model_inputs = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        decoder_only = self.config.instructblip_config.use_decoder_only_language_model
        prompt_returned = decoder_only and penalize_instruction
        if prompt_returned:
            image_token_id = self.config.instructblip_config.image_token_index
            language_model_inputs["input_ids"] = torch.where(attention_mask.bool(), input_ids, image_token_id)
        if hasattr(backbone.language_model, "_hf_hook"):  # accelerate device map: give outputs back on our device
            backbone.language_model._hf_hook.io_same_device = True
        # what the language model's logits processors see before the report: the prompt ids it was given, nothing
        # (embeddings alone), or an encoder-decoder's start token
        prompt_length = input_ids.shape[1] if prompt_returned else (0 if decoder_only else 1)
        once_words = once_words_processors(generation_config, prompt_length)
        if once_words:
            model_kwargs["logits_processor"] = LogitsProcessorList([*(model_kwargs.get("logits_processor") or []), *once_words])
        generated = backbone.language_model.generate(
            **language_model_inputs, generation_config=generation_config, **model_kwargs
        )
        sequences = generated if isinstance(generated, torch.Tensor) else generated.sequences
        # the language model returns the prompt ids it was given (decoder-only) or the decoder's start token first
        if prompt_returned:
            sequences = sequences[:, input_ids.shape[1] :]
        elif not decoder_only:
            sequences = sequences[:, 1:]
        return ForgeryTalkerGenerationOutput(
            sequences=sequences,
            pred_masks=pred_masks,
            iou_scores=iou_scores,
            region_logits=prompter_output.region_logits,
            region_probs=prompter_regions.region_probs,
            located_region_probs=prompter_regions.located,
            predicted_regions=prompter_regions.flagged,
            instruction_regions=regions,
            mask_threshold=self.config.mask_threshold,
            region_threshold=self.config.region_threshold,
            located_region_threshold=self.config.prompter_config.located_region_threshold,
            # every field the language model returned (scores, logits, attentions, hidden states, cache, ...)
            **({} if isinstance(generated, torch.Tensor) else {k: v for k, v in generated.items() if k != "sequences"}),
        )


class _PrompterRegions(NamedTuple):
    """`(batch_size, num_regions)` each: region probabilities, located-region probabilities (`None` without a region
    map) and the flagged regions (0/1 long)."""

    region_probs: torch.Tensor
    located: torch.Tensor | None
    flagged: torch.Tensor


def _pad(rows: list[list[int]], value: int, side: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads token lists to one length; returns `(ids, attention_mask)`, both `(len(rows), max_length)`."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)
    for index, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[index, span] = torch.tensor(row, dtype=torch.long, device=device)
        attention_mask[index, span] = 1
    return ids, attention_mask


__all__ = ["ForgeryTalkerForConditionalGeneration", "ForgeryTalkerPreTrainedModel"]
