"""The errors a training run reports without a traceback (`training/run.py` exits with code 2 on them)."""

from __future__ import annotations


class TrainingConfigurationError(ValueError):
    """A setting, an input or a required tool is wrong; the message starts with the flag it concerns."""


class UnreadableSampleError(ValueError):
    """A training or validation sample's image or mask cannot be decoded; the message names its image id."""
