"""Someone with write access to the ledger tries to rewrite history; every attempt shows.

Each test plays one attack of issue 20 on a real ledger file with the sqlite3 module (what
an attacker has), then checks that ``Ledger.verify`` names it, that opening the ledger for
work refuses with one line that says the way out, and that nothing raises a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import LedgerDamaged
from agent.ledger import DELIVERED, PROCESSED, STAGED, VERIFIED, Ledger
from agent.ledger_chain import GENESIS, legacy_hash
from agent.ledger_schema import SCHEMA_1, SCHEMA_VERSION
from agent.vocab import AuditEvent

KEY = b"k" * 32


def _history(ledger: Ledger, n: int = 3) -> None:
    """``n`` series delivered, every step audited."""
    for i in range(n):
        row = ledger.open_version(f"key{i}", [(f"h{i}", 10, 1)])
        for state in (STAGED, PROCESSED, VERIFIED):
            ledger.set_state(row.id, state)
        ledger.set_state(row.id, DELIVERED, content_sha256=f"c{i}", location=f"S/p{i}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "ledger.sqlite3"
    ledger = Ledger(path, KEY)
    _history(ledger)
    ledger.close()
    return path


def _sql(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _problems(path: Path) -> list[str]:
    ledger = Ledger(path, KEY, check=False)
    try:
        return ledger.verify()
    finally:
        ledger.close()


def test_an_intact_ledger_verifies(db_path: Path) -> None:
    assert _problems(db_path) == []
    Ledger(db_path, KEY).close()  # opens for work


def test_edited_row_with_recomputed_unkeyed_chain_is_detected(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute("DROP TRIGGER audit_no_update")
    rows = db.execute("SELECT seq, ts, series_id, event, detail FROM audit ORDER BY seq")
    prev = GENESIS
    for seq, ts, sid, event, detail in rows.fetchall():
        if seq == 5:
            detail = json.dumps({"location": "elsewhere"})
        h = legacy_hash(prev, seq, ts, sid, event, detail)  # what the old chain was
        db.execute("UPDATE audit SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                   (detail, prev, h, seq))
        prev = h
    db.commit()
    db.close()
    problems = _problems(db_path)
    assert any("row 1 was altered" in p for p in problems), problems


def test_newest_rows_deleted_are_detected(db_path: Path) -> None:
    _sql(db_path, "DROP TRIGGER audit_no_delete",
         "DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit)")
    problems = _problems(db_path)
    assert any("newest 3 audit row(s) are gone" in p for p in problems), problems
    with pytest.raises(LedgerDamaged, match="ledger rebuild"):
        Ledger(db_path, KEY)


def test_series_table_edits_are_detected(db_path: Path) -> None:
    _sql(db_path, "UPDATE series SET location = 'S/someone-else' WHERE id = 2",
         "UPDATE series SET state = 'staged' WHERE id = 3")
    problems = _problems(db_path)
    assert any("series row 2 was changed" in p for p in problems), problems
    assert any("series row 3 says staged, the audit log delivered" in p for p in problems)


def test_series_row_deleted_is_detected(db_path: Path) -> None:
    _sql(db_path, "DELETE FROM files WHERE series_id = 1", "DELETE FROM series WHERE id = 1")
    assert any("series 1 is in the audit log but missing" in p for p in _problems(db_path))


def test_file_truncated_to_zero_is_refused_and_reported(db_path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    db_path.write_bytes(b"")
    with pytest.raises(LedgerDamaged, match="empty, but 15 audit rows were written"):
        Ledger(db_path, KEY)
    assert any("are gone" in p for p in _problems(db_path))


def test_dropped_audit_table_is_refused_and_reported(db_path: Path) -> None:
    _sql(db_path, "DROP TABLE audit")
    with pytest.raises(LedgerDamaged, match="audit table was dropped"):
        Ledger(db_path, KEY)
    problems = _problems(db_path)
    assert any("audit table was dropped" in p for p in problems), problems


_WRITER = """
import os, signal, sys
from pathlib import Path
from agent.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]), b"k" * 32)
ledger._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every commit in the WAL
for i in range(5):
    ledger.audit("agent-started", n=i)
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_wal_lost_after_kill_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path, KEY).close()  # the file exists, checkpointed and empty
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "written" in proc.stdout, proc.stderr
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0  # every acknowledged row is in the WAL, durably
    wal.unlink()
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    with pytest.raises(LedgerDamaged, match="newest 5 audit row"):
        Ledger(path, KEY)


def test_acknowledged_rows_survive_kill_without_tampering(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path, KEY).close()
    subprocess.run([sys.executable, "-c", _WRITER, str(path)], timeout=60)
    ledger = Ledger(path, KEY)  # the WAL is replayed: nothing lost, nothing flagged
    assert [r.event for r in ledger.audit_rows()] == ["agent-started"] * 5
    assert ledger.verify() == []
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_forged_head_file_is_detected(db_path: Path) -> None:
    head = db_path.with_name(db_path.name + ".head")
    body = json.loads(head.read_text())
    body["seq"] -= 2
    head.write_text(json.dumps(body))
    assert any("head file" in p and "altered" in p for p in _problems(db_path))


