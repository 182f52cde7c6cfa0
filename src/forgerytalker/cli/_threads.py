"""`--num-threads` of the sub-commands: torch's intra-op thread count for one command, restored afterwards.

Without `--num-threads` (and without OMP_NUM_THREADS), a command uses the cores that are free when it starts:
torch's OpenMP threads spin while they wait for each other, so a thread put on a core that another process keeps
busy slows every step down (measured: analyze 7.7× and evaluate 13× slower with a core shared three ways, instead
of the 1.5× that one thread fewer costs).
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


def free_cores(sample_seconds: float = SAMPLE_SECONDS) -> int:
    """The usable cores (CPU affinity) that were idle over `sample_seconds`, at least 1 (all usable ones where the
    machine's CPU time cannot be read)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        return usable
    time.sleep(sample_seconds)
    idle = idle_cores(before, _cpu_times(), os.cpu_count() or usable)
    return max(1, min(usable, int(idle + 0.3)))  # a core 70 % idle counts; one mostly busy does not


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with `torch.set_num_threads(count)` and sets the earlier count back when it ends, however it
    ends, so that calling `forgerytalker.cli.main` from Python (a test, a notebook) leaves torch as it found it.
    `None` (no `--num-threads`): OMP_NUM_THREADS when it is set (torch already follows it), else `free_cores()`."""
    if not count:
        if os.environ.get("OMP_NUM_THREADS"):
            yield
            return
        count = free_cores()
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    logger.debug("torch intra-op threads: %d (was %d)", count, before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
