"""forgerytalker: interpretable face-forgery localization as a Hugging Face transformers model."""

from .regions import NUM_REGIONS, REGION_NAMES, caption_to_labels, caption_to_regions

__version__ = "0.1.0"
