"""Fingerprints of what a command's outputs depend on, so that a re-run never keeps outputs made from other inputs.

- An input file by its size and SHA-256, hashed once per file state (size, modification time) in a process.
- A model by its weights: `forgerytalker.model_fingerprint` (kept apart, importing only torch).
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


__all__ = ["file_fingerprint"]
