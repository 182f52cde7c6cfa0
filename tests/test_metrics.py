"""Hand-computed cases for the metric layer (forgerytalker.evaluation). Text metrics need Java."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgerytalker.data.methods import AUTHENTIC, DIFFUSION_INPAINTING, FACE_SWAP
from forgerytalker.evaluation import (
    EvaluationRecords,
    ImageIdMismatchError,
    JavaNotFoundError,
    MaskCounts,
    PTBAlignmentError,
    MaskMetricAccumulator,
    accumulate_mask_counts,
    apply_degradations,
    auc_defined,
    breakdown_by_method,
    compute_text_metrics,
    conventions_dict,
    conventions_text,
    count_mask_pair,
    detection_accuracy,
    detection_metrics,
    evaluate_records,
    forged_labels,
    mask_area_score,
    metrics_document,
    pair_masks,
    parse_degradation,
    parse_degradations,
    per_region_metrics,
    plm_per_sample,
    positive_label_matching,
    ptb_tokenize,
    region_detection_scores,
    resize_nearest,
    robustness_drops,
    roc_auc,
    summarize_mask_counts,
    text_metrics,
    write_report,
)
from forgerytalker.evaluation.mask_metrics import load_mask
from forgerytalker.evaluation.report import TABLE2_COLUMNS, table2_markdown
from forgerytalker.image_utils import forged_pixels
from forgerytalker.regions import NUM_REGIONS, REGION_NAMES, regions_to_labels

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR need Java")

# --------------------------------------------------------------------------------------------------- masks


def counts_of(prediction, ground_truth) -> MaskCounts:
    return count_mask_pair("img", np.array(prediction), np.array(ground_truth))


def test_mask_metrics_of_partial_overlap():
    counts = counts_of([[True, True], [False, False]], [[1, 0], [1, 0]])
    assert (counts.intersection, counts.predicted, counts.target, counts.union) == (1, 2, 2, 3)
    assert counts.iou == pytest.approx(100 / 3)
    assert counts.precision == pytest.approx(50.0)
    assert counts.recall == pytest.approx(50.0)


@pytest.mark.parametrize(
    "prediction, ground_truth, expected",
    [
        ([[1, 0], [0, 0]], [[0, 0], [0, 0]], (0.0, 0.0, 0.0)),  # false alarm on an empty ground truth
        ([[0, 0], [0, 0]], [[0, 1], [0, 0]], (0.0, 0.0, 0.0)),  # empty prediction of a forged image
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]], (100.0, 100.0, 100.0)),  # both empty
    ],
)
def test_mask_metrics_empty_rules(prediction, ground_truth, expected):
    counts = counts_of(prediction, ground_truth)
    assert (counts.iou, counts.precision, counts.recall) == expected


def test_probabilities_are_forged_strictly_above_the_models_threshold_and_ground_truth_above_zero():
    probabilities = np.array([[0.5, 0.51], [0.2, 0.9]], dtype=np.float32)
    ground_truth = np.array([[0, 3], [255, 0]], np.uint8)
    counts = count_mask_pair("img", probabilities, ground_truth, threshold=0.5)
    assert (counts.intersection, counts.predicted, counts.target) == (1, 2, 2)
    tuned = count_mask_pair("img", probabilities, ground_truth, threshold=0.85)  # a checkpoint's tuned threshold
    assert (tuned.intersection, tuned.predicted) == (0, 1)
    with pytest.raises(ValueError, match="img.*probabilities.*mask_threshold"):
        count_mask_pair("img", probabilities, ground_truth)  # no hidden default threshold


def test_ground_truth_masks_follow_the_one_mask_rule(tmp_path):
    """Any colour band > 0 is forged and alpha is ignored, for arrays and files alike (image_utils.forged_pixels)."""
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere, but only one pixel has colour
    rgba[0, 1, 2] = 1  # (0, 0, 1): luminance rounds to 0, yet it is forged
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "gt.png")
    prediction = np.array([[False, True], [False, False]])
    for ground_truth in (rgba, rgba[..., :3], tmp_path / "gt.png"):
        counts = count_mask_pair("img", prediction, ground_truth)
        assert (counts.intersection, counts.predicted, counts.target) == (1, 1, 1), type(ground_truth)
    np.testing.assert_array_equal(load_mask(tmp_path / "gt.png"), forged_pixels(rgba))


def test_integer_prediction_is_forged_where_nonzero():
    counts = counts_of(np.array([[0, 255], [0, 1]], np.uint8), [[0, 1], [0, 0]])
    assert (counts.intersection, counts.predicted) == (1, 2)


def test_logits_are_rejected_with_the_image_id():
    with pytest.raises(ValueError, match="img_9.*sigmoid"):
        count_mask_pair("img_9", np.array([[-3.0, 2.0]]), np.zeros((1, 2)))


def test_prediction_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        count_mask_pair("img", np.zeros((1, 4, 4), bool), np.zeros((4, 4)))


def test_nearest_resize_of_2x2_prediction_to_4x4_ground_truth():
    prediction = np.array([[1, 0], [0, 1]], dtype=bool)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(resize_nearest(prediction, (4, 4)), expected)
    ground_truth = np.zeros((4, 4), np.uint8)
    ground_truth[:2, :2] = 1
    counts = count_mask_pair("img", prediction, ground_truth)
    assert (counts.intersection, counts.predicted, counts.target) == (4, 8, 4)
    assert (counts.iou, counts.precision, counts.recall) == (50.0, 50.0, 100.0)


def test_nearest_resize_down_picks_pixel_centres():
    source = np.arange(6)[None, :]  # a 1 x 6 row; 3 output columns sample source columns 1, 3, 5
    np.testing.assert_array_equal(resize_nearest(source, (1, 3)), [[1, 3, 5]])


def test_ciou_differs_from_mean_iou():
    small_perfect = MaskCounts("a", intersection=1, predicted=1, target=1)  # IoU 100
    large_missed = MaskCounts("b", intersection=0, predicted=4, target=6)  # IoU 0, union 10
    summary = summarize_mask_counts([small_perfect, large_missed])
    assert summary["IoU"] == pytest.approx(50.0)
    assert summary["cIoU"] == pytest.approx(100 / 11)
    assert summary["Precision"] == pytest.approx(50.0)
    assert summary["Recall"] == pytest.approx(50.0)
    assert summary["num_images"] == 2


def test_ciou_of_only_empty_masks_is_one_hundred():
    assert summarize_mask_counts([MaskCounts("a", 0, 0, 0)])["cIoU"] == 100.0


def test_missing_prediction_is_an_error_naming_the_image():
    with pytest.raises(ValueError, match="img_7"):
        count_mask_pair("img_7", None, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="img_7"):
        accumulate_mask_counts([("img_1", np.zeros((2, 2), bool), np.zeros((2, 2))), ("img_7", None, np.zeros((2, 2)))])


def test_pair_masks_raises_for_missing_and_extra_predictions():
    ground_truths = [("img_1", np.zeros((2, 2))), ("img_7", np.zeros((2, 2)))]
    with pytest.raises(ImageIdMismatchError, match="missing.*'img_7'"):
        list(pair_masks({"img_1": np.zeros((2, 2))}, ground_truths))
    extra = {"img_1": np.zeros((2, 2)), "img_7": np.zeros((2, 2)), "img_8": np.zeros((2, 2))}
    with pytest.raises(ImageIdMismatchError, match="not evaluated: 'img_8'"):
        list(pair_masks(extra, ground_truths))


def test_accumulator_rejects_an_image_twice_and_keeps_records():
    accumulator = MaskMetricAccumulator()
    accumulator.add("a", np.ones((2, 2), bool), np.ones((2, 2)))
    with pytest.raises(ValueError, match="'a' was already evaluated"):
        accumulator.add("a", np.ones((2, 2), bool), np.ones((2, 2)))
    assert accumulator.records()[0]["IoU"] == 100.0
    assert accumulator.compute()["num_images"] == 1


def test_masks_from_files_and_arrays_with_two_workers_match_one(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for index in range(10):
        prediction_path, ground_truth_path = tmp_path / f"{index}.npy", tmp_path / f"{index}.png"
        np.save(prediction_path, rng.random((16, 16)).astype(np.float32))
        Image.fromarray((rng.random((32, 32)) > 0.7).astype(np.uint8) * 255).save(ground_truth_path)
        pairs.append((f"img_{index}", str(prediction_path), ground_truth_path))
    pairs += [(f"array_{index}", rng.random((8, 8)), rng.random((8, 8)) > 0.5) for index in range(4)]
    serial = accumulate_mask_counts(pairs, threshold=0.5)
    parallel = accumulate_mask_counts(iter(pairs), num_workers=2, batch_size=3, threshold=0.5)
    assert list(parallel.counts.items()) == list(serial.counts.items())  # same counts, in stream order
    expected = count_mask_pair("img_0", np.load(pairs[0][1]), np.asarray(Image.open(pairs[0][2])), threshold=0.5)
    assert serial.counts["img_0"] == expected
    assert accumulate_mask_counts(pairs, threshold=0.9).counts["img_0"].predicted < expected.predicted


# --------------------------------------------------------------------------------------------------- regions


def labels(*names: str) -> list[int]:
    return regions_to_labels(names)


def test_plm_per_sample_including_empty_cases():
    predicted = [labels("eye", "nose"), labels(), labels(), labels("lip")]
    target = [labels("eye", "lip"), labels(), labels("eye"), labels("lip")]
    np.testing.assert_allclose(plm_per_sample(predicted, target), [100 / 3, 100.0, 0.0, 100.0])
    assert positive_label_matching(predicted, target) == pytest.approx((100 / 3 + 200) / 4)


def test_plm_thresholds_probabilities_at_the_models_region_threshold():
    probabilities = np.zeros(NUM_REGIONS)
    probabilities[[0, 1]] = [0.6, 0.5]  # eye predicted, pupil not (0.5 is not above the threshold)
    assert positive_label_matching(probabilities, labels("eye", "pupil"), threshold=0.5) == pytest.approx(50.0)
    assert positive_label_matching(probabilities, labels("eye", "pupil"), threshold=0.4) == pytest.approx(100.0)
    assert per_region_metrics(probabilities, labels("eye", "pupil"), threshold=0.4)["pupil"]["predicted"] == 1
    with pytest.raises(ValueError, match="region_threshold"):
        positive_label_matching(probabilities, labels("eye", "pupil"))
    float_labels = np.asarray(labels("eye", "pupil"), dtype=np.float32)  # 0/1 labels need no threshold
    assert positive_label_matching(float_labels, float_labels) == 100.0


def test_plm_rejects_wrong_label_count():
    with pytest.raises(ValueError, match=f"\\(N, {NUM_REGIONS}\\)"):
        plm_per_sample(np.zeros((2, NUM_REGIONS - 1)), np.zeros((2, NUM_REGIONS - 1)))


def test_per_region_metrics_pool_images():
    predicted = [labels("eye", "nose"), labels("eye"), labels()]
    target = [labels("eye"), labels("lip"), labels("eye")]
    metrics = per_region_metrics(predicted, target)
    assert list(metrics) == list(REGION_NAMES)
    assert metrics["eye"] == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2, "predicted": 2}
    assert (metrics["nose"]["precision"], metrics["nose"]["recall"], metrics["nose"]["f1"]) == (0.0, 0.0, 0.0)
    assert (metrics["lip"]["precision"], metrics["lip"]["recall"]) == (0.0, 0.0)
    assert (metrics["chin"]["precision"], metrics["chin"]["recall"], metrics["chin"]["f1"]) == (100.0, 100.0, 100.0)


# --------------------------------------------------------------------------------------------------- detection


def test_auc_hand_example():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(75.0)


def test_auc_counts_ties_as_half():
    # forged 0.5 vs authentic 0.5, 0.5: two ties (1.0); forged 0.9 beats both (2.0): 3 of 4 pairs.
    assert roc_auc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(75.0)
    assert roc_auc([0.3, 0.3, 0.3], [0, 1, 1]) == pytest.approx(50.0)
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0


def test_auc_with_one_class_is_undefined():
    assert not auc_defined([1, 1]) and not auc_defined([False, False, False]) and auc_defined([0, 1, 1])
    with pytest.raises(ValueError, match="one class"):
        roc_auc([0.2, 0.9], [1, 1])
    result = detection_metrics([0.2, 0.9], [1, 1], threshold=0.5)
    assert result["AUC"] is None and "one class" in result["AUC_undefined"]
    assert result["Accuracy"] == 50.0
    assert (result["num_forged"], result["num_authentic"]) == (2, 0)


def test_accuracy_calls_forged_strictly_above_threshold():
    assert detection_accuracy([0.2, 0.7, 0.5], [0, 1, 1], threshold=0.5) == pytest.approx(200 / 3)


def test_detection_scores_and_labels():
    np.testing.assert_array_equal(forged_labels([FACE_SWAP, AUTHENTIC, DIFFUSION_INPAINTING]), [1, 0, 1])
    probabilities = np.zeros((2, NUM_REGIONS))
    probabilities[0, 3] = 0.8
    np.testing.assert_array_equal(region_detection_scores(probabilities), [0.8, 0.0])
    assert mask_area_score(np.array([[0.9, 0.1], [0.3, 0.4]]), threshold=0.5) == 0.25
    assert mask_area_score(np.array([[0.9, 0.1], [0.3, 0.4]]), threshold=0.2) == 0.75
    with pytest.raises(ValueError, match="labels"):
        roc_auc([0.1, 0.2], [0, 2])


# --------------------------------------------------------------------------------------------------- degradations


@pytest.fixture
def noisy_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "spec",
    [
        "jpeg",
        "jpeg:abc",
        "jpeg:0",
        "jpeg:101",
        "jpeg:75.5",
        "resize:1",
        "resize:0",
        "blur:0",
        "blur:-1",
        "noise:0.1",
        "",
    ],
)
def test_invalid_degradation_spec_is_named(spec):
    with pytest.raises(ValueError, match=f"Invalid degradation {spec!r}"):
        parse_degradation(spec)


def test_degradation_specs_parse_to_canonical_names():
    parsed = parse_degradations(["jpeg:75", "RESIZE:0.5", " blur:1 "])
    assert [degradation.spec for degradation in parsed] == ["jpeg:75", "resize:0.5", "blur:1.0"]


def test_jpeg_changes_pixels_deterministically(noisy_image):
    jpeg = parse_degradation("jpeg:75")
    degraded = jpeg(noisy_image)
    assert degraded.size == noisy_image.size and degraded.mode == "RGB"
    assert not np.array_equal(np.asarray(degraded), np.asarray(noisy_image))
    np.testing.assert_array_equal(np.asarray(jpeg(noisy_image)), np.asarray(degraded))


def test_resize_keeps_size_and_loses_detail(noisy_image):
    degraded = parse_degradation("resize:0.5")(noisy_image)
    assert degraded.size == noisy_image.size
    assert np.asarray(degraded).astype(float).var() < np.asarray(noisy_image).astype(float).var()


def test_blur_reduces_variance(noisy_image):
    weak, strong = parse_degradation("blur:0.5")(noisy_image), parse_degradation("blur:2.0")(noisy_image)
    variances = [np.asarray(image).astype(float).var() for image in (noisy_image, weak, strong)]
    assert variances[0] > variances[1] > variances[2]


def test_degradations_compose_and_keep_size(noisy_image):
    degraded = apply_degradations(noisy_image.convert("RGBA"), parse_degradations(["resize:0.3", "blur:1", "jpeg:30"]))
    assert degraded.size == noisy_image.size and degraded.mode == "RGB"


# --------------------------------------------------------------------------------------------------- text


@needs_java
def test_ptb_tokenizer_lowercases_drops_punctuation_and_keeps_empty_lines():
    assert ptb_tokenize(["The Eye, is BLURRY.", "", "...", "teeth -- odd!"]) == [
        "the eye is blurry",
        "",
        "",
        "teeth odd",
    ]


LINE_BREAKING_CHARACTERS = ("\u2028", "\x0b", "\x0c", "\u2029", "\r", "\r\n", "\x85", "\x1c")


@needs_java
def test_ptb_tokenizer_keeps_each_report_on_its_own_line_whatever_it_contains():
    reports = [f"the eye{character}looks blurry" for character in LINE_BREAKING_CHARACTERS] + ["odd nose", ""]
    tokenized = ptb_tokenize(reports)
    assert tokenized[:-2] == ["the eye looks blurry"] * len(LINE_BREAKING_CHARACTERS)
    assert tokenized[-2:] == ["odd nose", ""]  # later reports are not shifted


@needs_java
def test_each_report_is_scored_against_its_own_reference_despite_line_breaks():
    predictions = {f"img_{index}": f"the {region}{character}is blurry"
                   for index, (region, character) in enumerate(zip(REGION_NAMES, LINE_BREAKING_CHARACTERS))}
    predictions["last"] = "an odd smooth texture"
    references = {image_id: " ".join(report.split()) for image_id, report in predictions.items()}
    metrics = compute_text_metrics(predictions, references)
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L"):  # a shifted report would be scored against another one
        assert metrics[key] == pytest.approx(100.0, abs=1e-4), key


def test_a_tokenizer_answer_that_cannot_be_paired_is_an_error(monkeypatch):
    """If the tokenizer ever answers another number of lines than it was sent, nothing is scored."""
    monkeypatch.setattr(text_metrics, "require_java", lambda metric: "java")

    def split_first_report(command, input, **kwargs):
        lines = input.decode().split("\n")
        answered = "\n".join([lines[0], "extra", *lines[1:]])
        return subprocess.CompletedProcess(command, 0, stdout=answered.encode(), stderr=b"")

    monkeypatch.setattr(text_metrics.subprocess, "run", split_first_report)
    with pytest.raises(PTBAlignmentError, match="3 lines for 2 reports"):
        ptb_tokenize(["a", "b"])


@pytest.mark.slow
@needs_java
def test_identical_reports_score_maximum_and_meteor_java_is_ended(monkeypatch):
    started = []

    class RecordingMeteor(text_metrics._ClosableMeteor):
        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(text_metrics, "_ClosableMeteor", RecordingMeteor)
    reports = {"a": "The left eye is blurry.", "b": "The nose has an unnatural texture and odd shape."}
    metrics = compute_text_metrics(reports, dict(reports), with_meteor=True)
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "METEOR"):
        assert metrics[key] == pytest.approx(100.0, abs=1e-4), key
    # CIDEr-D of 2 images with disjoint vocabularies, matched exactly: 10 x cosine 1 per n-gram order
    assert metrics["CIDEr"] == pytest.approx(1000.0)
    assert len(started) == 1 and started[0].meteor_p.poll() is not None


@needs_java
def test_disjoint_reports_score_zero():
    metrics = compute_text_metrics({"a": "red cheek", "b": "blurry lip"}, {"a": "odd nose shape", "b": "sharp hair"})
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-6), key


@needs_java
def test_bleu_of_one_substituted_word():
    # 3 of 4 unigrams and 2 of 3 bigrams match, equal lengths (no brevity penalty)
    metrics = compute_text_metrics({"a": "the eye is red"}, {"a": "the eye is blue"})
    assert metrics["BLEU-1"] == pytest.approx(75.0, abs=1e-4)
    assert metrics["BLEU-2"] == pytest.approx(100 * (0.75 * 2 / 3) ** 0.5, abs=1e-4)
    assert metrics["num_images"] == 1


@needs_java
def test_empty_generated_report_scores_zero_not_error():
    metrics = compute_text_metrics({"a": "", "b": "odd nose"}, {"a": "blurry eye", "b": "odd nose"})
    assert metrics["ROUGE-L"] == pytest.approx(50.0)  # mean of 0 (empty report) and 100


def test_mismatched_report_ids_are_listed():
    with pytest.raises(ImageIdMismatchError, match=r"missing for 1 image\(s\): 'b'.*not evaluated: 'c'"):
        compute_text_metrics({"a": "x", "c": "y"}, {"a": "x", "b": "y"})


def test_missing_java_names_the_metric_and_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaNotFoundError, match="METEOR.*default-jre-headless"):
        text_metrics.meteor_score({"a": ["x"]}, {"a": ["x"]})
    with pytest.raises(JavaNotFoundError, match="PTB tokenizer"):
        compute_text_metrics({"a": "x"}, {"a": "x"})


# --------------------------------------------------------------------------------------------------- breakdown


def mask_records() -> EvaluationRecords:
    return EvaluationRecords(
        methods={"a": FACE_SWAP, "b": FACE_SWAP, "c": AUTHENTIC},
        mask_counts={"a": MaskCounts("a", 1, 1, 1), "b": MaskCounts("b", 0, 4, 6), "c": MaskCounts("c", 0, 0, 0)},
        predicted_regions={"a": labels("eye"), "b": labels("nose"), "c": labels()},
        target_regions={"a": labels("eye"), "b": labels("lip"), "c": labels()},
        detection_scores={"a": 0.9, "b": 0.4, "c": 0.1},
        detection_threshold=0.5,
    )


def test_evaluate_records_overall():
    result = evaluate_records(mask_records())
    assert result["IoU"] == pytest.approx(200 / 3)
    assert result["cIoU"] == pytest.approx(100 / 11)
    assert result["PLM"] == pytest.approx(200 / 3)
    assert result["AUC"] == pytest.approx(100.0)
    assert result["Accuracy"] == pytest.approx(200 / 3)  # b (0.4) is missed at threshold 0.5
    assert result["num_images"] == 3


def test_breakdown_by_method_groups_images():
    per_method = breakdown_by_method(mask_records())
    assert list(per_method) == [FACE_SWAP, AUTHENTIC]
    assert per_method[FACE_SWAP]["IoU"] == pytest.approx(50.0)
    assert per_method[FACE_SWAP]["num_images"] == 2
    assert per_method[AUTHENTIC]["IoU"] == 100.0
    assert per_method[AUTHENTIC]["AUC"] is None and "one class" in per_method[AUTHENTIC]["AUC_undefined"]


@needs_java
def test_breakdown_text_metrics_equal_metrics_of_the_group_alone():
    predictions = {"a": "the eye is blurry", "b": "odd nose", "c": "no forgery"}
    references = {"a": "the eye is red", "b": "odd nose shape", "c": "no forgery found"}
    records = EvaluationRecords(
        methods={"a": FACE_SWAP, "b": FACE_SWAP, "c": AUTHENTIC},
        predicted_reports=predictions,
        reference_reports=references,
    )
    face_swap = breakdown_by_method(records)[FACE_SWAP]
    alone = compute_text_metrics({k: predictions[k] for k in "ab"}, {k: references[k] for k in "ab"})
    assert face_swap == pytest.approx(alone)


def test_methods_the_package_does_not_know_get_their_own_rows_after_the_known_ones():
    records = EvaluationRecords(
        methods={"a": "StyleGAN3 edit", "b": FACE_SWAP, "c": AUTHENTIC, "d": "StyleGAN3 edit"},
        mask_counts={key: MaskCounts(key, 1, 1, 2) for key in "abcd"},
    )
    per_method = breakdown_by_method(records)
    assert list(per_method) == [FACE_SWAP, AUTHENTIC, "StyleGAN3 edit"]
    assert per_method["StyleGAN3 edit"]["num_images"] == 2


def test_records_check_ids():
    with pytest.raises(ImageIdMismatchError, match="mask_counts.*'b'"):
        EvaluationRecords(methods={"a": FACE_SWAP, "b": FACE_SWAP}, mask_counts={"a": MaskCounts("a", 0, 0, 0)})
    with pytest.raises(ValueError, match="together"):
        EvaluationRecords(methods={"a": FACE_SWAP}, predicted_reports={"a": "x"})
    with pytest.raises(ValueError, match="detection_threshold"):
        EvaluationRecords(methods={"a": FACE_SWAP}, detection_scores={"a": 0.5})


def test_robustness_drop_is_clean_minus_degraded_over_shared_numbers():
    clean = {"IoU": 70.0, "CIDEr": 20.0, "AUC": None, "num_images": 5}
    drops = robustness_drops(clean, {"jpeg:75": {"IoU": 60.0, "CIDEr": 25.0, "AUC": 50.0, "num_images": 5}})
    assert drops == {"jpeg:75": {"IoU": 10.0, "CIDEr": -5.0}}


# --------------------------------------------------------------------------------------------------- report


def test_table2_layout_and_paper_rows_are_labelled():
    table = table2_markdown({"ours": {"CIDEr": 12.345, "IoU": 50.0, "PLM": 40.0}})
    header, _, ours, *paper = table.splitlines()
    assert header == "| Method | " + " | ".join((*TABLE2_COLUMNS, "PLM")) + " |"
    assert ours.startswith("| ours | 12.35 | - | ")
    assert len(paper) == 2 and all(row.startswith("| Paper") for row in paper)
    assert "| 21.50 | 31.10 | 16.90 | 9.80 | 5.90 | 24.30 | 70.81 | 87.06 | 78.34 | 41.05 |" in paper[0]


def test_write_report_embeds_conventions_breakdown_and_robustness(tmp_path):
    records = mask_records()
    overall = evaluate_records(records)
    degraded = {"jpeg:75": {**overall, "IoU": overall["IoU"] - 10.0}}
    document = metrics_document(overall, breakdown_by_method(records), degraded)
    json_path, markdown_path = write_report(tmp_path / "run", document)
    written = json.loads(json_path.read_text())
    assert written["conventions"] == conventions_dict()
    assert written["robustness"]["drop"]["jpeg:75"]["IoU"] == pytest.approx(10.0)
    assert written["per_method"][AUTHENTIC]["AUC"] is None
    markdown = markdown_path.read_text()
    assert conventions_text() in markdown
    assert "| Degradation | IoU | Precision | Recall | cIoU | PLM | AUC | Accuracy |" in markdown
    assert "| jpeg:75 | 10.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in markdown
    assert f"| {FACE_SWAP} | 2 |" in markdown


def test_docs_quote_the_conventions_verbatim():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert f"<!-- conventions:begin -->\n{conventions_text()}\n<!-- conventions:end -->" in docs
