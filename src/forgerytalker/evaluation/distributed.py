"""The processes that evaluate together: this one alone, or every process `accelerate launch` started.

Every process calls `run_evaluation`; each predicts its shard of the split (`EvaluationProcesses.shard`), the
results are gathered, the main process scores and writes, and every process returns the same document. A step
that can fail on some processes only (Java missing on one machine, an unreadable image in one shard, a full disk)
runs through `all_succeed` or `on_main`, which share its outcome: a failure anywhere is raised on every process,
instead of leaving the others waiting forever at the next collective call.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from ..launched_processes import launched_state


class EvaluationProcesses:
    """The group of processes running one evaluation.

    Args:
        accelerator: an `accelerate.Accelerator` (training-time validation); `None` uses `launched_state()`.
    """

    def __init__(self, accelerator=None):
        self.state = accelerator.state if accelerator is not None else launched_state()
        distributed = self.state is not None and self.state.num_processes > 1
        self.num_processes = self.state.num_processes if distributed else 1
        self.process_index = self.state.process_index if distributed else 0

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def shard(self, count: int, batch_size: int = 1) -> range:
        """This process's contiguous share of `count` items, in whole batches of `batch_size` (shares differ by at
        most one batch). Each process then runs exactly the batches a one-process run would, so the results are
        identical, not merely equal up to floating-point noise."""
        batches = -(-count // batch_size)
        first, last = (batches * index // self.num_processes for index in (self.process_index, self.process_index + 1))
        return range(min(count, first * batch_size), min(count, last * batch_size))

    def all_succeed(self, function: Callable[..., Any], *args, **kwargs) -> list:
        """Runs `function` on every process and returns every process's result, in process order, on each.

        Raises, on every process, the first error any process met (its own error on that process; elsewhere a
        copy noting where it was raised).
        """
        try:
            outcome = (function(*args, **kwargs), None)
            error = None
        except Exception as raised:
            error = raised
            outcome = (None, _portable(raised))
        outcomes = self._gather(outcome)
        for index, (_, failure) in enumerate(outcomes):
            if failure is not None:
                if index == self.process_index:
                    raise error
                raise _raised_elsewhere(failure, index)
        return [result for result, _ in outcomes]

    def on_main(self, function: Callable[..., Any], *args, **kwargs) -> Any:
        """Runs `function` on the main process only; every process returns its result, or raises its error."""
        error = None
        if self.is_main_process:
            try:
                outcome = (function(*args, **kwargs), None)
            except Exception as raised:
                error = raised
                outcome = (None, _portable(raised))
        else:
            outcome = None
        result, failure = self._broadcast(outcome)
        if failure is not None:
            if error is not None:
                raise error
            raise _raised_elsewhere(failure, 0)
        return result

    def _gather(self, item) -> list:
        if self.num_processes == 1:
            return [item]
        from accelerate.utils import gather_object

        return gather_object([item])

    def _broadcast(self, item):
        if self.num_processes == 1:
            return item
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([item], from_process=0)[0]


def _portable(error: Exception) -> Exception:
    """`error` if it survives pickling (to reach the other processes), else a `RuntimeError` with its message."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _raised_elsewhere(error: Exception, process_index: int) -> Exception:
    error.add_note(f"(raised on process {process_index} of the evaluation)")
    return error
