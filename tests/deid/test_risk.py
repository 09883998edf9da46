"""Pixel-identity rules: an empty Conversion Type is not a capture (Philips writes one on
every acquired MR image)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.deid.risk import pixel_risks

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "dicom"


def mr(**attrs: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.4", "MR"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_conversion_type_counts_only_with_a_value() -> None:
    assert pixel_risks(mr()) == []
    assert pixel_risks(mr(ConversionType="")) == []
    assert [r.rule for r in pixel_risks(mr(ConversionType="WSD"))] == ["secondary-capture"]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the real DICOM corpus is not at ../shared")
def test_real_philips_images_carry_no_pixel_risk() -> None:
    for folder in ("fmri", "601_WIP_dti_ax"):
        path = sorted((CORPUS / "dcm_qa_philips" / folder).iterdir())[0]
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert "ConversionType" in ds and not ds.ConversionType
        assert pixel_risks(ds) == []
