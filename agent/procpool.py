"""One process pool for the CPU-bound work (de-identification, verification) of the agent.

Workers are never forked from the agent: a forked worker inherits the agent's open files -
the single-instance lock among them - and the write end of its own task pipe, so after a
kill -9 of the agent it would live on forever and keep the next start from running.

On Linux (not in a frozen bundle) they are forked from a *fork server*: a fresh interpreter
the agent starts, holding none of its files, that imports the stage modules and warms their
tables once (:mod:`agent.procwarm`) and then forks each worker ready to work - a spawned
worker pays that second or so again, each. The fork server ends when the agent does (its
pipe to the agent closes). Elsewhere workers are spawned.

The one-shot ``process`` command is the exception (:func:`start_forked`): it forks its
workers from itself, once it has imported the stages and while it is still its only
thread, before it opens its ledger or takes any file. Nothing is inherited then that the
reasons above are about - no lock, no ledger, no thread's half-held state - and the fork
server's second interpreter, which imported everything this process imports anyway (a
second of CPU on a 2,000-file run), is not started.

Workers hold both ends of their task queue, so they would not notice the agent's death by
themselves: each watches the agent (a pidfd on Linux, a poll elsewhere). Not
``PR_SET_PDEATHSIG``: it fires when the *thread* that started the worker ends, not the
process - a pool first used from a series worker or a warm-up thread lost its workers when
that thread ended, and the next series met ``BrokenProcessPool``.
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


def _forget_in_child() -> None:
    """In a forked worker: the parent's pool and its lock are not this process's (the lock
    may have been held by another thread of the parent when it forked)."""
    global _lock, _pool, _warming
    _lock = threading.Lock()
    _pool = None
    _warming = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _die_with_parent(agent: int) -> None:
    """Pool initializer: end this worker when the agent (pid ``agent``) is gone.

    The worker's parent is the agent (spawned) or the fork server (which lives as long as
    any worker holds its pipe): either way the worker watches the agent itself."""
    parent = os.getppid()
    if parent == 1 or not _alive(agent):  # it died while this worker was starting
        os._exit(0)
    threading.Thread(target=_watch, args=(agent, parent), name="agent-watch",
                     daemon=True).start()


def _watch(agent: int, parent: int) -> None:
    """End this process when the agent is gone (or this process was orphaned)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(agent)
        except OSError:
            os._exit(0)  # already gone
        import select

        select.select([fd], [], [])  # readable when the agent has ended
        os._exit(0)
    # No portable event tells a process that another one died; a slow poll is enough.
    while os.getppid() == parent and _alive(agent):
        time.sleep(1.0)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else (cannot be: it is our agent)
    return True


def _context() -> multiprocessing.context.BaseContext:
    """A fork server where it is safe and available (see the module doc), else spawn."""
    if (sys.platform.startswith("linux") and not getattr(sys, "frozen", False)
            and "forkserver" in multiprocessing.get_all_start_methods()):
        ctx = multiprocessing.get_context("forkserver")
        # The main module too: else each worker runs it again (the CLI imports a lot).
        ctx.set_forkserver_preload(["__main__", "agent.procwarm"])
        return ctx
    return multiprocessing.get_context("spawn")


def worker_count() -> int:
    return max(1, os.cpu_count() or 1)


def series_in_flight(workers: int) -> int:
    """How many series to work on at once when the CPU-bound steps run in a pool of
    ``workers`` processes: one more than the pool. Each series also spends time in steps
    of its own process (the staging copy, the last look and delivery) and waits for the
    last task of each stage: with only as many series as workers, a worker idled then
    (2,000 files: 12.6 s with two series at a time, 10.0 s with three; four did worse)."""
    return workers + 1 if workers > 1 else workers


def shared_pool() -> ProcessPoolExecutor:
    """The agent's process pool, started on first use and shut down at exit."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(worker_count(),
                                        mp_context=_context(),
                                        initializer=_die_with_parent,
                                        initargs=(os.getpid(),))
            atexit.register(shutdown)
        return _pool


def running_pool() -> ProcessPoolExecutor | None:
    """The pool if a stage has started it (or its warm-up has), else None: work that may
    use a pool, and need not, does not start one."""
    with _lock:
        return _pool


#: Files a series (or an export) needs for the pool to pay for its start-up: the stages'
#: thresholds (agent.deid.stage, agent.pixels.stage) and the last look's
#: (agent.integrity) are this one number.
WORTH_POOLING = 64


#: What the pipeline's workers run: importing it is most of a worker's start-up.
STAGE_MODULES = ("agent.deid.stage", "agent.deid.verify", "agent.pixels.stage",
                 "agent.integrity")


def _import(modules: tuple[str, ...]) -> int:
    import importlib

    for name in modules:
        importlib.import_module(name)
    from agent.procwarm import warm_tables

    warm_tables()
    return os.getpid()


def warm_up(modules: tuple[str, ...] = STAGE_MODULES) -> None:
    """Start the pool's workers now and have them import ``modules``: the first series
    then finds them ready. Blocks while a fork server starts (call it from a thread to
    overlap that with other work)."""
    pool = shared_pool()
    for _ in range(worker_count()):
        pool.submit(_import, modules)


_warming = False


def warm_in_background() -> None:
    """:func:`warm_up` in a thread of its own, once (the running agent calls it when an
    export begins, so that the pool is ready when the series is stable)."""
    global _warming
    with _lock:
        if _warming or _pool is not None:
            return
        _warming = True
    threading.Thread(target=warm_up, name="pool-warm-up", daemon=True).start()


def can_fork() -> bool:
    """Whether :func:`start_forked` may fork here (Linux, not a frozen bundle)."""
    return (sys.platform.startswith("linux") and not getattr(sys, "frozen", False)
            and "fork" in multiprocessing.get_all_start_methods())


def _started() -> int:
    return os.getpid()


def start_forked(modules: tuple[str, ...] = STAGE_MODULES) -> bool:
    """Start the pool's workers forked from this process, with ``modules`` imported and
    their tables warmed here first (the workers share them copy-on-write), if this process
    is still single-threaded and no pool exists; False (nothing started) otherwise. For
    the one-shot command only (see the module doc): call it before opening files that a
    worker must not hold. Blocks while the stage modules are imported."""
    global _pool
    if not can_fork() or threading.active_count() != 1:
        return False
    import gc

    _import(modules)
    with _lock:
        if _pool is not None or _warming:
            return False
        pool = ProcessPoolExecutor(worker_count(), mp_context=multiprocessing.get_context("fork"),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))
    # What was imported is never collected: frozen, a collection in a worker does not
    # touch (and so copy) the pages it shares with this process.
    gc.freeze()
    # (Not under _lock: a forked child must not start with it held.) The first task forks
    # every worker at once, from this thread - still the only one.
    pool.submit(_started).result()
    with _lock:
        _pool = pool
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    global _pool, _warming
    with _lock:
        pool, _pool = _pool, None
        _warming = False
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
