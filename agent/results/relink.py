"""The encrypted re-link store: what restores identity to results, and nothing more.

When a series is de-identified (:mod:`agent.results.hook`) the store records, for its
study, the original Patient's Name, Patient ID, Birth Date, Sex, Accession Number, Study
Date/Time/ID and Study Instance UID, and for every UID the de-identification remapped
(study, series, instance, frame of reference) the original, under its pseudonymous value.
Results that come back carry the pseudonymous UIDs; the store maps them back locally.

At rest (SQLite, owner-only, in the state folder - it never leaves the workstation) every
value is sealed with **AES-256-GCM** (``cryptography``), a fresh 96-bit nonce per value and
the row's handle as associated data (a value cannot be moved to another row). Rows are found
by a **handle**, an HMAC of the pseudonymous value: not even the pseudonyms are in the file.
Both keys are derived from the site secret with HKDF-SHA256 (distinct ``info`` labels), so
the store is unreadable without the secret, and every workstation of a site could read a
store it was given - but stores are never copied or uploaded.

Rows carry their creation time; :meth:`RelinkStore.purge` removes those older than
``[results] relink_retention_days`` (run by the results service at start and daily).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import FatalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relink (
    handle TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    created REAL NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS relink_study ON relink(study);
CREATE INDEX IF NOT EXISTS relink_created ON relink(created);
"""


@dataclass(frozen=True)
class StudyIdentity:
    """The original identity of one study, as it was exported. Local only."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    accession: str
    study_uid: str
    study_date: str
    study_time: str
    study_id: str
    #: The pseudonyms the delivery was named with (a check that results match).
    patient_pseudonym: str
    study_pseudonym: str

    @property
    def display_name(self) -> str:
        """"Family, Given" for notifications (read at display time, never logged)."""
        family, _, rest = self.patient_name.partition("^")
        given = rest.split("^")[0]
        name = f"{family}, {given}" if given else family
        return name or self.patient_id or "unknown patient"


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"clinic2cloud-relink",
                info=info).derive(secret)


class RelinkStore:
    """The store file (see the module docstring). Thread-safe."""

    def __init__(self, path: Path, site_secret: bytes) -> None:
        self.path = path
        self._aead = AESGCM(_derive(site_secret, b"relink-store aes-256-gcm v1"))
        self._index = _derive(site_secret, b"relink-store handle hmac v1")
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")  # purged rows are overwritten
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FatalError(f"the re-link store {path} cannot be opened ({type(exc).__name__}"
                             "); check that the state folder is writable") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- keys --------------------------------------------------------------------------

    def _handle(self, kind: str, value: str) -> str:
        return hmac.new(self._index, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def _seal(self, handle: str, data: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, data, handle.encode())

    def _open(self, handle: str, nonce: bytes, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(nonce, sealed, handle.encode())
        except InvalidTag:
            return None  # another site's secret, or a damaged row: treated as absent

    # -- writing -----------------------------------------------------------------------

    def record(self, identity: StudyIdentity, pseudo_study_uid: str,
               uids: Iterable[tuple[str, str]]) -> int:
        """Record a study's identity and the (pseudonymous, original) UID pairs of one
        series; returns the number of rows written. Re-recording replaces (same values)."""
        study = self._handle("study-group", pseudo_study_uid)
        now = time.time()
        doc = json.dumps(asdict(identity)).encode()
        rows = []
        for kind, value in (("study-uid", pseudo_study_uid),
                            ("study-pseudonym", identity.study_pseudonym)):
            handle = self._handle(kind, value)
            rows.append((handle, study, now, *self._seal(handle, doc)))
        for pseudo, original in uids:
            if pseudo and original and pseudo != original:
                handle = self._handle("uid", pseudo)
                rows.append((handle, study, now, *self._seal(handle, original.encode())))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO relink (handle, study, created, nonce, sealed) "
                    "VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(rows)

    # -- reading -----------------------------------------------------------------------

    def _get(self, handle: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT nonce, sealed FROM relink WHERE handle = ?",
                                   (handle,)).fetchone()
        return None if row is None else self._open(handle, row[0], row[1])

    def _identity(self, handle: str) -> StudyIdentity | None:
        data = self._get(handle)
        if data is None:
            return None
        return StudyIdentity(**json.loads(data))

    def study_by_uid(self, pseudo_study_uid: str) -> StudyIdentity | None:
        return self._identity(self._handle("study-uid", pseudo_study_uid))

    def study_by_pseudonym(self, study_pseudonym: str) -> StudyIdentity | None:
        return self._identity(self._handle("study-pseudonym", study_pseudonym))

    def original_uid(self, pseudo_uid: str) -> str | None:
        data = self._get(self._handle("uid", pseudo_uid))
        return None if data is None else data.decode()

    # -- retention ---------------------------------------------------------------------

    def purge(self, older_than_days: float) -> int:
        """Remove every study recorded more than ``older_than_days`` ago; rows removed."""
        cutoff = time.time() - older_than_days * 86400
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM relink WHERE study IN "
                "(SELECT study FROM relink GROUP BY study HAVING MAX(created) < ?)", (cutoff,))
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return cur.rowcount

    def forget_study(self, pseudo_study_uid: str) -> int:
        """Remove one study's rows (a person asked, or its results are home for good)."""
        with self._lock:
            cur = self._db.execute("DELETE FROM relink WHERE study = ?",
                                   (self._handle("study-group", pseudo_study_uid),))
        return cur.rowcount
