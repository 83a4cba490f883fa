"""torch's intra-op thread count for one block of work, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on `count` torch threads (``torch.set_num_threads``), then restore.

    The previous count comes back when the block ends, also when it raises, so a caller
    in the same process (the in-process engine, a benchmark) keeps its own.

    Args:
        count: intra-op threads for the block, >= 1.

    Raises:
        ValueError: if `count` < 1.
    """
    if count < 1:
        raise ValueError(f"torch thread count must be >= 1, got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
