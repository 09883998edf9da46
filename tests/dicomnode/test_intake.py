"""The intake's housekeeping: files go once their series version ended, never before."""

from __future__ import annotations

import os
from pathlib import Path

from agent.dicomnode.intake import Intake
from agent.ledger import Ledger
from agent.vocab import SeriesState


def _files(intake: Intake, names: list[str]) -> list[str]:
    paths = []
    for name in names:
        p = intake.folder / name
        p.write_bytes(b"x" * 10)
        paths.append(str(p))
    return paths


def _record(ledger: Ledger, key: str, paths: list[str]) -> int:
    entries = []
    for p in paths:
        st = os.stat(p)
        entries.append((f"h:{p}", st.st_size, st.st_mtime_ns))
    return ledger.open_version(key, entries).id


def test_only_ended_versions_release_their_files(tmp_path: Path) -> None:
    intake = Intake(tmp_path / "dicom")
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    quarantine = tmp_path / "quarantine"
    delivered = _files(intake, ["a1.dcm", "a2.dcm"])
    staged = _files(intake, ["b1.dcm"])
    kept_back = _files(intake, ["c1.dcm", "c2.dcm"])
    copy_lost = _files(intake, ["d1.dcm"])
    pending = _files(intake, ["e1.dcm"])  # not yet in any series version
    a = _record(ledger, "A", delivered)
    ledger.set_state(a, SeriesState.STAGED)
    ledger.set_state(a, SeriesState.VERIFIED)
    ledger.set_state(a, SeriesState.DELIVERED)
    ledger.set_state(_record(ledger, "B", staged), SeriesState.STAGED)
    c = _record(ledger, "C", kept_back)
    ledger.set_state(c, SeriesState.QUARANTINED)
    (quarantine / str(c)).mkdir(parents=True)
    for n in range(2):
        (quarantine / str(c) / f"{n:06d}.dcm").write_bytes(b"x")
    ledger.set_state(_record(ledger, "D", copy_lost), SeriesState.QUARANTINED)

    removed = intake.remove_ended(ledger, lambda p: f"h:{p}", quarantine)

    assert removed == 4
    left = sorted(p.name for p in intake.folder.iterdir())
    assert left == ["b1.dcm", "d1.dcm", "e1.dcm"]
    assert pending and staged  # kept: unfinished, and quarantined without its copy


def test_a_changed_file_is_not_the_ended_one(tmp_path: Path) -> None:
    intake = Intake(tmp_path / "dicom")
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    [path] = _files(intake, ["a.dcm"])
    a = _record(ledger, "A", [path])
    ledger.set_state(a, SeriesState.STAGED)
    ledger.set_state(a, SeriesState.WITHHELD)
    Path(path).write_bytes(b"a new copy of the instance, received again")
    assert intake.remove_ended(ledger, lambda p: f"h:{p}", tmp_path / "q") == 0
    assert Path(path).exists()


def test_spool_leftovers_are_purged(tmp_path: Path) -> None:
    intake = Intake(tmp_path / "dicom")
    (intake.spool / "rx-half.dcm").write_bytes(b"half an instance")
    assert intake.purge_spool() == 1 and list(intake.spool.iterdir()) == []
