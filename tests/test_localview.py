"""Local identity in the local view, never in the ledger, the logs or a manifest."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pydicom

from agent.config import Config
from agent.control import RemoteAgent, ledger_status
from agent.logs import setup_logging
from agent.main import Agent
from agent.status import LocalIdentity, SeriesSummary
from agent.ui import text
from agent.ui.report import status_document, status_lines
from tests.conftest import PATIENT_ID, manifests, write_series
from tests.waiting import wait_until

DESCRIPTION = "CANARY T1 SAGITTAL"
FOLDER = "Canarysson Wilhelmina"



def export(folder: Path, n: int, *, burned_in: bool = False) -> list[Path]:
    files = write_series(folder, n)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = DESCRIPTION
        ds.SeriesNumber = 9
        ds.SeriesDate = "20240312"
        if burned_in:
            ds.BurnedInAnnotation = "YES"
        ds.save_as(f.with_suffix(".tmp"), enforce_file_format=True)
        f.with_suffix(".tmp").replace(f)
    return files


def phi_strings(files: list[Path], export_dir: Path) -> list[str]:
    ds = pydicom.dcmread(files[0])
    return ["Canarysson", "Wilhelmina", DESCRIPTION, FOLDER, PATIENT_ID,
            str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(export_dir)]


def raw_files(cfg: Config, outbox: Path) -> list[Path]:
    """Everything that must never hold identity: the ledger (with its WAL), the logs,
    the endpoint file, and every manifest delivered."""
    found = [p for p in cfg.paths.state_dir.glob("ledger.sqlite3*") if p.is_file()]
    found += [p for p in cfg.paths.log_dir.rglob("*") if p.is_file()]
    found += list(cfg.paths.state_dir.glob("*.json")) + manifests(outbox)
    return found


def test_quarantined_row_shows_who_and_what_and_it_is_nowhere_else(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path) -> None:
    cfg = make_config(log_level="DEBUG")
    setup_logging(cfg.paths.log_dir, "DEBUG", console=False)
    agent = Agent(cfg)
    agent.start()
    try:
        good = export(export_dir / FOLDER / "T1", 3)
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
        bad = export(export_dir / FOLDER / "SC", 2, burned_in=True)
        assert wait_until(lambda: agent.status().quarantined == 1)
        recent = agent.recent()
        [q] = [s for s in recent if s.state == "quarantined"]
        [d] = [s for s in recent if s.state == "delivered"]
        assert q.local == LocalIdentity(
            patient_name="Canarysson, Wilhelmina", description=DESCRIPTION,
            scan_date="2024-03-12", modality="MR", series_number="9", images=2,
            export_folder=f"{FOLDER}/SC/", source="quarantine")
        assert d.local is not None and d.local.source == "export"
        assert d.local.export_folder == f"{FOLDER}/T1/" and d.local.images == 3
        assert "Canarysson" not in repr(q.local)  # a stray log call shows nothing
        line = text.identity_line(q.local)
        assert line == ("Canarysson, Wilhelmina \u00b7 CANARY T1 SAGITTAL \u00b7 2024-03-12 "
                        f"\u00b7 MR \u00b7 series 9 \u00b7 2 images \u00b7 in {FOLDER}/SC/")
        assert q.action and "Retry" in q.action
        # The CLI sees the same through the endpoint...
        remote = RemoteAgent.connect(cfg)
        assert remote is not None
        assert remote.identity(q.id) == q.local
        shown = "\n".join(status_lines(remote.status(), remote.recent(), source="agent"))
        assert line in shown and "What to do:" in shown
        assert agent.identity(q.id) == q.local
        logging.getLogger("agent.test").info("summary %s", q)  # what a careless log does
    finally:
        agent.stop()
    # ...and from the ledger and the local copies when no agent runs.
    _status, rows = ledger_status(cfg)
    [q2] = [s for s in rows if s.state == "quarantined"]
    assert q2.local is not None and q2.local.patient_name == "Canarysson, Wilhelmina"
    assert q2.local.export_folder == f"{FOLDER}/SC/"
    doc = status_document(_status, rows, source="ledger")
    assert doc["recent"][0]["local"]["patient_name"]
    for path in raw_files(cfg, outbox_dir):
        blob = path.read_bytes()
        for secret in phi_strings(good + bad, export_dir):
            assert secret.encode() not in blob, f"{secret!r} found in {path.name}"


def test_shared_screens_show_no_identity(make_config: Callable[..., Config],
                                         export_dir: Path, outbox_dir: Path) -> None:
    cfg = make_config(display_local_identity=False)
    agent = Agent(cfg)
    agent.start()
    try:
        export(export_dir / FOLDER, 2, burned_in=True)
        assert wait_until(lambda: agent.status().quarantined == 1)
        [q] = agent.recent()
        assert q.local is None and agent.identity(q.id) is None
        assert text.series_title(q) in (q.patient_pseudonym, f"#{q.id}")
    finally:
        agent.stop()
    _status, rows = ledger_status(cfg)
    assert all(s.local is None for s in rows)


def test_identity_words_without_identity() -> None:
    s = SeriesSummary(id=3, state="quarantined", updated=0.0, patient_pseudonym="SITE-X")
    assert text.identity_line(None) == "" and text.series_title(s) == "SITE-X"
    assert json.dumps(text.identity_line(LocalIdentity(images=1))) == '"(no patient name)'\
        ' \\u00b7 1 image"'
