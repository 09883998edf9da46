"""The shared process pool: its workers outlive the thread that started them and end with the
agent, whichever way the workers are started (fork server on Linux, spawn elsewhere)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import procpool
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads process states from /proc")

CONTEXTS = [m for m in ("forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(params=CONTEXTS)
def fresh_pool(request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """No pool yet, and the next one started the given way; the pool is shut down after."""
    method: str = request.param
    procpool.shutdown()
    if method == "spawn":
        monkeypatch.setattr(procpool, "_context", lambda: multiprocessing.get_context("spawn"))
    yield method
    with procpool._lock:
        pool, procpool._pool = procpool._pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def test_workers_outlive_the_thread_that_started_them(fresh_pool: str) -> None:
    """A pool first used from a thread that then ends (a series worker of the first Agent,
    the one-shot warm-up thread) still works for the next caller: the workers are not tied
    to that thread (``PR_SET_PDEATHSIG`` was, and the next series met BrokenProcessPool)."""
    first: list[int] = []

    def use_pool_once() -> None:
        pool = procpool.shared_pool()
        first.extend(f.result(timeout=120) for f in
                     [pool.submit(os.getpid) for _ in range(procpool.worker_count())])

    starter = threading.Thread(target=use_pool_once, name="first-series-worker")
    starter.start()
    starter.join(timeout=180)
    assert not starter.is_alive() and first, "the pool did not start"
    workers = set(procpool.shared_pool()._processes)
    assert set(first) <= workers

    # The thread has ended: the same workers must still answer.
    again = [procpool.shared_pool().submit(os.getpid).result(timeout=60) for _ in range(4)]
    assert set(again) <= workers
    assert all(_running(pid) for pid in workers)


_AGENT = """
import os, sys
sys.path.insert(0, {root!r})
import multiprocessing
from agent import procpool
if {method!r} == "spawn":
    procpool._context = lambda: multiprocessing.get_context("spawn")
pool = procpool.shared_pool()
pids = {{pool.submit(os.getpid).result(timeout=120) for _ in range(4)}}
print(" ".join(map(str, sorted(pids))), flush=True)
sys.stdin.read()
"""


def test_workers_end_when_the_agent_is_killed(fresh_pool: str) -> None:
    """kill -9 of the agent leaves no worker behind (they would hold the machine's cores)."""
    root = str(Path(__file__).resolve().parents[1])
    agent = subprocess.Popen([sys.executable, "-c", _AGENT.format(root=root, method=fresh_pool)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline().decode()
        workers = [int(p) for p in line.split()]
        assert workers and all(_running(pid) for pid in workers)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.communicate(timeout=30)
    assert wait_until(lambda: not any(_running(pid) for pid in workers), timeout=20), \
        f"workers still running after the agent was killed: {workers}"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


_ONE_SHOT = """
import os, sys, threading
sys.path.insert(0, {root!r})
from agent import procpool
if {busy!r}:
    threading.Thread(target=threading.Event().wait, daemon=True).start()
started = procpool.start_forked(("agent.integrity",))
pool = procpool.running_pool()
pids = sorted({{pool.submit(os.getpid).result(timeout=60) for _ in range(4)}}) if pool else []
inner = pool.submit(procpool.running_pool).result(timeout=60) if pool else None
print(started, pool is not None and inner is None, " ".join(map(str, pids)), flush=True)
sys.stdin.read()
"""


def _one_shot(busy: bool) -> tuple[subprocess.Popen[bytes], list[str]]:
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", _ONE_SHOT.format(root=root, busy=busy)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().split()


def test_one_shot_forks_its_workers_and_they_end_with_it() -> None:
    """The one-shot command, still single-threaded, forks its workers from itself (no fork
    server): they work, hold no pool of their own (a worker's copy of the parent's pool
    state is forgotten), are the command's own children, and end when it is killed."""
    proc, answer = _one_shot(busy=False)
    try:
        assert answer[:2] == ["True", "True"], answer
        workers = [int(p) for p in answer[2:]]
        assert workers and all(_running(pid) for pid in workers)
        assert all(_parent(pid) == proc.pid for pid in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert wait_until(lambda: not any(_running(pid) for pid in workers), timeout=20), \
        f"workers still running after the command was killed: {workers}"


def test_no_fork_once_another_thread_runs() -> None:
    """A process with a second thread never forks (a lock that thread holds would stay
    held in the worker forever): start_forked declines and starts nothing."""
    proc, answer = _one_shot(busy=True)
    proc.communicate(b"", timeout=30)
    assert answer == ["False", "False"], answer


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rpartition(b")")[2].split()[1])
