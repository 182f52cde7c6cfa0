"""The processes `accelerate launch` (or torchrun, or MPI) started for one command, and their clean end.

`launched_processes()` is what `forgerytalker evaluate` and `forgerytalker analyze` run inside: it yields accelerate's
`PartialState` when several processes were launched (else `None`, and nothing is set up), and destroys the process
group when the command ends, however it ends. Without that last step a gloo worker thread can still hold tensors
while the interpreter shuts down, and the process aborts (SIGABRT, "terminate called without an active
exception") after its work is done, so the launcher reports a failure for a run that succeeded. Destroying the
group made that rare, not impossible (it happened once more in CI), so the `forgerytalker` script also ends both
commands, and `training/run.py`, without the teardown (`process_exit`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Environment variables in which launchers (torchrun / `accelerate launch`, MPI) give the number of processes."""


def launched_state():
    """The `accelerate.PartialState` of a run launched with several processes, else `None` (nothing is set up).

    `ACCELERATE_USE_CPU=1` (set by `accelerate launch --cpu` and by users on CPU machines) selects the gloo
    backend, as it does for an `Accelerator`; a bare `PartialState()` would fall back to one process.
    """
    if world_size() <= 1:
        return None  # accelerate is not imported: it costs a third of a second of every one-process start-up
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def world_size() -> int:
    """The first of `WORLD_SIZE_VARIABLES` set (to 0 or more), as accelerate reads them; 1 if none is."""
    for name in WORLD_SIZE_VARIABLES:
        value = int(os.environ.get(name, -1))
        if value >= 0:
            return value
    return 1


@contextlib.contextmanager
def launched_processes() -> Iterator:
    """Yields `launched_state()`; on leaving, destroys the process group it set up (if any)."""
    state = launched_state()
    try:
        yield state
    finally:
        if state is not None:
            state.destroy_process_group()
