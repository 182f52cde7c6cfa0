"""The model that `forgerytalker analyze`, `forgerytalker.analyze`, the pipeline and the demo use when none is named.

It is the demo model bundled in the package (`forgerytalker/default_model/`): trained on two CPU cores by
`python -m recipes.demo_model` on forgeries synthesized from UTKFace's face photos (non-commercial research use
only, terms the model carries) and sample photos of Python packages, and evaluated on people it never saw in
docs/RESULTS.md. It shows what the interface answers; it is not a detector for real-world deepfakes, and its
verdicts say so (`verdict`). Name a trained checkpoint (`--model`, `model=`) for real use.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
"""Where the package keeps its bundled demo model."""


class NoDefaultModelError(ValueError):
    """No model was named and the bundled default model is missing from this installation."""


def default_model() -> str:
    """The folder of the bundled demo model.

    Raises:
        NoDefaultModelError: this installation lacks it (a build that left out the package data).
    """
    if not (BUNDLED_MODEL_DIR / "config.json").is_file() or not (BUNDLED_MODEL_DIR / "model.safetensors").is_file():
        raise NoDefaultModelError(
            f"no model given, and the bundled default model is missing from this installation ({BUNDLED_MODEL_DIR}); "
            "reinstall forgerytalker, or name a ForgeryTalker checkpoint folder or hub id (`--model PATH` on the "
            "command line, `model=` in Python)"
        )
    return str(BUNDLED_MODEL_DIR)


DEMONSTRATION_NOTE = "the bundled demonstration model: not a detector for real-world forgeries, see docs/RESULTS.md"
"""What every verdict of the bundled model says about where it comes from."""


def verdict(manipulated: bool, model: str | None) -> str:
    """The on-screen verdict of an analysis: "manipulated" or not, and, for the bundled model, that it comes from
    the demonstration model (`model`: the model's name or folder, as the records hold it)."""
    text = "manipulated" if manipulated else "no region above the threshold"
    return f"{text}; {DEMONSTRATION_NOTE}" if is_bundled_model(model) else text


def is_bundled_model(model: str | None) -> bool:
    """Whether `model` (a name or folder) is the bundled demo model's folder."""
    return model is not None and Path(model).resolve() == BUNDLED_MODEL_DIR


def resolve_model(model: str | None) -> str:
    """`model`, or the default model when it is `None`."""
    return default_model() if model is None else model


__all__ = ["BUNDLED_MODEL_DIR", "DEMONSTRATION_NOTE", "NoDefaultModelError", "default_model", "is_bundled_model", "resolve_model", "verdict"]
