"""`forgerytalker evaluate` and `run_evaluation` on a tiny untrained model and the synthesized fixture dataset."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from launching import launch_processes
from PIL import Image

from forgerytalker.cli import main
from forgerytalker.data.methods import METHODS
from forgerytalker.evaluation import ALL_METRICS, accumulate_mask_counts, compute_text_metrics
from forgerytalker.evaluation.report import TABLE2_COLUMNS
from forgerytalker.evaluation.output_folder import mask_filename
from forgerytalker.output_folder import MANIFEST_NAME
from forgerytalker.evaluation.runner import run_evaluation
from forgerytalker.evaluation.samples import UnreadableImageError
from forgerytalker.regions import REGION_NAMES

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="the report metrics need Java")

SPLIT = "validation"  # 4 samples: forged and authentic, so AUC is defined


@pytest.fixture(scope="module")
def split(tiny_dataset_dir):
    from datasets import load_dataset

    return load_dataset(str(tiny_dataset_dir), split=SPLIT)


@pytest.fixture(scope="module")
def model_dir(tiny_dataset_dir, tmp_path_factory):
    """A tiny untrained model whose vocabulary covers every caption of the fixture dataset."""
    from datasets import load_dataset

    from forgerytalker.tiny import build_tiny_model_and_processor

    dataset = load_dataset(str(tiny_dataset_dir))
    texts = [caption for name in dataset for caption in dataset[name]["caption"]]
    model, processor = build_tiny_model_and_processor("llama", image_size=32, texts=texts)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def evaluate_arguments(model_dir, data_dir, out, *extra) -> list[str]:
    return ["evaluate", "--model", str(model_dir), "--data", str(data_dir), "--split", SPLIT, "--out", str(out),
            "--no-progress", *extra]


def read_predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def predicted_run(model_dir, tiny_dataset_dir, tmp_path_factory):
    """One in-process `forgerytalker evaluate` with METEOR and the prompter's regions."""
    out = tmp_path_factory.mktemp("evaluate") / "predicted"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--meteor")) == 0
    return out


def test_every_metric_is_reported(predicted_run, split):
    document = json.loads((predicted_run / "metrics.json").read_text())
    overall = document["overall"]
    for key in ALL_METRICS:  # BLEU-1..4, METEOR, ROUGE-L, CIDEr, IoU, Precision, Recall, cIoU, PLM, AUC, Accuracy
        assert is_number(overall[key]), key
    assert overall["num_images"] == len(split) == 4
    assert (overall["num_forged"], overall["num_authentic"]) == (3, 1)
    assert set(document["per_method"]) == set(split["method"])
    assert list(document["per_method"]) == [method for method in METHODS if method in set(split["method"])]
    for method, row in document["per_method"].items():
        assert row["num_images"] == split["method"].count(method)
        assert all(is_number(row[key]) for key in ALL_METRICS if key != "AUC"), method
    assert list(document["per_region"]) == list(REGION_NAMES)
    assert document["run"]["region_source"] == "predicted" and document["skipped_images"] == []
    markdown = (predicted_run / "metrics.md").read_text()
    assert "| Method | " + " | ".join(TABLE2_COLUMNS) + " | METEOR | cIoU | PLM |" in markdown
    assert "(predicted regions) |" in markdown and "## Per manipulation method" in markdown


def test_masks_and_predictions_reproduce_the_metrics(predicted_run, split):
    overall = json.loads((predicted_run / "metrics.json").read_text())["overall"]
    predictions = {record["image_id"]: record for record in read_predictions(predicted_run)}
    assert list(predictions) == split["image_id"]
    pairs = []
    for sample in split:
        record = predictions[sample["image_id"]]
        assert record["mask"] == f"masks/{mask_filename(sample['image_id'])}"
        mask = np.asarray(Image.open(predicted_run / record["mask"]))
        assert mask.shape == (sample["image"].height, sample["image"].width)
        assert set(np.unique(mask)) <= {0, 255}
        assert list(record["region_probabilities"]) != [] and set(record["region_probabilities"]) == set(REGION_NAMES)
        assert record["instruction_regions"] == record["regions"]  # predicted mode names the flagged regions
        assert record["reference"] == sample["caption"] and record["report"]
        pairs.append((sample["image_id"], mask, np.asarray(sample["mask"])))
    recounted = accumulate_mask_counts(pairs).compute()
    for key in ("IoU", "Precision", "Recall", "cIoU"):
        assert recounted[key] == pytest.approx(overall[key])
    text = compute_text_metrics({i: r["report"] for i, r in predictions.items()},
                                {i: r["reference"] for i, r in predictions.items()})
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert text[key] == pytest.approx(overall[key])


