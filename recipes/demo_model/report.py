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
from forgerytalker.evaluation.report import MISSING, TABLE2_COLUMNS, breakdown_markdown, markdown_table, robustness_markdown
from forgerytalker.image_utils import load_mask, load_rgb
from forgerytalker.regions import caption_to_labels, regions_to_labels

from .data import source_faces
from .evaluations import predictions
from .settings import RecipeSettings
from .train import REPOSITORY

TABLE_COLUMNS = (*TABLE2_COLUMNS[1:5], "METEOR", "ROUGE-L", "CIDEr", "IoU", "Precision", "Recall", "cIoU", "PLM")
"""The issue's column order: BLEU-1..4, METEOR, ROUGE-L, CIDEr, then the mask metrics and PLM."""
COVERED_FRACTION = 0.25
"""A landmark region counts as covered by a predicted mask when at least this share of its pixels is forged."""
FOLLOWS_MARGIN = 5.0
"""How much better (PLM points) a report must match its own mask's regions than another image's to count as naming them."""


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


def write_figure(model_dir: Path, dataset: Path, run: Path, out: Path, count: int) -> list[str]:
    """Photo / true mask / predicted mask probability / report for the first `count` forged test images of
    distinct identities where possible; returns their image ids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = ForgeryTalkerProcessor.from_pretrained(model_dir)
    by_id = {record["image_id"]: record for record in predictions(run)}
    test = load_dataset(str(dataset), split="test")
    chosen, methods = [], {}
    for row in test:  # spread over the manipulation methods
        method = row["method"]
        if method != "authentic" and methods.get(method, 0) < (count + 2) // 3 and len(chosen) < count:
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


def _rows(table: dict[str, dict], columns=TABLE_COLUMNS) -> str:
    shown = [column for column in columns if any(row.get(column) is not None for row in table.values())]
    return markdown_table(table, shown, "Row")


def _target(name: str, measured: str, met: bool | None) -> dict:
    return {"target": name, "measured": measured, "met": MISSING if met is None else ("yes" if met else "**no**")}


def targets_table(main: dict, ablation: dict, baselines: dict, mask_only: dict, consistency: dict) -> list[dict]:
    whole_face = baselines["Whole face (landmarks)"]["IoU"]
    region_baselines = {name: row["PLM"] for name, row in baselines.items() if "PLM" in row}
    best_region_baseline = max(region_baselines.values())
    report_baseline = baselines["Most frequent training report"]["CIDEr"]
    text_keys = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
    ordering = all(ablation["ground_truth"][key] >= ablation["predicted"][key] >= ablation["none"][key] for key in text_keys)
    orders = "; ".join(f"{key} {ablation['ground_truth'][key]:.2f} / {ablation['predicted'][key]:.2f} / {ablation['none'][key]:.2f}"
                       for key in text_keys)
    return [
        _target("IoU ≥ whole-face baseline + 10", f"{main['IoU']:.2f} vs {whole_face:.2f} + 10", main["IoU"] >= whole_face + 10),
        _target("IoU above the mask-only model", f"{main['IoU']:.2f} vs {mask_only['IoU']:.2f}", main["IoU"] > mask_only["IoU"]),
        _target("PLM above the most-frequent-regions baselines", f"{main['PLM']:.2f} vs {best_region_baseline:.2f}",
                main["PLM"] > best_region_baseline),
        _target("detection AUC ≥ 0.90", "-" if main.get("AUC") is None else f"{main['AUC'] / 100:.3f}",
                None if main.get("AUC") is None else main["AUC"] >= 90),
        _target("CIDEr above the most-frequent-report baseline", f"{main['CIDEr']:.2f} vs {report_baseline:.2f}",
                main["CIDEr"] > report_baseline),
        _target("ground-truth ≥ predicted ≥ no regions (report metrics)", orders, ordering),
        _target("reports differ between images", f"{consistency['distinct_reports']} distinct of {consistency['forged_images']}",
                consistency["distinct_reports"] > consistency["forged_images"] / 2),
        _target(f"reports name the regions their mask covers (≥ {FOLLOWS_MARGIN} PLM points above another image's mask)",
                f"PLM {consistency['report_vs_own_mask_PLM']:.2f} with the image's own mask vs "
                f"{consistency['report_vs_other_images_mask_PLM']:.2f} with another image's",
                consistency["report_vs_own_mask_PLM"] >= consistency["report_vs_other_images_mask_PLM"] + FOLLOWS_MARGIN),
    ]


def explanations(main: dict, baselines: dict, mask_only: dict, detection: dict, ablation: dict,
                 untouched: dict[str, int]) -> list[str]:
    """A sentence for each unmet target, saying what the numbers show about why (computed, not typed)."""
    notes = []
    whole_face = baselines["Whole face (landmarks)"]
    if main["IoU"] < whole_face["IoU"] + 10:
        notes.append(
            f"**IoU.** The whole-face mask scores {whole_face['IoU']:.2f} IoU because many forgeries cover most of the "
            f"face (face swaps, and local edits that include the skin); the model's masks reach {main['IoU']:.2f} "
            f"(precision {main['Precision']:.2f}, recall {main['Recall']:.2f}) against the whole face's precision "
            f"{whole_face['Precision']:.2f} and recall {whole_face['Recall']:.2f}. Learning where a forgery ends, "
            "from scratch on ten people, is the hardest part of the task at this size.")
    if main["IoU"] <= mask_only["IoU"]:
        notes.append(f"**Mask-only.** Without the report loss the same mask path reaches {mask_only['IoU']:.2f} IoU "
                     f"({main['IoU']:.2f} with it): at this budget the language side does not help the masks.")
    region_baselines = max(row["PLM"] for row in baselines.values() if "PLM" in row)
    if main["PLM"] <= region_baselines:
        notes.append(
            f"**Regions.** The prompter's regions (PLM {main['PLM']:.2f}) do not beat always naming the most frequent "
            f"regions ({region_baselines:.2f}): trained from scratch, the ViT prompter learns the regions' base rates "
            "before it learns to read them from the image.")
    if main.get("AUC") is not None and main["AUC"] < 90:
        notes.append(
            f"**Detection.** Scored by the prompter's highest region probability (the paper's image-level score), "
            f"authentic and forged test faces separate with AUC {detection['region'] / 100:.3f}; the mask decoder's "
            f"forged fraction separates them with AUC {detection['mask_area'] / 100:.3f}. Training shows the model "
            f"{untouched.get('train', 0)} distinct untouched faces (every other training image is a forgery), and the "
            f"test split's untouched images are {untouched.get('test', 0)} distinct faces of people it has never seen: "
            "what an untouched face looks like is learned from very few examples, and the AUC rests on how a handful "
            "of pictures rank.")
    if main["CIDEr"] <= baselines["Most frequent training report"]["CIDEr"]:
        notes.append(f"**Reports.** CIDEr {main['CIDEr']:.2f} does not beat repeating the most frequent training report "
                     f"({baselines['Most frequent training report']['CIDEr']:.2f}).")
    keys = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
    if not all(ablation["ground_truth"][k] >= ablation["predicted"][k] >= ablation["none"][k] for k in keys):
        notes.append("**Ablation order.** The paper's order (ground-truth ≥ predicted ≥ no regions) does not hold on "
                     "every report metric; see the Table 3 rows above.")
    return notes


def _data_summary(work: Path, dataset: Path) -> str:
    splits = json.loads((work / "data" / "splits.json").read_text())
    lines = ["| split | photos (identities) | samples | per method |", "| --- | --- | ---: | --- |"]
    for split, photos in splits.items():
        rows = load_dataset(str(dataset), split=split)
        counts: dict[str, int] = {}
        for method in rows["method"]:
            counts[method] = counts.get(method, 0) + 1
        identities = sum(6 if photo == "insightface_t1.jpg" else 1 for photo in photos)
        lines.append(f"| {split} | {', '.join(photos)} ({identities}) | {len(rows)} | "
                     + ", ".join(f"{method} {count}" for method, count in sorted(counts.items())) + " |")
    return "\n".join(lines)


def _benchmarks() -> str:
    path = REPOSITORY / "benchmarks" / "latest.json"
    if not path.is_file():
        return "No `benchmarks/latest.json` yet: run `python -m benchmarks --out benchmarks/latest.json`."
    document = json.loads(path.read_text())
    return ("The latest `python -m benchmarks` output (`benchmarks/latest.json`), with the machine it ran on:\n\n```json\n"
            + json.dumps(document, indent=1)[:20000] + "\n```")


def write_results(work: Path, runs: Path, baselines: dict, settings: RecipeSettings, quick: bool, timings: dict) -> Path:
    dataset = work / "data" / "mmtt"
    model_dir = work / "stage2" / "best" if (work / "stage2" / "best" / "config.json").is_file() else work / "stage2"
    main_document = _overall(runs / "predicted")
    main = main_document["overall"]
    ablation = {source: _load(runs / source) for source in ("ground_truth", "predicted", "none")}
    mask_only = _load(runs / "mask-only")
    faces = source_faces(work)
    consistency = report_consistency(work, runs / "predicted", faces)
    detection = detection_by_score(runs / "predicted")
    docs = work if quick else REPOSITORY / "docs"  # a plumbing run never replaces the published report
    figure_ids = write_figure(model_dir, dataset, runs / "predicted", docs / "results-examples.png", settings.figure_images)

    leave_one_out = {}
    for method in ("classical_inpainting", "region_transplant", "face_swap"):
        held_out = _overall(runs / f"without-{method}")["per_method"].get(method, {})
        seen = main_document["per_method"].get(method, {})
        leave_one_out[f"{method}: trained without it"] = held_out
        leave_one_out[f"{method}: full model"] = seen

    parameters = sum(p.numel() for p in ForgeryTalkerForConditionalGeneration.from_pretrained(model_dir).parameters())
    size = os.path.getsize(model_dir / "model.safetensors")
    targets = targets_table(main, ablation, baselines, mask_only, consistency)
    minutes = sum(timings.values()) / 60
    sections = [
        "# Results of the bundled demo model",
        "_Written by `python -m recipes.demo_model" + (" --quick" if quick else "") + f"` on {time.strftime('%Y-%m-%d')}; "
        "do not edit by hand._" + (" **This is a `--quick` plumbing run: its numbers mean nothing.**" if quick else ""),
        "## What this model is, and is not",
        "A demonstration. It was trained from scratch on two CPU cores in about an hour, on forgeries that "
        "`forgerytalker data synthesize` made from 10 photos (15 people) with classical manipulations: inpainting, "
        "Poisson-blended region transplants and whole-face swaps, plus untouched photos. It learns what *these* "
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
        "## Data: whole identities held out",
        "Photos, not samples, are split: no person appears in two splits. The group photo (6 people) is in train.",
        _data_summary(work, dataset),
        "## Targets",
        markdown_table({row["target"]: row for row in targets}, ("measured", "met"), "Target"),
        *(explanations(main, baselines, mask_only, detection, ablation, authentic_faces(faces)) or ["Every target is met."]),
        "## Table 2 layout: held-out test identities",
        "0-100 scale; the model generates with its own `generation_config` (beam search, 3 beams); regions are the "
        "prompter's own predictions. Detection: authentic vs forged, scored by the highest region probability.",
        _rows({"ForgeryTalker demo (this model)": main}, (*TABLE_COLUMNS, "AUC", "Accuracy")),
        f"Detection AUC by the mask's forged fraction instead (`--detection-score mask_area`): {detection['mask_area']:.2f}.",
        "## Table 3 ablation: which regions the instruction names (same weights)",
        _rows({"ground-truth regions (oracle)": ablation["ground_truth"], "predicted regions (the default)": ablation["predicted"],
               "no regions": ablation["none"]}),
        "## Baselines on the same test images",
        "The mask-only model has the same vision encoder, prompter and mask decoder, trained on the same data for the "
        "same steps with the mask loss alone (no report loss: the language model and its projection get no gradient).",
        _rows({"ForgeryTalker demo": main, "Mask-only model (same budget)": mask_only, **baselines}),
        f"The most frequent training report: \"{baselines['Most frequent training report']['report']}\"",
        "## Generalization",
        "### Leave one manipulation out",
        f"Each row pair: the same architecture trained (both stages, {settings.leave_one_out_fraction:.0%} of the main "
        "budget) without one method, tested on that method's test images, next to the full model on the same images.",
        _rows(leave_one_out),
        "### Per manipulation method (the full model)",
        breakdown_markdown(main_document["per_method"]),
        "### Robustness: drop from clean to degraded test images (positive = worse)",
        robustness_markdown(main_document["robustness"]["drop"]),
        "### Do the reports follow the image?",
        f"{consistency['distinct_reports']} distinct reports for {consistency['forged_images']} forged test images. "
        f"Regions a report names vs the landmark regions its own predicted mask covers (≥ {COVERED_FRACTION:.0%} of the "
        f"region's pixels): PLM {consistency['report_vs_own_mask_PLM']:.2f}; with another image's mask: "
        f"{consistency['report_vs_other_images_mask_PLM']:.2f}.",
        "## Examples",
        f"![photo, true mask, predicted mask probability and report for {len(figure_ids)} held-out test images]"
        "(results-examples.png)",
        "## How long it took",
        f"{minutes:.0f} minutes of steps in all on {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        f"load average {os.getloadavg()[0]:.1f} when the report was written. Each step's time is from the invocation "
        "that ran it (`timings.json`); the report itself and the baselines take under a minute.",
        markdown_table({name: {"seconds": seconds} for name, seconds in timings.items()}, ("seconds",), "Step"),
        "## Benchmarks",
        _benchmarks(),
    ]
    out = docs / "RESULTS.md"
    out.write_text("\n\n".join(sections) + "\n")
    (work / "eval" / "summary.json").write_text(json.dumps(
        {"overall": main, "ablation": ablation, "mask_only": mask_only, "baselines": baselines,
         "leave_one_out": leave_one_out, "consistency": consistency, "detection": detection, "targets": targets, "timings": timings}, indent=1) + "\n")
    return out


__all__ = ["detection_by_score", "explanations", "report_consistency", "targets_table", "write_figure", "write_results"]
