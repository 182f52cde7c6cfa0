"""Registers ForgeryTalker with transformers' Auto classes as soon as transformers loads them, and not before.

`import forgerytalker` has two jobs that pull in opposite directions: make `AutoConfig`, `AutoModel` and
`AutoProcessor` know ForgeryTalker (as every transformers-native package does), and stay cheap, so that the
command line (`forgerytalker --help`) does not wait for torch and transformers. Registering needs the model
classes, hence torch. So `register_when_transformers_loads` registers at once when transformers' Auto classes are
loaded already; otherwise it installs `_Finder`, which notices when they load and registers right after the
outermost transformers or forgerytalker import then in progress has finished. (Registering in the middle of
that import would import transformers modules that are still half-initialised: `configuration_auto` finishes
loading while `modeling_utils` is still executing.) The finder removes itself once registration is done.
"""

from __future__ import annotations

import sys
import threading

WATCHED_PACKAGES = ("transformers", "forgerytalker")
AUTO_CONFIG_MODULE = "transformers.models.auto.configuration_auto"

_lock = threading.RLock()
_thread = threading.local()  # depth: watched imports in progress in this thread; finding: inside find_spec
_registered = False


def register() -> None:
    """Registers the config, model and processor classes with the Auto classes, the `forgery-analysis` pipeline
    task with transformers' pipeline registry, and the classes for `save_pretrained` to write
    their code next to the weights (`trust_remote_code=True` loading). Idempotent."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True  # first: the imports below come back through the finder
        try:
            _register_classes()
        except BaseException:
            _registered = False
            raise
    _remove_finder()


def _register_classes() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_forgerytalker import PIPELINE_TASK, ForgeryTalkerConfig, ForgeryTalkerPrompterConfig
    from .modeling_forgerytalker import ForgeryTalkerForConditionalGeneration
    from .modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork
    from .pipeline_forgerytalker import ForgeryAnalysisPipeline
    from .processing_forgerytalker import ForgeryTalkerProcessor

    AutoConfig.register(ForgeryTalkerConfig.model_type, ForgeryTalkerConfig, exist_ok=True)
    AutoConfig.register(ForgeryTalkerPrompterConfig.model_type, ForgeryTalkerPrompterConfig, exist_ok=True)
    AutoModel.register(ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(ForgeryTalkerConfig, ForgeryTalkerForConditionalGeneration, exist_ok=True)
    AutoModel.register(ForgeryTalkerPrompterConfig, ForgeryTalkerPrompterNetwork, exist_ok=True)
    AutoProcessor.register(ForgeryTalkerConfig, ForgeryTalkerProcessor, exist_ok=True)
    for config_or_processor in (ForgeryTalkerConfig, ForgeryTalkerPrompterConfig, ForgeryTalkerProcessor):
        config_or_processor.register_for_auto_class()
    ForgeryTalkerForConditionalGeneration.register_for_auto_class("AutoModel")
    ForgeryTalkerPrompterNetwork.register_for_auto_class("AutoModel")
    from .analysis.defaults import NoDefaultModelError, default_model

    try:  # `pipeline("forgery-analysis")` with no model loads the bundled demo model
        default = {"model": (default_model(), None)}
    except NoDefaultModelError:
        default = None
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=ForgeryAnalysisPipeline, pt_model=AutoModel, default=default, type="multimodal"
    )


def register_when_transformers_loads() -> None:
    """Registers now if transformers' Auto classes are loaded, else as soon as they are (module docstring)."""
    if _auto_classes_loaded():
        register()
        return
    with _lock:
        if not _registered and not any(isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())


def _auto_classes_loaded() -> bool:
    module = sys.modules.get(AUTO_CONFIG_MODULE)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _remove_finder() -> None:
    with _lock:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]


class _Finder:
    """A meta-path finder that only wraps the loaders of transformers and forgerytalker modules (`_Loader`);
    the modules themselves are found by the finders after it, exactly as without it."""

    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] not in WATCHED_PACKAGES or getattr(_thread, "finding", False):
            return None
        _thread.finding = True
        try:
            spec = self._find_with_others(fullname, path, target)
        finally:
            _thread.finding = False
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec

    def _find_with_others(self, fullname, path, target):
        for finder in list(sys.meta_path):
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    return spec
        return None


class _Loader:
    """Delegates to the real loader; after the outermost watched import of a thread, registers if it can."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        depth = getattr(_thread, "depth", 0)
        _thread.depth = depth + 1
        try:
            self._loader.exec_module(module)
        finally:
            _thread.depth = depth
        if depth == 0 and not _registered and _auto_classes_loaded():
            register()

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._loader, name)
