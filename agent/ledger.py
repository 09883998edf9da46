"""The local ledger: series states, the files they were made of, and the audit log.

SQLite in WAL mode, one connection guarded by a lock (the agent's few threads write
rarely, in short transactions). The audit log is append-only - triggers refuse UPDATE and
DELETE - and hash-chained: every row carries the SHA-256 of the previous row, so
``clinic2cloud ledger verify`` detects an edited or removed row.

Nothing here is PHI: series are known by a keyed hash of their UIDs, files by a keyed hash
of their export path, patients by their pseudonym.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import FatalError
from agent.vocab import FINAL, UNFINISHED, AuditEvent, SeriesState, may_move

GENESIS = "0" * 64

# Short names for the states (the vocabulary lives in agent.vocab).
STABLE = SeriesState.STABLE
STAGED = SeriesState.STAGED
PROCESSED = SeriesState.PROCESSED
VERIFIED = SeriesState.VERIFIED
DELIVERED = SeriesState.DELIVERED
WITHHELD = SeriesState.WITHHELD
QUARANTINED = SeriesState.QUARANTINED
__all__ = ["FINAL", "UNFINISHED", "Ledger", "SeriesRow", "AuditRow", "IllegalTransition"]


class IllegalTransition(RuntimeError):
    """A state change the transition table (:data:`agent.vocab.TRANSITIONS`) forbids: a bug."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    file_count INTEGER NOT NULL DEFAULT 0,
    modality TEXT NOT NULL DEFAULT '',
    patient TEXT NOT NULL DEFAULT '',
    study TEXT NOT NULL DEFAULT '',
    series TEXT NOT NULL DEFAULT '',
    content_sha256 TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    render TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (key, version)
);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE INDEX IF NOT EXISTS series_patient ON series(patient);
CREATE TABLE IF NOT EXISTS files (
    series_id INTEGER NOT NULL REFERENCES series(id),
    path_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    PRIMARY KEY (series_id, path_hash)
);
CREATE INDEX IF NOT EXISTS files_path ON files(path_hash);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    series_id INTEGER,
    event TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- What each series version holds, by instance: keyed hashes of the source SOP Instance UID
