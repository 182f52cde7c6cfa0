"""ForgeryTalker model configuration."""

from __future__ import annotations

from dataclasses import field

from transformers import InstructBlipConfig, PreTrainedConfig, SamMaskDecoderConfig
from transformers.configuration_utils import SubConfigSpec

from .instruction import REGION_SOURCES
from .regions import REGION_NAMES

CONV_BRANCH_TYPES = ("grid", "pixel", "mobilenet_v2")
MASK_DECODER_TYPES = ("sam", "dff")
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_REGION_THRESHOLD = 0.5
PIPELINE_TASK = "forgery-analysis"
_IS_INSTALLED_PACKAGE = __name__.split(".")[0] == "forgerytalker"
"""Whether this is the installed package's module (whose registered pipeline serves `PIPELINE_TASK`) rather than the
copy `save_pretrained` writes next to the weights for `trust_remote_code` users. A config loaded with either class
contains the same whatever was imported before: the copy keeps the checkpoint's `custom_pipelines`, the package's
class leaves them out."""
RELEASE_FP32_MODULES = (
    "prompter",
    "mask_decoder",
    "instructblip.vision_model",
    "instructblip.qformer",
    "instructblip.query_tokens",
    "instructblip.language_projection",
)
"""The modules the authors' release runs in float32 (Face-ViT, EVA, the Q-Former, the projections and the mask path):
everything but Flan-T5, which LAVIS casts to bfloat16 (`blip2_t5_instruct.py:135-137`)."""

# The authors' released backbone, InstructBLIP with Flan-T5-XL (`Salesforce/instructblip-flan-t5-xl`): EVA ViT-g
# (the InstructBLIP vision defaults), a BERT-base Q-Former with the extra "[DEC]" token (vocabulary 30523) and
# Flan-T5-XL. `<image>` is added after the T5 tokenizer's 32100 entries (32000 pieces + 100 sentinels), so its id is
# 32100, inside T5's 32128-row embedding.
PAPER_INSTRUCTBLIP_CONFIG = {
    "qformer_config": {"vocab_size": 30523},
    "text_config": {
        "model_type": "t5",
        "vocab_size": 32128,
        "d_model": 2048,
        "d_kv": 64,
        "d_ff": 5120,
        "num_layers": 24,
        "num_heads": 32,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 1,
        "decoder_start_token_id": 0,
    },
    "num_query_tokens": 32,
    "image_token_index": 32100,
}


