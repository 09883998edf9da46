"""Which delivered series await results, and where each one is (``results.sqlite3``).

One row per delivered location (pseudonymous), its :class:`~agent.vocab.ResultsState`, when
it was delivered, when to look next, how often it was looked at, the results' content hash
and the reason of a failure (sentences without PHI). The ledger's audit log records every
change; this table is only the poller's working memory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import FatalError
from agent.vocab import ResultsState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS expected (
    location TEXT PRIMARY KEY,
    series_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    next_look REAL NOT NULL,
    looks INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    content_sha256 TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS expected_next ON expected(state, next_look);
"""

#: States in which the poller keeps looking.
WATCHED = (ResultsState.WAITING, ResultsState.TIMED_OUT)


@dataclass(frozen=True)
class Expected:
    location: str
    series_id: int
    state: ResultsState
    since: float
    next_look: float
    looks: int
    attempts: int
    content_sha256: str
    code: str
    reason: str
    updated: float


class Tracker:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FatalError(f"the results tracker {path} cannot be opened "
                             f"({type(exc).__name__}); check the state folder") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def expect(self, location: str, series_id: int) -> bool:
        """Start waiting for ``location``'s results; False if it is already known (an
        identical redelivery, or a restart)."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO expected (location, series_id, state, since, next_look, "
                "updated) VALUES (?, ?, ?, ?, ?, ?)",
                (location, series_id, ResultsState.WAITING, now, now, now))
        return cur.rowcount == 1

    def get(self, location: str) -> Expected | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM expected WHERE location = ?",
                                   (location,)).fetchone()
        return None if row is None else _row(row)

    def for_series(self, series_id: int) -> Expected | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM expected WHERE series_id = ? "
                                   "ORDER BY since DESC", (series_id,)).fetchone()
        return None if row is None else _row(row)

    def due(self, now: float) -> list[Expected]:
        marks = ",".join("?" * len(WATCHED))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM expected WHERE state IN ({marks}) AND next_look <= ? "
                "ORDER BY next_look", (*WATCHED, now)).fetchall()
        return [_row(r) for r in rows]

    def next_due(self) -> float | None:
        marks = ",".join("?" * len(WATCHED))
        with self._lock:
            row = self._db.execute(
                f"SELECT MIN(next_look) FROM expected WHERE state IN ({marks})",
                WATCHED).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def looked(self, location: str, next_look: float, *, attempts: int | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE expected SET looks = looks + 1, next_look = ?, "
                "attempts = COALESCE(?, attempts) WHERE location = ?",
                (next_look, attempts, location))

    def set_state(self, location: str, state: ResultsState, *, code: str = "",
                  reason: str = "", content_sha256: str = "", next_look: float | None = None
                  ) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE expected SET state = ?, code = ?, reason = ?, updated = ?, "
                "content_sha256 = COALESCE(NULLIF(?, ''), content_sha256), "
                "next_look = COALESCE(?, next_look) WHERE location = ?",
                (state, code, reason, now, content_sha256, next_look, location))

    def restart(self, location: str) -> None:
        """Wait again from now (a retry a person asked for)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE expected SET state = ?, since = ?, next_look = ?, looks = 0, "
                "code = '', reason = '', updated = ? WHERE location = ?",
                (ResultsState.WAITING, now, now, now, location))

    def all(self) -> list[Expected]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM expected ORDER BY since").fetchall()
        return [_row(r) for r in rows]


def _row(row: sqlite3.Row) -> Expected:
    values = dict(row)
    values["state"] = ResultsState(values["state"])
    return Expected(**values)