-- and of the source content, so a re-export is recognised (agent/reexport.py).
CREATE TABLE IF NOT EXISTS instances (
    series_id INTEGER NOT NULL REFERENCES series(id),
    uid_hash TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (series_id, uid_hash)
);
-- Exports found identical to a series already delivered (or being delivered): nothing sent.
CREATE TABLE IF NOT EXISTS reexports (
    series_id INTEGER NOT NULL REFERENCES series(id),
    ts REAL NOT NULL,
    files INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reexports_series ON reexports(series_id);
"""


@dataclass(frozen=True)
class SeriesRow:
    id: int
    key: str
    version: int
    state: SeriesState
    reason: str
    code: str
    created: float
    updated: float
    file_count: int
    modality: str
    patient: str
    study: str
    series: str
    content_sha256: str
    location: str
    render: str
    attempts: int


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: float
    series_id: int | None
    event: str
    detail: str
    prev_hash: str
    hash: str


def _series_row(row: sqlite3.Row) -> SeriesRow:
    values = dict(row)
    values["state"] = SeriesState(values["state"])
    return SeriesRow(**values)


def _row_hash(prev: str, seq: int, ts: float, series_id: int | None, event: str,
              detail: str) -> str:
    text = f"{prev}|{seq}|{ts!r}|{'' if series_id is None else series_id}|{event}|{detail}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Ledger:
    """The agent's SQLite ledger. Thread-safe; every method is one short transaction."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        """``durable=False`` (the one-shot command's throw-away ledger in a temporary
        folder) skips the per-transaction fsync: nothing resumes from that ledger."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FatalError(
                f"the ledger {path} cannot be opened ({exc}); check that the folder is "
                "writable and the disk is not full"
            ) from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # -- audit log -------------------------------------------------------------------------

    def _append(self, db: sqlite3.Connection, series_id: int | None, event: str,
                detail: dict[str, Any] | None = None) -> None:
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev, seq = (last["hash"], last["seq"] + 1) if last else (GENESIS, 1)
        text = json.dumps(detail or {}, sort_keys=True)
        ts = round(time.time(), 6)
        h = _row_hash(prev, seq, ts, series_id, event, text)
        db.execute(
            "INSERT INTO audit (seq, ts, series_id, event, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, series_id, event, text, prev, h),
        )

    def audit(self, event: str, series_id: int | None = None, **detail: Any) -> None:
        """Append one event to the audit log. ``detail`` must hold no PHI."""
        with self._tx() as db:
            self._append(db, series_id, event, detail)

    def head(self) -> str:
        """The hash of the newest audit row: the chain's head, quoted in manifests."""
        with self._lock:
            row = self._db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return row["hash"] if row else GENESIS

    def audit_rows(self) -> list[AuditRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
        return [AuditRow(**dict(r)) for r in rows]

    def verify_chain(self) -> list[str]:
        """Problems in the hash chain (empty when intact)."""
        problems = []
        prev = GENESIS
        expected_seq = 1
        for row in self.audit_rows():
            if row.seq != expected_seq:
                problems.append(f"row {expected_seq} is missing (next row is {row.seq})")
            if row.prev_hash != prev:
                problems.append(f"row {row.seq} does not follow the row before it")
            h = _row_hash(row.prev_hash, row.seq, row.ts, row.series_id, row.event, row.detail)
            if h != row.hash:
                problems.append(f"row {row.seq} was altered after it was written")
            prev, expected_seq = row.hash, row.seq + 1
        return problems

    # -- series ----------------------------------------------------------------------------

    def _get(self, db: sqlite3.Connection, series_id: int) -> SeriesRow:
        row = db.execute("SELECT * FROM series WHERE id = ?", (series_id,)).fetchone()
        if row is None:
            raise KeyError(series_id)
        return _series_row(row)

    def get(self, series_id: int) -> SeriesRow:
        with self._lock:
            return self._get(self._db, series_id)

    def open_version(self, key: str, files: Iterable[tuple[str, int, int]]) -> SeriesRow:
        """Record a stable series ready to be staged: a new version of ``key``, or the
        unfinished one left by a crash before staging. ``files`` are
        (path hash, size, mtime_ns)."""
        files = list(files)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM series WHERE key = ? AND state = ? ORDER BY version DESC",
                (key, STABLE),
            ).fetchone()
            if row is None:
                top = db.execute("SELECT MAX(version) FROM series WHERE key = ?",
                                 (key,)).fetchone()[0]
                cur = db.execute(
                    "INSERT INTO series (key, version, state, created, updated, file_count) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key, (top or 0) + 1, STABLE, now, now, len(files)),
                )
                series_id = int(cur.lastrowid or 0)
            else:
                series_id = row["id"]
                db.execute("DELETE FROM files WHERE series_id = ?", (series_id,))
                db.execute("UPDATE series SET state = ?, updated = ?, file_count = ? "
                           "WHERE id = ?", (STABLE, now, len(files), series_id))
            db.executemany(
                "INSERT INTO files (series_id, path_hash, size, mtime_ns) VALUES (?, ?, ?, ?)",
                [(series_id, p, s, m) for p, s, m in files],
            )
            created = self._get(db, series_id)
            self._append(db, series_id, "stable", {"series": key, "version": created.version,
                                                   "files": len(files)})
        return created

    def set_state(self, series_id: int, state: SeriesState, *, reason: str = "",
                  code: str = "", **fields: Any) -> SeriesRow:
        """Move a series to ``state``, with an audit row. ``fields`` update columns.

        Raises :class:`IllegalTransition` for a change :data:`agent.vocab.TRANSITIONS`
        does not list (a bug in the caller: nothing is written).
        """
        allowed = {"modality", "patient", "study", "series", "content_sha256", "location",
                   "render", "attempts", "file_count"}
        bad = set(fields) - allowed
        if bad:
            raise TypeError(f"unknown series fields {bad}")
        state = SeriesState(state)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            old = self._get(db, series_id).state
            if not may_move(old, state):
                raise IllegalTransition(f"series {series_id}: {old} -> {state} is not allowed")
            db.execute(
                f"UPDATE series SET state = ?, reason = ?, code = ?, updated = ?"
                f"{', ' + sets if sets else ''} WHERE id = ?",
                (state, reason, code, time.time(), *fields.values(), series_id),
            )
            detail: dict[str, Any] = {k: v for k, v in fields.items() if k != "render"}
            if reason:
                detail["reason"] = reason
            if code:
                detail["code"] = code
            self._append(db, series_id, state, detail)
            return self._get(db, series_id)

    def bump_attempts(self, series_id: int) -> int:
        with self._tx() as db:
            db.execute("UPDATE series SET attempts = attempts + 1 WHERE id = ?", (series_id,))
            return int(self._get(db, series_id).attempts)

    def in_state(self, *states: SeriesState) -> list[SeriesRow]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY id", states
            ).fetchall()
        return [_series_row(r) for r in rows]

    def recent(self, limit: int = 50) -> list[SeriesRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM series ORDER BY updated DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_series_row(r) for r in rows]

    def for_patient(self, pseudonym: str) -> list[SeriesRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM series WHERE patient = ? ORDER BY id", (pseudonym,)
            ).fetchall()
        return [_series_row(r) for r in rows]

    def delivered_content(self, key: str) -> dict[str, str]:
        """content hash -> location of every delivered version of series ``key``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT content_sha256, location FROM series WHERE key = ? AND state = ?",
                (key, DELIVERED),
            ).fetchall()
        return {r["content_sha256"]: r["location"] for r in rows if r["content_sha256"]}

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """How many series are in each state (delivered and withheld ones only if updated
        after ``since``: they are endings nobody acts on)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) AS n FROM series "
                "WHERE state NOT IN (?, ?) OR updated >= ? GROUP BY state",
                (DELIVERED, WITHHELD, since),
            ).fetchall()
        return {r["state"]: r["n"] for r in rows}

    # -- files -----------------------------------------------------------------------------

    def handled_files(self) -> dict[str, tuple[int, int, str]]:
        """path hash -> (size, mtime_ns, series key) of every file already taken into a
        series version: the watcher skips these unless they change."""
        with self._lock:
            rows = self._db.execute(
                "SELECT f.path_hash, f.size, f.mtime_ns, s.key FROM files f "
                "JOIN series s ON s.id = f.series_id "
                "WHERE s.state != ? ORDER BY f.series_id",
                (STABLE,),
            ).fetchall()
        return {r["path_hash"]: (r["size"], r["mtime_ns"], r["key"]) for r in rows}

    def files_in_state(self, *states: SeriesState) -> list[tuple[int, str, str, int, int]]:
        """(series id, state, path hash, size, mtime_ns) of every file of every series version
        in ``states``: the DICOM node removes intake files once their series ended."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.state, f.path_hash, f.size, f.mtime_ns FROM files f "
                f"JOIN series s ON s.id = f.series_id WHERE s.state IN ({marks})", states,
            ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def files_of(self, series_id: int) -> list[str]:
        """The keyed path hashes of the export files series ``series_id`` was made of."""
        with self._lock:
            rows = self._db.execute("SELECT path_hash FROM files WHERE series_id = ?",
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
        with self._lock:
            rows = self._db.execute(
                "SELECT i.uid_hash, i.content_hash, s.id FROM instances i "
                f"JOIN series s ON s.id = i.series_id WHERE s.key = ? AND s.state IN ({marks}) "
                "AND s.id != ? ORDER BY s.version",
                (key, *states, -1 if exclude is None else exclude)).fetchall()
        return {r["uid_hash"]: (r["content_hash"], r["id"]) for r in rows}

    def instance_count(self, series_id: int) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM instances WHERE series_id = ?",
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
        with self._lock:
            rows = self._db.execute(
                f"SELECT series_id, MAX(ts) AS ts, COUNT(*) AS n FROM reexports "
                f"WHERE series_id IN ({marks}) GROUP BY series_id", ids).fetchall()
        return {r["series_id"]: (r["ts"], r["n"]) for r in rows}

    def recently_reexported(self, since: float) -> list[SeriesRow]:
        """Series found exported again since ``since`` (newest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.* FROM series s JOIN (SELECT series_id, MAX(ts) AS ts FROM reexports "
                "WHERE ts >= ? GROUP BY series_id) r ON r.series_id = s.id ORDER BY r.ts DESC",
                (since,)).fetchall()
        return [_series_row(r) for r in rows]

    def reexport_count(self, since: float) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM reexports WHERE ts >= ?",
                                        (since,)).fetchone()[0])

    def open_quarantine(self) -> list[SeriesRow]:
        """Quarantined series still waiting for a person: those that are the newest
        version of their series (a later export of the same series supersedes them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.* FROM series s WHERE s.state = ? AND s.version = "
                "(SELECT MAX(version) FROM series t WHERE t.key = s.key) ORDER BY s.id",
                (QUARANTINED,)).fetchall()
        return [_series_row(r) for r in rows]

    # -- settings --------------------------------------------------------------------------

    def setting(self, name: str, default: str = "") -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?",
                                   (name,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO settings (name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    # -- export ----------------------------------------------------------------------------

    def export(self, fmt: str) -> str:
        """The series table and the audit log, as JSON or as one CSV table.

        The CSV has a ``record`` column (``series`` or ``audit``) and the columns of both,
        with times in ISO 8601 (local time with its UTC offset), so a spreadsheet shows
        which series are where and what happened, in one file.
        """
        audit = [r.__dict__ for r in self.audit_rows()]
        with self._lock:
            series = [dict(r) for r in self._db.execute("SELECT * FROM series ORDER BY id")]
        if fmt == "json":
            return json.dumps({"series": series, "audit": audit, "head": self.head()}, indent=2)
        columns = ["record", "time", *[c for c in series[0] if c not in ("created", "updated")]
                   ] if series else ["record", "time"]
        columns += ["created", "event", "seq", "series_id", "detail", "prev_hash", "hash"]
        columns = list(dict.fromkeys(columns))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in series:
            writer.writerow({**row, "record": "series", "time": _iso(row["updated"]),
                             "created": _iso(row["created"])})
        for arow in audit:
            writer.writerow({**arow, "record": "audit", "time": _iso(arow["ts"])})
        return buf.getvalue()


def _iso(ts: float) -> str:
    """ISO 8601 local time with its UTC offset, to the second."""
    from datetime import datetime

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
