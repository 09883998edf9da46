"""The pipeline stage: which series are defaced, passed through or quarantined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from agent.config import Config, replace
from agent.deface import DefaceStage, find_templates
from agent.deface.template import ENV_VAR, FILES, load_template
from agent.errors import DefaceFailed, SeriesProblem
from agent.work import SeriesWork

from .conftest import Colin, make_case
from .dicom_writer import write_enhanced_mr, write_mr_series

SPACING = (2.5, 2.5, 2.5)


def work_for(files: list[Path], tmp: Path) -> SeriesWork:
    (tmp / "work").mkdir(exist_ok=True)
    return SeriesWork(key="ab" * 32, version=1, source_files=list(files), workdir=tmp / "work")


@pytest.fixture(scope="module")
def head_image(colin: Colin) -> sitk.Image:
    return make_case(colin, "axial", SPACING).image


def test_head_mr_is_defaced(head_image: sitk.Image, tmp_path: Path) -> None:
    files = write_mr_series(head_image, tmp_path / "in")
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced
    assert "113102" in work.codes
    assert work.render == tmp_path / "work" / "render.png" and work.render.is_file()
    assert [p.name for p in work.files] == [p.name for p in files]
    assert all(p.parent == tmp_path / "work" / "deface" for p in work.files)
    assert work.source_files == files  # the staged copies are not touched
    before = {p.name: pydicom.dcmread(p) for p in files}
    changed = 0
    for p in work.files:
        ds = pydicom.dcmread(p)
        src = before[p.name]
        assert ds.ImagePositionPatient == src.ImagePositionPatient
        assert ds.SOPInstanceUID == src.SOPInstanceUID
        changed += int(not np.array_equal(ds.pixel_array, src.pixel_array))
    assert changed > len(files) // 4


def test_no_render_when_disabled(head_image: sitk.Image, tmp_path: Path) -> None:
    files = write_mr_series(head_image, tmp_path / "in")
    work = work_for(files, tmp_path)
    DefaceStage(replace(Config(), deface_renders=False))(work)
    assert work.defaced and work.render is None


def test_compressed_input_is_written_uncompressed(head_image: sitk.Image,
                                                  tmp_path: Path) -> None:
    files = write_mr_series(head_image, tmp_path / "in")
    for p in files:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced
    ds = pydicom.dcmread(work.files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


@pytest.mark.parametrize("how", ["image-type", "description", "three-plane"])
def test_head_localizers_are_quarantined(head_image: sitk.Image, tmp_path: Path,
                                         how: str) -> None:
    if how == "image-type":
        files = write_mr_series(head_image, tmp_path / "in",
                                image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    elif how == "description":
        files = write_mr_series(head_image, tmp_path / "in", description="AAHead_Scout")
    else:
        files = write_mr_series(head_image, tmp_path / "in", description="survey")[:3]
        for k, p in enumerate(files):  # one image per plane
            ds = pydicom.dcmread(p)
            ds.SeriesDescription = "tri"
            ds.ImageOrientationPatient = [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1],
                                          [1, 0, 0, 0, 0, -1]][k]
            ds.save_as(p)
    work = work_for(files, tmp_path)
    with pytest.raises(DefaceFailed) as info:
        DefaceStage(Config())(work)
    assert info.value.code == "deface-localizer"
    assert "localizer" in str(info.value)
    # Opted out: delivered unchanged.
    work = work_for(files, tmp_path)
    DefaceStage(replace(Config(), deface_quarantine_localizers=False))(work)
    assert work.files == files and not work.defaced


def test_other_body_parts_and_modalities_pass_through(head_image: sitk.Image,
                                                      tmp_path: Path) -> None:
    knee = write_mr_series(head_image, tmp_path / "knee", body_part="KNEE")
    work = work_for(knee, tmp_path)
    DefaceStage(Config())(work)
    assert work.files == knee and not work.defaced and work.codes == []
    pet = write_mr_series(head_image, tmp_path / "pet", modality="PT")
    work = work_for(pet, tmp_path)
    DefaceStage(Config())(work)
    assert work.files == pet and not work.defaced


def _blob_image() -> sitk.Image:
    """Something that is not a head: a smooth ellipsoidal phantom with a hole."""
    z, y, x = np.mgrid[-40:40, -40:40, -40:40].astype(np.float32)
    r = (x / 35) ** 2 + (y / 18) ** 2 + (z / 38) ** 2
    arr = np.where(r < 1, 300.0, 0.0) - np.where((x / 8) ** 2 + (y / 8) ** 2 < 1, 250.0, 0.0)
    img = sitk.GetImageFromArray(np.clip(arr, 0, None).astype(np.float32))
    img.SetSpacing((2.5, 2.5, 2.5))
    img.SetOrigin((-100.0, -100.0, -100.0))
    return img


def test_unknown_body_part_not_a_head_passes_through(tmp_path: Path) -> None:
    files = write_mr_series(_blob_image(), tmp_path / "in", body_part="",
                            description="phantom")
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.files == files and not work.defaced


def test_unknown_body_part_head_is_defaced(head_image: sitk.Image, tmp_path: Path) -> None:
    files = write_mr_series(head_image, tmp_path / "in", body_part="", description="t1")
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced


def test_head_that_does_not_fit_is_quarantined(tmp_path: Path) -> None:
    files = write_mr_series(_blob_image(), tmp_path / "in", body_part="HEAD")
    with pytest.raises(DefaceFailed) as info:
        DefaceStage(Config())(work_for(files, tmp_path))
    assert info.value.code.startswith("deface")


def test_head_series_the_method_cannot_handle(head_image: sitk.Image, tmp_path: Path) -> None:
    few = write_mr_series(head_image, tmp_path / "few")[:12]
    with pytest.raises(DefaceFailed, match="at least 20 slices"):
        DefaceStage(Config())(work_for(few, tmp_path))
    tilted = write_mr_series(head_image, tmp_path / "tilt")
    for p in tilted:  # shear the stack far beyond any gantry tilt (70 degrees)
        ds = pydicom.dcmread(p)
        pos = [float(v) for v in ds.ImagePositionPatient]
        pos[1] += 2.75 * pos[2]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(p)
    with pytest.raises(DefaceFailed, match="beyond any gantry tilt"):
        DefaceStage(Config())(work_for(tilted, tmp_path))


def test_face_outside_field_of_view_is_quarantined(colin: Colin, tmp_path: Path) -> None:
    """A slab through the top of the head: no face to replace, no fit to trust."""
    full = make_case(colin, "axial", SPACING).image
    size = list(full.GetSize())
    top = sitk.RegionOfInterest(full, [size[0], size[1], 24], [0, 0, size[2] - 30])
    files = write_mr_series(top, tmp_path / "in")
    with pytest.raises(SeriesProblem):
        DefaceStage(Config())(work_for(files, tmp_path))


def test_head_ct_not_in_hounsfield_units_is_quarantined(head_image: sitk.Image,
                                                        tmp_path: Path) -> None:
    """Head CT is defaced in HU now; a "CT" whose values are MR intensities (no air near
    -1000 HU, no skin at -500 HU) cannot be fitted and is held back, never delivered."""
    files = write_mr_series(head_image, tmp_path / "in", modality="CT")
    with pytest.raises(DefaceFailed) as info:
        DefaceStage(Config())(work_for(files, tmp_path))
    assert info.value.code in ("deface-fit", "deface-qc", "deface-fov")


def test_template_locator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_templates()
    assert (real / "head.nii.gz").is_file()
    # Shipped templates stay small.
    assert sum(p.stat().st_size for p in real.glob("*.nii.gz")) < 4_000_000
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_templates() == real  # an empty override folder is skipped
    for name in FILES[:-1]:
        (tmp_path / name).write_bytes((real / name).read_bytes())
    assert find_templates() == real  # an incomplete override folder is skipped too
    (tmp_path / FILES[-1]).write_bytes((real / FILES[-1]).read_bytes())
    assert find_templates() == tmp_path
    (tmp_path / "labels.nii.gz").write_bytes(b"not nifti")
    load_template.cache_clear()
    try:
        with pytest.raises(DefaceFailed, match="cannot be read"):
            load_template(tmp_path)
    finally:
        load_template.cache_clear()


def test_series_of_several_volumes_gets_one_face(colin: Colin, tmp_path: Path) -> None:
    """A time series (two volumes at the same positions) is defaced volume by volume with one
    template fit; the brain stays bit-identical in both."""
    case = make_case(colin, "axial", SPACING)
    a = write_mr_series(case.image, tmp_path / "a")
    b = write_mr_series(case.image * 1.1, tmp_path / "b")
    n = len(a)
    for i, p in enumerate(b):  # second volume: same positions, later instance numbers
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = pydicom.dcmread(a[0]).SeriesInstanceUID
        ds.InstanceNumber = n + int(ds.InstanceNumber)
        p.rename(tmp_path / "a" / f"V2_{i:04d}.dcm")
        ds.save_as(tmp_path / "a" / f"V2_{i:04d}.dcm")
    files = sorted((tmp_path / "a").iterdir())
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced and len(work.files) == 2 * n
    for p_in, p_out in zip(files, work.files, strict=True):
        assert p_in.name == p_out.name
    outs = {p.name: pydicom.dcmread(p) for p in work.files}
    ins = {p.name: pydicom.dcmread(p) for p in files}
    iop = np.array([float(v) for v in ins[files[0].name].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    for volume in (lambda d: int(d.InstanceNumber) <= n, lambda d: int(d.InstanceNumber) > n):
        names = sorted((k for k, d in ins.items() if volume(d)),
                       key=lambda k: float(np.array(ins[k].ImagePositionPatient,
                                                    dtype=float) @ normal))
        before = np.stack([ins[k].pixel_array for k in names])
        after = np.stack([outs[k].pixel_array for k in names])
        assert np.array_equal(before[case.brain], after[case.brain])
        assert (before[case.face] != after[case.face]).mean() >= 0.85


def test_enhanced_multiframe_head_is_defaced(colin: Colin, tmp_path: Path) -> None:
    src = write_enhanced_mr(make_case(colin, "sagittal", SPACING).image,
                            tmp_path / "in" / "mf.dcm")
    work = work_for([src], tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced and work.files == [tmp_path / "work" / "deface" / "mf.dcm"]
    out = pydicom.dcmread(work.files[0])
    assert out.NumberOfFrames == pydicom.dcmread(src).NumberOfFrames