def test_head_file_deleted_is_reported(db_path: Path) -> None:
    db_path.with_name(db_path.name + ".head").unlink()
    assert any("head file is missing" in p for p in _problems(db_path))


@pytest.mark.parametrize("seed", range(6))
def test_random_byte_corruption_gives_one_line(db_path: Path, seed: int) -> None:
    _corrupt_and_open(db_path, seed)


@pytest.mark.soak
def test_random_byte_corruption_soak(tmp_path: Path) -> None:
    for seed in range(1000):
        path = tmp_path / f"l{seed}" / "ledger.sqlite3"
        ledger = Ledger(path, KEY)
        _history(ledger)
        ledger.close()
        _corrupt_and_open(path, seed)


def _corrupt_and_open(db_path: Path, seed: int) -> None:
    import random

    from agent.errors import Clinic2CloudError

    rng = random.Random(seed)
    data = bytearray(db_path.read_bytes())
    for _ in range(4):
        data[rng.randrange(100, len(data))] = rng.randrange(256)
    db_path.write_bytes(bytes(data))
    try:
        problems = _problems(db_path)
        ledger = Ledger(db_path, KEY, check=False)
        ledger.recent()
        ledger.export("csv")
        ledger.close()
    except LedgerDamaged as exc:  # too damaged to open at all: one line, the way out
        assert "ledger rebuild" in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(problems, list)  # never UnicodeDecodeError or a raw sqlite3 error
    try:
        Ledger(db_path, KEY).close()  # for work: opens, or refuses in one line
    except Clinic2CloudError as exc:
        assert "\n" not in str(exc)


def _legacy_ledger(path: Path) -> None:
    """A schema-1 ledger as the first release wrote it: unkeyed SHA-256 chain."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO series (key, version, state, created, updated) "
               "VALUES ('k', 1, 'stable', 1.0, 1.0)")
    prev = GENESIS
    for seq, (sid, event) in enumerate([(None, "agent-started"), (1, "stable")], start=1):
        h = legacy_hash(prev, seq, float(seq), sid, event, "{}")
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, '{}', ?, ?)",
                   (seq, float(seq), sid, event, prev, h))
        prev = h
    db.commit()
    db.close()


def test_first_release_ledger_is_migrated_and_keyed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _legacy_ledger(path)
    ledger = Ledger(path, KEY)
    rows = ledger.audit_rows()
    assert [r.event for r in rows] == ["agent-started", "stable", AuditEvent.CHAIN_KEYED]
    assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    ledger.audit("agent-started")
    assert ledger.verify() == []
    ledger.close()
    # An attacker who edits a keyed row and recomputes it the old way is caught.
    _sql(path, "DROP TRIGGER audit_no_update",
         f"UPDATE audit SET hash = '{hashlib.sha256(b'x').hexdigest()}' WHERE seq = 4")
    assert any("row 4 was altered" in p for p in _problems(path))


def test_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path, KEY).close()
    _sql(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Exception, match="newer Clinic2Cloud") as info:
        Ledger(path, KEY)
    assert getattr(info.value, "exit_code", 0) == 2


def test_cli_verify_and_rebuild_keep_the_damaged_file(
        make_config: Callable[..., object], capsys: pytest.CaptureFixture[str],
        agent_paths: object) -> None:
    from agent.keys import installation_secret
    from agent.paths import AgentPaths

    assert isinstance(agent_paths, AgentPaths)
    ledger = Ledger(agent_paths.ledger, installation_secret(agent_paths.installation_secret))
    _history(ledger, 1)
    ledger.close()
    assert main(["ledger", "verify"]) == 0
    _sql(agent_paths.ledger, "UPDATE series SET location = 'x' WHERE id = 1")
    assert main(["ledger", "verify"]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED: series row 1 was changed" in out and "ledger rebuild" in out
    assert main(["ledger", "rebuild"]) == 0
    kept = list(agent_paths.state_dir.glob("ledger.damaged-*.sqlite3"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0
    assert main(["ledger", "verify"]) == 0
    fresh = Ledger(agent_paths.ledger, installation_secret(agent_paths.installation_secret))
    assert [r.event for r in fresh.audit_rows()] == [AuditEvent.LEDGER_REBUILT]
    fresh.close()


def test_status_on_a_damaged_ledger_is_one_line(agent_paths: object,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from agent.keys import installation_secret
    from agent.paths import AgentPaths

    assert isinstance(agent_paths, AgentPaths)
    ledger = Ledger(agent_paths.ledger, installation_secret(agent_paths.installation_secret))
    _history(ledger, 1)
    ledger.close()
    _sql(agent_paths.ledger, "DROP TABLE audit")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "audit table was dropped" in err and "rebuild" in err


def test_unwritable_state_folder_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere; the non-root case is checked by the OS user test")
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    with pytest.raises(Exception, match="cannot") as info:
        Ledger(state / "ledger.sqlite3", KEY)
    assert "\n" not in str(info.value)