@pytest.mark.slow
def test_console_script_without_regions_reports_robustness(model_dir, tiny_dataset_dir, tmp_path, split):
    out = tmp_path / "none"
    command = [sys.executable, "-c", "import sys; from forgerytalker.cli import main; sys.exit(main(sys.argv[1:]))",
               *evaluate_arguments(model_dir, tiny_dataset_dir, out, "--regions", "none", "--no-meteor",
                                   "--degrade", "jpeg:75", "--degrade", "resize:0.5+blur:1.0")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| Method | CIDEr |" in result.stdout and "| resize:0.5+blur:1.0 |" in result.stdout
    document = json.loads((out / "metrics.json").read_text())
    assert document["run"]["region_source"] == "none" and document["run"]["with_meteor"] is False
    drops = document["robustness"]["drop"]
    assert list(drops) == ["jpeg:75", "resize:0.5+blur:1.0"]
    for spec, name in (("jpeg:75", "jpeg-75"), ("resize:0.5+blur:1.0", "resize-0.5_blur-1.0")):
        expected = {key for key in ALL_METRICS if key != "METEOR"}
        assert set(drops[spec]) == expected and all(is_number(value) for value in drops[spec].values())
        degraded = document["robustness"]["degraded"][spec]
        assert drops[spec]["IoU"] == pytest.approx(document["overall"]["IoU"] - degraded["IoU"])
        assert len(read_predictions(out / "degraded" / name)) == len(split)
        assert len(list((out / "degraded" / name / "masks").glob("*.png"))) == len(split)
        clean = [record["region_probabilities"] for record in read_predictions(out)]
        assert [record["region_probabilities"] for record in read_predictions(out / "degraded" / name)] != clean
    assert all(record["instruction_regions"] is None for record in read_predictions(out))


def test_ground_truth_regions_fill_the_instruction(model_dir, tiny_dataset_dir, tmp_path, split):
    out = tmp_path / "oracle"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--regions", "ground_truth", "--no-meteor")) == 0
    records = read_predictions(out)
    names = split.features["regions"].feature.int2str
    assert [record["instruction_regions"] for record in records] == [
        sorted((names(i) for i in regions), key=REGION_NAMES.index) for regions in split["regions"]
    ]
    assert "METEOR" not in json.loads((out / "metrics.json").read_text())["overall"]
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor")) == 2  # earlier outputs
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite", "--limit", "2")) == 0
    assert len(read_predictions(out)) == 2 and len(list((out / "masks").glob("*.png"))) == 2


def test_clear_errors(model_dir, tiny_dataset_dir, tmp_path, capsys):
    assert main(evaluate_arguments(tmp_path / "missing-model", tiny_dataset_dir, tmp_path / "a")) == 2
    assert "--model: no such folder" in capsys.readouterr().err
    assert main(evaluate_arguments(tiny_dataset_dir, tiny_dataset_dir, tmp_path / "b")) == 2
    assert "--model: cannot load a ForgeryTalker model" in capsys.readouterr().err
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "c")
    arguments[arguments.index("--split") + 1] = "dev"
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "--split" in error and "'dev'" in error and "train, validation, test" in error
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "d", "--degrade", "jpeg:150")) == 2
    assert "--degrade: Invalid degradation 'jpeg:150'" in capsys.readouterr().err
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "d", "--degrade", "blur:1",
                                   "--degrade", "blur:1.0")) == 2
    assert "--degrade: Degradation 'blur:1.0' is given twice" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_unreadable_image_is_named_or_skipped(model_dir, split):
    from datasets import Image as ImageFeature
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)
    broken_id = split[1]["image_id"]
    broken = split.cast_column("image", ImageFeature(decode=False)).map(
        lambda row: {"image": {"bytes": b"not an image", "path": None}} if row["image_id"] == broken_id else {}
    )
    with pytest.raises(UnreadableImageError, match=broken_id):
        run_evaluation(model, processor, broken, progress=False)
    model.train()
    document = run_evaluation(model, processor, broken, progress=False, skip_unreadable_images=True)
    assert model.training  # the caller's mode is restored (training-time validation)
    assert [item["image_id"] for item in document["skipped_images"]] == [broken_id]
    assert document["overall"]["num_images"] == len(split) - 1


