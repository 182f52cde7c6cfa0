"""The shipped generation settings, chosen on the validation identities (never on the test split).

Each setting of `GENERATION_CHOICES` writes a report for every validation image (the instruction naming the
regions the model predicts at its calibrated threshold, as `forgerytalker evaluate` does), with each region's name
written at most once (`once_words_ids`, which goes into the model's generation config too: without it the model with
the region map named a region twice in 5 of 244 forged validation reports with greedy search, and only 3 beams with
penalty 2 avoided it, at a CIDEr of 77.6 against 89.8); of the settings whose
forged-image reports never name a region twice (all of them if none qualifies), the one with the highest CIDEr
against the reference reports (`forgerytalker.evaluation.text_metrics`, the evaluation's own scoring) goes into
the model's generation_config.json, and `generation_choice.json` records every setting's scores. Beam search makes
the few likeliest reports likelier still: with 3 beams the model shipped on 2026-12-05 wrote one face-swap report for
most forged validation images (CIDEr 45.9), greedy search 81.7.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from datasets import load_dataset

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.data.methods import AUTHENTIC
from forgerytalker.evaluation.prediction import PredictionSettings, predict_batches
from forgerytalker.evaluation.samples import iter_samples
from forgerytalker.evaluation.text_metrics import compute_text_metrics

from .model import write_region_names_once
from .settings import RecipeSettings
from .targets import repeats_a_region

logger = logging.getLogger(__name__)

BATCH_SIZE = 16
GENERATION_CHOICES = tuple({"num_beams": beams, "repetition_penalty": penalty} for beams in (1, 3) for penalty in (1.0, 1.5, 2.0))
"""The settings tried; everything else stays as the model's generation config has it."""
RECORD = "generation_choice.json"


def validation_reports(model, processor, rows, max_new_tokens: int) -> dict[str, str]:
    """image_id -> the report `model` writes, with its own generation config, for each of the dataset rows, through
    the evaluation's own prediction path (`evaluation.prediction.predict_batches`, the regions it predicts)."""
    settings = PredictionSettings("predicted", max_new_tokens, model.config.mask_threshold, batch_size=BATCH_SIZE)
    return {sample.image_id: prediction["report"]
            for sample, prediction in predict_batches(model, processor, iter_samples(rows), settings)}


def choose_generation(model_dir: Path, dataset: Path, settings: RecipeSettings) -> dict:
    """Sets `model_dir`'s generation settings to the `GENERATION_CHOICES` entry with the best validation CIDEr among
    those whose forged-image reports never name a region twice, or among all if none qualifies (once:
    `generation_choice.json` records the choice and every setting's CIDEr, distinct forged reports and forged
    reports naming a region twice)."""
    record = model_dir / RECORD
    if record.is_file():
        return json.loads(record.read_text())
    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = ForgeryTalkerProcessor.from_pretrained(model_dir)
    # every setting writes each region's name at most once (a model whose initial config did not yet say so too)
    write_region_names_once(model, processor)
    rows = load_dataset(str(dataset), split="validation")
    references = dict(zip(rows["image_id"], rows["caption"]))
    forged = [image_id for image_id, method in zip(rows["image_id"], rows["method"]) if method != AUTHENTIC]
    tried = []
    for choice in GENERATION_CHOICES:
        model.generation_config.update(**choice)
        reports = validation_reports(model, processor, rows, settings.max_new_tokens)
        tried.append({**choice, "CIDEr": compute_text_metrics(reports, references)["CIDEr"],
                      "distinct_forged_reports": len({reports[image_id] for image_id in forged}),
                      "forged_reports_repeating_a_region": sum(repeats_a_region(reports[image_id]) for image_id in forged)})
        logger.info("validation with %s: %s", choice, tried[-1])
    eligible = [scores for scores in tried if not scores["forged_reports_repeating_a_region"]] or tried
    best = max(eligible, key=lambda scores: scores["CIDEr"])  # the first on ties
    chosen = {key: best[key] for key in GENERATION_CHOICES[0]}
    model.generation_config.update(**chosen)
    model.generation_config.save_pretrained(model_dir)
    result = {"chosen": chosen, "tried": tried, "validation_images": len(rows), "validation_forged": len(forged)}
    record.write_text(json.dumps(result, indent=1) + "\n")
    return result
