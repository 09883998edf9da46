"""Persistent upload progress for the Azure target: what the service has confirmed.

One SQLite file (``<state>/uploads.sqlite3``, WAL) remembers, per blob of a target
(endpoint + container), the content it is meant to hold (SHA-256, size, block size), the
blocks the service confirmed as staged and whether the blob was committed. It is what makes
an upload resume after a crash, ``kill -9`` or a reboot without re-sending blocks: an
upload-only SAS cannot list uncommitted blocks (Get Block List needs *read*), so the agent
must remember them itself.

Holds blob names (pseudonyms only) and hashes: no PHI, no secrets.

``synchronous=NORMAL`` in WAL mode survives a process crash intact; a power cut may lose the
last few records, which only means a block is sent again or a commit meets its own blob
(409, resolved by the caller) - never a wrong answer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from agent.errors import FatalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    target     TEXT    NOT NULL,
    blob       TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    state      INTEGER NOT NULL DEFAULT 0,
    md5        TEXT    NOT NULL DEFAULT '',
    updated    REAL    NOT NULL,
    PRIMARY KEY (target, blob)
);
CREATE TABLE IF NOT EXISTS blocks (
    target TEXT    NOT NULL,
    blob   TEXT    NOT NULL,
    idx    INTEGER NOT NULL,
    PRIMARY KEY (target, blob, idx)
) WITHOUT ROWID;
"""


class BlobState(IntEnum):
    """Where one blob stands."""

    #: Upload begun: some blocks may be staged, nothing committed that we know of.
    STARTED = 0
    #: The service confirmed the commit (or held identical content already).
    COMMITTED = 1
    #: The name is taken by content that is not ours (or cannot be shown to be ours).
    FOREIGN = 2


@dataclass(frozen=True)
class UploadRecord:
    """What the store knows about one blob."""

    blob: str
    sha256: str
    size: int
    block_size: int
    state: BlobState
    #: Base64 Content-MD5 of the whole content, known once committed.
    md5: str
    #: Indexes of the blocks the service confirmed as staged (not yet committed).
    staged: frozenset[int]

    def holds(self, sha256: str, size: int) -> bool:
        """Whether this record is about exactly this content."""
        return self.sha256 == sha256 and self.size == size


class ProgressStore:
    """Thread-safe access to the progress file; several processes may share it (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise FatalError(
                f"cannot open the upload progress file {path} ({exc}); "
                "check that the agent's state folder is writable"
            ) from None

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise FatalError(
                f"the upload progress file {self.path} cannot be used ({exc}); "
                "check the disk and the agent's state folder"
            ) from None

    def get(self, target: str, blob: str) -> UploadRecord | None:
        rows = self._exec(
            "SELECT sha256, size, block_size, state, md5 FROM uploads "
            "WHERE target = ? AND blob = ?",
            (target, blob),
        )
        if not rows:
            return None
        sha256, size, block_size, state, md5 = rows[0]
        staged = self._exec(
            "SELECT idx FROM blocks WHERE target = ? AND blob = ?", (target, blob)
        )
        return UploadRecord(
            blob=blob,
            sha256=str(sha256),
            size=int(size),
            block_size=int(block_size),
            state=BlobState(state),
            md5=str(md5),
            staged=frozenset(int(r[0]) for r in staged),
        )

    def begin(
        self, target: str, blob: str, sha256: str, size: int, block_size: int
    ) -> UploadRecord | None:
        """Record that ``blob`` is to receive this content; return the record from before.

        Staged blocks survive only if the earlier record was for the same content cut into
        the same block size (block IDs are derived from both); otherwise they are forgotten.
        A committed or foreign record for the same content is kept as it is.
        """
        before = self.get(target, blob)
        if before is not None and before.holds(sha256, size):
            if before.state != BlobState.STARTED or before.block_size == block_size:
                return before
        self._exec("DELETE FROM blocks WHERE target = ? AND blob = ?", (target, blob))
        self._exec(
            "INSERT OR REPLACE INTO uploads (target, blob, sha256, size, block_size, state, "
            "md5, updated) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
            (target, blob, sha256, size, block_size, int(BlobState.STARTED), time.time()),
        )
        return before

    def block_staged(self, target: str, blob: str, index: int) -> None:
        """The service confirmed block ``index`` of ``blob``."""
        self._exec(
            "INSERT OR IGNORE INTO blocks (target, blob, idx) VALUES (?, ?, ?)",
            (target, blob, index),
        )

    def forget_blocks(self, target: str, blob: str) -> None:
        """The service no longer holds our uncommitted blocks (expired, storage reset)."""
        self._exec("DELETE FROM blocks WHERE target = ? AND blob = ?", (target, blob))

    def set_state(self, target: str, blob: str, state: BlobState, md5: str = "") -> None:
        self._exec(
            "UPDATE uploads SET state = ?, md5 = ?, updated = ? WHERE target = ? AND blob = ?",
            (int(state), md5, time.time(), target, blob),
        )
        if state != BlobState.STARTED:
            self.forget_blocks(target, blob)

    def forget(self, target: str, blob: str) -> None:
        """Drop everything about ``blob`` (it vanished from the service)."""
        self._exec("DELETE FROM blocks WHERE target = ? AND blob = ?", (target, blob))
        self._exec("DELETE FROM uploads WHERE target = ? AND blob = ?", (target, blob))

    def close(self) -> None:
        with self._lock:
            self._db.close()
