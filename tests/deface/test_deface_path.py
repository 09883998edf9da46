"""``deface_path`` (the CLI's entry): inputs it accepts and the reasons it refuses others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from agent.deface import deface_path
from agent.errors import DefaceFailed

from .conftest import Colin, make_case
from .dicom_writer import write_enhanced_mr, write_mr_series


def test_folder_with_stray_files_and_report_as_json(colin: Colin, tmp_path: Path) -> None:
    files = write_mr_series(make_case(colin, "coronal", (2.5, 2.5, 2.5)).image, tmp_path / "in")
    (tmp_path / "in" / "README.txt").write_text("not dicom")
    report = deface_path(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in files)
    numbers = json.loads(json.dumps(report.as_dict()))
    assert numbers["brain_voxels_changed"] == 0
    assert numbers["voxels_replaced"] > 1000
    assert 0.8 <= numbers["dice"] <= 1.0
    assert numbers["seconds"] > 0


def test_refusals(colin: Colin, tmp_path: Path) -> None:
    image = make_case(colin, "axial", (3.0, 3.0, 3.0)).image
    write_mr_series(image, tmp_path / "two" / "a")
    write_mr_series(image, tmp_path / "two" / "b")
    with pytest.raises(DefaceFailed, match="several series"):
        deface_path(tmp_path / "two", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DefaceFailed, match="no DICOM"):
        deface_path(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DefaceFailed, match="neither"):
        deface_path(tmp_path / "missing.nii.gz", tmp_path / "out.nii.gz")
    nii = tmp_path / "head.nii.gz"
    sitk.WriteImage(image, str(nii))
    with pytest.raises(DefaceFailed, match=r"\.nii"):
        deface_path(nii, tmp_path / "folder")
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkUInt8), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DefaceFailed, match="3-D"):
        deface_path(tmp_path / "flat.nii.gz", tmp_path / "o.nii.gz")


def test_enhanced_multiframe_object(colin: Colin, tmp_path: Path) -> None:
    """One Enhanced MR object (frames in reverse order, geometry in functional groups)."""
    case = make_case(colin, "coronal", (2.5, 2.5, 2.5))
    src = write_enhanced_mr(case.image, tmp_path / "in" / "enhanced.dcm", slope=2.0)
    deface_path(tmp_path / "in", tmp_path / "out")
    before = pydicom.dcmread(src)
    after = pydicom.dcmread(tmp_path / "out" / "enhanced.dcm")
    assert after.NumberOfFrames == before.NumberOfFrames
    a = before.pixel_array[::-1]  # back to slice order
    b = after.pixel_array[::-1]
    assert np.array_equal(a[case.brain], b[case.brain])
    assert (a[case.face] != b[case.face]).mean() >= 0.85
    assert after.ImageType[0] == "DERIVED"
    frame_type = after.PerFrameFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0]
    assert frame_type.FrameType[0] == "DERIVED"
    assert "113102" in [i.CodeValue for i in after.DeidentificationMethodCodeSequence]
