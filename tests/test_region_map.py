"""The prompter's region map (`region_map=True`): which regions of a manipulated face hold the edit, read from the
patch head's probabilities and fitted in stage 1 (`training.region_map`), and the one rule
(`region_decision.flag_regions`) that turns it into flagged regions for `generate`, the instruction, post-processing,
evaluation and calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_patch_head import _prompter, _stage_one
from training_runs import read_log

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerPrompterConfig
from forgerytalker.evaluation.runner import evaluation_records, model_thresholds
from forgerytalker.modeling_forgerytalker_prompter import ForgeryTalkerPrompterNetwork, region_map_loss
from forgerytalker.region_decision import flag_regions
from forgerytalker.regions import REGION_NAMES
from forgerytalker.tiny import build_tiny_processor, tiny_config, tiny_prompter_config
from forgerytalker.training.region_map import REGION_MAP_L2, fit_linear_map, region_map_rows


def _regions(*indices: int) -> torch.Tensor:
    labels = torch.zeros(21)
    labels[list(indices)] = 1
    return labels


def test_the_map_reads_the_patch_probabilities_and_is_never_trained_by_gradient():
    prompter = _prompter(patch_mask_loss_weight=1.0, region_map=True)
    pixels = torch.randn(3, 3, 32, 32)
    labels = torch.stack([_regions(0, 4), _regions(), _regions(6)])
    output = prompter(pixels, region_labels=labels)
    assert output.located_region_logits.shape == (3, 21)
    torch.testing.assert_close(output.located_region_logits,
                               prompter.region_map(torch.sigmoid(output.patch_logits).flatten(1)))
    without_map = _prompter(patch_mask_loss_weight=1.0)
    without_map.load_state_dict({k: v for k, v in prompter.state_dict().items() if not k.startswith("region_map.")})
    torch.testing.assert_close(output.loss, without_map(pixels, region_labels=labels).loss)  # no term of its own
    prompter.requires_grad_(True)
    assert not any(p.requires_grad for p in prompter.region_map.parameters())
    assert all(p.requires_grad for name, p in prompter.named_parameters() if not name.startswith("region_map."))
    # its loss counts the manipulated faces only: the untouched one says nothing of where an edit lies
    located = output.located_region_logits
    torch.testing.assert_close(region_map_loss(located, labels),
                               F.binary_cross_entropy_with_logits(located[[0, 2]], labels[[0, 2]]))
    assert float(region_map_loss(located, torch.zeros(3, 21)).detach()) == 0.0


def test_a_region_map_needs_a_patch_head_and_a_threshold_inside_zero_one():
    with pytest.raises(ValueError, match="needs a patch head"):
        ForgeryTalkerPrompterConfig(region_map=True)
    with pytest.raises(ValueError, match="located_region_threshold"):
        ForgeryTalkerPrompterConfig(located_region_threshold=1.0)
    assert _prompter(patch_mask_loss_weight=1.0).region_map is None
    assert _prompter(patch_mask_loss_weight=1.0)(torch.randn(1, 3, 32, 32)).located_region_logits is None


def test_flagged_regions_follow_the_map_only_for_a_face_called_manipulated():
    region_probs = torch.tensor([[0.9, 0.8, 0.7, *[0.6] * 18], [0.05, 0.04, *[0.01] * 19], [0.3, *[0.2] * 20]])
    located = torch.tensor([[0.1, 0.2, 0.9, 0.7, *[0.0] * 17], [0.9, 0.9, *[0.9] * 19], [0.1, 0.3, 0.2, *[0.0] * 18]])
    flagged = flag_regions(region_probs, 0.25, located, 0.5)
    assert flagged[0].nonzero().flatten().tolist() == [2, 3]  # the located ones, not the region head's top three
    assert flagged[1].sum() == 0  # untouched: nothing, however the map reads it
    assert flagged[2].nonzero().flatten().tolist() == [1]  # manipulated, none above 0.5: the most probable one
    assert flag_regions(region_probs, 0.25)[0].sum() == 21  # without a map: the region head's rule
    with pytest.raises(ValueError, match="located_region_threshold"):
        flag_regions(region_probs, 0.25, located)


def _tiny_model_with_map(fixed: bool = True, **config_kwargs):
    processor = build_tiny_processor()
    config = tiny_config(processor.tokenizer, qformer_vocab_size=len(processor.qformer_tokenizer), **config_kwargs)
    prompter = tiny_prompter_config().to_dict()
    prompter.update(patch_mask_loss_weight=1.0, region_map=True, located_region_threshold=0.5, region_threshold=0.3)
    config.prompter_config = ForgeryTalkerPrompterConfig(**prompter)
    torch.manual_seed(0)
    model = ForgeryTalkerForConditionalGeneration(config).eval()
    model.generation_config.update(max_new_tokens=3, do_sample=False, num_beams=1)
    if not fixed:
        return model, processor
    located_bias = torch.full((21,), -4.0)
    located_bias[[2, 5, 9]] = torch.tensor([3.0, 1.0, 2.0])  # three located regions: 2 first, then 9, then 5
    with torch.no_grad():
        model.prompter.region_map.weight.zero_()
        model.prompter.region_map.bias.copy_(located_bias)
        model.prompter.region_head.weight.zero_()
        model.prompter.region_head.bias.copy_(torch.linspace(2.0, -2.0, 21))  # manipulated; its top regions 0, 1, 2
    return model, processor


def test_generate_flags_and_names_the_located_regions_and_post_processing_says_so(images, tmp_path):
    model, processor = _tiny_model_with_map(max_instruction_regions=2)
    inputs = processor(images=images[:2])
    output = model.generate(**inputs)
    assert output.predicted_regions.nonzero()[:, 1].tolist() == [2, 5, 9, 2, 5, 9]
    assert output.instruction_regions.nonzero()[:, 1].tolist() == [2, 9, 2, 9]  # capped by located probability
    assert output.located_region_threshold == 0.5
    result = processor.post_process_generation(output)[0]
    assert result["regions"] == [REGION_NAMES[i] for i in (2, 5, 9)]
    assert result["instruction_regions"] == [REGION_NAMES[2], REGION_NAMES[9]]
    assert result["located_region_probabilities"][REGION_NAMES[2]] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert processor.post_process_generation(output, located_region_threshold=0.8)[0]["regions"] == [REGION_NAMES[2], REGION_NAMES[9]]
    assert processor.post_process_generation(output, region_threshold=0.95)[0]["regions"] == []  # not manipulated

    model.save_pretrained(tmp_path / "with-map")
    processor.save_pretrained(tmp_path / "with-map")
    assert "prompter.region_map.weight" in load_file(tmp_path / "with-map" / "model.safetensors")
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path / "with-map").eval()
    assert loaded.config.prompter_config.has_region_map
    torch.testing.assert_close(loaded.generate(**inputs).predicted_regions, output.predicted_regions)
    assert model_thresholds(loaded) == {"mask_threshold": model.config.mask_threshold, "region_threshold": 0.3,
                                        "located_region_threshold": 0.5}


def test_evaluation_scores_the_flagged_regions_not_the_region_probabilities_at_one_threshold():
    probabilities = {name: 0.9 for name in REGION_NAMES}  # every region above the region threshold
    record = {"image_id": "a", "method": "face_swap", "report": "r", "reference": "r",
              "mask_pixels": {"intersection": 0, "predicted": 0, "target": 0}, "regions": ["nose"],
              "region_probabilities": probabilities, "target_regions": ["nose"],
              "detection_scores": {"region": 0.9, "mask_area": 0.0}}
    records = evaluation_records([record], "region", {"mask_threshold": 0.5, "region_threshold": 0.5})
    labels = np.asarray(records.predicted_regions["a"])
    assert labels.sum() == 1 and labels[REGION_NAMES.index("nose")] == 1


def test_the_fit_minimises_the_loss_on_manipulated_faces_and_finds_where_each_region_lies():
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(400, 16, generator=generator)
    labels = torch.zeros(400, 21)
    for region, cell in ((0, 3), (4, 9), (6, 12)):  # each region is edited where its cell looks edited
        labels[:, region] = (features[:, cell] + 0.3 * torch.randn(400, generator=generator) > 0.6).float()
    assert 0 < int(labels.any(-1).sum()) < 400  # the data holds both kinds
    weight, bias = fit_linear_map(features, labels)
    assert weight.shape == (21, 16) and bias.shape == (21,)
    for region, cell in ((0, 3), (4, 9), (6, 12)):
        assert int(weight[region].argmax()) == cell
    # a minimum of the objective: no gradient left
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    objective = region_map_loss(features.double() @ w.T + b, labels.double()) + REGION_MAP_L2 * w.pow(2).sum()
    objective.backward()
    assert float(w.grad.abs().max()) < 1e-5 and float(b.grad.abs().max()) < 1e-5
    # untouched faces add nothing
    untouched = torch.cat([features, torch.rand(50, 16, generator=generator)]), torch.cat([labels, torch.zeros(50, 21)])
    torch.testing.assert_close(fit_linear_map(*untouched)[0], weight)


def _patch_probabilities(prompter_dir, rows):
    from transformers import AutoImageProcessor

    prompter = ForgeryTalkerPrompterNetwork.from_pretrained(prompter_dir).eval()
    image_processor = AutoImageProcessor.from_pretrained(prompter_dir)
    pixels = image_processor(images=[row["image"].convert("RGB") for row in rows], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = prompter(pixels)
    labels = torch.stack([torch.tensor([float(i in row["regions"]) for i in range(21)]) for row in rows])
    return torch.sigmoid(output.patch_logits).flatten(1), labels, prompter


@pytest.mark.parametrize("validated", [False, True])
def test_stage_one_fits_the_map_on_unaugmented_training_faces_before_it_saves(tiny_dataset_dir, tmp_path, validated):
    """The saved map is the fit of the saved prompter's own patch probabilities on the drawn training faces read as
    they are (with `--augment true` training around it): fitted at each validation when there is one (so `best/`
    has it), else before the final save."""
    from datasets import load_dataset

    validation = ("--validation_split", "validation", "--eval_steps", "2", "--best_metric", "AUC") if validated else ()
    output_dir = _stage_one(tiny_dataset_dir, tmp_path, 1.0, region_map=True,
                            extra=("--region_map_samples", "6", "--augment", "true", "--per_device_eval_batch_size", "5",
                                   *validation))
    rows = region_map_rows(load_dataset(str(tiny_dataset_dir), split="train"), 6, seed=0)
    for folder in [output_dir] + ([output_dir / "best"] if validated else []):
        features, labels, prompter = _patch_probabilities(folder, rows)
        weight, bias = fit_linear_map(features, labels)
        # compared as the located probabilities they give: a fit on 6 faces is steep, and batches of 5 in the run
        # against one of 6 here move its weights in the fourth decimal
        with torch.no_grad():
            saved = torch.sigmoid(prompter.region_map(features))
        torch.testing.assert_close(saved, torch.sigmoid(features.double() @ weight.T + bias).float(), atol=2e-3, rtol=0)
    if validated:
        assert len([record for record in read_log(output_dir) if "validation" in record]) == 2


def test_calibration_picks_the_located_threshold_with_the_best_validation_plm(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from datasets import load_dataset
    from recipe_datasets import parquet_folder, recipe_rows
    from recipes.demo_model import calibration

    from forgerytalker.evaluation.region_metrics import positive_label_matching
    from forgerytalker.regions import regions_to_labels

    methods = ["authentic", "face_swap", "classical_inpainting", "authentic", "region_transplant", "face_swap",
               "classical_inpainting", "region_transplant", "face_swap"]
    monkeypatch.setattr(calibration, "BATCH_SIZE", 4)  # the last batch short
    dataset = parquet_folder(tmp_path / "mmtt", {"train": recipe_rows(["authentic"], "t"),
                                                 "validation": recipe_rows(methods, "v")})
    model, processor = _tiny_model_with_map(fixed=False)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    result = calibration.calibrate(tmp_path / "model", dataset)

    rows = load_dataset(str(dataset), split="validation")
    targets = np.stack([regions_to_labels([REGION_NAMES[i] for i in regions]) for regions in rows["regions"]])
    outputs = [model.generate(**processor(images=[row["image"].convert("RGB")])) for row in rows]  # one at a time
    plms = []
    for candidate in calibration.LOCATED_THRESHOLDS:
        flagged = [processor.post_process_generation(output, region_threshold=result["region_threshold"],
                                                     located_region_threshold=candidate)[0]["regions"] for output in outputs]
        plms.append(positive_label_matching(np.stack([regions_to_labels(names) for names in flagged]), targets))
    assert len(set(np.round(plms, 6))) > 1  # the thresholds differ on these images
    best = int(np.argmax(plms))
    assert result["located_region_threshold"] == calibration.LOCATED_THRESHOLDS[best]
    assert result["validation_plm"] == pytest.approx(plms[best])
    shipped = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path / "model").config
    assert shipped.prompter_config.located_region_threshold == calibration.LOCATED_THRESHOLDS[best]


def test_the_pipeline_record_and_figure_carry_what_flagged_the_regions(tmp_path, images):
    from transformers import pipeline

    from forgerytalker import PIPELINE_TASK
    from forgerytalker.analysis.overlay import draw_analysis_figure
    from forgerytalker.analysis.records import ForgeryAnalysis

    model, processor = _tiny_model_with_map()
    model.save_pretrained(tmp_path / "with-map")
    processor.save_pretrained(tmp_path / "with-map")
    result = pipeline(PIPELINE_TASK, model=str(tmp_path / "with-map"), max_new_tokens=3)(images[0], faces="whole")
    assert result["regions"] == [REGION_NAMES[i] for i in (2, 5, 9)]
    assert result["located_region_threshold"] == 0.5
    located = result["located_region_probabilities"]
    assert [name for name, p in located.items() if p > 0.5] == result["regions"]
    analysis = ForgeryAnalysis.from_pipeline_result(result)
    assert analysis.flagging_probabilities() == (located, 0.5)
    record = json.loads(json.dumps(analysis.to_record()))
    assert record["located_region_probabilities"] == pytest.approx(located) and record["located_region_threshold"] == 0.5
    # the bars are the located probabilities: with them at 0 the bar panel is drawn differently
    figure = np.asarray(draw_analysis_figure(images[0], analysis))
    analysis.located_region_probabilities = {name: 0.0 for name in REGION_NAMES}
    assert not np.array_equal(figure, np.asarray(draw_analysis_figure(images[0], analysis)))


def test_the_figure_of_a_photo_not_called_manipulated_names_no_region_and_draws_no_threshold(tmp_path, images):
    """Located probabilities say where an edit would be *if* the face were manipulated: on an untouched face they can
    cross the line, and a figure that drew them like a flagged face's said two things at once."""
    from transformers import pipeline

    from forgerytalker import PIPELINE_TASK
    from forgerytalker.analysis.overlay import (BAR_CAPTIONS, BAR_PANEL_WIDTH, FLAGGED, MARGIN, MUTED, NOT_IN_FORCE,
                                                UNFLAGGED, draw_analysis_figure)
    from forgerytalker.analysis.records import ForgeryAnalysis

    def in_bar_panel(figure, colour):  # the photo may hold any colour
        return (figure[:, -MARGIN - BAR_PANEL_WIDTH :] == colour).all(-1)

    def pixels(figure, colour) -> int:
        return int(in_bar_panel(figure, colour).sum())

    def longest_muted_column(figure) -> int:  # the dashed line: about two thirds of the bar panel's height
        return int(in_bar_panel(figure, MUTED).sum(0).max())

    model, processor = _tiny_model_with_map()
    model.save_pretrained(tmp_path / "with-map")
    processor.save_pretrained(tmp_path / "with-map")
    result = pipeline(PIPELINE_TASK, model=str(tmp_path / "with-map"), max_new_tokens=3)(images[0], faces="whole")
    analysis = ForgeryAnalysis.from_pipeline_result(result)
    assert analysis.manipulated and analysis.regions
    flagged = np.asarray(draw_analysis_figure(images[0], analysis))
    assert pixels(flagged, FLAGGED) > 0 and pixels(flagged, UNFLAGGED) > 0 and pixels(flagged, NOT_IN_FORCE) == 0
    assert longest_muted_column(flagged) > 21 * 16 / 2

    analysis.manipulated, analysis.regions = False, []  # the same probabilities, the face called untouched
    assert max(analysis.located_region_probabilities.values()) > analysis.located_region_threshold
    untouched = np.asarray(draw_analysis_figure(images[0], analysis))
    assert pixels(untouched, FLAGGED) == pixels(untouched, UNFLAGGED) == 0 and pixels(untouched, NOT_IN_FORCE) > 0
    assert longest_muted_column(untouched) < 21 * 16 / 4
    assert BAR_CAPTIONS[False] != BAR_CAPTIONS[True]
