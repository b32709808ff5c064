"""The torch thread count for a block of work, restored afterwards."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

_THREADS_LOCK = threading.RLock()  # re-entrant: a custom fitness may call a proxy


@contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the body with ``threads`` torch threads (None: leave them), then restore them.

    Results of float reductions can depend on the thread count, so a fixed count is part of
    what makes an evaluation the same everywhere.
    """
    if threads is None:
        yield torch.get_num_threads()
        return
    with _THREADS_LOCK:
        old = torch.get_num_threads()
        if old != threads:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if old != threads:
                torch.set_num_threads(old)
