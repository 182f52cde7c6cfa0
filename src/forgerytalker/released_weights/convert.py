"""One conversion of the released weights into a ForgeryTalker checkpoint folder.

    from forgerytalker.released_weights import convert_released_checkpoint
    report = convert_released_checkpoint(
        "Salesforce/instructblip-flan-t5-xl",            # or its downloaded folder
        "weights/2111_checkpoint_best.pth",              # LianJC/DFF-InstructBLIP-Detection
        "weights/Fakeface-ViT-H_14-...-checkpoint.bin",  # LianJC/Face-ViT-MultiLabel
        "forgerytalker-dff",
    )

Nothing is held whole: the converter plans every weight from the files' headers, then writes the checkpoint shard by
shard, reading each weight from its source as it goes (`released_weights.streaming`). The folder loads with
`AutoModel` / `AutoProcessor` (with `trust_remote_code=True` in a process that does not import
forgerytalker), and runs through `generate`, the `forgery-analysis` pipeline and `forgerytalker evaluate`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import BlipImageProcessorPil, InstructBlipConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.modeling_utils import remove_tied_weights_from_state_dict
from transformers.utils import SAFE_WEIGHTS_NAME

from ..configuration_forgerytalker import RELEASE_FP32_MODULES, ForgeryTalkerConfig
from ..instruction import DFF_INSTRUCTION_WORDING
from ..modeling_forgerytalker import GENERATION_DEFAULTS, ForgeryTalkerForConditionalGeneration
from ..output_folder import OutputFolderError, Owner, replacing
from ..paths import resolve_local_path
from ..processing_forgerytalker import ForgeryTalkerProcessor
from .files import CheckpointConversionError, check_safetensors_files, dff_state_dict, load_pickle, tensor_dict
from .key_mapping import (
    FACE_VIT_PREFIX,
    REQUIRED_DFF_PREFIXES,
    dff_drop_reason,
    dff_source,
    dff_target,
    face_vit_source,
    face_vit_target,
)
from .sizes import dff_mask_decoder_settings, prompter_config_from_face_vit
from .streaming import TensorSource, WeightFiles, weight_file_keys, write_shards

logger = logging.getLogger(__name__)

DFF_GENERATION_SETTINGS = GENERATION_DEFAULTS
"""The release's generation arguments; `modeling_forgerytalker.GENERATION_DEFAULTS` owns them."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REPORT_NAME = "conversion_report.json"
COMMAND = "forgerytalker convert-checkpoint"
OWNER = Owner(COMMAND, overwrite_flag="--overwrite (overwrite=True in Python)")
MAX_SHARD_SIZE = "1GB"
"""The converter's default safetensors shard size: the released model (9 GiB in bfloat16) is written in shards that
load and download one by one."""
_LISTED = 20


@dataclass
class ConversionReport:
    """What a conversion did with every key, written into the output folder as `conversion_report.json`.

    `dtype` is the dtype of the weights outside `float32_modules`, which are written (and load) in float32.
    `mapped` counts the keys placed from each file (every Face-ViT key, every DFF key not dropped); `dropped` lists each dropped DFF key (and the runner
    checkpoint's training state) with the reason; `face_vit_overridden` the Face-ViT keys whose value came from the
    DFF checkpoint; `from_instructblip` the optional DFF targets left at the InstructBLIP base's values.
    """

    output_dir: str
    num_parameters: int
    dtype: str
    float32_modules: list[str] = field(default_factory=list)
    mapped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    face_vit_overridden: list[str] = field(default_factory=list)
    from_instructblip: list[str] = field(default_factory=list)

    def summary(self) -> str:
        precision = self.dtype
        if self.float32_modules and self.dtype != "float32":
            precision += f"; float32: {', '.join(self.float32_modules)}"
        lines = [
            f"Wrote a ForgeryTalker checkpoint ({self.num_parameters:,} parameters, {precision}) to {self.output_dir}",
            *(f"  {count} keys from {source}" for source, count in self.mapped.items()),
            f"  {len(self.dropped)} entries dropped (listed with the reason in {REPORT_NAME})",
            f"  {len(self.face_vit_overridden)} Face-ViT tensors taken from the DFF checkpoint, which LAVIS loads after the "
            "Face-ViT file (its BatchNorm statistics, and all of Face-ViT in a finetune-stage checkpoint)",
        ]
        if self.from_instructblip:
            lines.append(
                f"  {len(self.from_instructblip)} tensors not in the DFF checkpoint kept from the InstructBLIP base: "
                + ", ".join(self.from_instructblip)
            )
        return "\n".join(lines)


