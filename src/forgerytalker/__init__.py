"""forgerytalker: interpretable face-forgery localization as a Hugging Face transformers model.

Importing the package registers its classes with `AutoConfig`, `AutoModel` and `AutoProcessor`, and marks
them so that `save_pretrained` writes their code next to the weights: such a checkpoint also loads with
`trust_remote_code=True` in a process that never imported this package.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_forgerytalker import ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
from .modeling_forgerytalker import (
    ForgeryTalkerForConditionalGeneration,
    ForgeryTalkerGenerationOutput,
    ForgeryTalkerOutput,
    ForgeryTalkerPreTrainedModel,
)
from .modeling_forgerytalker_prompter import ForgeryPrompterNetwork, ForgeryPrompterOutput
from .processing_forgerytalker import ForgeryTalkerProcessor
from .regions import NUM_REGIONS, REGION_NAMES, caption_to_labels, caption_to_regions

__version__ = "0.1.0"

AutoConfig.register(ForgeryTalkerConfig.model_type, ForgeryTalkerConfig, exist_ok=True)
AutoConfig.register(ForgeryTalkerPrompterConfig.model_type, ForgeryTalkerPrompterConfig, exist_ok=True)
AutoModel.register(ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, exist_ok=True)
AutoModel.register(ForgeryTalkerPrompterConfig, ForgeryPrompterNetwork, exist_ok=True)
AutoProcessor.register(ForgeryTalkerConfig, ForgeryTalkerProcessor, exist_ok=True)
for _class in (ForgeryTalkerConfig, ForgeryTalkerPrompterConfig, ForgeryTalkerProcessor):
    _class.register_for_auto_class()
ForgeryTalkerForConditionalGeneration.register_for_auto_class("AutoModel")
ForgeryPrompterNetwork.register_for_auto_class("AutoModel")

__all__ = [
    "NUM_REGIONS",
    "REGION_NAMES",
    "ForgeryPrompterNetwork",
    "ForgeryPrompterOutput",
    "ForgeryTalkerConfig",
    "ForgeryTalkerForConditionalGeneration",
    "ForgeryTalkerGenerationOutput",
    "ForgeryTalkerOutput",
    "ForgeryTalkerPreTrainedModel",
    "ForgeryTalkerProcessor",
    "ForgeryTalkerPrompterConfig",
    "caption_to_labels",
    "caption_to_regions",
]
