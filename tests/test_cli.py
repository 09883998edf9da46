"""The clinic2cloud command as a user runs it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from agent.cli import main
from agent.config import Config
from agent.sync.manifest import verify_folder
from tests.conftest import PATIENT_ID, write_series


def run_cli(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _nodeface(tmp: Path) -> Path:
    cfg = tmp / "nodeface.toml"
    cfg.write_text("[deface]\nenabled = false\n")
    return cfg


def test_process_delivers_every_series(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_series(src / "a", 3)
    write_series(src / "b b", 2)
    (src / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    r = run_cli("process", str(src), "--out", str(out), "--json", "--config",
                str(_nodeface(tmp_path)), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["delivered"] == 2 and summary["quarantined"] == 0
    assert summary["ignored_files"] == 1
    found = sorted(out.rglob("manifest.json"))
    assert len(found) == 2
    assert all(verify_folder(m.parent) == [] for m in found)
    assert sorted(len(json.loads(m.read_text())["files"]) for m in found) == [2, 3]


def test_process_nonzero_when_a_series_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_series(src / "good", 2)
    [bad] = write_series(src / "bad", 1)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated
    r = run_cli("process", str(src), "--out", str(tmp_path / "out"), "--json", "--config",
                str(_nodeface(tmp_path)), home=tmp_path / "home")
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert summary["delivered"] == 1 and summary["quarantined"] == 1
    [q] = [s for s in summary["series"] if s["state"] == "quarantined"]
    # Which file, where it ends and what to do; never the file's name.
    assert q["code"] == "incomplete"
    assert f"file 1 of 1 of the series is cut short at byte {len(data) // 2:,}" in q["reason"]
    assert "export the series again" in q["reason"] and bad.name not in q["reason"]


def test_process_empty_source_is_not_success(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    r = run_cli("process", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                home=tmp_path / "home")
    assert r.returncode == 1 and "no DICOM series found" in r.stdout


def test_ledger_verify_detects_tampering_and_lookup_finds_patient(
        tmp_path: Path, make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from agent.main import Agent
    from tests.conftest import manifests
    from tests.waiting import wait_until

    cfg = make_config()
    agent = Agent(cfg)
    agent.start()
    try:
        write_series(export_dir, 2)
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    finally:
        agent.stop()
    assert main(["ledger", "verify"]) == 0
    assert main(["lookup", "--patient-id", PATIENT_ID]) == 0
    out = capsys.readouterr().out
    [manifest] = manifests(outbox_dir)
    patient_folder = manifest.parent.parent.parent.name
    assert f"pseudonym: {patient_folder}" in out and "delivered" in out
    assert main(["status"]) == 0
    assert "delivered" in capsys.readouterr().out

    db = sqlite3.connect(cfg.paths.ledger)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET event = 'delivered' WHERE seq = 1")
    db.commit()
    db.close()
    assert main(["ledger", "verify"]) == 1
    assert "TAMPERED" in capsys.readouterr().out


def test_no_phi_in_ledger_or_logs(tmp_path: Path, make_config: Callable[..., Config],
                                  export_dir: Path,
                                  outbox_dir: Path) -> None:
    from agent.logs import setup_logging
    from agent.main import Agent
    from tests.conftest import manifests
    from tests.waiting import wait_until

    cfg = make_config(log_level="DEBUG")
    setup_logging(cfg.paths.log_dir, "DEBUG", console=False)
    agent = Agent(cfg)
    agent.start()
    try:
        files = write_series(export_dir / "Canarysson Wilhelmina", 3)
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    finally:
        agent.stop()
    ds = pydicom.dcmread(files[0])
    secrets = [PATIENT_ID, "Canarysson", "Wilhelmina", ds.StudyInstanceUID,
               ds.SeriesInstanceUID, ds.SOPInstanceUID, str(export_dir)]
    blobs = [cfg.paths.ledger.read_bytes()]
    blobs += [p.read_bytes() for p in cfg.paths.state_dir.glob("ledger.sqlite3*")]
    blobs += [p.read_bytes() for p in cfg.paths.log_dir.rglob("*") if p.is_file()]
    for blob in blobs:
        for s in secrets:
            assert s.encode() not in blob


def test_first_run_creates_default_config_and_folders(tmp_path: Path) -> None:
    import signal
    import time

    env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp_path / "agent"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("watching" in s for s in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    export, outbox = tmp_path / "Clinic2Cloud" / "Export", tmp_path / "Clinic2Cloud" / "Outbox"
    assert export.is_dir() and outbox.is_dir()
    config = tmp_path / "agent" / "config" / "config.toml"
    assert config.is_file()
    assert str(config) in text and str(export) in text and str(outbox) in text
    from agent.config import load_config
    from agent.paths import AgentPaths

    cfg = load_config(config, paths=AgentPaths.under(tmp_path / "agent"))
    assert Path(cfg.watch.folder) == export and Path(cfg.target.path) == outbox