def dff_image_processor(image_size: int) -> BlipImageProcessorPil:
    """The release's image transform (`blip_image_eval`): squashed to `image_size`², bicubic, CLIP mean and std."""
    return BlipImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        do_convert_rgb=True,
    )


def _listed(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _needed(targets: list[str], source_of) -> str:
    """The released keys that would fill `targets` (with the target where no rule gives one)."""
    return _listed([source_of(target) or f"(a tensor for {target})" for target in targets])


def _place_sources(
    face_vit: dict[str, torch.Tensor], dff: dict[str, torch.Tensor], face_vit_path: str, dff_path: str
) -> tuple[dict[str, tuple[str, str, torch.Tensor]], dict[str, str], list[str]]:
    """`{target: (argument, source key, tensor)}`, the dropped DFF keys with reasons, and the overridden Face-ViT keys.

    Raises `CheckpointConversionError` naming every key no rule places.
    """
    placed: dict[str, tuple[str, str, torch.Tensor]] = {}
    unknown = [key for key in face_vit if face_vit_target(key) is None]
    if unknown:
        raise CheckpointConversionError("face_vit_checkpoint", f"{face_vit_path}: keys that cannot be placed: {_listed(unknown)}")
    for key, tensor in face_vit.items():
        placed[face_vit_target(key)] = ("face_vit_checkpoint", key, tensor)
    dropped, overridden, unknown = {}, [], []
    for key, tensor in dff.items():
        reason = dff_drop_reason(key)
        if reason is not None:
            dropped[key] = reason
            continue
        target = dff_target(key)
        if target is None:
            unknown.append(key)
            continue
        if key.startswith(FACE_VIT_PREFIX) and target in placed:
            overridden.append(key[len(FACE_VIT_PREFIX) :])
        placed[target] = ("dff_checkpoint", key, tensor)
    if unknown:
        raise CheckpointConversionError(
            "dff_checkpoint",
            f"{dff_path}: keys that cannot be placed (neither mapped nor on the list of dropped keys): {_listed(unknown)}",
        )
    return placed, dropped, overridden


_BASE_PREFIX = "instructblip."
_WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
"""The weight files of a transformers checkpoint folder, in the order `from_pretrained` prefers them: an index of
shards, or one file."""


def _instructblip_folder(instructblip: str | os.PathLike) -> str:
    """The local folder of the InstructBLIP base: as given, or its hub snapshot (config, tokenizers and weights in
    safetensors, or in torch pickles where the repository has no safetensors)."""
    try:
        path = resolve_local_path(instructblip, "instructblip")
    except FileNotFoundError as error:
        raise CheckpointConversionError("instructblip", str(error)) from error
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(path, ignore_patterns=["*.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pt", "*.pth"])
        if not any(os.path.exists(os.path.join(folder, index)) or os.path.exists(os.path.join(folder, single))
                   for index, single in _WEIGHT_LAYOUTS):
            folder = snapshot_download(path, allow_patterns=["pytorch_model*.bin", "pytorch_model.bin.index.json"])
    except Exception as error:  # the hub client raises many kinds (network, authentication, unknown repository)
        raise CheckpointConversionError("instructblip", f"cannot download {path!r} from the hub: {error}") from error
    return folder


def _instructblip_weights(folder: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """`{key: (file, shape)}` of every weight of the InstructBLIP base folder, from the file headers."""
    for index_name, single_name in _WEIGHT_LAYOUTS:
        index, single = os.path.join(folder, index_name), os.path.join(folder, single_name)
        if os.path.isfile(index):
            try:
                files = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as error:
                raise CheckpointConversionError("instructblip", f"{index}: not a weight index ({error})") from error
            paths = [os.path.join(folder, name) for name in files]
            break
        if os.path.isfile(single):
            paths = [single]
            break
    else:
        raise CheckpointConversionError(
            "instructblip", f"{folder}: no InstructBLIP weights (model.safetensors, a safetensors index or pytorch_model.bin)"
        )
    weights = {}
    for path in paths:
        if not os.path.isfile(path):
            raise CheckpointConversionError("instructblip", f"{path}: listed in the weight index but missing; download it again")
        try:
            weights.update({key: (path, shape) for key, shape in weight_file_keys(path)})
        except (OSError, RuntimeError, pickle.UnpicklingError, ValueError) as error:
            raise CheckpointConversionError("instructblip", f"{path}: cannot be read ({error})") from error
    return weights


def _base_config(folder: str, argument: str = "instructblip") -> InstructBlipConfig:
    try:
        return InstructBlipConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise CheckpointConversionError(argument, f"cannot read an InstructBLIP config from {folder!r}: {error}") from error


def _untie_where_the_sources_differ(
    model: ForgeryTalkerForConditionalGeneration,
    placed: dict[str, tuple[str, str, torch.Tensor]],
    base: dict[str, tuple[str, tuple[int, ...]]],
) -> None:
    """Unties the weights the config ties (Flan-T5's LM head and its embeddings) whose sources both hold, with
    different values, as `from_pretrained` does: the converted checkpoint then holds both, as a loaded model would."""
    files = WeightFiles()

    def value(name: str) -> torch.Tensor | None:
        if name in placed:
            return placed[name][2]
        key = name[len(_BASE_PREFIX) :]
        if name.startswith(_BASE_PREFIX) and key in base:
            return files.read(base[key][0], key).clone()  # a copy outlives the file it came from
        return None

    try:
        for target, tied_to in list(model.all_tied_weights_keys.items()):
            own, shared = value(target), value(tied_to)
            if own is not None and shared is not None and not torch.equal(own, shared):
                module_name, _, attribute = target.rpartition(".")
                setattr(model.get_submodule(module_name), attribute, nn.Parameter(torch.empty_like(own, device="meta")))
                model.all_tied_weights_keys.pop(target)
    finally:
        files.close()


def _sources(
    model: ForgeryTalkerForConditionalGeneration,
    placed: dict[str, tuple[str, str, torch.Tensor]],
    base: dict[str, tuple[str, tuple[int, ...]]],
    paths: dict[str, str],
) -> tuple[dict[str, TensorSource], dict[str, tuple[int, ...]], list[str]]:
    """Where each weight the converted checkpoint holds comes from, in writing order (the Face-ViT file's, the DFF
    checkpoint's, then the base's file by file), with their shapes and the optional DFF targets left at the base's
    values. Raises naming any key that cannot be placed, any shape that differs and any weight with no source."""
    _untie_where_the_sources_differ(model, placed, base)
    expected = model.state_dict()
    written = remove_tied_weights_from_state_dict(dict(expected), model)
    for target, (argument, key, tensor) in placed.items():
        if target not in written:
            raise CheckpointConversionError(argument, f"{paths[argument]}: key {key!r} cannot be placed: the model has no {target!r}")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise CheckpointConversionError(
                argument,
                f"{paths[argument]}: key {key!r} has shape {tuple(tensor.shape)} but {target!r} needs "
                f"{tuple(expected[target].shape)}",
            )
    from_dff = {target for target, (argument, _, _) in placed.items() if argument == "dff_checkpoint"}
    lacking = [key for key in written if key.startswith(REQUIRED_DFF_PREFIXES) and key not in from_dff]
    if lacking:
        raise CheckpointConversionError(
            "dff_checkpoint", f"{paths['dff_checkpoint']}: missing required keys {_needed(lacking, dff_source)}"
        )
    lacking = [key for key in written if key.startswith("prompter.") and key not in placed]
    if lacking:
        raise CheckpointConversionError(
            "face_vit_checkpoint", f"{paths['face_vit_checkpoint']}: missing required keys {_needed(lacking, face_vit_source)}"
        )
    from_base = {target: target[len(_BASE_PREFIX) :] for target in written if target not in placed}
    problems = sorted(
        key for target, key in from_base.items()
        if not target.startswith(_BASE_PREFIX) or key not in base or base[key][1] != tuple(expected[target].shape)
    )
    if problems:
        raise CheckpointConversionError(
            "instructblip", f"the InstructBLIP base lacks weights (or has them in other shapes): {_listed(problems)}"
        )
    order = {"face_vit_checkpoint": 0, "dff_checkpoint": 1}
    sources = {
        target: TensorSource(tensor=tensor)
        for target, (_, _, tensor) in sorted(placed.items(), key=lambda item: order[item[1][0]])
    }
    sources.update(
        (target, TensorSource(file=base[key][0], key=key)) for target, key in sorted(from_base.items(), key=lambda item: base[item[1]][0])
    )
    shapes = {target: tuple(expected[target].shape) for target in sources}
    optional = ("instructblip.query_tokens", "instructblip.vision_model.post_layernorm.weight", "instructblip.vision_model.post_layernorm.bias")
    return sources, shapes, [key for key in optional if key not in from_dff]


def _written_dtypes(model: ForgeryTalkerForConditionalGeneration, keys, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype each weight is written in: what `from_pretrained(out, dtype=dtype)` would give it. Floating weights
    in `dtype`, except those the model keeps in float32 (`_keep_in_fp32_modules_strict` in half precision, which holds
    the config's `keep_in_fp32_modules`, and `_keep_in_fp32_modules` in float16: Flan-T5's `wo`, as transformers
    decides, by searching each pattern in the name); the rest (integer buffers) as the model holds them."""
    patterns = set()
    if dtype in (torch.float16, torch.bfloat16):
        patterns |= set(model._keep_in_fp32_modules_strict or ())
    if dtype == torch.float16:
        patterns |= set(model._keep_in_fp32_modules or ())
    kept_in_float32 = re.compile("|".join(f"(?:{pattern})" for pattern in sorted(patterns)) if patterns else r"(?!)")
    expected = model.state_dict()
    return {
        key: (torch.float32 if kept_in_float32.search(key) else dtype) if expected[key].is_floating_point() else expected[key].dtype
        for key in keys
    }


def _cast_meta(model: ForgeryTalkerForConditionalGeneration, dtypes: dict[str, torch.dtype]) -> None:
    """Gives the weights of `model` (on the meta device) the dtypes they are written in, so that what
    `save_pretrained` records of the model (the config's `dtype`) describes the written weights."""
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name in dtypes:
            tensor.data = torch.empty_like(tensor.data, dtype=dtypes[name])


def _build_processor(path: str, config: ForgeryTalkerConfig) -> ForgeryTalkerProcessor:
    processor = ForgeryTalkerProcessor.from_instructblip(
        path, mask_prompt_length=config.mask_prompt_length, **DFF_INSTRUCTION_WORDING
    )
    processor.image_processor = dff_image_processor(config.instructblip_config.vision_config.image_size)
    if processor.image_token_id != config.instructblip_config.image_token_index:
        raise CheckpointConversionError(
            "instructblip",
            f"the tokenizer's {processor.image_token!r} is id {processor.image_token_id} but the model's "
            f"image_token_index is {config.instructblip_config.image_token_index}",
        )
    return processor


def convert_released_checkpoint(
    instructblip: str | os.PathLike,
    dff_checkpoint: str | os.PathLike,
    face_vit_checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    keep_in_fp32_modules: Sequence[str] = RELEASE_FP32_MODULES,
    prompter_num_heads: int = 16,
    mask_decoder_num_heads: int = 8,
    allow_unsafe_pickle: bool = False,
    overwrite: bool = False,
    max_shard_size: str | int = MAX_SHARD_SIZE,
) -> ConversionReport:
    """Converts the released DFF + Face-ViT weights on an InstructBLIP base into a ForgeryTalker checkpoint folder.

    Args:
        instructblip: `Salesforce/instructblip-flan-t5-xl` (hub id or its folder): the vision encoder and Flan-T5,
            which the DFF checkpoint does not hold, and the tokenizers.
        dff_checkpoint: `2111_checkpoint_best.pth`: a LAVIS runner checkpoint (`{"model": ...}`) or a flat state
            dict, fp16 or fp32.
        face_vit_checkpoint: the Face-ViT `.bin` (a plain state dict).
        output_dir: the folder to write; it appears only when complete.
        dtype: `"float32"` (default), `"bfloat16"` or `"float16"`: the dtype of the weights written, except those
            inside `keep_in_fp32_modules`.
        keep_in_fp32_modules: the modules written in float32 whatever `dtype` says, and kept in float32 when the
            converted model is loaded in half precision (recorded in its config): by default the release's mix
            (`RELEASE_FP32_MODULES`, everything but Flan-T5). `()`: every weight in `dtype` (smaller, but region
            probabilities near the threshold, and so the instruction and the mask, can differ from the release's).
        prompter_num_heads, mask_decoder_num_heads: attention heads, which no tensor shape tells (the release's:
            16 for Face-ViT-H/14, 8 for the mask path).
        allow_unsafe_pickle: load the pickles fully when they need more than tensors and plain containers.
            Unpickling can run arbitrary code: only for files you trust.
        overwrite: replace an existing `output_dir`.
        max_shard_size: the largest safetensors file written (`"1GB"` by default, as `save_pretrained` takes it).
            The weights are read from their sources shard by shard (`released_weights.streaming`): memory holds the
            shard being written and the one source file being read, never the whole model (at full size the
            conversion peaks near 5 GiB resident).

    Raises:
        CheckpointConversionError: an input cannot be used; `argument` names it, the message names the file and the
            key (one no rule places, a required one missing, a shape that differs, a pickle refused).
    """
    if dtype not in DTYPES:
        raise CheckpointConversionError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    output_dir = Path(output_dir)
    # before minutes of reading: a folder that cannot be written or replaced, or that another conversion is writing,
    # is refused at once; the lock is held until the new folder is in place (where files that appeared meanwhile in
    # the folder stop the swap)
    try:
        with replacing(output_dir, OWNER, overwrite=overwrite) as install:
            return _convert(
                instructblip, dff_checkpoint, face_vit_checkpoint, output_dir, install, dtype=dtype,
                keep_in_fp32_modules=keep_in_fp32_modules, prompter_num_heads=prompter_num_heads,
                mask_decoder_num_heads=mask_decoder_num_heads, allow_unsafe_pickle=allow_unsafe_pickle,
                max_shard_size=max_shard_size,
            )
    except OutputFolderError as error:
        raise CheckpointConversionError("output_dir", str(error)) from None


def _convert(
    instructblip, dff_checkpoint, face_vit_checkpoint, output_dir: Path, install, *, dtype, keep_in_fp32_modules,
    prompter_num_heads, mask_decoder_num_heads, allow_unsafe_pickle, max_shard_size,
) -> ConversionReport:
    """`convert_released_checkpoint` once its output folder is locked: reads, converts and `install`s the folder."""
    torch_dtype = DTYPES[dtype]
    if dtype == "float16":
        logger.warning(
            "dtype float16: Flan-T5's activations overflow float16's range; its `wo` projections stay in float32 (as "
            "transformers keeps them), but reports may still come out broken. The release runs Flan-T5 in bfloat16: "
            "prefer --dtype bfloat16."
        )
    paths = {"dff_checkpoint": str(dff_checkpoint), "face_vit_checkpoint": str(face_vit_checkpoint)}
    check_safetensors_files(instructblip, "instructblip")

    logger.info("Reading the Face-ViT checkpoint %s", face_vit_checkpoint)
    face_vit_object = load_pickle(face_vit_checkpoint, "face_vit_checkpoint", allow_unsafe_pickle)
    face_vit = tensor_dict(face_vit_object, face_vit_checkpoint, "face_vit_checkpoint")
    logger.info("Reading the DFF checkpoint %s", dff_checkpoint)
    dff_object = load_pickle(dff_checkpoint, "dff_checkpoint", allow_unsafe_pickle)
    dff, training_state = dff_state_dict(dff_object, dff_checkpoint, "dff_checkpoint")
    placed, dropped, overridden = _place_sources(face_vit, dff, paths["face_vit_checkpoint"], paths["dff_checkpoint"])
    dropped.update({entry: "LAVIS runner training state" for entry in training_state})

    prompter_config = prompter_config_from_face_vit(face_vit, prompter_num_heads, paths["face_vit_checkpoint"])
    decoder_settings = dff_mask_decoder_settings(dff, mask_decoder_num_heads, paths["dff_checkpoint"])
    mapped = {paths["face_vit_checkpoint"]: len(face_vit), paths["dff_checkpoint"]: len(dff) - (len(dropped) - len(training_state))}
    # only the placed tensors stay referenced: the dropped ones, and the Face-ViT copies the DFF checkpoint overrides,
    # leave memory with their dicts
    del face_vit_object, face_vit, dff_object, dff
    base_folder = _instructblip_folder(instructblip)
    base_weights = _instructblip_weights(base_folder)
    keep_in_fp32_modules = list(keep_in_fp32_modules)
    try:
        config = ForgeryTalkerConfig(
            instructblip_config=_base_config(base_folder),
            prompter_config=prompter_config,
            keep_in_fp32_modules=keep_in_fp32_modules or None,
            **decoder_settings,
        )
        with torch.device("meta"):
            model = ForgeryTalkerForConditionalGeneration(config)
    except ValueError as error:
        raise CheckpointConversionError("dff_checkpoint", f"{paths['dff_checkpoint']}: {error}") from error
    sources, shapes, from_instructblip = _sources(model, placed, base_weights, paths)
    del placed  # `sources` owns the tensors now, and drops each once it is written
    dtypes = _written_dtypes(model, sources, torch_dtype)
    _cast_meta(model, dtypes)
    model.generation_config.update(**DFF_GENERATION_SETTINGS)
    processor = _build_processor(base_folder, config)

    report = ConversionReport(
        output_dir=str(output_dir),
        num_parameters=model.num_parameters(),
        dtype=dtype,
        float32_modules=keep_in_fp32_modules,
        mapped=mapped,
        dropped=dropped,
        face_vit_overridden=sorted(overridden),
        from_instructblip=from_instructblip,
    )

    def write(folder: Path) -> None:
        # the config, generation config and code files as `save_pretrained` writes them (it is given no weights);
        # the weights are streamed in after, from their sources
        model.save_pretrained(folder, state_dict={})
        (folder / SAFE_WEIGHTS_NAME).unlink(missing_ok=True)  # an empty weight file, where transformers writes one
        logger.info("Writing the checkpoint")
        write_shards(folder, sources, dtypes, shapes, max_shard_size, report.num_parameters)
        processor.save_pretrained(folder)
        (folder / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n")

    install(write)
    return report


__all__ = ["DFF_GENERATION_SETTINGS", "ConversionReport", "convert_released_checkpoint", "dff_image_processor"]
