"""Checkpoint paths given by users: a missing local folder is reported as such, not as a hub error.

The one owner of `resolve_local_path`, used by every `from_pretrained`-style entry point (model, processor,
prompter, training setup, weight conversion). The module imports nothing from the package and nothing heavy, so
that the processor can use it without importing modeling code, and so that it can be copied next to a checkpoint
for `trust_remote_code=True` loading.
"""

from __future__ import annotations

import os


def resolve_local_path(path: str | os.PathLike, argument: str = "pretrained_model_name_or_path") -> str:
    """Returns `path` as a string if it is an existing folder, or if it cannot be a local path at all (a hub id).

    `from_pretrained` treats a relative path that does not exist as a hub id, which fails with a confusing
    network error; a path that looks local (absolute, `./`, `~`, or with more than one `/`) and is missing is
    reported here instead.

    Raises:
        FileNotFoundError: `path` looks local (or exists as a file) but is no folder; the message names `argument`.
    """
    text = os.fspath(path)
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        return expanded
    # a hub id is "name" or "owner/name"
    looks_local = os.path.isabs(expanded) or text.startswith((".", "~")) or text.count("/") > 1
    if looks_local or os.path.exists(expanded):
        raise FileNotFoundError(f"`{argument}`: no checkpoint folder at {text!r} ({os.path.abspath(expanded)})")
    return text


__all__ = ["resolve_local_path"]
