"""Outputs stay valid DICOM: dciodvfy adds no error, dcm2niix builds the same volume."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.deid.engine import Engine

from .helpers import data_file, write_series

DCIODVFY = shutil.which("dciodvfy")
DCM2NIIX = shutil.which("dcm2niix")


def _errors(path: Path) -> set[str]:
    run = subprocess.run([DCIODVFY or "dciodvfy", str(path)], capture_output=True, text=True,
                         timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    # Values differ by design (dummies, pseudonyms): compare the rule, not the value.
    return {re.sub(r"<[^>]*>$|= <.*", "", ln).strip() for ln in lines if ln.startswith("Error")}


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools (dciodvfy) not installed")
@pytest.mark.parametrize(
    "name",
    ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "CT_small.dcm",
     "emri_small.dcm", "eCT_Supplemental.dcm", "MR_small_jp2klossless.dcm", "rtplan.dcm"],
)
def test_dciodvfy_reports_no_new_error(name: str, engine: Engine, tmp_path: Path) -> None:
    src = data_file(name)
    result = engine.deidentify_file(src, tmp_path)
    assert result is not None
    new = _errors(result.path) - _errors(src)
    assert not new, f"de-identification introduced: {sorted(new)}"


def _nifti(folder: Path, out: Path) -> np.ndarray:
    out.mkdir()
    subprocess.run([DCM2NIIX or "dcm2niix", "-z", "n", "-b", "n", "-f", "vol", "-o", str(out),
                    str(folder)], check=True, capture_output=True, timeout=120)
    niis = sorted(out.glob("*.nii"))
    assert len(niis) == 1, niis
    img = sitk.ReadImage(str(niis[0]))
    return np.concatenate([
        sitk.GetArrayFromImage(img).ravel().astype(np.float64),
        np.array(img.GetSpacing() + img.GetOrigin() + img.GetDirection()),
    ])


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix not installed")
def test_dcm2niix_converts_to_the_same_volume(engine: Engine, tmp_path: Path) -> None:
    sources = write_series(tmp_path, 12)
    deid = tmp_path / "deid"
    deid.mkdir()
    for src in sources:
        assert engine.deidentify_file(src, deid) is not None
    before = _nifti(tmp_path / "src", tmp_path / "nii-src")
    after = _nifti(deid, tmp_path / "nii-deid")
    assert before.shape == after.shape
    assert np.array_equal(before, after)
