"""MMTT-style synthesis from face photos: aligned crops, landmark region masks, manipulations, measured reports.

`pipeline.synthesize(SynthesisConfig(...))` writes the released MMTT layout; `manipulations.register_manipulation`
plugs in other inpainters. Its modules need OpenCV; dlib is needed to align faces.

The names below load on first use, so `forgerytalker analyze`'s face check (`faces.FaceDetector`) does not import
the manipulations and the pipeline.
"""

from ..._lazy import lazy_attributes

_PUBLIC_NAMES = {
    "MANIPULATIONS": "manipulations",
    "Manipulation": "manipulations",
    "register_manipulation": "manipulations",
    "SynthesisConfig": "pipeline",
    "synthesize": "pipeline",
}

__all__ = sorted(_PUBLIC_NAMES)


__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC_NAMES, globals())
