"""The audit log's chain: keyed row hashes, the head file, and the check of both.

Every audit row carries the hash of the row before it and its own hash, an HMAC-SHA256
keyed with a key derived from the installation secret. Someone who can write the database
but not read the secret (kept 0600 in the state folder) can neither edit a row and
recompute the chain, nor forge a new one.

Deleting rows at the end of the chain leaves a valid, shorter chain; so does truncating the
file, dropping the table or losing the WAL after a kill -9. The **head file**
(``ledger.head`` beside the database) catches those: after every commit it records the
newest row's sequence number and hash, itself keyed. Manifests quote the head too, so the
cloud side holds independent copies.

Ledgers written before the chain was keyed (schema 1) keep their SHA-256 rows: the
migration appends a ``chain-keyed`` row naming how many rows came before it, and the check
accepts unkeyed hashes only there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64
#: The audit event that starts the keyed part of a migrated ledger.
CHAIN_KEYED = "chain-keyed"


def same(value: object, expected: str) -> bool:
    """Constant-time equality of a stored value with the hash it should be; a damaged value
    (not text, or not ASCII) is simply not equal."""
    return isinstance(value, str) and hmac.compare_digest(
        value.encode("utf-8", "surrogateescape"), expected.encode("ascii"))


def chain_key(installation_secret: bytes) -> bytes:
    """The ledger's MAC key: derived, so the secret itself is used for one purpose each."""
    return hmac.new(installation_secret, b"clinic2cloud ledger chain v1",
                    hashlib.sha256).digest()


def _row_text(prev: str, seq: int, ts: float, series_id: int | None, event: str,
              detail: str) -> bytes:
    text = f"{prev}|{seq}|{ts!r}|{'' if series_id is None else series_id}|{event}|{detail}"
    return text.encode("utf-8", "surrogateescape")


def row_mac(key: bytes, prev: str, seq: int, ts: float, series_id: int | None, event: str,
            detail: str) -> str:
    """The keyed hash of one audit row."""
    return hmac.new(key, _row_text(prev, seq, ts, series_id, event, detail),
                    hashlib.sha256).hexdigest()


def legacy_hash(prev: str, seq: int, ts: float, series_id: int | None, event: str,
                detail: str) -> str:
    """The unkeyed SHA-256 of schema-1 ledgers (checked only before the chain-keyed row)."""
    return hashlib.sha256(_row_text(prev, seq, ts, series_id, event, detail)).hexdigest()


def value_mac(key: bytes, *parts: object) -> str:
    """A keyed hash of a record's values (series rows, the head file)."""
    text = "\x1f".join("" if p is None else repr(p) for p in parts)
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: float
    series_id: int | None
    event: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Head:
    """The newest audit row the ledger acknowledged, as the head file recorded it."""

    seq: int
    hash: str


class HeadFile:
    """``ledger.head``: the chain's head outside the database, written after each commit."""

    def __init__(self, path: Path, key: bytes, *, durable: bool = True) -> None:
        self.path = path
        self._key = key
        self._durable = durable

    def write(self, head: Head) -> None:
        body = {"seq": head.seq, "hash": head.hash,
                "mac": value_mac(self._key, "head", head.seq, head.hash)}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            if self._durable:
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def read(self) -> tuple[Head | None, str]:
        """(head, problem): the recorded head, or None with why it cannot be trusted
        ("" when the file does not exist)."""
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            head = Head(int(body["seq"]), str(body["hash"]))
            mac = str(body["mac"])
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"the head file {self.path.name} is unreadable"
        if not same(mac, value_mac(self._key, "head", head.seq, head.hash)):
            return None, f"the head file {self.path.name} was altered"
        return head, ""


def check_chain(rows: list[AuditRow], key: bytes) -> list[str]:
    """Problems in the chain of ``rows`` (ordered by seq); empty when intact."""
    problems: list[str] = []
    keyed_from = _keyed_from(rows)
    prev, expected = GENESIS, 1
    for row in rows:
        if row.seq != expected:
            problems.append(f"row {expected} is missing (next row is {row.seq})")
        if row.prev_hash != prev:
            problems.append(f"row {row.seq} does not follow the row before it")
        if keyed_from is not None and row.seq < keyed_from:
            good = legacy_hash(row.prev_hash, row.seq, row.ts, row.series_id, row.event,
                               row.detail)
        else:
            good = row_mac(key, row.prev_hash, row.seq, row.ts, row.series_id, row.event,
                           row.detail)
        if not same(row.hash, good):
            problems.append(f"row {row.seq} was altered after it was written (or the chain "
                            "was recomputed without the installation key)")
        prev, expected = row.hash, row.seq + 1
    return problems


def _keyed_from(rows: list[AuditRow]) -> int | None:
    """The seq of the chain-keyed row of a migrated ledger (rows before it are unkeyed).

    Only a row whose detail names exactly the rows before it counts: an attacker who
    renames a later row to move the boundary breaks that row's own MAC.
    """
    for row in rows:
        if row.event != CHAIN_KEYED:
            continue
        try:
            legacy = int(json.loads(row.detail).get("legacy_rows", -1))
        except (ValueError, AttributeError, TypeError):
            return None
        return row.seq if legacy == row.seq - 1 else None
    return None


def check_head(rows: list[AuditRow], head: Head | None, problem: str) -> list[str]:
    """Whether the rows reach the head the head file recorded."""
    if problem:
        return [problem]
    newest = rows[-1] if rows else None
    if head is None or head.seq == 0:
        if head is None and newest is not None:
            return ["the head file is missing: rows deleted at the end cannot be ruled out"]
        return []
    if newest is None or newest.seq < head.seq:
        have = newest.seq if newest else 0
        return [f"the newest {head.seq - have} audit row(s) are gone: the head file records "
                f"row {head.seq}, the ledger ends at row {have} (rows deleted, the file "
                "truncated, a table dropped or its write-ahead log lost)"]
    at = next((r for r in reversed(rows) if r.seq == head.seq), None)
    if at is None or not same(at.hash, head.hash):
        return [f"row {head.seq} differs from the one the head file recorded"]
    return []
