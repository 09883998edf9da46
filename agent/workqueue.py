"""A queue of series ids, each due at a time: retries with backoff wait in the same queue."""

from __future__ import annotations

import heapq
import itertools
import threading
import time


class ScheduledQueue:
    """Thread-safe. ``get`` blocks until an item is due, or returns None once closed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._queued: set[int] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, series_id: int, delay: float = 0.0) -> None:
        with self._cond:
            if series_id in self._queued:
                return
            self._queued.add(series_id)
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), series_id))
            self._cond.notify()

    def get(self) -> int | None:
        with self._cond:
            while not self._closed:
                if self._heap:
                    due = self._heap[0][0] - time.monotonic()
                    if due <= 0:
                        _, _, series_id = heapq.heappop(self._heap)
                        self._queued.discard(series_id)
                        return series_id
                    self._cond.wait(due)
                else:
                    self._cond.wait()
            return None

    def wake(self) -> None:
        """Make waiting workers look again (after a pause ends, say)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)
