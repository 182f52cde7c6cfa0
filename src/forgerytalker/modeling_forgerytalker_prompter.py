"""The Forgery Prompter Network (FPN, paper §4.2): which of the 21 facial regions look manipulated."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.models.vit.modeling_vit import ViTAttention, ViTEmbeddings, ViTLayer
from transformers.utils import ModelOutput
from transformers.utils.output_capturing import capture_outputs

from .configuration_forgerytalker import ForgeryTalkerPrompterConfig
from .modeling_forgerytalker_mobilenet_v2 import MobileNetV2Features, block_channels


@dataclass
class ForgeryTalkerPrompterOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `region_labels` is given):
        ½(ω-weighted binary cross-entropy + Dice) over the regions (paper Eq. 3–5), averaged over the batch; with
        `patch_mask_labels`, plus `patch_mask_loss_weight` × the patch head's binary cross-entropy.
    region_logits (`torch.FloatTensor` of shape `(batch_size, num_regions)`):
        One logit per region; `sigmoid` gives the probability that the region is manipulated.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`):
        The fused global/local tokens (class token first) after the final layer norm. The mask decoder attends
        to them.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The tokens entering the first block (with the first convolution branch output added) and the output of
        every block, each `(batch_size, 1 + num_patches, hidden_size)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
        Each block's attention weights, `(batch_size, num_heads, 1 + num_patches, 1 + num_patches)` (they need
        `attn_implementation="eager"`).
    patch_logits (`torch.FloatTensor` of shape `(batch_size, grid, grid)`, *optional*, returned by a network with a
        patch head, `config.patch_mask_loss_weight > 0`):
        One logit per patch (`grid = image_size // patch_size`, rows first); `sigmoid` gives the predicted share
        of the patch's cell that is manipulated.
    located_region_logits (`torch.FloatTensor` of shape `(batch_size, num_regions)`, *optional*, returned by a network
        with a region map, `config.region_map`):
        One logit per region, read by the region map from the patch probabilities; `sigmoid` gives the probability
        that the region holds the edit, given that the face is manipulated.
    """

    loss: torch.FloatTensor | None = None
    region_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    patch_logits: torch.FloatTensor | None = None
    located_region_logits: torch.FloatTensor | None = None


