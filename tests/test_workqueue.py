from __future__ import annotations

import threading
import time

from agent.workqueue import ScheduledQueue


def test_items_come_out_when_due_and_once() -> None:
    q = ScheduledQueue()
    q.put(1, delay=0.3)
    q.put(2)
    q.put(2)  # already queued: not twice
    assert q.get() == 2
    t0 = time.monotonic()
    assert q.get() == 1
    assert time.monotonic() - t0 >= 0.25
    assert len(q) == 0


def test_close_releases_waiting_workers() -> None:
    q = ScheduledQueue()
    got: list[int | None] = []
    workers = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(0.1)
    q.close()
    for w in workers:
        w.join(2)
    assert got == [None, None, None]
