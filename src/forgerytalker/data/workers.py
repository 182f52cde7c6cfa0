"""Running the tasks of a data job in worker processes without hanging when a worker dies.

`multiprocessing.Pool` waits forever for the result of a worker that was killed (the out-of-memory killer
sends SIGKILL); `concurrent.futures.ProcessPoolExecutor` notices and fails the pool. `run_tasks` builds on
the latter and turns that failure into a `WorkerDiedError` naming the tasks that were running. Each task's
state and progress live in lock-free shared arrays (one slot per task, written only by the worker running
it), so a worker killed at any instant cannot leave a lock held.

On Linux workers are forked: a spawned worker would re-import the package (transformers and torch, seconds
each), and a forked one inherits the task function and its initializer arguments without pickling them.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import WorkerDiedError

_PENDING, _RUNNING, _DONE = 0, 1, 2
_POLL_SECONDS = 0.25

# In a worker process: (task function, task states, task progress); in the main process: None.
_WORKER: tuple[Callable, Any, Any] | None = None
# The slot (task index) the current process is working on, and how progress is reported in this process.
_CURRENT_TASK: int | None = None
_REPORT: Callable[[int, int], None] | None = None


def worker_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux, spawn elsewhere (module docstring)."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def report_progress(done: int) -> None:
    """Called by a running task: it has finished `done` units (e.g. records) so far. A no-op outside `run_tasks`."""
    if _REPORT is not None and _CURRENT_TASK is not None:
        _REPORT(_CURRENT_TASK, done)


def die_with_parent(parent_pid: int) -> None:
    """Makes the kernel kill this worker when the process that started it dies, even by SIGKILL (Linux), which
    no cleanup code of the parent can handle; elsewhere the pool's own shutdown has to do."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _init_worker(function, states, progress, initializer, initargs, parent_pid) -> None:
    global _WORKER, _REPORT
    die_with_parent(parent_pid)
    _WORKER = (function, states, progress)
    _REPORT = progress.__setitem__
    if initializer is not None:
        initializer(*initargs)


def _run_in_worker(index: int, task):
    global _CURRENT_TASK
    function, states, _ = _WORKER
    states[index] = _RUNNING
    _CURRENT_TASK = index
    result = function(task)
    states[index] = _DONE
    return result


def run_tasks(
    function: Callable,
    tasks: Sequence,
    *,
    num_workers: int,
    describe: Callable[[Any], str],
    initializer: Callable | None = None,
    initargs: tuple = (),
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Runs `function(task)` for every task; yields `(index, result)` as tasks finish.

    Args:
        function: the task function; with workers it must be importable by name where workers are spawned.
        tasks: the tasks (picklable).
        num_workers: 1 runs the tasks here, in order; more runs them in that many processes (any order).
        describe: a task → how error messages name it ("shard data/train-00003-of-00010.parquet").
        initializer, initargs: run once in each worker (or here, with one worker) before its first task.
        on_progress: called here with the number of units newly reported by tasks (`report_progress`).

    Raises:
        WorkerDiedError: a worker process died; names the task(s) that were running. Tasks that finished
            before were yielded; the rest did not run to the end.
        Any exception a task raises, unchanged (the remaining tasks are cancelled).
    """
    global _REPORT, _CURRENT_TASK
    reported = [0] * len(tasks)

    def add_progress(index: int, done: int) -> None:
        if on_progress is not None and done > reported[index]:
            on_progress(done - reported[index])
        reported[index] = max(reported[index], done)

    if num_workers <= 1 or len(tasks) <= 1:
        if initializer is not None:
            initializer(*initargs)
        _REPORT = add_progress
        try:
            for index, task in enumerate(tasks):
                _CURRENT_TASK = index
                yield index, function(task)
        finally:
            _REPORT = _CURRENT_TASK = None
        return

    context = worker_context()
    states = context.RawArray("b", len(tasks))
    progress = context.RawArray("q", len(tasks))
    executor = ProcessPoolExecutor(
        min(num_workers, len(tasks)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(function, states, progress, initializer, initargs, os.getpid()),
    )
    try:
        futures = {executor.submit(_run_in_worker, index, task): index for index, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for index in range(len(tasks)):
                add_progress(index, progress[index])
            for future in sorted(finished, key=futures.get):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise _worker_died(tasks, states, describe) from None
                yield futures[future], result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _worker_died(tasks: Sequence, states, describe: Callable[[Any], str]) -> WorkerDiedError:
    running = [describe(task) for index, task in enumerate(tasks) if states[index] == _RUNNING]
    if running:
        where = f"while working on {running[0]}" if len(running) == 1 else f"while working on one of {', '.join(running)}"
    else:
        where = "before starting its task"
    return WorkerDiedError(
        f"A worker process died {where} (killed by a signal, e.g. by the out-of-memory killer, or crashed); "
        "the other workers were stopped. Finished work is kept: run the same command again to resume "
        "(with fewer worker processes if memory ran out)."
    )
