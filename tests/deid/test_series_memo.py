"""What the cleaner and the verifier remember within a series (values, sequences) never
lets a later file's identity through: the same bytes are decided again when the study's
identifiers or the character set differ, and a sequence that differs is read again."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from agent.config import DeidConfig
from agent.deid.engine import Engine
from agent.deid.verify import Rules, check_file, collect_identifiers, load_safe_private

from .helpers import SECRET, SITE, write_series


def _private_sequence(ds: Dataset, name: str) -> None:
    item = Dataset()
    item.add_new(0x00100010, "PN", name)
    block = ds.private_block(0x0029, "ACME SERIES", create=True)
    block.add_new(0x20, "SQ", Sequence([item]))


def test_one_engine_decides_repeated_values_again_for_new_identifiers(tmp_path: Path) -> None:
    """Two series, one engine: the same descriptor and Content Description bytes, a name
    that is an identifier only of the second study (in a removed private sequence)."""
    def first(ds: Dataset, i: int) -> None:
        ds.PatientName = "Anon^Patient"
        ds.ContentDescription = "Quorvath checked"
        _private_sequence(ds, "Nobody^Here")

    def second(ds: Dataset, i: int) -> None:
        ds.PatientName = "Anon^Patient"
        ds.ContentDescription = "Quorvath checked"
        _private_sequence(ds, "Quorvath^Ilse")  # the relative of the second study

    engine = Engine(SITE, SECRET, DeidConfig())
    a = write_series(tmp_path, 2, first, folder="a")
    b = write_series(tmp_path, 2, second, folder="b")
    for out in ("out-a", "out-b"):
        (tmp_path / out).mkdir()
    kept = [engine.deidentify_file(f, tmp_path / "out-a") for f in a]
    cut = [engine.deidentify_file(f, tmp_path / "out-b") for f in b]
    for result in kept:
        assert result is not None
        assert "Quorvath" in str(pydicom.dcmread(result.path).ContentDescription)
    for result in cut:
        assert result is not None
        assert b"quorvath" not in result.path.read_bytes().lower()


def test_the_verifier_reads_a_sequence_again_when_its_bytes_differ(tmp_path: Path) -> None:
    """The originals' collector skips sequences read before byte for byte; a later file's
    sequence holding another name is read, and its name found in the output."""
    def plant(ds: Dataset, i: int) -> None:
        ds.PatientName = "Anon^Patient"
        _private_sequence(ds, "Nobody^Here" if i < 2 else "Zelvrian^Otto")

    files = write_series(tmp_path, 3, plant)
    ids = collect_identifiers(files)
    engine = Engine(SITE, SECRET, DeidConfig())
    result = engine.deidentify_file(files[0], tmp_path)
    assert result is not None
    ds = pydicom.dcmread(result.path)
    ds.ContentDescription = "for Zelvrian"
    ds.save_as(result.path, enforce_file_format=True)
    findings = check_file(result.path, ids, Rules(load_safe_private()))
    assert any(f.where == "(0070,0081)" and "name" in f.what for f in findings), findings