# ------------------------------------------------------------------------------------------- helpers for the cases below


def save_split(dataset, folder: Path) -> Path:
    """Writes `dataset` as the `validation` split of a folder that `datasets.load_dataset` reads."""
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / f"{SPLIT}-00000-of-00001.parquet"))
    return folder


@pytest.fixture
def generated_images(monkeypatch) -> list[int]:
    """Counts the images every `generate` call of the model receives (one entry per call)."""
    from forgerytalker.modeling_forgerytalker import ForgeryTalkerForConditionalGeneration

    counts: list[int] = []
    original = ForgeryTalkerForConditionalGeneration.generate

    def counting(self, pixel_values, *args, **kwargs):
        counts.append(int(pixel_values.shape[0]))
        return original(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(ForgeryTalkerForConditionalGeneration, "generate", counting)
    return counts


def after_records(monkeypatch, count: int, error: BaseException) -> None:
    """Makes the run fail (raise `error`) once `count` predictions have been recorded as finished."""
    from forgerytalker.evaluation.output_folder import RunWriter

    original, recorded = RunWriter.append, []

    def append(self, record):
        if len(recorded) == count:
            raise error
        original(self, record)
        recorded.append(record["image_id"])

    monkeypatch.setattr(RunWriter, "append", append)


def error_line(stderr: str) -> str:
    """The command's `error: ...` line (progress bars of model loading may come before it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def output_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------------------------------- thresholds (issue 7.4)


def test_a_checkpoint_with_tuned_thresholds_is_evaluated_with_them(model_dir, tiny_dataset_dir, split, tmp_path):
    import torch
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    images = [sample["image"].convert("RGB") for sample in split]
    with torch.inference_mode():
        outputs = model.generate(**processor(images=images), max_new_tokens=5)
    probabilities = processor.post_process_masks(outputs.pred_masks, [(i.height, i.width) for i in images], binarize=False)
    pixels = np.concatenate([p.flatten().numpy() for p in probabilities])
    mask_threshold = float(np.quantile(pixels, 0.3))  # a "tuned" value that changes the masks (p are all near 0.5)
    region_threshold = float(np.median(outputs.region_probs.numpy()))
    assert (pixels > mask_threshold).sum() != (pixels > 0.5).sum()
    model.config.mask_threshold = mask_threshold
    model.config.prompter_config.region_threshold = region_threshold
    with torch.inference_mode():  # the instruction, hence the mask, follows the regions above the new threshold
        outputs = model.generate(**processor(images=images), max_new_tokens=5)
    probabilities = processor.post_process_masks(outputs.pred_masks, [(i.height, i.width) for i in images], binarize=False)
    tuned = tmp_path / "tuned-model"
    model.save_pretrained(tuned)
    processor.save_pretrained(tuned)

    out = tmp_path / "out"
    assert main(evaluate_arguments(tuned, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "4")) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["thresholds"] == {"mask_threshold": mask_threshold, "region_threshold": region_threshold}
    assert f"p > {mask_threshold:g} (`config.mask_threshold`)" in (out / "metrics.md").read_text()
    assert f"p > {region_threshold:g}" in (out / "metrics.md").read_text()
    assert document["run"]["detection_threshold"] == region_threshold
    records = read_predictions(out)
    for record, probability in zip(records, probabilities):
        expected = (probability > mask_threshold).numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(out / record["mask"])) > 0, expected)
        assert record["mask_pixels"]["predicted"] == expected.sum()
    flagged = sum(p > region_threshold for record in records for p in record["region_probabilities"].values())
    assert sum(row["predicted"] for row in document["per_region"].values()) == flagged


# ------------------------------------------------------------------------------------------- several processes (issue 7.3)


@pytest.mark.slow
def test_two_processes_give_the_metrics_and_files_of_one(model_dir, tiny_dataset_dir, tmp_path, split):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("--no-meteor", "--batch-size", "3", "--degrade", "jpeg:75", "--num-threads", "1")
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, one, *extra)) == 0
    result = launch_processes(["-m", "forgerytalker.cli", *evaluate_arguments(model_dir, tiny_dataset_dir, two, *extra)],
                              tmp_path / "launcher")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("images of split validation") == 1  # only the main process prints the summary
    documents = [json.loads((folder / "metrics.json").read_text()) for folder in (one, two)]
    assert [document["run"].pop("num_processes") for document in documents] == [1, 2]
    for document in documents:
        document["run"].pop("torch_threads")
    assert documents[0] == documents[1]
    files = [output_files(folder) for folder in (one, two)]
    assert files[0].keys() == files[1].keys() and len(files[0]) == 2 * (len(split) + 1) + 3
    for name in files[0]:
        if name.endswith("predictions.jsonl"):
            # the IoU head's float32 estimate may differ in its last digits between processes (the kernels a CPU
            # picks depend on memory alignment); everything else, and the metrics above, are identical
            records = [[json.loads(line) for line in (folder / name).read_text().splitlines()] for folder in (one, two)]
            confidences = [[record.pop("mask_confidence") for record in run] for run in records]
            assert records[0] == records[1], name
            assert confidences[0] == pytest.approx(confidences[1], rel=1e-5), name
        elif name == MANIFEST_NAME:  # the same files; sizes differ only where the contents may (above)
            listed = [json.loads(files[index][name])["files"] for index in (0, 1)]
            assert listed[0].keys() == listed[1].keys()
            same = [{path: size for path, size in run.items()
                     if not path.endswith("predictions.jsonl") and path not in ("metrics.json", "metrics.md")}
                    for run in listed]  # fmt: skip
            assert same[0] == same[1]
        elif name not in ("metrics.json", "metrics.md"):
            assert files[0][name] == files[1][name], name


SCRIPT_WITHOUT_JAVA_ON_PROCESS_1 = """
import os, sys
if os.environ["LOCAL_RANK"] == "1":
    os.environ["PATH"] = ""
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_java_missing_on_one_process_fails_every_process(model_dir, tiny_dataset_dir, tmp_path):
    script = tmp_path / "evaluate_without_java_on_process_1.py"
    script.write_text(SCRIPT_WITHOUT_JAVA_ON_PROCESS_1)
    result = launch_processes([str(script), *evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "out")],
                              tmp_path / "launcher", timeout=180)
    assert result.returncode != 0
    assert result.stderr.count("error: The report metrics (PTB tokenizer) needs Java") == 2, result.stderr[-3000:]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- nothing lost (issue 10)


