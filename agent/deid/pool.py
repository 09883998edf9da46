"""The process pool that large series are de-identified and verified in.

Both stages borrow the agent's one long-lived pool (:func:`agent.procpool.shared_pool`):
its workers are spawned, not forked, so they never inherit the single-instance lock and
they exit when the agent dies (even by kill -9); and it is started once, not per series.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from agent.procpool import shared_pool

T = TypeVar("T")

#: Tasks per worker a series is cut into: one task per worker leaves a worker idle while
#: the other finishes its half (or another series' task); a few smaller ones balance.
TASKS_PER_WORKER = 3
#: Fewest files in a task (each task costs a round trip and its arguments' pickling).
MIN_TASK_FILES = 16


def chunked(items: list[T], processes: int) -> list[list[T]]:
    """``items`` cut into contiguous tasks for a pool of ``processes`` workers, in order
    (contiguous: neighbouring files share most of their header, which the checks
    remember within a task)."""
    tasks = max(1, min(processes * TASKS_PER_WORKER, len(items) // MIN_TASK_FILES))
    size = -(-len(items) // tasks)
    return [items[i:i + size] for i in range(0, len(items), size)]


@contextmanager
def make_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """The shared pool, for a ``with`` block (it stays up afterwards for the next series)."""
    del processes  # the shared pool has one worker per core
    yield shared_pool()
