"""The process pool that large series are de-identified and verified in.

Both stages borrow the agent's one long-lived pool (:func:`agent.procpool.shared_pool`):
its workers are spawned, not forked, so they never inherit the single-instance lock and
they exit when the agent dies (even by kill -9); and it is started once, not per series.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from agent.procpool import shared_pool


@contextmanager
def make_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """The shared pool, for a ``with`` block (it stays up afterwards for the next series)."""
    del processes  # the shared pool has one worker per core
    yield shared_pool()
