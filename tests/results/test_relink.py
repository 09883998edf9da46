"""The re-link store: identity back from pseudonyms, sealed at rest, removable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.results.relink import RelinkStore, StudyIdentity

SECRET = b"s" * 32
IDENTITY = StudyIdentity(
    patient_name="Zylberstein^Ottoline", patient_id="MRN-55120934", birth_date="19480511",
    sex="F", accession="ACC99812", study_uid="1.2.3.4.5.6.7", study_date="20240101",
    study_time="080000", study_id="77", patient_pseudonym="SITE-0A1B2C3D4E",
    study_pseudonym="0123456789abcdef")
UIDS = [("2.25.111", "1.2.3.4.5.6.7"), ("2.25.222", "1.2.3.4.5.6.7.8"),
        ("2.25.333", "1.2.3.4.5.6.7.8.9")]


@pytest.fixture
def store(tmp_path: Path) -> RelinkStore:
    s = RelinkStore(tmp_path / "relink.sqlite3", SECRET)
    s.record(IDENTITY, "2.25.111", UIDS)
    return s


def test_identity_and_uids_come_back(store: RelinkStore) -> None:
    assert store.study_by_uid("2.25.111") == IDENTITY
    assert store.study_by_pseudonym("0123456789abcdef") == IDENTITY
    assert store.original_uid("2.25.333") == "1.2.3.4.5.6.7.8.9"
    assert store.original_uid("2.25.444") is None
    assert IDENTITY.display_name == "Zylberstein, Ottoline"


def test_nothing_readable_at_rest(store: RelinkStore, tmp_path: Path) -> None:
    data = b"".join(p.read_bytes() for p in tmp_path.glob("relink.sqlite3*"))
    assert data
    for text in ("Zylberstein", "Ottoline", "MRN-55120934", "19480511", "ACC99812",
                 "1.2.3.4.5.6.7", "SITE-0A1B2C3D4E", "0123456789abcdef", "2.25.111"):
        assert text.encode() not in data, text
    assert (tmp_path / "relink.sqlite3").stat().st_mode & 0o077 == 0


def test_another_secret_reads_nothing(store: RelinkStore, tmp_path: Path) -> None:
    store.close()
    other = RelinkStore(tmp_path / "relink.sqlite3", b"t" * 32)
    assert other.study_by_uid("2.25.111") is None


def test_retention_and_forgetting(store: RelinkStore, tmp_path: Path) -> None:
    assert store.purge(1) == 0
    later = IDENTITY.__class__(**{**IDENTITY.__dict__, "study_pseudonym": "fedcba9876543210"})
    store.record(later, "2.25.999", [])
    store._db.execute("UPDATE relink SET created = ? WHERE 1", (time.time() - 3 * 86400,))
    store.record(later, "2.25.999", [])  # recorded again today: kept
    assert store.purge(2) == 5
    assert store.study_by_uid("2.25.111") is None and store.original_uid("2.25.222") is None
    assert store.study_by_uid("2.25.999") == later
    assert store.forget_study("2.25.999") == 2
    assert store.study_by_pseudonym("fedcba9876543210") is None
