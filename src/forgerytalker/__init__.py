"""forgerytalker: interpretable face-forgery localization as a Hugging Face transformers model.

Importing the package registers its classes with `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and
`AutoProcessor`, and the `"forgery-analysis"` task with transformers' pipeline registry. The classes are marked so
that `save_pretrained` writes their code (and the pipeline's) next to the weights: such a checkpoint also loads
with `trust_remote_code=True` in a process that never imported this package.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .analysis import ForgeryAnalysis, analyze
from .configuration_forgerytalker import PIPELINE_TASK, ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
from .modeling_forgerytalker import (
    GENERATION_DEFAULTS,
    ForgeryTalkerForConditionalGeneration,
    ForgeryTalkerGenerationOutput,
    ForgeryTalkerOutput,
    ForgeryTalkerPreTrainedModel,
)
from .modeling_forgerytalker_prompter import ForgeryPrompterNetwork, ForgeryPrompterOutput
from .pipeline_forgerytalker import ForgeryAnalysisPipeline
from .processing_forgerytalker import ForgeryTalkerProcessor
from .regions import NUM_REGIONS, REGION_NAMES, caption_to_labels, caption_to_regions

__version__ = "0.1.0"

AutoConfig.register(ForgeryTalkerConfig.model_type, ForgeryTalkerConfig, exist_ok=True)
AutoConfig.register(ForgeryTalkerPrompterConfig.model_type, ForgeryTalkerPrompterConfig, exist_ok=True)
AutoModel.register(ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, exist_ok=True)
AutoModel.register(ForgeryTalkerPrompterConfig, ForgeryPrompterNetwork, exist_ok=True)
AutoProcessor.register(ForgeryTalkerConfig, ForgeryTalkerProcessor, exist_ok=True)
for _class in (ForgeryTalkerConfig, ForgeryTalkerPrompterConfig, ForgeryTalkerProcessor):
    _class.register_for_auto_class()
ForgeryTalkerForConditionalGeneration.register_for_auto_class("AutoModel")
ForgeryPrompterNetwork.register_for_auto_class("AutoModel")
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=ForgeryAnalysisPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = [
    "GENERATION_DEFAULTS",
    "NUM_REGIONS",
    "PIPELINE_TASK",
    "REGION_NAMES",
    "ForgeryAnalysis",
    "ForgeryAnalysisPipeline",
    "ForgeryPrompterNetwork",
    "ForgeryPrompterOutput",
    "ForgeryTalkerConfig",
    "ForgeryTalkerForConditionalGeneration",
    "ForgeryTalkerGenerationOutput",
    "ForgeryTalkerOutput",
    "ForgeryTalkerPreTrainedModel",
    "ForgeryTalkerProcessor",
    "ForgeryTalkerPrompterConfig",
    "analyze",
    "caption_to_labels",
    "caption_to_regions",
]