KILL_AFTER_TWO_RECORDS = """
import os, signal, sys
from forgerytalker.evaluation.output_folder import RunWriter
original, recorded = RunWriter.append, []
def append(self, record):
    if len(recorded) == 2:
        self._lines.write('{"image_id": "torn li')  # a kill in the middle of a line
        self._lines.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, record)
    recorded.append(record)
RunWriter.append = append
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_overwrite_keeps_the_earlier_run_until_the_new_one_is_complete(
    model_dir, tiny_dataset_dir, tmp_path, generated_images
):
    out = tmp_path / "out"
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1")
    assert main(arguments) == 0
    earlier = output_files(out)
    script = tmp_path / "killed_evaluate.py"
    script.write_text(KILL_AFTER_TWO_RECORDS)
    killed = subprocess.run([sys.executable, str(script), *arguments, "--overwrite"], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = out / ".evaluation-partial"
    unfinished = (".evaluation-partial/", ".forgerytalker-evaluate.lock")  # the killed run's, and its lock
    assert {name: data for name, data in output_files(out).items() if not name.startswith(unfinished)} == earlier
    assert "unfinished" in json.loads((partial / "state.json").read_text())["note"]

    generated_images.clear()
    assert main([*arguments, "--overwrite"]) == 0
    assert sum(generated_images) == 2  # the two finished predictions are not redone
    assert output_files(out) == earlier  # the resumed run equals the uninterrupted one, byte for byte
    assert not partial.exists()


def test_an_interrupted_run_resumes_and_refuses_other_settings(
    model_dir, tiny_dataset_dir, tmp_path, monkeypatch, generated_images, capsys
):
    out = tmp_path / "out"
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1")
    with monkeypatch.context() as patch:
        after_records(patch, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            main(arguments)
    assert not (out / "metrics.json").exists() and (out / ".evaluation-partial" / "state.json").exists()
    assert main([*arguments, "--max-new-tokens", "7"]) == 2
    error = capsys.readouterr().err
    assert "--out:" in error and "unfinished run made with other settings (max_new_tokens: " in error and "-> 7)" in error
    generated_images.clear()
    assert main(arguments) == 0  # the same command resumes, without --overwrite
    assert sum(generated_images) == 1
    assert len(read_predictions(out)) == 4 and len(list((out / "masks").iterdir())) == 4


def test_full_disk_exits_2_naming_out_and_the_rerun_resumes(
    model_dir, tiny_dataset_dir, tmp_path, monkeypatch, generated_images, capsys
):
    import errno

    out = tmp_path / "out"
    arguments = evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "1")
    original_save, saved = Image.Image.save, []

    def save(self, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(1)
        return original_save(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", save)
        assert main(arguments) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: cannot write into") and "No space left on device" in error
    assert "re-run the same command to resume" in error and "Traceback" not in error
    generated_images.clear()
    assert main(arguments) == 0
    assert sum(generated_images) == 2


def test_the_users_own_files_in_out_are_never_deleted(model_dir, tiny_dataset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    for index in range(3):
        (out / "masks" / f"gt_{index}.png").write_bytes(b"ground truth")
    before = output_files(out)
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite")) == 2
    error = capsys.readouterr().err
    assert "--out:" in error and "holds files this command did not write (masks/gt_0.png" in error
    assert output_files(out) == before

    finished = tmp_path / "finished"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--limit", "2")) == 0
    (finished / "masks" / "notes.txt").write_text("mine")
    (finished / "my-notes.md").write_text("mine too")
    earlier = output_files(finished)
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--overwrite")) == 2
    assert "masks/notes.txt" in capsys.readouterr().err and output_files(finished) == earlier
    (finished / "masks" / "notes.txt").unlink()
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, finished, "--no-meteor", "--overwrite")) == 0
    assert (finished / "my-notes.md").read_text() == "mine too" and len(read_predictions(finished)) == 4
    manifest = json.loads((finished / MANIFEST_NAME).read_text())["files"]
    assert sorted(manifest) == sorted(name for name in output_files(finished)
                                      if name not in ("my-notes.md", MANIFEST_NAME))


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(model_dir, tiny_dataset_dir, tmp_path, capsys):
    """Issue 19 (one output-folder policy): two evaluations into one --out mixed their unfinished runs."""
    from forgerytalker.output_folder import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    held = hold_lock(out, "forgerytalker evaluate")  # a first run, still writing
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: another forgerytalker evaluate is writing into")
    assert sorted(path.name for path in out.iterdir()) == [".forgerytalker-evaluate.lock"]  # nothing else begun
    held.close()
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 0


@pytest.mark.parametrize("entry", ["../notes.txt", "ABSOLUTE", "masks/../../notes.txt", "linked/notes.txt"])
def test_a_manifest_entry_outside_out_is_refused_and_nothing_is_deleted(
    model_dir, tiny_dataset_dir, tmp_path, capsys, entry
):
    """Issue 19 N1: a downloaded or edited output folder whose manifest lists a file outside `--out`."""
    out = tmp_path / "out"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2")) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    (tmp_path / "elsewhere").mkdir()
    (out / "linked").symlink_to(tmp_path)  # a folder inside --out that leads out of it
    entry = str(notes) if entry == "ABSOLUTE" else entry
    manifest_path = out / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][entry] = notes.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    before = output_files(out)

    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--overwrite")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: ") and str(manifest_path) in error and repr(entry) in error
    assert notes.read_text() == "the user's notes" and output_files(out) == before


def test_long_unicode_image_ids_get_bounded_distinct_file_names(model_dir, split, tmp_path):
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)
    long_prefix = "顔画像" * 120  # 1080 bytes in UTF-8, 3240 once percent-encoded
    renamed = split.map(lambda row, index: {"image_id": f"{long_prefix}/{index}"}, with_indices=True)
    out = tmp_path / "out"
    document = run_evaluation(model, processor, renamed, output_dir=str(out), progress=False)
    assert document["overall"]["num_images"] == len(split)
    records = read_predictions(out)
    assert [record["image_id"] for record in records] == renamed["image_id"]
    names = [Path(record["mask"]).name for record in records]
    assert len(set(names)) == len(names) and all(len(name.encode()) <= 255 for name in names)
    assert all((out / record["mask"]).is_file() for record in records)
    assert len(list((out / "masks").iterdir())) == len(split)


def test_16_bit_and_float_images_are_read_like_the_processor_reads_them(split):
    import io

    from datasets import Image as ImageFeature

    from forgerytalker.evaluation.samples import iter_samples
    from forgerytalker.image_utils import load_rgb

    sixteen_bit, floating = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.full((40, 30), 30000, np.uint16)).save(sixteen_bit, format="PNG")  # I;16, 30000 / 65535
    Image.fromarray(np.full((40, 30), 0.5, np.float32)).save(floating, format="TIFF")  # mode F in [0, 1]
    replaced = {split[0]["image_id"]: sixteen_bit.getvalue(), split[1]["image_id"]: floating.getvalue()}
    dataset = split.cast_column("image", ImageFeature(decode=False)).map(
        lambda row: {"image": {"bytes": replaced[row["image_id"]], "path": None}} if row["image_id"] in replaced else {}
    )
    samples = list(iter_samples(dataset))
    for sample, data, expected in zip(samples, replaced.values(), (round(30000 * 255 / 65535), 128)):
        pixels = np.asarray(sample.image)
        assert sample.image.mode == "RGB" and abs(float(pixels.mean()) - expected) < 1
        np.testing.assert_array_equal(pixels, np.asarray(load_rgb(data)))


def test_bad_out_model_and_device_arguments_exit_2_naming_the_flag(model_dir, tiny_dataset_dir, tmp_path, capsys):
    import torch

    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    cases = [
        (a_file, (), "--out: ", "is a file, not a folder"),
        (a_file / "sub", (), "--out: cannot create", "is a file, not a folder"),
        (tmp_path / "d", ("--device", "quantum"), "--device: ", "not a torch device"),
    ]
    if not torch.cuda.is_available():
        cases.append((tmp_path / "c", ("--device", "cuda"), "--device: CUDA is not available", "--device cpu"))
    for out, extra, start, detail in cases:
        assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, *extra)) == 2, start
        stderr = capsys.readouterr().err
        assert error_line(stderr).startswith(f"error: {start}") and detail in stderr and "Traceback" not in stderr
    damaged = tmp_path / "damaged-model"
    shutil.copytree(model_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(evaluate_arguments(damaged, tiny_dataset_dir, tmp_path / "m")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --model: the weights in") and "damaged or incomplete" in error
    assert not any((tmp_path / name).exists() for name in "cdm")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written into: chmod for ordinary users, a read-only tmpfs for root."""
    import os

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_out_exits_2_naming_out(model_dir, tiny_dataset_dir, read_only_folder, capsys):
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, read_only_folder / "out")) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith("error: --out: cannot write in") and "read-only" in error


