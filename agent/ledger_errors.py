"""SQLite errors converted into Clinic2Cloud's error families, at the ledger's boundary.

SQLite's result code says what kind of trouble it is: a full disk (wait for space), a busy
database (retry), a damaged file (stop, with the way out), a folder that cannot be
written (stop). Messages never quote SQLite's text beyond its error name.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.diskspace import LEDGER_RESERVE, free_bytes, free_space_problem, human
from agent.errors import (
    Clinic2CloudError,
    DiskFull,
    LedgerDamaged,
    StartupError,
    TransientFault,
)

_PERM, _BUSY, _LOCKED, _READONLY, _IOERR = 3, 5, 6, 8, 10
_CORRUPT, _FULL, _CANTOPEN, _NOTADB = 11, 13, 14, 26


def damaged(path: Path, why: str) -> LedgerDamaged:
    """The one-line error for a damaged ledger, with the way out."""
    return LedgerDamaged(
        f"the ledger {path} is damaged: {why}. Run `clinic2cloud ledger verify` to see "
        "every problem, then `clinic2cloud ledger rebuild` to keep it aside and start a new "
        "one (series still in the export folder are found again; the target recognises "
        "what it already holds)")


def _full(path: Path) -> DiskFull:
    try:
        free = human(free_bytes(path.parent))
    except OSError:
        free = "no space"
    return DiskFull(f"the disk holding the ledger ({path.parent}) is full: {free} free, "
                    f"{human(LEDGER_RESERVE)} needed. Work waits and resumes by itself when "
                    "space is freed", retry_after=30.0)


def convert(exc: Exception, path: Path) -> Clinic2CloudError:
    """The Clinic2Cloud error for a SQLite error on the ledger at ``path`` (or a value
    that came out of it damaged)."""
    if isinstance(exc, UnicodeDecodeError):
        return damaged(path, "its schema or an error message holds bytes that are not text")
    if not isinstance(exc, sqlite3.Error):
        return damaged(path, str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else -1
    name = str(getattr(exc, "sqlite_errorname", "") or type(exc).__name__)
    if primary == _FULL:
        return _full(path)
    if primary in (_BUSY, _LOCKED):
        return TransientFault(f"the ledger is busy ({name}); retrying", retry_after=5.0)
    if primary == _IOERR:
        if free_space_problem(path.parent):
            return _full(path)
        return TransientFault(f"the disk holding the ledger reported an error ({name}); "
                              "retrying", retry_after=30.0)
    if primary in (_READONLY, _CANTOPEN, _PERM):
        return StartupError(f"the ledger {path} cannot be written ({name}): check that "
                            f"{path.parent} exists and belongs to this user")
    if primary in (_CORRUPT, _NOTADB):
        return damaged(path, f"SQLite reports {name}")
    # Anything else (a missing table or column, a malformed page...): not a passing fault.
    return damaged(path, f"SQLite reports {name}")
