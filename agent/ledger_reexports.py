"""The ledger's records of instances and re-exports (issue 15: :mod:`agent.reexport`).

What each series version holds, by instance (keyed hashes of the source SOP Instance UID
and content), the exports found identical to a version already delivered, and the queries
the status and the DICOM node make of them. A mixin of :class:`agent.ledger.Ledger`, which
provides the transaction helpers declared here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from agent.ledger_rows import SeriesRow, series_row
from agent.vocab import AuditEvent, SeriesState

QUARANTINED = SeriesState.QUARANTINED


class ReexportRecords:
    """Instances and re-exports; needs the :class:`~agent.ledger.Ledger` helpers."""

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _get(self, db: sqlite3.Connection, series_id: int) -> SeriesRow:
        raise NotImplementedError

    def _seal(self, db: sqlite3.Connection, series_id: int) -> SeriesRow:
        raise NotImplementedError

    def _append(self, db: sqlite3.Connection, series_id: int | None, event: str,
                detail: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def files_in_state(self, *states: SeriesState) -> list[tuple[int, str, str, int, int]]:
        """(series id, state, path hash, size, mtime_ns) of every file of every series version
        in ``states``: the DICOM node removes intake files once their series ended."""
        marks = ",".join("?" * len(states))
        with self._read() as db:
            rows = db.execute(
                "SELECT s.id, s.state, f.path_hash, f.size, f.mtime_ns FROM files f "
                f"JOIN series s ON s.id = f.series_id WHERE s.state IN ({marks})", states,
            ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def files_of(self, series_id: int) -> list[str]:
        """The keyed path hashes of the export files series ``series_id`` was made of."""
        with self._read() as db:
            rows = db.execute("SELECT path_hash FROM files WHERE series_id = ?",
                                    (series_id,)).fetchall()
        return [r["path_hash"] for r in rows]

    # -- instances and re-exports (agent/reexport.py) -------------------------------------

    def record_instances(self, series_id: int, items: Iterable[tuple[str, str]]) -> None:
        """What version ``series_id`` holds: (uid hash, content hash) per instance."""
        with self._tx() as db:
            db.execute("DELETE FROM instances WHERE series_id = ?", (series_id,))
            db.executemany("INSERT OR REPLACE INTO instances (series_id, uid_hash, "
                           "content_hash) VALUES (?, ?, ?)",
                           [(series_id, u, c) for u, c in items])

    def known_instances(self, key: str, states: Iterable[SeriesState], *,
                        exclude: int | None = None) -> dict[str, tuple[str, int]]:
        """uid hash -> (content hash, series id) over the versions of ``key`` in
        ``states``; where versions differ, the newest wins."""
        states = list(states)
        marks = ",".join("?" * len(states))
        with self._read() as db:
            rows = db.execute(
                "SELECT i.uid_hash, i.content_hash, s.id FROM instances i "
                f"JOIN series s ON s.id = i.series_id WHERE s.key = ? AND s.state IN ({marks}) "
                "AND s.id != ? ORDER BY s.version",
                (key, *states, -1 if exclude is None else exclude)).fetchall()
        return {r["uid_hash"]: (r["content_hash"], r["id"]) for r in rows}

    def instance_count(self, series_id: int) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM instances WHERE series_id = ?",
                                        (series_id,)).fetchone()[0])

    def note_reexport(self, series_id: int, files: Iterable[tuple[str, int, int]],
                      **detail: Any) -> SeriesRow:
        """An export identical to series ``series_id`` was found: nothing is sent. Its files
        (path hash, size, mtime_ns) are recorded as handled; the audit log says so."""
        files = list(files)
        with self._tx() as db:
            row = self._get(db, series_id)
            db.executemany(
                "INSERT OR REPLACE INTO files (series_id, path_hash, size, mtime_ns) "
                "VALUES (?, ?, ?, ?)", [(series_id, p, sz, m) for p, sz, m in files])
            db.execute("INSERT INTO reexports (series_id, ts, files) VALUES (?, ?, ?)",
                       (series_id, time.time(), len(files)))
            row = self._seal(db, series_id)  # its files changed
            self._append(db, series_id, AuditEvent.ALREADY_DELIVERED,
                         {"series": row.key, "version": row.version, "files": len(files),
                          **detail})
            return row

    def reexports(self, series_ids: Iterable[int]) -> dict[int, tuple[float, int]]:
        """series id -> (time of the latest re-export, how many) for those re-exported."""
        ids = list(series_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._read() as db:
            rows = db.execute(
                f"SELECT series_id, MAX(ts) AS ts, COUNT(*) AS n FROM reexports "
                f"WHERE series_id IN ({marks}) GROUP BY series_id", ids).fetchall()
        return {r["series_id"]: (r["ts"], r["n"]) for r in rows}

    def recently_reexported(self, since: float) -> list[SeriesRow]:
        """Series found exported again since ``since`` (newest first)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT s.* FROM series s JOIN (SELECT series_id, MAX(ts) AS ts FROM reexports "
                "WHERE ts >= ? GROUP BY series_id) r ON r.series_id = s.id ORDER BY r.ts DESC",
                (since,)).fetchall()
            return [series_row(r) for r in rows]

    def reexport_count(self, since: float) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM reexports WHERE ts >= ?",
                                        (since,)).fetchone()[0])

    def open_quarantine(self) -> list[SeriesRow]:
        """Quarantined series still waiting for a person: those that are the newest
        version of their series (a later export of the same series supersedes them)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT s.* FROM series s WHERE s.state = ? AND s.version = "
                "(SELECT MAX(version) FROM series t WHERE t.key = s.key) ORDER BY s.id",
                (QUARANTINED,)).fetchall()
            return [series_row(r) for r in rows]