class ForgeryTalkerPrompterConfig(PreTrainedConfig):
    r"""
    Configuration of the Forgery Prompter Network (FPN, paper §4.2): a ViT whose first `num_conv_branch_layers`
    blocks also receive a parallel convolution branch (the first convolution a CoordConv), followed by the
    remaining attention blocks and a multi-label head over the facial regions.

    Args:
        image_size (`int`, *optional*, defaults to 224):
            Side of the square input image. Inputs of another size are resized to it.
        patch_size (`int`, *optional*, defaults to 16):
            Side of each square patch.
        num_channels (`int`, *optional*, defaults to 3):
            Number of input channels.
        hidden_size (`int`, *optional*, defaults to 384):
            Dimensionality of the tokens and of the convolution branch.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of ViT blocks in total (with and without the convolution branch).
        num_attention_heads (`int`, *optional*, defaults to 6):
            Attention heads per block.
        intermediate_size (`int`, *optional*, defaults to 1536):
            Width of each block's feed-forward layer.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layers and of the `"grid"` convolution branch.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout after attention and feed-forward layers.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the layer norms.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the query, key and value projections have a bias.
        num_conv_branch_layers (`int`, *optional*, defaults to 2):
            *m* in the paper: how many of the first ViT blocks get the parallel convolution branch summed into
            their input tokens. Must not exceed `num_hidden_layers`.
        conv_kernel_sizes (`list[int]`, *optional*, defaults to `[3, 5]`):
            Kernel size of each convolution of the branch, one per branch layer (the paper: a 3×3 CoordConv and
            a 5×5 convolution).
        use_coord_conv (`bool`, *optional*, defaults to `True`):
            Whether the first convolution of the branch is a CoordConv (coordinate channels appended).
        conv_branch_type (`str`, *optional*, defaults to `"grid"`):
            Where the convolution branch works. `"grid"` (the paper, Eq. 1–2): on the patch embeddings laid out on
            the patch grid, each convolution keeping the grid's size (GroupNorm, `hidden_act`), coordinates
            appended as `[x, y]`. `"pixel"` (the authors' released Face-ViT): on the raw image, each convolution
            with stride 2 followed by BatchNorm, LeakyReLU(0.01) for the first and ReLU for the others, and 2×2
            max-pooling; the first one sees the image with the `[row, column]` coordinate channels appended
            twice (their CoordConv adds them a second time); each output is flattened in raster order and
            average-pooled along that sequence (`adaptive_avg_pool1d`) to the number of patches.
            `"mobilenet_v2"`: the first `pretrained_branch_blocks` blocks of MobileNetV2's `features` (torchvision's
            parameter names, so ImageNet weights load strictly: `modeling_forgerytalker_mobilenet_v2`) on the image,
            summed once into the tokens entering the first block: into the patch tokens the map average-pooled to
            the patch grid and projected by a 1×1 convolution, into the class token its mean and standard deviation
            over the image, projected (`num_conv_branch_layers` and `conv_kernel_sizes` are unused).
            The network reads ImageNet-normalised pixels: pair it with an image processor using `IMAGENET_MEAN`
            and `IMAGENET_STD`.
        pretrained_branch_blocks (`int`, *optional*, defaults to 14):
            `"mobilenet_v2"` branch: how many of MobileNetV2's 19 feature blocks it keeps (14: up to the stride-16,
            96-channel stage; 7: stride 8, 32 channels).
        freeze_pretrained_branch (`bool`, *optional*, defaults to `True`):
            `"mobilenet_v2"` branch: keep its weights and BatchNorm statistics as loaded while training.
        region_names (`list[str]`, *optional*, defaults to the 21 MMTT regions):
            Names of the regions the head scores, in label order. Kept in the saved config to document the label
            order; it must equal `forgerytalker.REGION_NAMES`, the one owner of the vocabulary.
        negative_weight (`float`, *optional*, defaults to 0.2):
            ω in the paper's Eq. 3: weight of the binary cross-entropy on regions that are not manipulated.
        region_threshold (`float`, *optional*, defaults to 0.5):
            Probability above which a region counts as predicted (it then enters the instruction). The composite
            model reads it as `ForgeryTalkerConfig.region_threshold`.
        dice_smooth (`float`, *optional*, defaults to 1.0):
            Smoothing term of the Dice loss (Eq. 4), which keeps it defined and informative for authentic images
            whose label vector is all zeros.
        patch_mask_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of a dense auxiliary loss for training the network on its own (stage 1). When positive, a linear
            head (`patch_head`) scores every patch token for the share of its cell of the image that is manipulated;
            given those shares (`patch_mask_labels`, from the masks), its binary cross-entropy against them, times
            this weight, is added to the region loss. The region labels say only *which* regions were edited; the
            shares also say where, cell by cell. Its logits come out as `patch_logits`. 0 (the released
            checkpoints): no such head.
        region_map (`bool`, *optional*, defaults to `False`):
            Needs a patch head. A linear map (`region_map`) from the patch head's probabilities (`grid × grid`) to the
            regions: the probability that each region holds the edit, given that the face is manipulated. The class
            token's region head tells *whether* a face was edited and is a poor guide to *which* regions; the map
            names them from where the patch head sees the edit. It is not trained by gradient: stage 1 fits it, as a
            logistic probe, on unaugmented training faces each time it validates and before it saves
            (`forgerytalker.training.region_map`). Its logits come out as `located_region_logits`. `False`: regions
            are named by the region head alone.
        located_region_threshold (`float`, *optional*, defaults to 0.5):
            With a region map: of a face called manipulated, the regions whose located probability is above this
            are named (and always the most probable one). See `forgerytalker.region_decision`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialisation.
    """

    model_type = "forgerytalker_prompter"
    base_config_key = "prompter_config"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    num_conv_branch_layers: int = 2
    conv_kernel_sizes: list[int] = field(default_factory=lambda: [3, 5])
    use_coord_conv: bool = True
    conv_branch_type: str = "grid"
    pretrained_branch_blocks: int = 14
    freeze_pretrained_branch: bool = True
    region_names: list[str] = field(default_factory=lambda: list(REGION_NAMES))
    negative_weight: float = 0.2
    region_threshold: float = DEFAULT_REGION_THRESHOLD
    dice_smooth: float = 1.0
    patch_mask_loss_weight: float = 0.0
    region_map: bool = False
    located_region_threshold: float = 0.5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.conv_kernel_sizes = list(self.conv_kernel_sizes)
        self.region_names = list(self.region_names)
        if self.region_names != list(REGION_NAMES):
            raise ValueError(
                f"`region_names` must be the {len(REGION_NAMES)} regions of forgerytalker.REGION_NAMES in their order "
                f"({', '.join(REGION_NAMES)}), got {self.region_names}: this checkpoint scores another vocabulary"
            )
        if not 0 <= self.num_conv_branch_layers <= self.num_hidden_layers:
            raise ValueError(
                f"`num_conv_branch_layers` ({self.num_conv_branch_layers}) must lie between 0 and "
                f"`num_hidden_layers` ({self.num_hidden_layers})"
            )
        if len(self.conv_kernel_sizes) != self.num_conv_branch_layers:
            raise ValueError(
                f"`conv_kernel_sizes` needs one kernel size per branch layer: got {self.conv_kernel_sizes} for "
                f"`num_conv_branch_layers={self.num_conv_branch_layers}`"
            )
        if self.conv_branch_type not in CONV_BRANCH_TYPES:
            raise ValueError(f"`conv_branch_type` must be one of {CONV_BRANCH_TYPES}, got {self.conv_branch_type!r}")
        if not 1 <= self.pretrained_branch_blocks <= 19:
            raise ValueError(f"`pretrained_branch_blocks` must lie between 1 and 19 (MobileNetV2's feature blocks), got {self.pretrained_branch_blocks}")
        if any(size % 2 == 0 for size in self.conv_kernel_sizes):
            raise ValueError(f"`conv_kernel_sizes` must be odd so the patch grid keeps its size, got {self.conv_kernel_sizes}")
        if self.image_size % self.patch_size:
            raise ValueError(f"`image_size` ({self.image_size}) must be a multiple of `patch_size` ({self.patch_size})")
        if not 0.0 < self.negative_weight <= 1.0:
            raise ValueError(f"`negative_weight` (ω) must lie in (0, 1], got {self.negative_weight}")
        if not 0.0 < self.region_threshold < 1.0:
            raise ValueError(f"`region_threshold` must lie in (0, 1), got {self.region_threshold}")
        if self.patch_mask_loss_weight < 0:
            raise ValueError(f"`patch_mask_loss_weight` must be 0 (no patch head) or positive, got {self.patch_mask_loss_weight}")
        if self.region_map and not self.has_patch_head:
            raise ValueError("`region_map=True` needs a patch head to read: set `patch_mask_loss_weight` above 0 too")
        if not 0.0 < self.located_region_threshold < 1.0:
            raise ValueError(f"`located_region_threshold` must lie in (0, 1), got {self.located_region_threshold}")

    @property
    def num_regions(self) -> int:
        return len(self.region_names)

    @property
    def has_patch_head(self) -> bool:
        """Whether the network has a patch head and stage 1 trains it from the masks (`patch_mask_loss_weight > 0`)."""
        return self.patch_mask_loss_weight > 0

    @property
    def has_region_map(self) -> bool:
        """Whether regions are named from the patch head's evidence by a region map (`region_map`)."""
        return bool(self.region_map)

    @property
    def patch_grid(self) -> int:
        """Patches along each side of the image: `image_size // patch_size`."""
        return self.image_size // self.patch_size


