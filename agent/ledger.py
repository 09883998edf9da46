"""The local ledger: series states, the files they were made of, and the audit log.

SQLite in WAL mode with ``synchronous=FULL`` (an acknowledged row survives kill -9 and
power loss), one connection guarded by a lock (the agent's few threads write rarely, in
short transactions). The audit log is append-only - triggers refuse UPDATE and DELETE -
and chained with keyed hashes, its head also kept in a file beside the database
(:mod:`agent.ledger_chain`); series rows are sealed with a keyed hash of their values. So
``clinic2cloud ledger verify`` detects an edited, removed or forged row, a truncated file,
a dropped table and a lost write-ahead log. The schema is versioned
(:mod:`agent.ledger_schema`).

Every SQLite error is converted here: a full disk is :class:`~agent.errors.DiskFull`
(retried), a busy database a :class:`~agent.errors.TransientFault`, a damaged one
:class:`~agent.errors.LedgerDamaged` naming the way out. Text is decoded leniently, so a
corrupted byte shows up as a failed check, not a ``UnicodeDecodeError``.

Nothing here is PHI: series are known by a keyed hash of their UIDs, files by a keyed hash
of their export path, patients by their pseudonym.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent import ledger_check
from agent.diskspace import free_space_problem
from agent.errors import LedgerDamaged, StartupError, TransientFault
from agent.keys import installation_secret
from agent.ledger_chain import GENESIS, AuditRow, Head, HeadFile, chain_key, row_mac
from agent.ledger_errors import convert, damaged
from agent.ledger_export import export_text, keep_aside, rebuild
from agent.ledger_reexports import ReexportRecords
from agent.ledger_rows import (
    UPDATABLE,
    BadRow,
    IllegalTransition,
    SeriesRow,
    audit_row,
    series_row,
)
from agent.ledger_schema import MIGRATIONS, SCHEMA_VERSION, TABLES, MigrationContext, version_of
from agent.vocab import FINAL, UNFINISHED, AuditEvent, SeriesState, may_move

log = logging.getLogger(__name__)

# Short names for the states (the vocabulary lives in agent.vocab).
STABLE = SeriesState.STABLE
STAGED = SeriesState.STAGED
PROCESSED = SeriesState.PROCESSED
VERIFIED = SeriesState.VERIFIED
DELIVERED = SeriesState.DELIVERED
WITHHELD = SeriesState.WITHHELD
QUARANTINED = SeriesState.QUARANTINED
__all__ = ["FINAL", "GENESIS", "UNFINISHED", "AuditRow", "IllegalTransition", "Ledger",
           "SeriesRow", "keep_aside", "rebuild"]


#: What a damaged database can raise: SQLite's errors, and a UnicodeDecodeError when an
#: error message quotes corrupted schema text (the sqlite3 module decodes it as UTF-8).
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError, BadRow)


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Ledger(ReexportRecords):
    """The agent's SQLite ledger. Thread-safe; every method is one short transaction.

    ``key`` is the installation secret (by default read from ``installation.key`` beside
    the database, created if missing). ``check=False`` opens a damaged ledger anyway, for
    ``ledger verify`` and ``ledger export``. ``durable=False`` (the one-shot command's
    throw-away ledger in a temporary folder) skips the per-transaction fsync: nothing
    resumes from that ledger.
    """

    def __init__(self, path: Path, key: bytes | None = None, *, check: bool = True,
                 durable: bool = True) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"the state folder {path.parent} cannot be created "
                               f"({exc.strerror}); check its permissions") from None
        self._key = chain_key(key if key is not None
                              else installation_secret(path.parent / "installation.key"))
        self._durable = durable
        self.head_file = HeadFile(path.with_name(path.name + ".head"), self._key,
                                  durable=durable)
        self._pending_head: Head | None = None
        self._db = self._connect(path)
        try:
            self._open(check)
        except BaseException:
            self._db.close()
            raise

    def _open(self, check: bool) -> None:
        """Migrate to the current schema and, with ``check``, refuse a damaged ledger."""
        try:
            if check and version_of(self._db) == 0:
                head, _ = self.head_file.read()
                if head is not None and head.seq > 0:
                    raise self.damaged(
                        f"it is empty, but {head.seq} audit rows were written to it (the "
                        "file was truncated or replaced)")
            self._migrate()
            missing = [t for t in TABLES if not self._has_table(t)]
        except _DB_ERRORS as exc:
            raise self._opening_error(exc) from None
        if not check:
            return
        if missing:
            raise self.damaged(f"its {', '.join(missing)} table was dropped")
        problems = self.verify_head()
        if problems:
            raise self.damaged(problems[0])

    def _connect(self, path: Path) -> sqlite3.Connection:
        problem = free_space_problem(path.parent)
        if problem:
            raise StartupError(problem)
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                 timeout=30)
            db.row_factory = sqlite3.Row
            db.text_factory = _lenient_text
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'OFF'}")
        except _DB_ERRORS as exc:
            raise self._opening_error(exc) from None
        return db

    def _opening_error(self, exc: Exception) -> Exception:
        err = convert(exc, self.path)
        if isinstance(err, TransientFault):  # at start a full or busy disk is fatal
            return StartupError(f"the ledger {self.path} cannot be opened: {err}")
        return err

    def damaged(self, why: str) -> LedgerDamaged:
        """The one-line error for this ledger being damaged, with the way out."""
        return damaged(self.path, why)

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = ?", (name,)).fetchone() is not None

    def _migrate(self) -> None:
        version = version_of(self._db)
        if version > SCHEMA_VERSION:
            raise StartupError(
                f"the ledger {self.path} was written by a newer Clinic2Cloud (schema "
                f"{version}; this version knows {SCHEMA_VERSION}): install the newer version")
        ctx = MigrationContext(append=lambda db, event, detail: self._append(
            db, None, event, detail), seal_all=self._seal_all)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx() as db:
                MIGRATIONS[target - 1](db, ctx)
                db.execute(f"PRAGMA user_version = {target}")
            log.info("ledger schema upgraded to version %d", target)
        if version == 0 and not self.head_file.path.exists():
            self.head_file.write(Head(0, GENESIS))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except _DB_ERRORS as exc:
                raise convert(exc, self.path) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._pending_head = None
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed COMMIT already rolled back
                if isinstance(exc, sqlite3.Error):
                    raise convert(exc, self.path) from None
                raise
            head, self._pending_head = self._pending_head, None
            if head is not None:
                self._write_head(head)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except _DB_ERRORS as exc:
                raise convert(exc, self.path) from None

    def _write_head(self, head: Head) -> None:
        try:
            self.head_file.write(head)
        except OSError as exc:  # the next commit writes it again; verify tells meanwhile
            log.warning("the ledger's head file could not be written (%s)", exc.strerror)

    # -- audit log -------------------------------------------------------------------------

    def _append(self, db: sqlite3.Connection, series_id: int | None, event: str,
                detail: dict[str, Any] | None = None) -> None:
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev, seq = (last["hash"], last["seq"] + 1) if last else (GENESIS, 1)
        text = json.dumps(detail or {}, sort_keys=True)
        ts = round(time.time(), 6)
        h = row_mac(self._key, prev, seq, ts, series_id, event, text)
        db.execute(
            "INSERT INTO audit (seq, ts, series_id, event, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, series_id, event, text, prev, h),
        )
        self._pending_head = Head(seq, h)

    def audit(self, event: str, series_id: int | None = None, **detail: Any) -> None:
        """Append one event to the audit log. ``detail`` must hold no PHI."""
        with self._tx() as db:
            self._append(db, series_id, event, detail)

    def audit_many(self, series_id: int | None,
                   events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Append several events in one transaction (one commit, one head write: a
        stage's events are recorded together). ``detail`` must hold no PHI."""
        if not events:
            return
        with self._tx() as db:
            for event, detail in events:
                self._append(db, series_id, event, detail)

    def head(self) -> str:
        """The hash of the newest audit row: the chain's head, quoted in manifests."""
        with self._read() as db:
            row = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return row["hash"] if row else GENESIS

    def audit_rows(self) -> list[AuditRow]:
        with self._read() as db:
            if not self._has_table("audit"):
                return []
            return [audit_row(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]

    def verify_head(self) -> list[str]:
        """Whether the newest rows reach the head the head file recorded (cheap: at start)."""
        head, problem = self.head_file.read()
        with self._read() as db:
            if not self._has_table("audit"):
                return ["its audit table was dropped"]
            seqs = {head.seq} if head is not None else set()
            newest = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
            if newest is not None:
                seqs.add(int(newest))
            marks = ",".join("?" * len(seqs))
            rows = [audit_row(r) for r in db.execute(
                f"SELECT * FROM audit WHERE seq IN ({marks}) ORDER BY seq",
                tuple(seqs)).fetchall()] if seqs else []
        return ledger_check.head_problems(rows, head, problem)

    def verify_chain(self) -> list[str]:
        """Problems in the audit chain and its head (empty when intact)."""
        rows = self.audit_rows()
        head, problem = self.head_file.read()
        return ledger_check.chain_problems(rows, self._key, head, problem)

    def verify(self) -> list[str]:
        """Every problem found: the database's own integrity check, missing tables, the
        chain, its head, and series rows against their seals and the audit log."""
        with self._read() as db:
            problems = [f"SQLite integrity check: {r[0]}" for r in
                        db.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
            problems += [f"the {t} table was dropped" for t in TABLES if not self._has_table(t)]
            series = ([dict(r) for r in db.execute("SELECT * FROM series ORDER BY id")]
                      if self._has_table("series") else [])
            files = (ledger_check.files_by_series(db) if self._has_table("files") else {})
        rows = self.audit_rows()
        problems += self.verify_chain()
        problems += ledger_check.series_problems(series, files, rows, self._key)
        return problems

    # -- series ----------------------------------------------------------------------------

    def _get(self, db: sqlite3.Connection, series_id: int) -> SeriesRow:
        row = db.execute("SELECT * FROM series WHERE id = ?", (series_id,)).fetchone()
        if row is None:
            raise KeyError(series_id)
        return series_row(row)

    def _seal(self, db: sqlite3.Connection, series_id: int) -> SeriesRow:
        """Recompute the keyed seal of one series row (after any change to it)."""
        row = db.execute("SELECT * FROM series WHERE id = ?", (series_id,)).fetchone()
        if row is None:
            raise KeyError(series_id)
        mac = ledger_check.series_mac(self._key, dict(row),
                                      ledger_check.files_of(db, series_id))
        db.execute("UPDATE series SET mac = ? WHERE id = ?", (mac, series_id))
        return series_row(row)

    def _seal_all(self, db: sqlite3.Connection) -> None:
        for (series_id,) in db.execute("SELECT id FROM series").fetchall():
            self._seal(db, series_id)

    def get(self, series_id: int) -> SeriesRow:
        with self._read() as db:
            return self._get(db, series_id)

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
            created = self._seal(db, series_id)
            self._append(db, series_id, STABLE, {"series": key, "version": created.version,
                                                 "files": len(files)})
        return created

    def set_state(self, series_id: int, state: SeriesState, *, reason: str = "",
                  code: str = "", **fields: Any) -> SeriesRow:
        """Move a series to ``state``, with an audit row. ``fields`` update columns.

        Raises :class:`IllegalTransition` for a change :data:`agent.vocab.TRANSITIONS`
        does not list (a bug in the caller: nothing is written).
        """
        bad = set(fields) - UPDATABLE
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
            return self._seal(db, series_id)

    def bump_attempts(self, series_id: int) -> int:
        with self._tx() as db:
            db.execute("UPDATE series SET attempts = attempts + 1 WHERE id = ?", (series_id,))
            return int(self._seal(db, series_id).attempts)

    def begin_attempt(self, series_id: int) -> int:
        """Count a processing attempt as started; how many started and never finished
        (including this one). A crash, kill or worker death leaves it counted."""
        with self._tx() as db:
            db.execute("UPDATE series SET attempts = attempts + 1, "
                       "unfinished = unfinished + 1 WHERE id = ?", (series_id,))
            row = self._seal(db, series_id)
            if row.unfinished > 1:
                self._append(db, series_id, AuditEvent.ATTEMPT_CRASHED,
                             {"unfinished": row.unfinished - 1})
            return row.unfinished

    def end_attempt(self, series_id: int) -> None:
        """The attempt ended in the normal way (whatever its outcome)."""
        with self._tx() as db:
            db.execute("UPDATE series SET unfinished = 0 WHERE id = ?", (series_id,))
            self._seal(db, series_id)

    def in_state(self, *states: SeriesState) -> list[SeriesRow]:
        marks = ",".join("?" * len(states))
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY id", states
            ).fetchall()
            return [series_row(r) for r in rows]

    def recent(self, limit: int = 50) -> list[SeriesRow]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM series ORDER BY updated DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [series_row(r) for r in rows]

    def for_patient(self, pseudonym: str) -> list[SeriesRow]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM series WHERE patient = ? ORDER BY id", (pseudonym,)
            ).fetchall()
            return [series_row(r) for r in rows]

    def delivered_content(self, key: str) -> dict[str, str]:
        """content hash -> location of every delivered version of series ``key``."""
        with self._read() as db:
            rows = db.execute(
                "SELECT content_sha256, location FROM series WHERE key = ? AND state = ?",
                (key, DELIVERED),
            ).fetchall()
        return {r["content_sha256"]: r["location"] for r in rows if r["content_sha256"]}

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """How many series are in each state (delivered and withheld ones only if updated
        after ``since``: they are endings nobody acts on)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT state, COUNT(*) AS n FROM series "
                "WHERE state NOT IN (?, ?) OR updated >= ? GROUP BY state",
                (DELIVERED, WITHHELD, since),
            ).fetchall()
        return {r["state"]: r["n"] for r in rows}

    # -- files -----------------------------------------------------------------------------

    def handled_files(self) -> dict[str, tuple[int, int, str]]:
        """path hash -> (size, mtime_ns, series key) of every file already taken into a
        series version: the watcher skips these unless they change."""
        with self._read() as db:
            rows = db.execute(
                "SELECT f.path_hash, f.size, f.mtime_ns, s.key FROM files f "
                "JOIN series s ON s.id = f.series_id "
                "WHERE s.state != ? ORDER BY f.series_id",
                (STABLE,),
            ).fetchall()
        return {r["path_hash"]: (r["size"], r["mtime_ns"], r["key"]) for r in rows}

    # -- settings --------------------------------------------------------------------------

    def setting(self, name: str, default: str = "") -> str:
        with self._read() as db:
            row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO settings (name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    # -- export ----------------------------------------------------------------------------

    def export(self, fmt: str) -> str:
        """The series table and the audit log, as JSON or as one CSV table."""
        return export_text(self, fmt)
