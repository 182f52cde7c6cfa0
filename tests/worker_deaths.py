"""Killing a command's parent process with SIGKILL while its pool workers run, as the tests of `data convert` and
`data synthesize` do (issue 19 F18: the workers must die with their parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SLOW_WORKERS = """
import os, sys, time
from forgerytalker.data import workers

def slow(index, task):
    open(os.path.join(os.environ["WORKER_PIDS"], str(os.getpid())), "w").close()
    time.sleep(120)

workers._run_in_worker = slow
from forgerytalker.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""`python SCRIPT ARGS...` runs `forgerytalker ARGS...` with every pool task a two-minute sleep that first records its
worker's process id in `$WORKER_PIDS`."""


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, which waits only to be reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def workers_left_after_killing_the_parent(arguments: list[str], scratch: Path, workers: int = 2) -> list[int]:
    """Runs `forgerytalker <arguments>` with slow pool tasks, kills it with SIGKILL once `workers` workers run, and
    returns the workers still alive 30 seconds later (asserting first that they all started)."""
    script, pids = scratch / "slow_workers.py", scratch / "pids"
    script.write_text(SLOW_WORKERS)
    pids.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), *arguments], env=dict(os.environ, WORKER_PIDS=str(pids)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < workers and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    started = [int(path.name) for path in pids.iterdir()]
    assert len(started) == workers and all(alive(pid) for pid in started)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in started if alive(pid)]