def test_unreadable_image_error_names_the_command_line_flag(split, model_dir, tmp_path, capsys):
    from datasets import Image as ImageFeature

    broken_id = split[2]["image_id"]
    broken = split.cast_column("image", ImageFeature(decode=False)).map(
        lambda row: {"image": {"bytes": b"not an image", "path": None}} if row["image_id"] == broken_id else {}
    )
    data = save_split(broken, tmp_path / "broken-data")
    assert main(evaluate_arguments(model_dir, data, tmp_path / "out", "--no-meteor")) == 1
    error = capsys.readouterr().err
    assert broken_id in error and "pass --skip-unreadable" in error and "skip_unreadable_images" not in error
    assert main(evaluate_arguments(model_dir, data, tmp_path / "out", "--no-meteor", "--skip-unreadable")) == 0
    skipped = json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped_images"]
    assert [item["image_id"] for item in skipped] == [broken_id]


# ------------------------------------------------------------------------------------------- speed (issue 11)


def test_num_threads_sets_torchs_intra_op_threads(model_dir, tiny_dataset_dir, tmp_path):
    import torch

    threads = torch.get_num_threads()
    wanted = 1 if threads != 1 else 2
    try:
        out = tmp_path / "out"
        assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "1",
                                       "--num-threads", str(wanted))) == 0
        assert json.loads((out / "metrics.json").read_text())["run"]["torch_threads"] == wanted
        assert torch.get_num_threads() == threads  # set back when `main` returns
    finally:
        torch.set_num_threads(threads)


