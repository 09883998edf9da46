from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.ledger import (
    DELIVERED,
    PROCESSED,
    QUARANTINED,
    STAGED,
    VERIFIED,
    WITHHELD,
    IllegalTransition,
    Ledger,
)
from agent.vocab import TRANSITIONS, SeriesState


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def test_versions_and_states(ledger: Ledger) -> None:
    a = ledger.open_version("k1", [("h1", 10, 1), ("h2", 10, 1)])
    assert (a.version, a.state, a.file_count) == (1, "stable", 2)
    for state in (STAGED, PROCESSED, VERIFIED):
        ledger.set_state(a.id, state)
    ledger.set_state(a.id, DELIVERED, content_sha256="c1", location="x/y")
    b = ledger.open_version("k1", [("h3", 10, 1)])
    assert b.version == 2
    assert ledger.delivered_content("k1") == {"c1": "x/y"}
    assert set(ledger.handled_files()) == {"h1", "h2"}  # b is not staged yet


def test_a_stages_events_are_recorded_together_in_order_on_the_chain(
        ledger: Ledger) -> None:
    row = ledger.open_version("k", [("h", 1, 1)])
    ledger.audit_many(row.id, [("pixels-cleaned", {"files": 2}), ("face-decision", {"a": 1})])
    ledger.audit_many(row.id, [])
    last = ledger.audit_rows()[-2:]
    assert [(r.event, r.series_id) for r in last] == [
        ("pixels-cleaned", row.id), ("face-decision", row.id)]
    assert ledger.head() == last[-1].hash and ledger.verify_chain() == []


def test_unstaged_version_is_reused_after_crash(ledger: Ledger) -> None:
    a = ledger.open_version("k", [("h1", 1, 1)])
    b = ledger.open_version("k", [("h1", 1, 1), ("h2", 1, 1)])
    assert a.id == b.id and b.version == 1 and b.file_count == 2


def test_chain_verifies_and_detects_edits(ledger: Ledger, tmp_path: Path) -> None:
    row = ledger.open_version("k", [("h", 1, 1)])
    ledger.set_state(row.id, STAGED)
    ledger.set_state(row.id, QUARANTINED, reason="burned-in annotation", code="identity-risk")
    assert ledger.verify_chain() == []
    head = ledger.head()
    assert len(head) == 64
    ledger.close()

    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET detail = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 2")
    # An attacker who drops the trigger can edit a row, but the chain gives it away.
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET detail = '{\"reason\": \"edited\"}' WHERE seq = 2")
    db.commit()
    db.close()
    problems = Ledger(tmp_path / "ledger.sqlite3").verify_chain()
    assert problems and "row 2 was altered" in problems[0]


def test_wal_mode_and_export(ledger: Ledger) -> None:
    mode = ledger._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    ledger.audit("agent-started")
    assert '"event": "agent-started"' in ledger.export("json")
    assert ledger.export("csv").splitlines()[0].startswith("record,time,")


def test_csv_export_holds_series_and_audit_with_iso_times(ledger: Ledger) -> None:
    import csv
    import io
    from datetime import datetime

    row = ledger.open_version("k1", [("h1", 10, 1)])
    ledger.set_state(row.id, SeriesState.STAGED)
    rows = list(csv.DictReader(io.StringIO(ledger.export("csv"))))
    series = [r for r in rows if r["record"] == "series"]
    audit = [r for r in rows if r["record"] == "audit"]
    assert [(r["id"], r["key"], r["state"]) for r in series] == [(str(row.id), "k1", "staged")]
    assert [r["event"] for r in audit] == ["stable", "staged"]
    for r in rows:  # ISO 8601 with the UTC offset, for spreadsheets and other time zones
        parsed = datetime.fromisoformat(r["time"])
        assert parsed.tzinfo is not None and "T" in r["time"]
    assert datetime.fromisoformat(series[0]["created"]).tzinfo is not None


def test_settings_roundtrip(ledger: Ledger) -> None:
    assert ledger.setting("paused_until") == ""
    ledger.set_setting("paused_until", "0.0")
    ledger.set_setting("paused_until", "12.5")
    assert ledger.setting("paused_until") == "12.5"


def test_the_transition_table_is_enforced(ledger: Ledger) -> None:
    row = ledger.open_version("k", [("h", 1, 1)])
    with pytest.raises(IllegalTransition):
        ledger.set_state(row.id, DELIVERED)  # never delivered without being processed
    assert ledger.get(row.id).state == SeriesState.STABLE  # nothing written
    ledger.set_state(row.id, STAGED)
    ledger.set_state(row.id, WITHHELD, reason="a localizer", code="localizer")
    ledger.set_state(row.id, STAGED)  # a person asked to send it anyway
    ledger.set_state(row.id, QUARANTINED, reason="x", code="internal")
    for state in (PROCESSED, VERIFIED, DELIVERED, WITHHELD):
        with pytest.raises(IllegalTransition):
            ledger.set_state(row.id, state)
    assert ledger.verify_chain() == []


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(TRANSITIONS) == set(SeriesState)
    assert TRANSITIONS[SeriesState.DELIVERED] == frozenset()
