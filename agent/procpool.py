"""One process pool for the CPU-bound work (de-identification, verification) of the agent.

Processes are *spawned*, never forked: a forked worker inherits the parent's open files -
the single-instance lock among them - and the write end of its own task pipe, so after a
kill -9 of the agent it would live on forever and keep the next start from running.
Spawned workers see the pipe close when the agent dies, and exit.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def worker_count() -> int:
    return max(1, os.cpu_count() or 1)


def shared_pool() -> ProcessPoolExecutor:
    """The agent's process pool, started on first use and shut down at exit."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(worker_count(),
                                        mp_context=multiprocessing.get_context("spawn"))
            atexit.register(shutdown)
        return _pool


def shutdown() -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
