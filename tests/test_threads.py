"""The commands' default thread count: the cores that are free when they start (cli/_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from forgerytalker.cli import _threads


def test_idle_cores_counts_idle_time_in_cores():
    assert _threads.idle_cores((100.0, 1000.0), (150.0, 1100.0), cpus=2) == pytest.approx(1.0)  # one of two idle
    assert _threads.idle_cores((0.0, 0.0), (0.0, 0.0), cpus=4) == 4.0  # no time passed: nothing is known to be busy


def test_a_core_kept_busy_by_another_process_is_not_counted(monkeypatch):
    usable = len(os.sched_getaffinity(0))
    readings = iter([(1000.0, 2000.0), (1000.0 + 0.5 * 100, 2000.0 + 100)])  # half the machine idle
    monkeypatch.setattr(_threads, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert _threads.free_cores(0.0) == min(usable, 1)
    monkeypatch.setattr(_threads, "_cpu_times", lambda: None)
    assert _threads.free_cores(0.0) == usable


def test_without_num_threads_a_command_runs_on_the_free_cores(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "free_cores", lambda: 1)
    with _threads.torch_threads(None):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with _threads.torch_threads(None):  # the user's OMP_NUM_THREADS is left to torch
        assert torch.get_num_threads() == before


def test_free_cores_sees_a_spinning_neighbour():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable cores")
    quiet = _threads.free_cores(0.3)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = _threads.free_cores(0.3)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy <= max(1, quiet - 1) or quiet == 1
