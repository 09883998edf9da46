"""The stage's quick read answers exactly as the full read, or leaves the file to it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.deid.risk import text_risks
from agent.pixels import clean
from agent.pixels.quick import RISK_TAGS, read_quick
from tests.pixels.helpers import CORPUS


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _same_as_full(path: Path, data: bytes) -> bool:
    quick = read_quick(data)
    assert quick is not None
    full = clean._load_full(path, 0, data)
    assert full.samples is not None
    assert full.samples.dtype == quick.samples.dtype
    assert np.array_equal(full.samples, quick.samples)
    assert [r.rule for r in text_risks(full.ds)] == [r.rule for r in text_risks(quick.ds)]
    assert full.report.declared_burned_in == quick.declared_burned_in
    return not full.report.changed


def test_real_slices_read_quick_as_the_full_read_does() -> None:
    folders = [CORPUS / "dcm_qa_ge" / "05_3D_Ax_T1_MP_RAGE_R22",
               *sorted(p for p in (CORPUS).glob("*/*") if p.is_dir())[:6]]
    checked = 0
    for folder in folders:
        if not folder.is_dir():
            pytest.skip(f"the shared corpus is absent ({folder})")
        for path in sorted(p for p in folder.iterdir() if p.is_file())[:3]:
            data = path.read_bytes()
            if read_quick(data) is not None:
                assert _same_as_full(path, data)
                checked += 1
    assert checked >= 10


def test_what_needs_cleaning_or_is_unusual_is_left_to_the_full_read(tmp_path: Path) -> None:
    ds = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "YES"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    plain = _bytes(ds)
    path = tmp_path / "plain.dcm"
    path.write_bytes(plain)
    assert _same_as_full(path, plain)
    quick = read_quick(plain)
    assert quick is not None and quick.declared_burned_in
    assert {r.rule for r in text_risks(quick.ds)} == {"burned-in", "derived"}

    overlay = pydicom.dcmread(io.BytesIO(plain))
    overlay.add_new(0x60000010, "US", 64)
    trailing = pydicom.dcmread(io.BytesIO(plain))
    trailing.PixelData = trailing.PixelData + b"PATIENT NAME"
    icon = pydicom.dcmread(io.BytesIO(plain))
    icon.add_new(0x00880200, "SQ", [])
    big_endian = pydicom.dcmread(str(get_testdata_file("MR_small_bigendian.dcm")))
    compressed = pydicom.dcmread(str(get_testdata_file("MR_small_RLE.dcm")))
    for other in (overlay, trailing, icon, big_endian, compressed):
        assert read_quick(_bytes(other)) is None
    assert read_quick(plain[:-10]) is None  # cut short
    assert read_quick(b"\0" * 200) is None  # not Part 10


class _Recording(dict):  # type: ignore[type-arg]
    """A dataset's elements that note every tag looked up."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.read: set[int] = set()

    def get(self, key: object, default: object = None) -> object:
        self.read.add(int(key))  # type: ignore[call-overload]
        return super().get(key, default)

    def __getitem__(self, key: object) -> object:
        self.read.add(int(key))  # type: ignore[call-overload]
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(int(key))  # type: ignore[call-overload]
        return super().__contains__(key)


def test_the_quick_read_keeps_every_element_the_risk_rules_read() -> None:
    # The quick dataset holds RISK_TAGS only: a rule reading another element would see
    # it absent on every quick-read file. This fails the day a rule comes to read one.
    ds = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    ds.BurnedInAnnotation = "NO"
    ds.ConversionType = "WSD"
    recording = _Recording(ds._dict)
    ds._dict = recording
    text_risks(ds)
    assert recording.read and recording.read <= set(RISK_TAGS)
