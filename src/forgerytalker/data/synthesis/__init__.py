"""MMTT-style synthesis from face photos: aligned crops, landmark region masks, manipulations, measured reports.

`pipeline.synthesize(SynthesisConfig(...))` writes the released MMTT layout; `manipulations.register_manipulation`
plugs in other inpainters. Importing this package needs OpenCV; dlib is needed to align faces.
"""

from .manipulations import MANIPULATIONS, Manipulation, register_manipulation
from .pipeline import SynthesisConfig, synthesize

__all__ = ["MANIPULATIONS", "Manipulation", "SynthesisConfig", "register_manipulation", "synthesize"]
