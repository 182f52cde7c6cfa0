"""Writing a checkpoint's weights tensor by tensor into safetensors shards, laid out as `save_pretrained` lays them.

`save_pretrained` needs the whole model in memory; the released model is 9–13 GB converted, beside sources of
22 GB. Here each weight is read from its source only when its shard is written: a tensor of a memory-mapped pickle
(dropped once written, so the pickle's pages are released with its last tensor), or a key of a weight file, opened
one file at a time (the pages a process has read from a memory-mapped file count as its memory while the file is
open). Memory holds one shard being written and the one source file being read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.serialization._base import parse_size_to_int
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

SAFETENSORS_METADATA = {"format": "pt"}
"""What `save_pretrained` writes into every safetensors header (transformers reads the file as PyTorch weights)."""


@dataclass(frozen=True)
class TensorSource:
    """Where one written weight comes from: `tensor` (in memory or memory-mapped), or `key` of the weight `file`
    (`.safetensors`, or a torch pickle such as `pytorch_model.bin`)."""

    tensor: torch.Tensor | None = None
    file: str | None = None
    key: str | None = None


class WeightFiles:
    """Reads weights from files with at most one file open, in the order asked.

    Callers ask for the keys of one file together (`write_shards` keeps its sources' order), so every file is opened
    once and closed before the next one is opened."""

    def __init__(self):
        self._path: str | None = None
        self._weights = None

    def read(self, path: str, key: str) -> torch.Tensor:
        if path != self._path:
            self.close()
            self._weights = _open_weight_file(path)
            self._path = path
        return self._weights[key]

    def close(self) -> None:
        if isinstance(self._weights, _SafetensorsFile):
            self._weights.close()
        self._path = self._weights = None


class _SafetensorsFile:
    def __init__(self, path: str):
        self._handle = safe_open(path, framework="pt")
        self._handle.__enter__()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key)

    def close(self) -> None:
        self._handle.__exit__(None, None, None)


def _open_weight_file(path: str):
    if path.endswith(".safetensors"):
        return _SafetensorsFile(path)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def weight_file_keys(path: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """`(key, shape)` of every tensor in a weight file, read from its header (safetensors) or its memory-mapped pickle
    without reading the values."""
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():
                yield key, tuple(handle.get_slice(key).get_shape())
        return
    for key, tensor in torch.load(path, map_location="cpu", weights_only=True, mmap=True).items():
        yield key, tuple(tensor.shape)


def _split(keys: list[str], sizes: dict[str, int], max_shard_size: int) -> list[list[str]]:
    """`keys` cut, in their order, into shards of at most `max_shard_size` bytes (a bigger tensor gets a shard alone)."""
    shards: list[list[str]] = [[]]
    filled = 0
    for key in keys:
        if shards[-1] and filled + sizes[key] > max_shard_size:
            shards.append([])
            filled = 0
        shards[-1].append(key)
        filled += sizes[key]
    return shards


def write_shards(
    folder: str | os.PathLike,
    sources: dict[str, TensorSource],
    dtypes: dict[str, torch.dtype],
    shapes: dict[str, tuple[int, ...]],
    max_shard_size: int | str,
    total_parameters: int,
) -> list[str]:
    """Writes every weight of `sources` (consumed: each entry is dropped once written) into `folder` as
    `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards with `model.safetensors.index.json` when
    they exceed `max_shard_size` (bytes, or a size such as `"1GB"`), each weight in its `dtypes` entry.

    Shards follow the order of `sources`: keep the keys of one file together. Returns the weight files written.
    """
    folder = Path(folder)
    limit = parse_size_to_int(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    sizes = {key: dtypes[key].itemsize * torch.Size(shapes[key]).numel() for key in sources}
    shards = _split(list(sources), sizes, limit)
    names = [SAFE_WEIGHTS_NAME] if len(shards) == 1 else [
        SAFE_WEIGHTS_NAME.replace(".safetensors", f"-{number:05d}-of-{len(shards):05d}.safetensors")
        for number in range(1, len(shards) + 1)
    ]
    files = WeightFiles()
    try:
        for name, keys in tqdm(list(zip(names, shards)), desc="Writing model shards", unit="shard"):
            tensors = {}
            for key in keys:
                source = sources.pop(key)
                tensor = source.tensor if source.tensor is not None else files.read(source.file, source.key)
                tensors[key] = tensor.to(dtype=dtypes[key], memory_format=torch.contiguous_format, copy=True)
                del source, tensor
            save_file(tensors, folder / name, metadata=SAFETENSORS_METADATA)
            del tensors
    finally:
        files.close()
    if len(shards) > 1:
        index = {
            "metadata": {"total_parameters": total_parameters, "total_size": sum(sizes.values())},
            "weight_map": {key: name for name, keys in zip(names, shards) for key in keys},
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return names


__all__ = ["SAFETENSORS_METADATA", "TensorSource", "WeightFiles", "weight_file_keys", "write_shards"]
