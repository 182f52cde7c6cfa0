"""The commands' default thread count: the cores that are free when they start (cli/_threads.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

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
    monkeypatch.setattr(_threads, "free_cores", lambda **watched: 1)
    with _threads.torch_threads(None):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with _threads.torch_threads(None):  # the user's OMP_NUM_THREADS is left to torch
        assert torch.get_num_threads() == before


def test_passive_waiting_is_set_for_the_block_unless_the_user_chose_a_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with _threads.passive_waiting():
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    with _threads.passive_waiting(enabled=False):
        assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with _threads.passive_waiting():
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


SPIN = "while True: pass"


@contextlib.contextmanager
def _spinning_neighbour():
    """A process spinning on one core that is not a child of this one (its parent has exited)."""
    quiet = "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL"  # else `run` waits for the spinner's pipes to close
    start = f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {SPIN!r}], {quiet}).pid)"
    starter = subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, check=True)
    try:
        yield
    finally:
        os.kill(int(starter.stdout), signal.SIGKILL)


def _busy_for(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # this process busy, as while a command imports torch
        pass


def test_free_cores_sees_a_spinning_neighbour():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable cores")
    quiet = _threads.free_cores(0.3)
    with _spinning_neighbour():
        busy = _threads.free_cores(0.3)
    assert busy <= max(1, quiet - 1) or quiet == 1


def test_the_command_s_own_work_and_its_child_processes_are_not_a_busy_neighbour():
    """analyze judges the cores over its imports, while it and its photo reader keep both cores busy."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable cores")
    quiet = _threads.free_cores(0.3)
    watch = _threads.CpuWatch()
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        _busy_for(0.6)
        ours = _threads.free_cores(since=watch)
    finally:
        child.kill()
        child.wait()
    with _spinning_neighbour():
        watch = _threads.CpuWatch()
        _busy_for(0.6)
        neighbour = _threads.free_cores(since=watch)
    assert ours == quiet
    assert neighbour <= max(1, quiet - 1) or quiet == 1
