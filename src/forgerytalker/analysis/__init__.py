"""Analysing face photos: `forgerytalker.analyze` (Python) and the loop behind `forgerytalker analyze` (files).

Both build on the `forgery-analysis` pipeline; `ForgeryAnalysis` is what one photo comes to (`records.py`).
"""

from .api import analyze, load_analyzer
from .defaults import NoDefaultModelError, default_model
from .records import ForgeryAnalysis

__all__ = ["ForgeryAnalysis", "NoDefaultModelError", "analyze", "default_model", "load_analyzer"]
