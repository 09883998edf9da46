"""The reference step on a real head (Colin27): a brain mask that agrees with the BET
brain, and standard DICOM SEG and SR objects that reference the source series."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from clinic2cloud_worker.reference.brainmask import brain_mask
from clinic2cloud_worker.reference.cli import main

COLIN = Path("/usr/share/mricron/templates")
pytestmark = pytest.mark.skipif(not (COLIN / "ch2bet.nii.gz").is_file(),
                                reason="Colin27 not found: apt-get install mricron-data")


def test_brain_mask_agrees_with_the_bet_brain() -> None:
    head = sitk.ReadImage(str(COLIN / "ch2.nii.gz"), sitk.sitkFloat32)
    bet = sitk.GetArrayFromImage(sitk.ReadImage(str(COLIN / "ch2bet.nii.gz")) > 0) > 0
    result = brain_mask(head)
    mask = result.mask > 0
    dice = 2 * (mask & bet).sum() / (mask.sum() + bet.sum())
    assert dice > 0.93, dice
    assert result.plausible and 1400 < result.volume_ml < 1900


def test_step_writes_seg_sr_and_report(tmp_path: Path) -> None:
    from tests.deface.dicom_writer import write_mr_series

    head = sitk.ReadImage(str(COLIN / "ch2.nii.gz"), sitk.sitkFloat32)
    head = sitk.Resample(head, [int(n / 2) for n in head.GetSize()], sitk.Transform(),
                         sitk.sitkLinear, head.GetOrigin(), [2.0, 2.0, 2.0],
                         head.GetDirection(), 0.0, sitk.sitkFloat32)
    src = write_mr_series(head, tmp_path / "in")
    for p in src:  # a clean source: no de-identification flag without its method
        ds = pydicom.dcmread(p)
        del ds.PatientIdentityRemoved
        ds.save_as(p)
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(tmp_path / "in"), str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    [seg_path], [sr_path] = list(out.glob("seg/*.dcm")), list(out.glob("sr/*.dcm"))
    seg, sr = pydicom.dcmread(seg_path), pydicom.dcmread(sr_path)
    first = pydicom.dcmread(src[0])
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "Brain"
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    values = [float(item.MeasuredValueSequence[0].NumericValue) for item in _items(sr)
              if "MeasuredValueSequence" in item]
    assert values == [report["brain_volume_ml"]] and 1400 < values[0] < 1900
    assert int(seg.NumberOfFrames) == int(np.count_nonzero(
        [f.any() for f in seg.pixel_array.reshape(int(seg.NumberOfFrames), -1)]))
    if shutil.which("dciodvfy"):
        for path in (seg_path, sr_path):
            check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                                   timeout=120)
            errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
            assert errors == [], (path.parent.name, errors)


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out += [item, *_items(item)]
    return out


def test_not_a_volume_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("no DICOM here")
    assert main([str(tmp_path / "in"), str(tmp_path / "out")]) == 3
