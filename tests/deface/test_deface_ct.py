"""Head CT defaced in Hounsfield units: the corpus' tilted head CT written as a DICOM CT
series in its real (sheared) geometry, and variants of its export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import CTImageStorage

from agent.deface import deface_path, qc
from agent.deface.ct import cranial_cavity, head_mask

from .ctheads import CT_SHEAR, read_sheared_nifti
from .dicom_writer import write_mr_series
from .helpers import read_stored
from .test_deface_cli import process_defaced


@pytest.fixture(scope="module")
def ct_head() -> sitk.Image:
    if not CT_SHEAR.is_file():
        pytest.skip(f"corpus head CT not found ({CT_SHEAR})")
    return read_sheared_nifti(CT_SHEAR)


def intracranial(image: sitk.Image) -> np.ndarray:
    """Inside the skull, from the CT itself: the head mask less everything within 6 mm of
    its outside (skull and scalp), and never bone."""
    mask = head_mask(image)
    inside = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=True, squaredDistance=False,
                                          useImageSpacing=True)
    arr = sitk.GetArrayFromImage(image)
    skull = arr > 300
    inner = sitk.GetArrayFromImage(inside) > 6.0
    # Inner side of the skull: voxels enclosed by bone in their axial plane.
    return inner & ~skull


def write_ct(image: sitk.Image, folder: Path, *, bits: int = 12, slope: float = 1.0,
             intercept: float = -1024.0, signed: bool = False,
             kernel: str = "H30s") -> list[Path]:
    return write_mr_series(image, folder, bits_stored=bits, slope=slope, intercept=intercept,
                           signed=signed, modality="CT", sop_class=CTImageStorage,
                           description="CT HEAD", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                           extra={"ConvolutionKernel": kernel, "GantryDetectorTilt": "18.5"})


def test_tilted_head_ct_defaced_in_hu(ct_head: sitk.Image, tmp_path: Path) -> None:
    files = write_ct(ct_head, tmp_path / "in")
    report = deface_path(tmp_path / "in", tmp_path / "out", render=tmp_path / "r.png")
    before, dss_in = read_stored(tmp_path / "in")
    after, dss_out = read_stored(tmp_path / "out")
    assert len(dss_out) == len(files)
    # Written back in its real geometry: every slice keeps its tilted position.
    for a, b in zip(dss_in, dss_out, strict=True):
        assert list(a.ImagePositionPatient) == list(b.ImagePositionPatient)
        assert list(a.ImageOrientationPatient) == list(b.ImageOrientationPatient)
    hu_before = before.astype(np.float64) - 1024.0
    hu_after = after.astype(np.float64) - 1024.0
    brain = intracranial(ct_head)
    assert brain.sum() > 100_000
    assert np.array_equal(before[brain], after[brain]), "intracranial HU must not change"
    changed = before != after
    assert changed.sum() > 20_000 and report.voxels_replaced == int(changed.sum())
    # New values are plausible HU: air to soft tissue where the face is fully replaced,
    # nothing beyond the stored range anywhere.
    assert hu_after.min() >= -1024 and hu_after.max() <= 3071
    assert report.qc.problems == [] and report.qc.shift_mm <= qc.MAX_SHIFT_MM
    assert report.qc.defects_after <= report.qc.defects_before + 0.01 * report.qc.surface_pixels
    assert report.qc.edge_tissue_after <= report.qc.edge_tissue_before
    # Facial bone in front of the skull is not kept: bone voxels that changed became soft
    # tissue or air, none stayed bone.
    was_bone = changed & (hu_before > 300)
    assert was_bone.sum() > 500
    assert (hu_after[was_bone] > 300).mean() < 0.05
    assert (tmp_path / "r.png").stat().st_size > 10_000
    ds = pydicom.dcmread(sorted((tmp_path / "out").iterdir())[0])
    assert ds.Modality == "CT" and ds.ImageType[0] == "DERIVED"


def test_ct_export_variants_8bit_negative_intercept(ct_head: sitk.Image, tmp_path: Path
                                                    ) -> None:
    """An 8-bit rescaled export (slope 8) and a signed export with a negative intercept:
    the same face region is replaced, the inside of the skull keeps its bits."""
    small = sitk.Shrink(ct_head, [2, 2, 1])
    write_ct(small, tmp_path / "a", bits=8, slope=8.0, intercept=-1024.0)
    write_ct(small, tmp_path / "b", bits=16, slope=1.0, intercept=-8192.0, signed=True)
    brain = intracranial(small)
    for name in ("a", "b"):
        deface_path(tmp_path / name, tmp_path / f"{name}_out")
        before, _ = read_stored(tmp_path / name)
        after, _ = read_stored(tmp_path / f"{name}_out")
        assert np.array_equal(before[brain], after[brain])
        assert (before != after).sum() > 2_000


def test_qc_gate_fails_closed_on_a_face_left_in_place_and_on_holes(ct_head: sitk.Image
                                                                   ) -> None:
    """The gate both ways: an untouched face, and a surface with holes punched in it."""
    small = sitk.Shrink(ct_head, [3, 3, 1])
    arr = sitk.GetArrayFromImage(small)
    weight = np.zeros(arr.shape, np.float32)
    weight[: arr.shape[0] // 2, arr.shape[1] // 2:, :] = 1.0  # anterior-inferior half
    w = sitk.GetImageFromArray(weight)
    w.CopyInformation(small)
    same = qc.check(small, small, w, -500.0, shift=False)
    assert any("did not move" in p for p in same.problems)
    holed = arr.copy()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.nonzero((weight > 0) & (arr > -500))
    pick = rng.choice(len(zz), size=len(zz) // 3, replace=False)
    for z, y, x in zip(zz[pick], yy[pick], xx[pick], strict=True):
        holed[z, max(0, y - 3):y + 3, max(0, x - 1):x + 2] = -1000.0
    bad = sitk.GetImageFromArray(holed)
    bad.CopyInformation(small)
    report = qc.check(small, bad, w, -500.0, shift=False)
    assert any("holes" in p for p in report.problems)
    with pytest.raises(Exception, match="QC failed"):
        qc.enforce(report)


def test_head_ct_series_is_delivered_defaced_by_process(ct_head: sitk.Image, tmp_path: Path
                                                        ) -> None:
    """``clinic2cloud process`` of a head CT series: delivered (not quarantined), defaced,
    in its sheared geometry, the inside of the skull (as the CT shows it) keeping its bits."""
    files = write_ct(ct_head, tmp_path / "export" / "CT HEAD")
    manifest = process_defaced(tmp_path)
    outputs = sorted(manifest.parent.glob("*.dcm"))
    assert len(outputs) == len(files)
    before, dss_in = read_stored(tmp_path / "export" / "CT HEAD")
    after, dss_out = read_stored(manifest.parent, "*.dcm")
    assert dss_out[0].Modality == "CT" and dss_out[0].ImageType[0] == "DERIVED"
    for a, b in zip(dss_in, dss_out, strict=True):  # slices keep their tilted positions
        assert list(a.ImagePositionPatient) == list(b.ImagePositionPatient)
    changed = before != after
    assert changed.sum() > 20_000
    cavity = cranial_cavity(ct_head)
    assert cavity is not None
    inside = sitk.GetArrayFromImage(sitk.Resample(
        cavity, ct_head, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    assert inside.sum() > 500_000 and not changed[inside].any()
