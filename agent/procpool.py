"""One process pool for the CPU-bound work (de-identification, verification) of the agent.

Processes are *spawned*, never forked: a forked worker inherits the parent's open files -
the single-instance lock among them - and the write end of its own task pipe, so after a
kill -9 of the agent it would live on forever and keep the next start from running.
Spawned workers still hold both ends of their task queue, so they would not notice the
agent's death by themselves: each asks the kernel to kill it when its parent dies (Linux),
or watches its parent elsewhere.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the agent (pid ``parent``) is gone."""
    if os.getppid() != parent:  # it died while this worker was starting
        os._exit(0)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(0)
            return

    def watch() -> None:
        # No portable event tells a process that its parent died; a slow poll is enough.
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_count() -> int:
    return max(1, os.cpu_count() or 1)


def shared_pool() -> ProcessPoolExecutor:
    """The agent's process pool, started on first use and shut down at exit."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(worker_count(),
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_die_with_parent,
                                        initargs=(os.getpid(),))
            atexit.register(shutdown)
        return _pool


#: What the pipeline's workers run: importing it is most of a worker's start-up.
STAGE_MODULES = ("agent.deid.stage", "agent.deid.verify", "agent.pixels.stage")


def _import(modules: tuple[str, ...]) -> int:
    import importlib

    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def warm_up(modules: tuple[str, ...] = STAGE_MODULES) -> None:
    """Start the pool's workers now and have them import ``modules``, without waiting:
    the first series then finds them ready (the one-shot command calls this before it
    reads the export folder, so the start-up overlaps that work)."""
    pool = shared_pool()
    for _ in range(worker_count()):
        pool.submit(_import, modules)


def shutdown() -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
