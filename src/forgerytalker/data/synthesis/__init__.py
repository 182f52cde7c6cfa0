"""MMTT-style synthesis from face photos: aligned crops, landmark region masks, manipulations, measured reports.

`pipeline.synthesize(SynthesisConfig(...))` writes the released MMTT layout; `manipulations.register_manipulation`
plugs in other inpainters. Its modules need OpenCV; dlib is needed to align faces.

The names below load on first use, so `forgerytalker analyze`'s face check (`faces.FaceDetector`) does not import
the manipulations and the pipeline.
"""

import importlib

_PUBLIC_NAMES = {
    "MANIPULATIONS": "manipulations",
    "Manipulation": "manipulations",
    "register_manipulation": "manipulations",
    "SynthesisConfig": "pipeline",
    "synthesize": "pipeline",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name: str):
    module = _PUBLIC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC_NAMES})
