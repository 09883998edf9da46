"""Exporting the ledger (JSON, CSV), and keeping a damaged one aside for a new start."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.vocab import AuditEvent

if TYPE_CHECKING:
    from agent.ledger import Ledger


def export_text(ledger: Ledger, fmt: str) -> str:
    """The series table and the audit log, as JSON or as one CSV table.

    The CSV has a ``record`` column (``series`` or ``audit``) and the columns of both,
    with times in ISO 8601 (local time with its UTC offset), so a spreadsheet shows
    which series are where and what happened, in one file.
    """
    audit = [r.__dict__ for r in ledger.audit_rows()]
    with ledger._read() as db:
        series = [dict(r) for r in db.execute("SELECT * FROM series ORDER BY id")]
    if fmt == "json":
        return json.dumps({"series": series, "audit": audit, "head": ledger.head()},
                          indent=2, default=str)
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


def keep_aside(path: Path) -> Path:
    """Move a damaged ledger (database, WAL, shared memory and head file) aside, under one
    dated name, and return the database's new path. Nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    for suffix in ("", "-wal", "-shm", ".head"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(kept.with_name(kept.name + suffix))
    return kept


def rebuild(path: Path, key: bytes | None = None) -> tuple[Path, Ledger]:
    """Keep the damaged ledger aside and start a new one that says so in its first row."""
    kept = keep_aside(path)
    digest = hashlib.sha256()
    if kept.exists():
        with open(kept, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    from agent.ledger import Ledger

    ledger = Ledger(path, key)
    ledger.audit(AuditEvent.LEDGER_REBUILT, kept=kept.name, sha256=digest.hexdigest())
    return kept, ledger