class ForgeryTalkerConfig(PreTrainedConfig):
    r"""
    Configuration of [`ForgeryTalkerForConditionalGeneration`]: an InstructBLIP backbone, a Forgery Prompter
    Network that names suspicious regions, and a SAM-style mask decoder (paper §4).

    `ForgeryTalkerConfig()` with no arguments is the paper's model as the authors released it: InstructBLIP with
    Flan-T5-XL (`PAPER_INSTRUCTBLIP_CONFIG`), the default prompter and a SAM mask decoder. The instruction template
    and its tokenisation belong to [`ForgeryTalkerProcessor`]; the config says where the instruction's regions come
    from by default, and owns both decision thresholds.

    Args:
        instructblip_config (`dict` or [`InstructBlipConfig`], *optional*):
            The backbone: vision encoder, Q-Former and language model (any LM InstructBLIP supports). Its
            `image_token_index` must be set. Defaults to InstructBLIP-Flan-T5-XL.
        prompter_config (`dict` or [`ForgeryTalkerPrompterConfig`], *optional*):
            The Forgery Prompter Network. Its `region_threshold` is the model's region threshold.
        mask_decoder_config (`dict` or [`SamMaskDecoderConfig`], *optional*):
            SAM's two-way transformer and upscaling head. Its `hidden_size` is the width in which vision,
            Q-Former and prompter features are fused. ForgeryTalker predicts one mask, so
            `num_multimask_outputs` is always set to 0 (SAM's extra mask heads would never get a gradient).
        mask_decoder_type (`str`, *optional*, defaults to `"sam"`):
            `"sam"` (the paper, §4.4): SAM's mask decoder over the vision patch grid with the prompter's and
            Q-Former's features fused in, convolutional upscaling to 4× the grid and an IoU head. `"dff"` (the
            authors' released DFF checkpoint): the names of the instruction's regions, embedded with the language
            model's input embeddings and projected, attend to the vision patches; with the vision class token
            they make `mask_prompt_length + 1` tokens that SAM's two-way transformer runs over, and two MLP heads
            give a `mask_size`×`mask_size` mask (no IoU head). Its `mask_decoder_config.hidden_size` must be the
            vision encoder's.
        mask_prompt_length (`int`, *optional*, defaults to 21):
            `"dff"` decoder: the length of the region-name prompt in language-model tokens (names joined by
            spaces, cut from the left, the tokenizer's special tokens kept, right-padded).
        mask_size (`int`, *optional*, defaults to 224):
            `"dff"` decoder: side of the square mask it predicts.
        region_source (`str`, *optional*, defaults to `"predicted"`):
            Default origin of the regions named in the instruction: `"predicted"` (the prompter's output),
            `"ground_truth"` (the paper's FPN-GT oracle, needs `region_labels`), `"none"` (the plain instruction
            of the paper's w/o-FPN ablation) or `"explicit"` (regions the caller names).
        max_instruction_regions (`int`, *optional*):
            At most this many predicted regions enter the instruction (the most probable ones above the region
            threshold): set it to the longest region list the language model saw in training, so that it is never
            asked to describe a longer one. None: every predicted region.
        mask_threshold (`float`, *optional*, defaults to 0.5):
            Probability above which a pixel of the predicted mask counts as forged. Post-processing, evaluation
            and the pipeline use it unless told otherwise.
        empty_untouched_masks (`bool`, *optional*, defaults to `False`):
            `generate` answers a face its prompter does not call manipulated (no region flagged,
            `forgerytalker.region_decision`) with an empty mask: probability 0 at every pixel, so the mask, the
            heatmap and the mask metrics agree with the verdict. `False` returns the mask decoder's mask whatever
            the verdict, as the paper's model does. Regions the caller names (`"explicit"`, `"ground_truth"`) get
            the decoder's mask either way, and `forward` always returns it (the mask loss needs it).
        mask_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the mask loss against the language-model loss (the paper's Eq. 7 uses 1).
        mask_dice_weight (`float`, *optional*, defaults to 1.0):
            Weight of the Dice term added to the per-pixel binary cross-entropy of the mask loss.
        mask_iou_loss_weight (`float`, *optional*, defaults to 0.1):
            Weight of the mean-squared error between the decoder's IoU estimate and the IoU of its own mask. It
            trains SAM's IoU head into a per-image mask confidence, and gives every decoder parameter a gradient.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the modules ForgeryTalker adds around the backbone
            (the mask decoder and its projections). The backbone and the prompter use their own configs'.
        keep_in_fp32_modules (`list[str]`, *optional*):
            Modules (names as in `named_modules`, e.g. `"prompter"`, `"instructblip.qformer"`) whose weights stay in
            float32 when the model is loaded with `dtype=torch.bfloat16` or `torch.float16`; the rest takes that
            dtype, and each module's inputs are cast to its own dtype. The released-weights converter records the
            release's mix (`RELEASE_FP32_MODULES`: only the language model in half precision), where an all-bfloat16
            prompter flips region probabilities near the threshold. None: every weight takes the loading dtype.
    """

    model_type = "forgerytalker"
    sub_configs_defaults = {
        "instructblip_config": SubConfigSpec(config_class=InstructBlipConfig, init_kwargs=PAPER_INSTRUCTBLIP_CONFIG),
        "prompter_config": ForgeryTalkerPrompterConfig,
        "mask_decoder_config": SamMaskDecoderConfig,
    }

    instructblip_config: dict | PreTrainedConfig | None = None
    prompter_config: dict | PreTrainedConfig | None = None
    mask_decoder_config: dict | PreTrainedConfig | None = None
    mask_decoder_type: str = "sam"
    mask_prompt_length: int = 21
    mask_size: int = 224
    region_source: str = "predicted"
    max_instruction_regions: int | None = None
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    empty_untouched_masks: bool = False
    mask_loss_weight: float = 1.0
    mask_dice_weight: float = 1.0
    mask_iou_loss_weight: float = 0.1
    initializer_range: float = 0.02
    keep_in_fp32_modules: list[str] | None = None

    def __post_init__(self, **kwargs):
        if _IS_INSTALLED_PACKAGE:
            # `save_pretrained` writes `custom_pipelines` so that `pipeline(..., trust_remote_code=True)` finds the
            # pipeline's code in a process without this package. The installed package registers the task with its
            # own pipeline class, which transformers would refuse without `trust_remote_code` if the config named it.
            kwargs.pop("custom_pipelines", None)
        super().__post_init__(**kwargs)
        self.mask_decoder_config.num_multimask_outputs = 0
        if self.region_source not in REGION_SOURCES:
            raise ValueError(f"`region_source` must be one of {REGION_SOURCES}, got {self.region_source!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"`mask_threshold` must lie in (0, 1), got {self.mask_threshold}")
        if self.max_instruction_regions is not None and self.max_instruction_regions < 1:
            raise ValueError(f"`max_instruction_regions` must be at least 1 or None, got {self.max_instruction_regions}")
        if self.mask_decoder_type not in MASK_DECODER_TYPES:
            raise ValueError(f"`mask_decoder_type` must be one of {MASK_DECODER_TYPES}, got {self.mask_decoder_type!r}")
        vision_hidden_size = self.instructblip_config.vision_config.hidden_size
        if self.mask_decoder_type == "dff" and self.mask_decoder_config.hidden_size != vision_hidden_size:
            raise ValueError(
                f'`mask_decoder_type="dff"` attends to the vision patches directly, so `mask_decoder_config.hidden_size` '
                f"({self.mask_decoder_config.hidden_size}) must be the vision encoder's hidden size ({vision_hidden_size})"
            )
        if self.keep_in_fp32_modules is not None:
            self.keep_in_fp32_modules = list(self.keep_in_fp32_modules)
        for name in ("mask_prompt_length", "mask_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.instructblip_config.image_token_index is None:
            raise ValueError(
                "`instructblip_config.image_token_index` must be set: the language model input marks where the "
                "Q-Former's query outputs go with that token"
            )

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The language model's config (generation, embedding resizing and weight tying read it)."""
        return self.instructblip_config.get_text_config(decoder=decoder, encoder=encoder)

    @property
    def num_query_tokens(self) -> int:
        return self.instructblip_config.num_query_tokens

    @property
    def image_token_id(self) -> int:
        """The language model's image token, `instructblip_config.image_token_index`, under transformers' usual
        name (generation utilities read it to keep the image token out of generated text)."""
        return self.instructblip_config.image_token_index

    @property
    def region_names(self) -> list[str]:
        return self.prompter_config.region_names

    @property
    def region_threshold(self) -> float:
        """Probability above which a region is flagged (stored in `prompter_config`, which a stage-1 prompter
        checkpoint carries on its own)."""
        return self.prompter_config.region_threshold

    @region_threshold.setter
    def region_threshold(self, value: float) -> None:
        if not 0.0 < value < 1.0:
            raise ValueError(f"`region_threshold` must lie in (0, 1), got {value}")
        self.prompter_config.region_threshold = value


__all__ = [
    "CONV_BRANCH_TYPES",
    "MASK_DECODER_TYPES",
    "ForgeryTalkerConfig",
    "ForgeryTalkerPrompterConfig",
    "PAPER_INSTRUCTBLIP_CONFIG",
    "REGION_SOURCES",
    "RELEASE_FP32_MODULES",
]
