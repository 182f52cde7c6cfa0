"""The model that `forgerytalker analyze`, `forgerytalker.analyze`, the pipeline and the demo use when none is named."""

from __future__ import annotations


class NoDefaultModelError(ValueError):
    """No model was named and the package ships no default one."""


NO_DEFAULT_MODEL_MESSAGE = (
    "no model given, and this version of forgerytalker ships no trained default model yet: name a ForgeryTalker "
    "checkpoint folder or hub id (`--model PATH` on the command line, `model=` in Python)"
)


def default_model() -> str:
    """The name or folder of the default model.

    Raises:
        NoDefaultModelError: the package ships none (this version).
    """
    raise NoDefaultModelError(NO_DEFAULT_MODEL_MESSAGE)


def resolve_model(model: str | None) -> str:
    """`model`, or the default model when it is `None`."""
    return default_model() if model is None else model


__all__ = ["NO_DEFAULT_MODEL_MESSAGE", "NoDefaultModelError", "default_model", "resolve_model"]
