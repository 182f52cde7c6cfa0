"""forgerytalker: interpretable face-forgery localization as a Hugging Face transformers model.

Importing the package is cheap: it imports neither torch nor transformers (so the command line answers at once);
the public classes load on first use (`forgerytalker.ForgeryTalkerProcessor`, `from forgerytalker import ...`).
It still registers the classes with `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and `AutoProcessor`,
and the `"forgery-analysis"` task with transformers' pipeline registry, at once if transformers' Auto classes are
loaded already and otherwise as soon as they are (`_auto_registration`), so
`import forgerytalker` followed by `AutoModel.from_pretrained(...)` works in either order. The classes are also
marked so that `save_pretrained` writes their code (and the pipeline's) next to the weights: such a checkpoint also loads with
`trust_remote_code=True` in a process that never imported this package.
"""

from ._lazy import lazy_attributes

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "GENERATION_DEFAULTS": "generation_forgerytalker",
    "PIPELINE_TASK": "configuration_forgerytalker",
    "ForgeryAnalysis": "analysis",
    "ForgeryAnalysisPipeline": "pipeline_forgerytalker",
    "ForgeryTalkerPrompterNetwork": "modeling_forgerytalker_prompter",
    "ForgeryTalkerPrompterOutput": "modeling_forgerytalker_prompter",
    "ForgeryTalkerConfig": "configuration_forgerytalker",
    "ForgeryTalkerForConditionalGeneration": "modeling_forgerytalker",
    "ForgeryTalkerGenerationOutput": "modeling_forgerytalker_outputs",
    "ForgeryTalkerOutput": "modeling_forgerytalker_outputs",
    "ForgeryTalkerPreTrainedModel": "modeling_forgerytalker",
    "ForgeryTalkerProcessor": "processing_forgerytalker",
    "ForgeryTalkerPrompterConfig": "configuration_forgerytalker",
    "NUM_REGIONS": "regions",
    "REGION_NAMES": "regions",
    "aligned_faces": "analysis.face_crops",
    "analyze": "analysis",
    "caption_to_labels": "regions",
    "caption_to_regions": "regions",
    "default_model": "analysis.defaults",
}
"""Public name -> the submodule defining it, imported when the name is first used."""

__all__ = sorted(_PUBLIC_NAMES)

_DEPRECATED_NAMES = {
    "ForgeryPrompterNetwork": "modeling_forgerytalker_prompter",
    "ForgeryPrompterOutput": "modeling_forgerytalker_prompter",
}
"""Earlier public names, still importable with a `FutureWarning` (their module says what replaces them)."""

__getattr__, __dir__ = lazy_attributes(__name__, {**_PUBLIC_NAMES, **_DEPRECATED_NAMES}, globals())


from ._auto_registration import register_when_transformers_loads  # noqa: E402  (needs __version__ above)

register_when_transformers_loads()