def test_the_next_batches_are_prepared_while_generate_runs(model_dir, split):
    import threading
    import time

    from transformers import AutoProcessor

    from forgerytalker.evaluation.prediction import PREFETCHED_BATCHES, PredictionSettings, prefetched_batches
    from forgerytalker.evaluation.samples import iter_samples

    processor = AutoProcessor.from_pretrained(model_dir)
    pulled = []

    def samples():
        for sample in list(iter_samples(split)) * 5:  # 20 samples: 10 batches of 2
            pulled.append(sample.image_id)
            yield sample

    batches = prefetched_batches(processor, samples(), PredictionSettings("predicted", 5, 0.5, 2), [], threading.Lock())
    first = next(batches)
    deadline = time.monotonic() + 30
    while len(pulled) < 6 and time.monotonic() < deadline:  # later batches are prepared while the first is in use
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(first.samples) == 2 and 6 <= len(pulled) <= 2 * (PREFETCHED_BATCHES + 2)  # ahead, but bounded
    assert [len(batch.samples) for batch in batches] == [2] * 9
    batches.close()
    assert not any(thread.name == "evaluation-prefetch" for thread in threading.enumerate())


def test_a_decoding_error_stops_the_prefetching_at_its_batch(model_dir, split):
    import threading

    from transformers import AutoProcessor

    from forgerytalker.evaluation.prediction import PredictionSettings, prefetched_batches
    from forgerytalker.evaluation.samples import iter_samples

    processor = AutoProcessor.from_pretrained(model_dir)

    def samples():
        yield from list(iter_samples(split))[:2]
        raise UnreadableImageError("img_x", "truncated")

    batches = prefetched_batches(processor, samples(), PredictionSettings("predicted", 5, 0.5, 2), [], threading.Lock())
    assert len(next(batches).samples) == 2
    with pytest.raises(UnreadableImageError, match="img_x"):
        next(batches)


def test_dtype_loads_and_runs_the_model_in_that_dtype_and_records_it(model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "bf16"
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--limit", "2", "--dtype", "bfloat16")) == 0
    assert json.loads((out / "metrics.json").read_text())["run"]["dtype"] == "bfloat16"
    assert len(read_predictions(out)) == 2
    assert main(evaluate_arguments(model_dir, tiny_dataset_dir, tmp_path / "fp32", "--no-meteor", "--limit", "2")) == 0
    assert json.loads((tmp_path / "fp32" / "metrics.json").read_text())["run"]["dtype"] == "float32"
