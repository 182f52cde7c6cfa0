"""`--no-progress` hides the libraries' progress bars too: transformers' "Loading weights", huggingface_hub's
downloads and datasets' loading and preparing bars, for one command.

transformers takes its setting from huggingface_hub's when it is imported, so hiding huggingface_hub's bars first
covers a transformers imported later in the command. datasets keeps its own setting: where the command imports it,
the environment variable datasets reads at import hides them (datasets gives that variable priority over its
functions, so in a Python process that calls `forgerytalker.cli.main` its bars then stay hidden). Everything else is
set back as it was when the command ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DATASETS_VARIABLE = "HF_DATASETS_DISABLE_PROGRESS_BARS"


@contextmanager
def library_progress_bars(shown: bool) -> Iterator[None]:
    """Runs the block with the progress bars of huggingface_hub, transformers and datasets hidden unless `shown`."""
    if shown:
        yield
        return
    import huggingface_hub.utils as hub

    hub_hidden = hub.are_progress_bars_disabled()
    hub.disable_progress_bars()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    transformers_shown = transformers_logging is not None and transformers_logging.is_progress_bar_enabled()
    if transformers_shown:
        transformers_logging.disable_progress_bar()
    datasets = sys.modules.get("datasets")
    datasets_shown = datasets is not None and not datasets.are_progress_bars_disabled()
    if datasets_shown:
        datasets.disable_progress_bars()
    variable_set = datasets is None and DATASETS_VARIABLE not in os.environ
    if variable_set:
        os.environ[DATASETS_VARIABLE] = "1"
    try:
        yield
    finally:
        if variable_set:
            os.environ.pop(DATASETS_VARIABLE, None)
        if datasets_shown:
            datasets.enable_progress_bars()
        imported_since = transformers_logging is None and "transformers.utils.logging" in sys.modules
        if transformers_shown or (imported_since and not hub_hidden):  # one imported meanwhile took hub's setting
            sys.modules["transformers.utils.logging"].enable_progress_bar()  # (which shows hub's bars too)
        if hub_hidden:
            hub.disable_progress_bars()
        else:
            hub.enable_progress_bars()
