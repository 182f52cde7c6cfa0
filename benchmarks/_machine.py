"""What every benchmark script records about the machine it ran on: cores, torch threads, load average.

Each script calls `load_average()` before it measures and `machine_state(before)` after, and puts the latter under
`"machine"` in its JSON: absolute times on a shared machine mean little without the load they ran under.
"""

from __future__ import annotations

import os


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_state(load_before: list[float] | None = None) -> dict:
    """Cores, usable cores, torch's intra-op thread count and the load average now (and `load_before`)."""
    import torch  # the scripts that time torch imported it already; the others pay for it after measuring

    state = {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if load_before is not None:
        state["load_average_before"] = load_before
    state["load_average_after"] = load_average()
    return state
