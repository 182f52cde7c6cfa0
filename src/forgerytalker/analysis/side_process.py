"""A process of its own beside `forgerytalker analyze`'s: the photo reader and the photo writer are each one.

Work that holds Python's lock (dlib's face detector, drawing and encoding figures) would compete with the model's
`generate` loop in a thread of the command; in a process of its own it runs on the other core. Each side process
is started with `spawn` (it never inherits torch's threads), ignores Ctrl-C (its owner stops it once the task it is
running is done) and is killed with the process that started it however that ends, on Linux
(`data.workers.die_with_parent`). It runs one task at a time, in the order they were submitted, so when it dies
the oldest task not yet done is the one it died on; a task given to it after it died fails with `NeverRan`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


LONG_RUN_PHOTOS = 8
"""A run of at least this many photos writes in a process of its own (`writer_process.writer_for`), and
`forgerytalker analyze` keeps torch's threads from spinning on its side processes' cores
(`cli._threads.passive_waiting`). A short run gains nothing from either: the writer process costs about 0.15 s to
start beside the command's imports, and its side processes are idle for most of it."""


class NeverRan(BrokenProcessPool):
    """The side process had died before this task was given to it: nothing of the task ran."""


def _start(setup: Callable, args: tuple, parent_pid: int) -> None:
    """Runs first in the side process: it dies with its parent, Ctrl-C is left to the parent, then `setup(*args)`."""
    from ..data.workers import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup(*args)


class SideProcess:
    """One worker process, started at once, that runs `setup(*setup_args)` first (a module-level function).

    Use it as a context manager, or call `close()`: the process ends once the task it is running is done.
    """

    def __init__(self, setup: Callable, setup_args: tuple = ()):
        self._setup, self._setup_args = setup, setup_args
        self._pool = None
        self.restart()

    def restart(self) -> None:
        """Starts a new process (after one died); tasks given to the old one are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(self._setup, self._setup_args, os.getpid()),
        )
        self._pool.submit(int)  # the process starts now, not at the first task

    def submit(self, function: Callable, *args) -> Future:
        """A future of `function(*args)` run in the process; it fails with `BrokenProcessPool` if the process dies
        before the task is done, with `NeverRan` if it had died before the task was given."""
        try:
            return self._pool.submit(function, *args)
        except BrokenProcessPool:
            future = Future()
            future.set_exception(NeverRan(f"{function.__name__}: the process had ended before this task was given"))
            return future

    def result(self, future: Future, died: Exception):
        """What `future` (a task of this process) returns.

        Raises:
            died: the process ended while running the task (`restart()` starts another one).
            NeverRan: the process had ended before the task was given (`restart()`, then give it again).
        """
        try:
            return future.result()
        except NeverRan:
            raise
        except BrokenProcessPool:
            raise died from None

    def pids(self) -> list[int]:
        """The process ids of the running process (for tests and benchmarks)."""
        return [process.pid for process in (self._pool._processes or {}).values()]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["LONG_RUN_PHOTOS", "NeverRan", "SideProcess"]
