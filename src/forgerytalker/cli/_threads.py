"""`--num-threads` of the sub-commands: torch's intra-op thread count for one command, restored afterwards.

Without `--num-threads` (and without OMP_NUM_THREADS), a command uses the cores that are free when it starts:
torch's OpenMP threads spin while they wait for each other, so a thread put on a core that another process keeps
busy slows every step down (measured: analyze 7.7× and evaluate 13× slower with a core shared three ways, instead
of the 1.5× that one thread fewer costs). The command's own side processes are such processes too: in a run of many
photos `forgerytalker analyze`'s photo reader and writer are busy all along, so its threads wait without spinning
(`passive_waiting`; measured on two cores, 72 photos of 1-6 faces with the bundled model: 15.0 s against 18.5 s
spinning, and 14.4 s with one thread, which would halve a large model's speed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


SAMPLE_SECONDS = 0.1
"""How long `free_cores` watches the machine's CPU time."""


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) CPU time of the whole machine from /proc/stat, in clock ticks; `None` where it is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [float(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0.0), sum(fields[:8])


def idle_cores(before: tuple[float, float], after: tuple[float, float], cpus: int) -> float:
    """Cores' worth of idle time between two `_cpu_times` readings of a machine with `cpus` CPUs."""
    total = after[1] - before[1]
    return cpus * (after[0] - before[0]) / total if total > 0 else float(cpus)


def _process_ticks(pid: int | str = "self") -> float:
    """User and system CPU time a process has used, in clock ticks (the unit of /proc/stat); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return 0.0
    return float(fields[11]) + float(fields[12])


def _children_ticks() -> dict[int, float]:
    """`_process_ticks` of each child process of this one (Linux's /proc; none where it cannot be read)."""
    children = set()
    try:
        for thread in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{thread}/children", encoding="ascii") as listing:
                children.update(int(pid) for pid in listing.read().split())
    except (OSError, ValueError):
        return {}
    return {pid: _process_ticks(pid) for pid in children}


class CpuWatch:
    """Watches the machine's CPU time from now on, so that `free_cores(since=...)` can judge the cores over a whole
    interval (a command's imports) instead of sleeping; made before the command starts helper processes."""

    def __init__(self):
        self.machine = _cpu_times()
        self.own_ticks = _process_ticks()
        self.children_ticks = _children_ticks()

    def own_ticks_since(self) -> float:
        """CPU ticks this process and its child processes (analyze's photo reader and writer, multiprocessing's
        resource tracker) have used since the watch began."""
        children = sum(ticks - self.children_ticks.get(pid, 0.0) for pid, ticks in _children_ticks().items())
        return _process_ticks() - self.own_ticks + max(0.0, children)


def free_cores(sample_seconds: float = SAMPLE_SECONDS, since: CpuWatch | None = None) -> int:
    """The usable cores (CPU affinity) that other processes left idle, at least 1 (all usable ones where the
    machine's CPU time cannot be read).

    Args:
        sample_seconds: how long to watch when `since` is not given.
        since: watch from this earlier moment to now instead; the CPU time this process and its child processes used
            meanwhile counts as idle: it is the command's own, not a neighbour's.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if since is None:
        since = CpuWatch()
        if since.machine is not None:
            time.sleep(sample_seconds)
    if since.machine is None:
        return usable
    now = _cpu_times()
    idle = idle_cores(since.machine, (now[0] + since.own_ticks_since(), now[1]), os.cpu_count() or usable)
    return max(1, min(usable, int(idle + 0.3)))  # a core 70 % idle counts; one mostly busy does not


WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


@contextmanager
def passive_waiting(enabled: bool = True) -> Iterator[None]:
    """Runs the block with OMP_WAIT_POLICY=PASSIVE (when `enabled` and the user has not chosen a policy), and sets
    the variable back after: torch's OpenMP threads then sleep between parallel regions instead of spinning on cores
    that the command's side processes need. OpenMP reads it once, when torch is first imported, so it takes effect in
    a `forgerytalker` command (which imports torch after this) and not in a process that imported torch before."""
    if not enabled or WAIT_POLICY_VARIABLE in os.environ:
        yield
        return
    os.environ[WAIT_POLICY_VARIABLE] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop(WAIT_POLICY_VARIABLE, None)


@contextmanager
def torch_threads(count: int | None, since: CpuWatch | None = None) -> Iterator[None]:
    """Runs the block with `torch.set_num_threads(count)` and sets the earlier count back when it ends, however it
    ends, so that calling `forgerytalker.cli.main` from Python (a test, a notebook) leaves torch as it found it.
    `None` (no `--num-threads`): OMP_NUM_THREADS when it is set (torch already follows it), else
    `free_cores(since=since)`, judged after torch is imported (the import lengthens a `since` interval)."""
    import torch

    if not count:
        if os.environ.get("OMP_NUM_THREADS"):
            yield
            return
        count = free_cores(since=since)
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    logger.debug("torch intra-op threads: %d (was %d)", count, before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
