"""The records of the ledger as Python values: series rows and the allowed columns."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass

from agent.ledger_chain import AuditRow
from agent.vocab import SeriesState


class IllegalTransition(RuntimeError):
    """A state change the transition table (:data:`agent.vocab.TRANSITIONS`) forbids: a bug."""


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
    #: Processing attempts started and never finished (the worker crashed, or the agent was
    #: killed): the series is quarantined as poison when this passes a limit.
    unfinished: int = 0


SERIES_FIELDS = tuple(f.name for f in dataclasses.fields(SeriesRow))
UPDATABLE = frozenset({"modality", "patient", "study", "series", "content_sha256",
                        "location", "render", "attempts", "file_count"})


class BadRow(ValueError):
    """A row whose columns or values are not what the schema says (a damaged file)."""


def series_row(row: sqlite3.Row) -> SeriesRow:
    try:
        values = {name: row[name] for name in SERIES_FIELDS}
        values["state"] = SeriesState(values["state"])
    except (IndexError, KeyError, ValueError):
        raise BadRow("a series row does not have the columns or values it should") from None
    return SeriesRow(**values)


def audit_row(row: sqlite3.Row) -> AuditRow:
    """An audit row, its types checked (a damaged file can hold anything anywhere)."""
    values = dict(row)
    types: dict[str, type | tuple[type, ...]] = {
        "seq": int, "ts": (int, float), "event": str, "detail": str, "prev_hash": str,
        "hash": str}
    try:
        ok = all(isinstance(values[k], t) for k, t in types.items()) and (
            values["series_id"] is None or isinstance(values["series_id"], int))
        if not ok:
            raise KeyError
        return AuditRow(**values)
    except (KeyError, TypeError):
        raise BadRow("an audit row does not have the columns or values it should") from None
