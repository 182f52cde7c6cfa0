"""Fingerprints of what a command's outputs depend on, so that a re-run never keeps outputs made from other inputs.

- An input file by its size and SHA-256, hashed once per file state (size, modification time) in a process.
- A model by its weights: config, generation config, parameter names and shapes and the first values of every
  parameter (equal for the same checkpoint, different after any training step).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path


def file_fingerprint(path: str | os.PathLike) -> dict | None:
    """`{"size", "sha256"}` of the file, or `None` when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _hashed(os.fspath(path), status.st_size, status.st_mtime_ns)


@lru_cache(maxsize=4096)
def _hashed(path: str, size: int, mtime_ns: int) -> dict | None:
    digest = hashlib.sha256()
    length = 0
    try:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                length += len(block)
    except OSError:
        return None
    return {"size": length, "sha256": digest.hexdigest()}


def model_fingerprint(model) -> str:
    """A SHA-256 of the model's config, generation config, parameter names and shapes and the first values of every
    parameter: equal for the same checkpoint, different after any training step (a resumed run must not mix)."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode("utf-8"))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        digest.update(generation_config.to_json_string(use_diff=False).encode("utf-8"))
    parameters = sorted(model.named_parameters())
    digest.update(repr([(name, tuple(parameter.shape)) for name, parameter in parameters]).encode("utf-8"))
    with torch.no_grad():
        heads = torch.cat([parameter.detach().reshape(-1)[:4].double().cpu() for _, parameter in parameters])
    digest.update(heads.numpy().tobytes())
    return digest.hexdigest()


__all__ = ["file_fingerprint", "model_fingerprint"]
