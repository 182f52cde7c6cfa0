"""`config.empty_untouched_masks`: a face the prompter does not call manipulated gets an empty mask from `generate`
(`region_decision.empty_untouched_masks`), so the mask, its heatmap and the mask metrics agree with the verdict."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from forgerytalker import ForgeryTalkerForConditionalGeneration, ForgeryTalkerProcessor
from forgerytalker.region_decision import called_manipulated, empty_untouched_masks
from forgerytalker.tiny import build_tiny_model_and_processor


def _photos(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    sizes = [(37, 29), (32, 32), (50, 41), (23, 31), (44, 60)]
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i % 5], 3), dtype=np.uint8)) for i in range(count)]


def _split_by_threshold(model, processor, photos) -> tuple[torch.Tensor, float]:
    """The photos' manipulation scores and a region threshold that calls the higher half manipulated."""
    with torch.inference_mode():
        scores = torch.sigmoid(model.prompter(processor(images=photos, return_tensors="pt")["pixel_values"]).region_logits)
    ranked = scores.max(-1).values.sort().values
    middle = len(ranked) // 2
    return scores.max(-1).values, float((ranked[middle - 1] + ranked[middle]) / 2)


def test_generate_empties_the_mask_of_every_face_not_called_manipulated_and_keeps_the_others(tmp_path):
    model, processor = build_tiny_model_and_processor()
    model.eval()
    photos = _photos(5)
    scores, threshold = _split_by_threshold(model, processor, photos)
    model.config.region_threshold = threshold
    inputs = processor(images=photos, return_tensors="pt")
    sizes = [(photo.height, photo.width) for photo in photos]

    as_decoded = model.generate(**inputs, max_new_tokens=3)
    model.config.empty_untouched_masks = True
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = ForgeryTalkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.empty_untouched_masks
    emptied = loaded.generate(**ForgeryTalkerProcessor.from_pretrained(tmp_path)(images=photos, return_tensors="pt"),
                              max_new_tokens=3)

    called = scores > threshold
    assert called.tolist() == called_manipulated(emptied.predicted_regions).tolist() and 0 < called.sum() < len(photos)
    torch.testing.assert_close(emptied.pred_masks[called], as_decoded.pred_masks[called])
    assert torch.equal(emptied.sequences, as_decoded.sequences)  # the report does not depend on the mask
    before = processor.post_process_generation(as_decoded, target_sizes=sizes, return_mask_probabilities=True)
    after = processor.post_process_generation(emptied, target_sizes=sizes, return_mask_probabilities=True)
    for index, is_called in enumerate(called.tolist()):
        if is_called:
            assert torch.equal(after[index]["mask"], before[index]["mask"])
            assert after[index]["mask_confidence"] == before[index]["mask_confidence"]
        else:
            assert before[index]["mask_probabilities"].min() > 0  # the decoder alone marks something everywhere
            assert after[index]["mask_probabilities"].abs().max() == 0 and not after[index]["mask"].any()
            assert after[index]["regions"] == []
            # the IoU head estimated the decoder's mask, not the empty one
            assert before[index]["mask_confidence"] is not None and after[index]["mask_confidence"] is None


def test_regions_the_caller_names_get_the_decoder_s_mask_whatever_the_verdict():
    """An analyst's regions (`explicit`) and the dataset's (`ground_truth`) ask where the edit lies in them; the
    plain instruction (`none`) is still the model's own answer."""
    model, processor = build_tiny_model_and_processor()
    model.eval()
    photos = _photos(4)
    scores, threshold = _split_by_threshold(model, processor, photos)
    model.config.region_threshold = threshold
    untouched = scores <= threshold
    named = processor(images=photos, regions=[["nose", "eye"]] * len(photos), return_tensors="pt")
    labels = torch.zeros(len(photos), 21)
    labels[:, [2, 4]] = 1
    plain = processor(images=photos, return_tensors="pt")
    calls = {
        "explicit": lambda: model.generate(**named, max_new_tokens=2),
        "ground_truth": lambda: model.generate(**plain, region_labels=labels, region_source="ground_truth", max_new_tokens=2),
        "none": lambda: model.generate(**plain, region_source="none", max_new_tokens=2),
    }
    for source, call in calls.items():
        model.config.empty_untouched_masks = False
        as_decoded = call().pred_masks
        model.config.empty_untouched_masks = True
        answered = call().pred_masks
        if source == "none":
            assert torch.equal(answered[~untouched], as_decoded[~untouched])
            assert torch.sigmoid(answered[untouched]).max() == 0
        else:
            assert torch.equal(answered, as_decoded), source


def test_the_emptied_logits_stay_at_probability_zero_in_half_precision_and_after_resizing():
    logits = torch.randn(3, 1, 8, 8, dtype=torch.bfloat16)
    flagged = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 1, 0]])
    iou_scores = torch.rand(3, 1)
    emptied, estimates = empty_untouched_masks(logits, flagged, iou_scores)
    assert torch.equal(emptied[[0, 2]], logits[[0, 2]])
    assert torch.equal(estimates[[0, 2]], iou_scores[[0, 2]]) and torch.isnan(estimates[1]).all()
    assert empty_untouched_masks(logits, flagged)[1] is None
    _, processor = build_tiny_model_and_processor()
    probabilities = processor.post_process_masks(emptied, [(13, 29)] * 3, binarize=False)
    assert probabilities[1].abs().max() == 0 and not torch.isnan(probabilities[1]).any()
    assert probabilities[0].min() > 0
