"""The ledger's schema and its migrations, versioned with ``PRAGMA user_version``.

A migration is a function that brings a database from version ``n - 1`` to ``n`` inside
one transaction, so a crash mid-migration leaves the old version intact. Add one at the
end of :data:`MIGRATIONS` (never edit a released one) and the ledger upgrades itself on
open. A ledger written by a newer Clinic2Cloud is refused rather than damaged.

Schema 1 is the first release's (unkeyed SHA-256 chain, user_version 0). Schema 2 keys
the chain and seals series rows with a MAC; it also counts unfinished processing attempts
(a series whose worker keeps crashing is quarantined as poison). Schema 3 records the
instances of each series version and the re-exports found identical (issue 15).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

SCHEMA_1 = """
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
"""

#: Schema 3: what each series version holds, by instance (keyed hashes of the source SOP
#: Instance UID and content), so a re-export is recognised (agent/reexport.py); and the
#: exports found identical to a series already delivered (nothing sent).
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS instances (
    series_id INTEGER NOT NULL REFERENCES series(id),
    uid_hash TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (series_id, uid_hash)
);
CREATE TABLE IF NOT EXISTS reexports (
    series_id INTEGER NOT NULL REFERENCES series(id),
    ts REAL NOT NULL,
    files INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reexports_series ON reexports(series_id);
"""

#: Tables every ledger of the current schema has: one missing means it was dropped.
TABLES = ("series", "files", "audit", "settings", "instances", "reexports")


@dataclass(frozen=True)
class MigrationContext:
    """What a migration may need besides the database."""

    #: Appends an audit row inside the migration's transaction (event, detail).
    append: Callable[[sqlite3.Connection, str, dict[str, object]], None]
    #: Recomputes the MAC of every series row.
    seal_all: Callable[[sqlite3.Connection], None]


def _to_1(db: sqlite3.Connection, ctx: MigrationContext) -> None:
    for statement in _statements(SCHEMA_1):
        db.execute(statement)


def _to_2(db: sqlite3.Connection, ctx: MigrationContext) -> None:
    db.execute("ALTER TABLE series ADD COLUMN mac TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE series ADD COLUMN unfinished INTEGER NOT NULL DEFAULT 0")
    ctx.seal_all(db)
    legacy = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    if legacy:
        ctx.append(db, "chain-keyed", {"legacy_rows": int(legacy), "at": round(time.time())})


def _to_3(db: sqlite3.Connection, ctx: MigrationContext) -> None:
    for statement in _statements(SCHEMA_3):
        db.execute(statement)


#: MIGRATIONS[n - 1] brings a ledger from version n - 1 to n.
MIGRATIONS: tuple[Callable[[sqlite3.Connection, MigrationContext], None], ...] = (
    _to_1,
    _to_2,
    _to_3,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """The statements of a schema script (triggers hold ';' inside BEGIN ... END)."""
    out: list[str] = []
    buf = ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def version_of(db: sqlite3.Connection) -> int:
    """The schema version of an open database (schema-1 ledgers have user_version 0)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        has_audit = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'").fetchone()
        return 1 if has_audit else 0
    return version

