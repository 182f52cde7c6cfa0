"""The web demo (`forgerytalker demo`): a Gradio page around the `forgery-analysis` pipeline (needs the `demo`
extra: `pip install forgerytalker[demo]`)."""

from .app import build_demo

__all__ = ["build_demo"]
