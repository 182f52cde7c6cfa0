"""`--num-threads` of the sub-commands: torch's intra-op thread count for one command, restored afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with `torch.set_num_threads(count)` and sets the earlier count back when it ends, however it
    ends, so that calling `forgerytalker.cli.main` from Python (a test, a notebook) leaves torch as it found it.
    `None` (no `--num-threads`) changes nothing and does not import torch."""
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    logger.debug("torch intra-op threads: %d (was %d)", count, before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
