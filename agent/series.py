"""Grouping exported files into series and deciding when a series is stable.

Pure logic, no disk and no clock: the watcher feeds observations with their time, and asks
which series are due. That keeps debounce and grouping testable in microseconds. The
watcher's times are monotonic (``time.monotonic``): a wall clock set back or forward
changes nothing here.

A series is *due* for a completeness check when no file of it changed for
``stable_seconds``. The watcher then checks every file (see
:func:`agent.dicomfiles.is_complete`); an incomplete series goes back to waiting
(:meth:`SeriesTracker.postpone`), and one still incomplete ``max_wait`` seconds after it
last changed is given up on (``expired``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileState:
    """What we know of one exported file: its size and modification time when last seen."""

    size: int
    mtime_ns: int


@dataclass
class PendingSeries:
    key: str
    first_seen: float
    last_change: float
    files: dict[str, FileState] = field(default_factory=dict)
    #: After an incomplete check, the earliest time to check again.
    not_before: float = 0.0


@dataclass(frozen=True)
class DueSeries:
    key: str
    files: dict[str, FileState]
    waited: float


class SeriesTracker:
    """Files waiting to become a stable series, grouped by series key."""

    def __init__(self, stable_seconds: float, max_wait: float) -> None:
        self.stable_seconds = stable_seconds
        self.max_wait = max_wait
        self._series: dict[str, PendingSeries] = {}
        self._owner: dict[str, str] = {}  # path -> series key

    def __len__(self) -> int:
        return len(self._series)

    def __contains__(self, key: object) -> bool:
        return key in self._series

    def observe(self, path: str, key: str, state: FileState, now: float) -> None:
        """A file of series ``key`` was seen with ``state``; a change restarts the clock."""
        old_key = self._owner.get(path)
        if old_key is not None and old_key != key:
            self.forget(path)
        pending = self._series.get(key)
        if pending is None:
            pending = self._series[key] = PendingSeries(key, first_seen=now, last_change=now)
        if pending.files.get(path) != state:
            pending.files[path] = state
            pending.last_change = now
            pending.not_before = 0.0
        self._owner[path] = key

    def forget(self, path: str) -> None:
        """A file vanished (or moved to another series) before its series was taken."""
        key = self._owner.pop(path, None)
        if key is None:
            return
        pending = self._series.get(key)
        if pending is not None:
            pending.files.pop(path, None)
            if not pending.files:
                del self._series[key]

    def due(self, now: float) -> list[DueSeries]:
        """Series quiet for ``stable_seconds`` and not postponed: check them for completeness."""
        out = []
        for p in self._series.values():
            if now - p.last_change >= self.stable_seconds and now >= p.not_before:
                out.append(DueSeries(p.key, dict(p.files), waited=now - p.first_seen))
        return out

    def expired(self, key: str, now: float) -> bool:
        """Still incomplete and no file changed for ``max_wait``: give up. Measured from
        the last change, so an export that is slow but progressing is never given up on."""
        p = self._series.get(key)
        return p is not None and now - p.last_change >= self.max_wait

    def pending(self) -> list[PendingSeries]:
        """The series being waited for (the watcher publishes them for the status)."""
        return list(self._series.values())

    def postpone(self, key: str, now: float) -> None:
        """The series was quiet but not whole: look again after another quiet period."""
        p = self._series.get(key)
        if p is not None:
            p.not_before = now + self.stable_seconds

    def retry_later(self, key: str, now: float, delay: float) -> None:
        """Handing the series on failed for a passing reason: look again after ``delay``."""
        p = self._series.get(key)
        if p is not None:
            p.not_before = now + delay

    def take(self, key: str) -> PendingSeries | None:
        """Remove a series that is being handed to the pipeline (or given up on)."""
        p = self._series.pop(key, None)
        if p is not None:
            for path in p.files:
                self._owner.pop(path, None)
        return p

    def next_deadline(self, now: float) -> float | None:
        """Seconds until the next series could become due; None when nothing is pending."""
        times = [
            max(p.last_change + self.stable_seconds, p.not_before) for p in self._series.values()
        ]
        if not times:
            return None
        return max(0.0, min(times) - now)
