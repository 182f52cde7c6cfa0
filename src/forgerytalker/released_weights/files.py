"""Reading the released checkpoint files: untrusted pickles in, plain `{name: tensor}` dicts out."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

RUNNER_TRAINING_STATE = ("optimizer", "scaler", "config", "epoch")
"""What a LAVIS runner checkpoint (`{"model": ..., ...}`) holds besides the model: training state, dropped."""
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class CheckpointConversionError(ValueError):
    """A conversion input that cannot be used; `argument` names the parameter (the CLI shows it as its flag)."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument
        self.message = message

    def __str__(self) -> str:
        return f"{self.argument}: {self.message}"


def check_safetensors_files(folder: str | os.PathLike, argument: str) -> None:
    """Reads the header of every `*.safetensors` file in a local `folder` (a hub id is left to `from_pretrained`), so
    that a damaged or truncated download is named before minutes of work.

    Raises:
        CheckpointConversionError: a file's header cannot be read, or its tensors run past the end of the file.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key)  # the offsets of every tensor are checked against the file's size
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointConversionError(argument, f"{path} is damaged or incomplete ({error}); download it again") from None


def load_pickle(path: str | os.PathLike, argument: str, allow_unsafe_pickle: bool = False) -> object:
    """`torch.load` of an untrusted file with `weights_only=True` (tensors and plain containers only).

    A pickle that needs anything else (a class, a function) is refused with a `CheckpointConversionError` naming the
    file and what it needs, unless `allow_unsafe_pickle`, which loads it fully: unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointConversionError(argument, f"no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle, mmap=_can_mmap(path))
    except pickle.UnpicklingError as error:
        needed = _UNSUPPORTED_GLOBAL.search(str(error))
        if allow_unsafe_pickle or needed is None:
            raise CheckpointConversionError(argument, f"{path}: not a readable torch checkpoint ({error})") from error
        raise CheckpointConversionError(
            argument,
            f"{path}: refused: this pickle needs {needed.group(1)} to load, not just tensors and plain containers. "
            "Unpickling such a file can run arbitrary code. If you trust where it came from, allow it with "
            "--allow-unsafe-pickle (allow_unsafe_pickle=True in Python); this is unsafe.",
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointConversionError(argument, f"{path}: not a readable torch checkpoint ({error})") from error


def _can_mmap(path: Path) -> bool:
    """Zip-format checkpoints (torch ≥ 1.6) can be memory-mapped, so a multi-gigabyte file is not read at once."""
    return zipfile.is_zipfile(path)


def tensor_dict(value: object, path: str | os.PathLike, argument: str, what: str = "state dict") -> dict[str, torch.Tensor]:
    """`value` as a `{name: tensor}` dict, or a `CheckpointConversionError` naming the first entry that is not one."""
    if not isinstance(value, dict):
        raise CheckpointConversionError(argument, f"{path}: holds a {type(value).__name__}, not a {what} of tensors")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise CheckpointConversionError(argument, f"{path}: the {what} has a key {key!r} that is not a name")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointConversionError(
                argument, f"{path}: {what} entry {key!r} holds a {type(tensor).__name__}, not a tensor"
            )
    return dict(value)


def dff_state_dict(value: object, path: str | os.PathLike, argument: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model weights of a DFF checkpoint, and the top-level entries dropped with them.

    Accepts the LAVIS runner's `{"model": state_dict, "optimizer": ..., "config": ..., "scaler": ..., "epoch": ...}`
    and a flat state dict (as the authors published their student model). Any other top-level entry of a runner
    checkpoint is an error naming it.
    """
    if isinstance(value, dict) and isinstance(value.get("model"), dict):
        unknown = sorted(str(key) for key in value if key != "model" and key not in RUNNER_TRAINING_STATE)
        if unknown:
            raise CheckpointConversionError(
                argument,
                f"{path}: a runner checkpoint with entries that are neither the model nor training state: "
                f"{', '.join(unknown)}",
            )
        dropped = [key for key in RUNNER_TRAINING_STATE if key in value]
        return tensor_dict(value["model"], path, argument, "`model` state dict"), dropped
    return tensor_dict(value, path, argument), []


__all__ = ["RUNNER_TRAINING_STATE", "CheckpointConversionError", "dff_state_dict", "load_pickle", "tensor_dict"]
