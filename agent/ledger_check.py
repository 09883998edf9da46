"""Checking a ledger: its chain, its head, and its series rows against the audit log.

Series rows change as a series moves on, so they cannot be chained like audit rows; each
is sealed instead with a keyed hash of its values and of its files, recomputed by the
ledger on every change. ``verify`` checks the seals, and that every series' state is the
one its newest audit row records - so an edit of the series table shows even when done
with the key's help short of rewriting the audit chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from agent.ledger_chain import AuditRow, Head, check_chain, check_head, same, value_mac
from agent.vocab import SeriesState

#: The columns a series seal covers, in order. A migration that adds a column to this list
#: must reseal every row (``MigrationContext.seal_all``).
SEALED = ("id", "key", "version", "state", "reason", "code", "created", "updated",
          "file_count", "modality", "patient", "study", "series", "content_sha256",
          "location", "render", "attempts", "unfinished")
_STATES = frozenset(s.value for s in SeriesState)


def files_of(db: sqlite3.Connection, series_id: int) -> str:
    """A digest of the files recorded for one series."""
    rows = db.execute("SELECT path_hash, size, mtime_ns FROM files WHERE series_id = ? "
                      "ORDER BY path_hash", (series_id,)).fetchall()
    return _digest(f"{r[0]}:{r[1]}:{r[2]}" for r in rows)


def files_by_series(db: sqlite3.Connection) -> dict[int, str]:
    """The digest of the files of every series (one query)."""
    grouped: dict[int, list[str]] = {}
    for sid, path_hash, size, mtime in db.execute(
            "SELECT series_id, path_hash, size, mtime_ns FROM files ORDER BY path_hash"):
        grouped.setdefault(int(sid), []).append(f"{path_hash}:{size}:{mtime}")
    return {sid: _digest(lines) for sid, lines in grouped.items()}


def _digest(lines: Any) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(str(line).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def series_mac(key: bytes, row: dict[str, Any], files_digest: str) -> str:
    return value_mac(key, "series", *(row.get(c) for c in SEALED), files_digest)


def head_problems(newest: list[AuditRow], head: Head | None, problem: str) -> list[str]:
    """Quick check at open: do the newest rows reach the recorded head?"""
    return check_head(newest, head, problem) if (newest or head or problem) else []


def chain_problems(rows: list[AuditRow], key: bytes, head: Head | None,
                   problem: str) -> list[str]:
    return check_chain(rows, key) + check_head(rows, head, problem)


def _last_states(rows: list[AuditRow]) -> dict[int, tuple[str, dict[str, Any]]]:
    """series id -> (state, detail) of its newest state row."""
    out: dict[int, tuple[str, dict[str, Any]]] = {}
    for row in rows:
        if row.series_id is None or row.event not in _STATES:
            continue
        try:
            detail = json.loads(row.detail)
        except ValueError:
            detail = {}
        out[row.series_id] = (row.event, detail if isinstance(detail, dict) else {})
    return out


def series_problems(series: list[dict[str, Any]], files: dict[int, str],
                    rows: list[AuditRow], key: bytes) -> list[str]:
    """Series rows whose seal is broken, whose state or delivery is not the one the audit
    log records, and series the audit log knows that the table lost."""
    problems: list[str] = []
    last = _last_states(rows)
    empty = _digest([])
    for row in series:
        sid = int(row["id"])
        mac = series_mac(key, row, files.get(sid, empty))
        if not same(row.get("mac"), mac):
            problems.append(f"series row {sid} was changed outside the agent (its seal does "
                            "not match)")
        recorded = last.pop(sid, None)
        if recorded is None:
            problems.append(f"series row {sid} has no record in the audit log")
            continue
        state, detail = recorded
        if row["state"] != state:
            problems.append(f"series row {sid} says {row['state']}, the audit log {state}")
        for name in ("location", "content_sha256"):
            if name in detail and detail[name] != row.get(name):
                problems.append(f"series row {sid}: its {name} differs from the audit log")
    problems += [f"series {sid} is in the audit log but missing from the series table"
                 for sid in sorted(last)]
    return problems