def region_map_loss(located_region_logits: torch.Tensor, region_labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the region map's logits `(batch_size, num_regions)` on the manipulated samples only
    (those with a region label): the map says which regions hold an edit *given* that there is one. A scalar; 0 when
    no sample is manipulated. What `training.region_map.fit_region_map` minimises."""
    manipulated = region_labels.bool().any(dim=-1)
    if not manipulated.any():
        return located_region_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(
        located_region_logits[manipulated], region_labels[manipulated].to(located_region_logits.dtype)
    )


def forgery_prompter_loss(
    region_logits: torch.Tensor, region_labels: torch.Tensor, negative_weight: float, dice_smooth: float
) -> torch.Tensor:
    """½(L_BCE + L_Dice) of paper Eq. 5 with the ω-discounted BCE of Eq. 3.

    Args:
        region_logits: `(batch_size, num_regions)` logits.
        region_labels: `(batch_size, num_regions)` 0/1 targets.
        negative_weight: ω, the weight of the BCE on regions that are not manipulated.
        dice_smooth: added to numerator and denominator of the Dice ratio, so that a sample with no
            manipulated region (an authentic image) is pushed towards predicting none.

    Returns:
        A scalar: the per-sample loss averaged over the batch.
    """
    labels = region_labels.to(region_logits.dtype)
    bce = -(labels * F.logsigmoid(region_logits) + negative_weight * (1 - labels) * F.logsigmoid(-region_logits))
    probabilities = torch.sigmoid(region_logits)
    overlap = (labels * probabilities).sum(-1)
    dice = 1 - (2 * overlap + dice_smooth) / (labels.sum(-1) + probabilities.sum(-1) + dice_smooth)
    return 0.5 * (bce.mean(-1) + dice).mean()


def coordinate_channels(features: torch.Tensor, rows_first: bool = False) -> torch.Tensor:
    """Column (x) and row (y) coordinates in [-1, 1] as two channels shaped like `features` `(batch, _, height, width)`.

    `[x, y]` for the grid branch's CoordConv; `rows_first=True` gives `[row, column]`, the order of the authors'
    CoordConv on raw pixels (its first channel varies down the rows).
    """
    batch_size, _, height, width = features.shape
    rows = torch.linspace(-1.0, 1.0, height, device=features.device, dtype=features.dtype)
    columns = torch.linspace(-1.0, 1.0, width, device=features.device, dtype=features.dtype)
    grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")
    channels = [grid_rows, grid_columns] if rows_first else [grid_columns, grid_rows]
    return torch.stack(channels).expand(batch_size, -1, -1, -1)


class ForgeryTalkerPrompterConvLayer(nn.Module):
    """One convolution of the local branch on the patch grid: `(batch, hidden, h, w)` → same shape.

    With `use_coord_conv` the input gets two coordinate channels first (CoordConv), so the branch can tell
    where on the face a feature sits.
    """

    def __init__(self, hidden_size: int, kernel_size: int, use_coord_conv: bool, hidden_act: str):
        super().__init__()
        self.use_coord_conv = use_coord_conv
        in_channels = hidden_size + 2 if use_coord_conv else hidden_size
        self.conv = nn.Conv2d(in_channels, hidden_size, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(1, hidden_size)
        self.activation = ACT2FN[hidden_act]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.use_coord_conv:
            features = torch.cat([features, coordinate_channels(features)], dim=1)
        return self.activation(self.norm(self.conv(features)))


class ForgeryTalkerPrompterPixelConvLayer(nn.Module):
    """One convolution of the released Face-ViT's branch on raw pixels: `(batch, c, h, w)` → `(batch, hidden, h/4, w/4)`.

    Convolution with stride 2 and "same" padding, BatchNorm, `activation`, then 2×2 max-pooling. The first layer
    sees the image with `[row, column]` appended twice (`coordinate_copies=2`): their `AddCoords` and then their
    `CoordConv` each append the pair.
    """

    def __init__(self, in_channels: int, hidden_size: int, kernel_size: int, activation: nn.Module, coordinate_copies: int = 0):
        super().__init__()
        self.coordinate_copies = coordinate_copies
        self.conv = nn.Conv2d(in_channels + 2 * coordinate_copies, hidden_size, kernel_size, stride=2, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(hidden_size)
        self.activation = activation
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.coordinate_copies:
            coordinates = coordinate_channels(features, rows_first=True)
            features = torch.cat([features, *[coordinates] * self.coordinate_copies], dim=1)
        return self.pool(self.activation(self.norm(self.conv(features))))


class ForgeryTalkerPrompterPretrainedBranch(nn.Module):
    """The `"mobilenet_v2"` branch: MobileNetV2's first blocks (`backbone.features.*`, torchvision's names) on the
    image. `(batch, 3, H, W)` → `(batch, 1 + grid², hidden)`, added to the class and patch tokens: the class token
    gets the projected mean and standard deviation of the feature map over the whole image (a local edit shows as
    spread), each patch token the map average-pooled onto its cell and projected."""

    def __init__(self, config: ForgeryTalkerPrompterConfig):
        super().__init__()
        self.grid = config.patch_grid
        channels = block_channels(config.pretrained_branch_blocks)
        self.backbone = MobileNetV2Features(config.pretrained_branch_blocks, frozen=config.freeze_pretrained_branch)
        self.projection = nn.Conv2d(channels, config.hidden_size, kernel_size=1)
        self.summary_projection = nn.Linear(2 * channels, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixel_values)
        summary = self.summary_projection(torch.cat([features.mean((2, 3)), features.std((2, 3))], dim=-1))
        patches = self.projection(F.adaptive_avg_pool2d(features, self.grid)).flatten(2).transpose(1, 2)
        return torch.cat([summary[:, None], patches], dim=1)


def build_conv_branch(config: ForgeryTalkerPrompterConfig) -> nn.ModuleList:
    """The prompter's convolution branch, one layer per entry of `config.conv_kernel_sizes` (see `conv_branch_type`);
    the `"mobilenet_v2"` branch is one module."""
    if config.conv_branch_type == "mobilenet_v2":
        return nn.ModuleList([ForgeryTalkerPrompterPretrainedBranch(config)])
    if config.conv_branch_type == "grid":
        return nn.ModuleList(
            ForgeryTalkerPrompterConvLayer(
                config.hidden_size, kernel_size, use_coord_conv=config.use_coord_conv and index == 0, hidden_act=config.hidden_act
            )
            for index, kernel_size in enumerate(config.conv_kernel_sizes)
        )
    return nn.ModuleList(
        ForgeryTalkerPrompterPixelConvLayer(
            config.num_channels if index == 0 else config.hidden_size,
            config.hidden_size,
            kernel_size,
            activation=nn.LeakyReLU(0.01) if index == 0 else nn.ReLU(),
            coordinate_copies=2 if config.use_coord_conv and index == 0 else 0,
        )
        for index, kernel_size in enumerate(config.conv_kernel_sizes)
    )


class ForgeryTalkerPrompterNetwork(PreTrainedModel):
    """ViT with a parallel convolution branch summed into its first *m* blocks, and a multi-label head.

    Paper Eq. 1–2: the patch tokens of each of the first `num_conv_branch_layers` blocks receive the output
    of one more convolution of the branch, so `F_g^i = MHA_i(F_g^i + F_l^i)`. The branch starts from the patch
    embeddings laid out on the grid (`conv_branch_type="grid"`, the paper) or from the image itself
    (`"pixel"`, the authors' released Face-ViT). The class token of the last layer feeds the region head.
    Usable on its own for stage 1 of training, saved and loaded with `save_pretrained` / `from_pretrained`.
    """

    config: ForgeryTalkerPrompterConfig
    config_class = ForgeryTalkerPrompterConfig
    base_model_prefix = "prompter"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]
    _can_record_outputs = {"hidden_states": ViTLayer, "attentions": ViTAttention}

    def __init__(self, config: ForgeryTalkerPrompterConfig):
        super().__init__(config)
        # The ViT modules read this config itself (its fields carry ViTConfig's names), so that the attention
        # implementation they look up at each call is the one `set_attn_implementation` sets
        self.embeddings = ViTEmbeddings(config)
        self.conv_branch = build_conv_branch(config)
        self.layers = nn.ModuleList(ViTLayer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.region_head = nn.Linear(config.hidden_size, config.num_regions)
        self.patch_head = nn.Linear(config.hidden_size, 1) if config.has_patch_head else None
        grid_cells = config.patch_grid**2
        self.region_map = nn.Linear(grid_cells, config.num_regions) if config.has_region_map else None
        self.post_init()
        self.requires_grad_(True)  # the region map is fitted, never trained by gradient

    def requires_grad_(self, requires_grad: bool = True):
        """As `nn.Module.requires_grad_`, but a frozen pretrained branch (`freeze_pretrained_branch`) and the region
        map (fitted, not trained by gradient: `training.region_map`) never train: their parameters keep
        `requires_grad=False` (data-parallel training would wait for their gradients)."""
        super().requires_grad_(requires_grad)
        for module in self.modules():
            if isinstance(module, MobileNetV2Features) and module.frozen:
                nn.Module.requires_grad_(module, False)
        if self.region_map is not None:
            nn.Module.requires_grad_(self.region_map, False)
        return self

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)

    def _branch_tokens(self, local: torch.Tensor, num_patches: int) -> torch.Tensor:
        """A branch output `(batch, hidden, h, w)` as `(batch, num_patches, hidden)` tokens to add to the patches.

        The grid branch keeps the patch grid, so its raster order is the patches'. The pixel branch's map is
        flattened in raster order and average-pooled along that sequence to `num_patches` (as released: the pooling
        windows of a flattened raster cross image rows, they are not aligned with the patches).
        """
        features = local.flatten(2)
        if self.config.conv_branch_type == "pixel":
            features = F.adaptive_avg_pool1d(features, num_patches)
        return features.transpose(1, 2)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        region_labels: torch.Tensor | None = None,
        patch_mask_labels: torch.Tensor | None = None,
        **kwargs,
    ) -> ForgeryTalkerPrompterOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images; resized to `config.image_size` when they have another size.
            region_labels (`torch.Tensor` of shape `(batch_size, num_regions)`, *optional*):
                0/1 targets; when given, the output carries the loss.
            patch_mask_labels (`torch.FloatTensor` of shape `(batch_size, grid, grid)`, *optional*):
                The manipulated share (0–1) of each patch's cell of the image; needs a patch head
                (`config.patch_mask_loss_weight > 0`), whose weighted loss then joins the region loss.
            output_attentions, output_hidden_states, return_dict:
                As in transformers (see [`ForgeryTalkerPrompterOutput`]).
        """
        size = self.config.image_size
        if pixel_values.shape[-2:] != (size, size):
            pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        tokens = self.embeddings(pixel_values)
        batch_size, num_tokens, hidden_size = tokens.shape
        if self.config.conv_branch_type == "pixel":
            local = pixel_values
        else:
            grid = self.config.patch_grid
            local = tokens[:, 1:].transpose(1, 2).reshape(batch_size, hidden_size, grid, grid)
        for index, layer in enumerate(self.layers):
            if index < len(self.conv_branch) and isinstance(self.conv_branch[index], ForgeryTalkerPrompterPretrainedBranch):
                tokens = tokens + self.conv_branch[index](pixel_values)
            elif index < len(self.conv_branch):
                local = self.conv_branch[index](local)
                tokens = torch.cat([tokens[:, :1], tokens[:, 1:] + self._branch_tokens(local, num_tokens - 1)], dim=1)
            tokens = layer(tokens, **kwargs)
        hidden_states = self.layernorm(tokens)
        region_logits = self.region_head(hidden_states[:, 0])
        patch_logits = located_region_logits = None
        if self.patch_head is not None:
            grid = self.config.patch_grid
            patch_logits = self.patch_head(hidden_states[:, 1:]).reshape(batch_size, grid, grid)
        if self.region_map is not None:
            located_region_logits = self.region_map(torch.sigmoid(patch_logits).flatten(1))
        loss = None
        if region_labels is not None:
            loss = forgery_prompter_loss(
                region_logits, region_labels, self.config.negative_weight, self.config.dice_smooth
            )
        if patch_mask_labels is not None:
            patch_loss = self.config.patch_mask_loss_weight * self._patch_mask_loss(patch_logits, patch_mask_labels)
            loss = patch_loss if loss is None else loss + patch_loss
        return ForgeryTalkerPrompterOutput(
            loss=loss,
            region_logits=region_logits,
            last_hidden_state=hidden_states,
            patch_logits=patch_logits,
            located_region_logits=located_region_logits,
        )

    def _patch_mask_loss(self, patch_logits: torch.Tensor | None, patch_mask_labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the patch logits `(batch, grid, grid)` against the manipulated shares."""
        if patch_logits is None:
            raise ValueError(
                "`patch_mask_labels` needs a prompter with a patch head: this one has `patch_mask_loss_weight=0`"
            )
        if patch_mask_labels.shape != patch_logits.shape:
            raise ValueError(
                f"`patch_mask_labels` must have shape {tuple(patch_logits.shape)} (batch, grid, grid), got "
                f"{tuple(patch_mask_labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(patch_logits, patch_mask_labels.to(patch_logits.dtype))


_DEPRECATED_NAMES = {
    "ForgeryPrompterNetwork": "ForgeryTalkerPrompterNetwork",
    "ForgeryPrompterOutput": "ForgeryTalkerPrompterOutput",
    "pixel_coordinate_channels": "coordinate_channels(features, rows_first=True)",
}
"""The earlier public names (until 0.1.0) -> what replaces them; they still work, with a `FutureWarning`."""


def __getattr__(name: str):
    if name not in _DEPRECATED_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"`{name}` is deprecated; use `{_DEPRECATED_NAMES[name]}`", FutureWarning, stacklevel=2)
    if name == "pixel_coordinate_channels":
        return functools.partial(coordinate_channels, rows_first=True)
    return globals()[_DEPRECATED_NAMES[name]]


__all__ = [
    "ForgeryTalkerPrompterNetwork",
    "ForgeryTalkerPrompterOutput",
    "coordinate_channels",
    "forgery_prompter_loss",
    "region_map_loss",
]
