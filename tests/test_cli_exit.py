"""The `forgerytalker` script (`analyze`, `evaluate`) and `training/run.py` end without the interpreter's teardown, and
lose nothing by it."""

from __future__ import annotations

import json
import subprocess
import sys

from evaluate_runs import evaluate_arguments, read_predictions
from training_runs import REPO, RUN, read_log, step_records, tiny

# Set-up run before the command: an exit handler, an object freed only by the teardown and a thread pool's task still
# running when the command returns (its worker then idles, never shut down) report on stdout (os.write: nothing
# buffered to lose).
PROBE_SET_UP = (
    "import atexit, os, sys, time\n"
    "from concurrent.futures import ThreadPoolExecutor\n"
    "atexit.register(lambda: os.write(1, b'exit handlers ran\\n'))\n"
    "pool = ThreadPoolExecutor(1)\n"
    "pool.submit(lambda: (time.sleep(1), os.write(1, b'pending work done\\n')))\n"
    "class Teardown:\n"
    "    def __del__(self):\n"
    "        os.write(1, b'torn down\\n')\n"
    "kept = Teardown()\n"
)
# run as the script runs: `console_main` with the process's arguments
PROBE = PROBE_SET_UP + "sys.argv[0] = 'forgerytalker'\nfrom forgerytalker.cli import console_main\nconsole_main()\n"
# `python training/run.py ARGUMENTS`
TRAINING_PROBE = (PROBE_SET_UP + f"import runpy\nsys.argv[0] = {str(RUN)!r}\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def script(*arguments: str, probe: str = PROBE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", probe, *arguments], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_analyze_skips_the_teardown_and_keeps_every_file_and_message(tmp_path, saved_tiny_checkpoint, face_photos_dir):
    out = tmp_path / "out"
    result = script("analyze", str(face_photos_dir / "grace_hopper.jpg"), str(face_photos_dir / "astronaut.png"),
                    "--model", str(saved_tiny_checkpoint), "--out", str(out), "--no-progress", "--num-threads", "1",
                    "--max-new-tokens", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert "exit handlers ran" in result.stdout and "torn down" not in result.stdout
    assert "pending work done" in result.stdout
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(printed) == len(records) == 2 and all(record["status"] == "ok" for record in records)
    for record in records:
        for name in record["outputs"].values():
            assert (out / name).stat().st_size > 0
    assert "2 of 2 photo(s) analysed" in result.stderr
    assert "leaked" not in result.stderr  # multiprocessing's resource tracker found everything released


def test_the_exit_code_and_the_error_message_of_a_refused_analyze_come_through(tmp_path, saved_tiny_checkpoint,
                                                                                face_photos_dir):
    result = script("analyze", str(face_photos_dir / "grace_hopper.jpg"), "--model", str(saved_tiny_checkpoint),
                    "--out", str(tmp_path / "out"), "--regions", "elbow")
    assert result.returncode == 2
    assert "--regions" in result.stderr and "elbow" in result.stderr
    assert "exit handlers ran" in result.stdout and "torn down" not in result.stdout
    assert "pending work done" in result.stdout  # the command returned within the task's second: it was waited for


def test_evaluate_skips_the_teardown_and_keeps_every_output(tmp_path, model_dir, tiny_dataset_dir, split):
    out = tmp_path / "out"
    result = script(*evaluate_arguments(model_dir, tiny_dataset_dir, out, "--no-meteor", "--batch-size", "3",
                                        "--num-threads", "1"))
    assert result.returncode == 0, result.stderr
    assert "exit handlers ran" in result.stdout and "torn down" not in result.stdout
    assert "pending work done" in result.stdout
    assert f"{len(split)} images of split validation" in result.stdout
    records = read_predictions(out)
    assert [record["image_id"] for record in records] == split["image_id"]
    assert all((out / record["mask"]).stat().st_size > 0 for record in records)
    assert "CIDEr" in json.loads((out / "metrics.json").read_text())["overall"]
    assert "CIDEr" in (out / "metrics.md").read_text()


def test_a_training_run_skips_the_teardown_and_keeps_its_checkpoints(tmp_path, tiny_dataset_dir):
    from transformers import AutoModel

    output_dir = tmp_path / "run"
    result = script(*tiny("prompter", tiny_dataset_dir, output_dir), probe=TRAINING_PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exit handlers ran" in result.stdout and "torn down" not in result.stdout
    assert "pending work done" in result.stdout
    assert sorted(step_records(read_log(output_dir))) == list(range(1, 7))
    for folder in (output_dir, output_dir / "best"):
        AutoModel.from_pretrained(folder)  # complete, loadable checkpoints


def test_a_refused_training_run_keeps_its_exit_code_and_message(tmp_path, tiny_dataset_dir):
    result = script(*tiny("prompter", tmp_path / "missing", tmp_path / "run"), probe=TRAINING_PROBE)
    assert result.returncode == 2 and "--dataset" in result.stderr
    assert "exit handlers ran" in result.stdout and "torn down" not in result.stdout


def test_other_commands_end_as_python_ends(tmp_path):
    result = script("data", "synthesize", "--faces", str(tmp_path / "missing"), "--out", str(tmp_path / "out"),
                    "--num-samples", "1")
    assert result.returncode == 2 and "--faces" in result.stderr
    assert "exit handlers ran" in result.stdout and "torn down" in result.stdout
    assert "pending work done" in result.stdout
