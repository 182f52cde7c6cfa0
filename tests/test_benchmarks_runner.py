"""`python -m benchmarks`: one JSON document; a failing benchmark is recorded and the others still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_runner(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), environment.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout, env=environment,
    )


@pytest.mark.slow
def test_one_document_with_a_failed_benchmark_recorded_beside_a_successful_one(tmp_path):
    out = tmp_path / "bench.json"
    completed = run_runner(
        "--only", "released_memory", "label_agreement", "--args", "label_agreement=--no-such-flag", "--out", str(out)
    )
    assert completed.returncode == 1, completed.stderr  # one benchmark failed
    document = json.loads(completed.stdout)
    assert json.loads(out.read_text()) == document
    assert document["settings"] == "full"

    machine = document["machine"]
    for key in ("cores", "torch_threads", "load_average_before", "load_average_after", "python", "torch",
                "transformers", "platform", "date"):
        assert key in machine, key
    assert machine["cores"] >= 1 and machine["torch_threads"] >= 1
    assert len(machine["load_average_before"]) == len(machine["load_average_after"]) == 3

    benchmarks = document["benchmarks"]
    assert list(benchmarks) == ["released_memory", "label_agreement"]
    succeeded = benchmarks["released_memory"]
    assert "error" not in succeeded
    assert succeeded["command"][:2] == ["python", "benchmarks/bench_released_memory.py"]
    assert succeeded["seconds"] > 0
    result = succeeded["result"]
    assert result["parameters"]["total"] > 4_000_000_000  # the converted release, counted on the meta device
    assert result["machine"]["torch_threads"] >= 1 and len(result["machine"]["load_average_after"]) == 3

    failed = benchmarks["label_agreement"]
    assert "result" not in failed
    assert failed["command"][-1] == "--no-such-flag"
    assert failed["error"].startswith("exit status 2") and "--no-such-flag" in failed["error"]


def test_an_unknown_benchmark_name_is_refused_before_anything_runs():
    completed = run_runner("--only", "no_such_benchmark")
    assert completed.returncode == 2
    assert "no_such_benchmark" in completed.stderr and completed.stdout == ""


def test_synthesis_without_face_photos_is_skipped_with_its_reason(tmp_path):
    completed = run_runner("--only", "synthesis", "--faces", str(tmp_path / "missing"))
    assert completed.returncode == 0, completed.stderr
    entry = json.loads(completed.stdout)["benchmarks"]["synthesis"]
    assert "--faces" in entry["skipped"] and "result" not in entry and "error" not in entry


def test_the_document_names_no_folder_of_the_machine_it_ran_on():
    import sys

    from benchmarks.__main__ import REPO_ROOT, portable_command

    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_synthesis.py"), "--faces",
               str(REPO_ROOT.parent / "shared" / "faces"), "--num-samples", "5"]
    assert portable_command(command) == ["python", "benchmarks/bench_synthesis.py", "--faces", "../shared/faces",
                                         "--num-samples", "5"]
    recorded = (REPO_ROOT / "benchmarks" / "latest.json").read_text()
    assert str(REPO_ROOT) not in recorded and '"/work/' not in recorded and '"/root/' not in recorded
