"""forgerytalker's metrics as a Hugging Face `evaluate` module, loadable offline from the installed package:

    import evaluate
    from forgerytalker.evaluate_modules import FORGERYTALKER_METRIC
    metric = evaluate.load(FORGERYTALKER_METRIC)                 # every metric of `forgerytalker evaluate`
    masks = evaluate.load(FORGERYTALKER_METRIC, "masks")         # or one group: text, masks, regions, detection

The module computes its numbers with `forgerytalker.evaluation` (`evaluate_records`, the function behind
`forgerytalker evaluate`), so the same predictions give the same numbers either way.
"""

from pathlib import Path

FORGERYTALKER_METRIC = str(Path(__file__).resolve().parent / "forgerytalker")
"""The folder to pass to `evaluate.load` (it holds `forgerytalker.py`, the metric script)."""

__all__ = ["FORGERYTALKER_METRIC"]
