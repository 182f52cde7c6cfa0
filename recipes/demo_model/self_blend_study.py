"""Does adding self-blended images to the training mix help the prompter detect a manipulation method it never saw?
Measured on the validation people only:

    python -m recipes.demo_model.self_blend_study --recipe-work runs/demo-model --work runs/self-blend-study [--fraction F]

For each of the recipe's leave-one-out methods M, the stage-1 prompter is trained as the recipe trains its
leave-one-out prompters (`train.train_prompter` on the training split without M, `leave_one_out_fraction` of the
budget or `--fraction`, from the recipe's initial prompter) on (a) that data and (b) that data plus `self_blend_samples`
self-blended images of the same training photos, and each is scored on M's validation images against the
validation authentic images (`leave_one_out.prompter_detection`). `--recipe-work` is a finished recipe run
(its data, leave-one-out datasets and initial prompter are read, never written); everything new goes under
`--work`, step by step, so a re-run resumes. Prints and writes `fraction-<f>/self-blend-study.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .data import DATASET_DIR, without_method
from .leave_one_out import LEAVE_ONE_OUT_METHODS, held_out_first, prompter_detection
from .self_blend import synthesize_self_blend, with_self_blend
from .settings import recipe_settings
from .train import train_prompter

logger = logging.getLogger("recipes.demo_model.self_blend_study")


def run(recipe_work: Path, work: Path, methods: tuple[str, ...], fraction: float | None = None) -> dict:
    """Trains (or finds trained) both prompters per held-out method under `work/fraction-<f>/`; returns and writes
    (`work/fraction-<f>/self-blend-study.json`) the validation AUC of each on every method's images, the held-out
    one's first: the seen methods' show how much the prompter learnt at all within the budget."""
    settings = recipe_settings()
    fraction = settings.leave_one_out_fraction if fraction is None else fraction
    dataset = recipe_work / DATASET_DIR
    initial_prompter = recipe_work / "init" / "prompter"
    for needed in (dataset / "README.md", initial_prompter / "config.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"--recipe-work {recipe_work}: no {needed.relative_to(recipe_work)} (run the recipe first)")
    self_blend = synthesize_self_blend(recipe_work, work, settings)
    runs = work / f"fraction-{fraction:g}"
    results = {"self_blend_samples": settings.self_blend_samples, "fraction": fraction,
               "steps": max(2, round(settings.prompter_steps * fraction)), "held_out": {}}
    for method in methods:
        # the recipe's own leave-one-out dataset when it has one (read only), else the same made under --work
        made = recipe_work / "data" / f"without-{method}"
        subset = made if (made / "done").is_file() else without_method(dataset, method, work)
        mixed = with_self_blend(subset, self_blend, settings.self_blend_samples, work / "data" / f"without-{method}-self-blend")
        row = {}
        for name, training_data in (("without", subset), ("without + self-blend", mixed)):
            prompter = train_prompter(training_data, initial_prompter, runs / training_data.name / "stage1", settings, fraction)
            row[name] = prompter_detection(prompter, dataset, "validation", held_out_first(method))
            logger.info("%s, trained %s: validation AUC %s", method, name,
                        ", ".join(f"{scored} {value['AUC']:.1f}" for scored, value in row[name].items()))
        results["held_out"][method] = row
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "self-blend-study.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.demo_model.self_blend_study", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe-work", type=Path, required=True, help="a finished `python -m recipes.demo_model` --work folder (read only)")
    parser.add_argument("--work", type=Path, required=True, help="where the study writes")
    parser.add_argument("--fraction", type=float, default=None,
                        help="share of the recipe's stage-1 steps (default: its leave_one_out_fraction)")
    parser.add_argument("--methods", nargs="+", default=list(LEAVE_ONE_OUT_METHODS), choices=LEAVE_ONE_OUT_METHODS,
                        help="the held-out methods (default: all three)")
    args = parser.parse_args(argv)
    if not args.recipe_work.is_dir():
        parser.error(f"--recipe-work: no such folder: {args.recipe_work}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(args.recipe_work.resolve(), args.work.resolve(), tuple(args.methods), args.fraction)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
