"""How a finished command ends its process: without the interpreter's teardown, where the command allows it
(`forgerytalker analyze`, `forgerytalker evaluate`, `training/run.py`).

When a process that imported torch and transformers ends, Python frees every object they made, module by module:
about 0.9 s on two cores (a fresh process that imports transformers' Auto classes and `pipeline` exits 0.94 s after
its last statement; torch alone 0.35 s), a fifth of `forgerytalker analyze one.jpg`. Nothing a finished command
needs happens in it: its files are closed, its side processes ended, and the exit handlers (logging's flush,
multiprocessing's and concurrent.futures' clean-up, temporary folders) are run here first.

In a run that `accelerate launch` started with several processes, the teardown is also where the process can still
abort after its work is done, its process group already destroyed: a CI run of `forgerytalker evaluate` on two
processes ended with "terminate called without an active exception" (SIGABRT) after writing every output, and the
launcher reported a failure. The C++ objects of torch's gloo backend are freed there, with threads of their own;
a process that ends with `os._exit` never runs those destructors.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_without_teardown(code: int) -> NoReturn:
    """Ends the process with exit status `code` as `sys.exit(code)` would, less the freeing of every object: the
    steps Python's own shutdown takes first (threading's, which wakes idle concurrent.futures workers and waits for
    every thread that is not a daemon, then the `atexit` handlers), the standard streams flushed, then
    `os._exit(code)`."""
    shutdown_threads = getattr(threading, "_shutdown", None)  # what the interpreter calls: private, so maybe gone
    if shutdown_threads is None:
        sys.exit(code)  # a plain join of the other threads could wait forever on an idle pool's worker
    shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed, replaced or missing
            pass
    os._exit(code)
