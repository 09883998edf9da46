"""The Siemens CSA header parser: real headers, both layouts, and damaged bytes."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from agent.deface import csa

from .builders import csa1, csa2


def test_real_mosaic_headers(corpus: Path) -> None:
    for name, count in (("ep2d_Asc_2", 36), ("cmrr_Asc_6", 40)):
        path = sorted((corpus / "dcm_qa_mosaic" / name).glob("*.dcm"))[0]
        tags = csa.header(pydicom.dcmread(path, stop_before_pixels=True))
        assert csa.number(tags, "NumberOfImagesInMosaic") == count
        normal = csa.vector(tags, "SliceNormalVector")
        assert normal is not None and abs(sum(v * v for v in normal) - 1) < 1e-3


@pytest.mark.parametrize("build", [csa2, csa1])
def test_both_layouts(build: object) -> None:
    tags = {"Unused": ["1"], "NumberOfImagesInMosaic": ["12"],
            "SliceNormalVector": ["0.0", "0.1", "0.99"]}
    parsed = csa.parse(build(tags))  # type: ignore[operator]
    assert csa.number(parsed, "NumberOfImagesInMosaic") == 12
    assert csa.vector(parsed, "SliceNormalVector") == [0.0, 0.1, 0.99]
    assert csa.vector(parsed, "Unused") is None and csa.number(parsed, "Missing") is None


def test_header_found_under_any_private_block() -> None:
    ds = Dataset()
    ds.add_new(0x00290011, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291110, "OB", csa2({"NumberOfImagesInMosaic": ["9"]}))
    assert csa.number(csa.header(ds), "NumberOfImagesInMosaic") == 9
    assert csa.header(Dataset()) == {}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_damaged_bytes_never_crash(data: bytes) -> None:
    real = csa2({"NumberOfImagesInMosaic": ["36"], "B_value": ["1000"]})
    for blob in (data, b"SV10" + data, real[: len(data) % len(real)], real + data):
        ds = Dataset()
        ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
        ds.add_new(0x00291010, "OB", blob)
        assert isinstance(csa.header(ds), dict)
