"""The pipeline stage: every MR/CT series checked for a face from its pixels and geometry;
defaced, delivered as it is (with the reason), or quarantined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from agent.config import Config, replace
from agent.deface import DefaceStage, find_templates
from agent.deface.studyfit import PartnerPending
from agent.deface.template import ENV_VAR, FILES, load_template
from agent.errors import DefaceFailed, SeriesProblem
from agent.work import SeriesWork

from .conftest import Colin, make_case
from .dicom_writer import write_enhanced_mr, write_mr_series

SPACING = (2.5, 2.5, 2.5)


def work_for(files: list[Path], tmp: Path) -> SeriesWork:
    (tmp / "work").mkdir(parents=True, exist_ok=True)
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


# Soak: test_volumes writes RLE, JPEG 2000 lossless and big-endian input back in its syntax.
@pytest.mark.soak
def test_compressed_lossless_input_keeps_its_syntax(head_image: sitk.Image,
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
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


# Soak: in the default run a head cropped to the nose and labelled KNEE (test_noface) and
# the study acceptance's sagittal stack labelled KOPF are defaced.
@pytest.mark.soak
@pytest.mark.parametrize("label", ["KNEE", "KOPF", "CABEZA", ""])
def test_head_is_defaced_whatever_its_label_says(head_image: sitk.Image, tmp_path: Path,
                                                 label: str) -> None:
    """Header words never spare a head: decided from the image."""
    files = write_mr_series(head_image, tmp_path / "in", body_part=label,
                            description={"KNEE": "knee pd", "KOPF": "Schädel",
                                         "CABEZA": "cabeza"}.get(label, ""))
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced and work.face["decision"] == "defaced"


def test_other_modalities_pass_through(head_image: sitk.Image, tmp_path: Path) -> None:
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


def test_what_cannot_be_told_waits_then_is_quarantined(tmp_path: Path) -> None:
    """A phantom the template does not fit: no fit, no study partner. The agent waits for
    a partner; once none can come the series is quarantined with what to do."""
    files = write_mr_series(_blob_image(), tmp_path / "in", body_part="HEAD")
    stage = DefaceStage(Config())
    with pytest.raises(PartnerPending):
        stage(work_for(files, tmp_path))
    stage.intake_closed()
    with pytest.raises(DefaceFailed) as info:
        stage(work_for(files, tmp_path))
    assert info.value.code == "deface-fit"
    assert "3-D T1" in str(info.value) and "[send]" in str(info.value)


def study_series(image: sitk.Image, folder: Path, study: str, frame: str,
                 **kwargs: object) -> list[Path]:
    """A series of one study and Frame of Reference (shared patient coordinates)."""
    files = write_mr_series(image, folder, **kwargs)  # type: ignore[arg-type]
    for p in files:
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study, frame
        ds.save_as(p)
    return files


def study_work(files: list[Path], tmp: Path, name: str) -> SeriesWork:
    work = work_for(files, tmp / name)
    work.study_pseudonym, work.series_pseudonym = "STUDY-1", f"SERIES-{name}"
    return work


# Soak: the default run's study acceptance (test_acceptance) defaces a 12-slice sagittal
# stack from the study's fit with known masks.
@pytest.mark.soak
def test_short_and_tilted_stacks_are_defaced_from_the_study_fit(
        colin: Colin, tmp_path: Path) -> None:
    """A 12-slice sagittal stack and a sheared (gantry-tilted) stack cannot place the face
    alone; with the study's 3-D series fitted first they are defaced from the mapped region,
    each slice in its own geometry, the brain bit-identical."""
    study, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stage = DefaceStage(Config())
    full = make_case(colin, "axial", SPACING)
    t1 = study_work(study_series(full.image, tmp_path / "t1", study, frame), tmp_path, "t1")
    stage(t1)
    assert t1.defaced
    sagittal = make_case(colin, "sagittal", (1.0, 1.0, 5.0))
    lateral = sitk.RegionOfInterest(sagittal.image, [*sagittal.image.GetSize()[:2], 12],
                                    [0, 0, 2])  # 12 slices through the face, off-centre
    short = study_series(lateral, tmp_path / "short", study, frame, body_part="")
    work = study_work(short, tmp_path, "short")
    stage(work)
    assert work.defaced and "mapped surrogate" in work.face["reason"]
    before = np.stack([pydicom.dcmread(p).pixel_array for p in sorted(short)])
    after = np.stack([pydicom.dcmread(p).pixel_array for p in sorted(work.files)])
    assert (before != after).any()
    tilted = study_series(full.image, tmp_path / "tilt", study, frame)
    for p in tilted:  # shear the stack: a gantry tilt
        ds = pydicom.dcmread(p)
        pos = [float(v) for v in ds.ImagePositionPatient]
        pos[1] += 0.2 * pos[2]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(p)
    work = study_work(tilted, tmp_path, "tilt")
    stage(work)
    assert work.defaced


# Soak: the default run's study acceptance delivers the slab above the eyes as it is;
# test_presence judges the slab alone.
@pytest.mark.soak
def test_slab_above_the_eyes_is_delivered_as_it_is(colin: Colin, tmp_path: Path) -> None:
    """A slab through the top of the head, with the study's fit: no face in its field of
    view, so it is delivered unchanged with the reason recorded. Alone it cannot be told."""
    study, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    full = make_case(colin, "axial", SPACING).image
    size = list(full.GetSize())
    top = sitk.RegionOfInterest(full, [size[0], size[1], 20], [0, 0, size[2] - 20])
    slab = study_series(top, tmp_path / "slab", study, frame)
    lonely = DefaceStage(Config())
    lonely.intake_closed()
    with pytest.raises(SeriesProblem):
        lonely(study_work(slab, tmp_path, "alone"))
    stage = DefaceStage(Config())
    stage(study_work(study_series(full, tmp_path / "t1", study, frame), tmp_path, "t1"))
    work = study_work(slab, tmp_path, "slab")
    stage(work)
    assert not work.defaced and work.files == slab
    assert work.face["decision"] == "no-face"
    assert "no face in the field of view" in work.face["reason"]


def test_head_ct_not_in_hounsfield_units_is_quarantined(head_image: sitk.Image,
                                                        tmp_path: Path) -> None:
    """Head CT is defaced in HU now; a "CT" whose values are MR intensities (no air near
    -1000 HU, no skin at -500 HU) cannot be fitted and is held back, never delivered."""
    files = write_mr_series(head_image, tmp_path / "in", modality="CT")
    stage = DefaceStage(Config())
    stage.intake_closed()  # no study partner will come
    with pytest.raises(DefaceFailed) as info:
        stage(work_for(files, tmp_path))
    assert info.value.code in ("deface-fit", "deface-qc", "deface-fov", "deface-ct")


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


# Soak: the default run's study acceptance defaces two-volume mosaic and enhanced series
# with one fit, brains bit-identical.
@pytest.mark.soak
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


# Soak: the default run defaces the enhanced DWI of the study acceptance and the real
# XA30 enhanced T1 (test_real_corpus_bounded).
@pytest.mark.soak
def test_enhanced_multiframe_head_is_defaced(colin: Colin, tmp_path: Path) -> None:
    src = write_enhanced_mr(make_case(colin, "sagittal", SPACING).image,
                            tmp_path / "in" / "mf.dcm")
    work = work_for([src], tmp_path)
    DefaceStage(Config())(work)
    assert work.defaced and work.files == [tmp_path / "work" / "deface" / "mf.dcm"]
    out = pydicom.dcmread(work.files[0])
    assert out.NumberOfFrames == pydicom.dcmread(src).NumberOfFrames


def _resampled(image: sitk.Image, kind: str, spacing: tuple[float, float, float],
               angle_deg: float = 0.0) -> sitk.Image:
    """``image`` on a grid of another orientation (tilted by ``angle_deg`` about x)."""
    from .conftest import direction

    d = direction(kind)
    a = np.radians(angle_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    d = tilt @ d
    size = np.array(image.GetSize()) * np.array(image.GetSpacing())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(
        [(s - 1) / 2 for s in image.GetSize()]))
    extent = float(np.linalg.norm(size))
    n = [int(extent * 0.75 / s) for s in spacing]
    ref = sitk.Image(n, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(tuple(d.ravel()))
    ref.SetOrigin(tuple(centre - d @ (np.array(n) * np.array(spacing) / 2)))
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(),
                         sitk.sitkLinear, 0.0)


# Soak: in the default run, Colin (a real head) is defaced labelled KNEE here, labelled
# KOPF in a sagittal stack of the study acceptance, cropped and labelled KNEE in
# test_noface; the corpus' real EPI heads in test_acceptance.
@pytest.mark.soak
@pytest.mark.parametrize("name, kind, angle, label", [
    ("otsu_t1", "sagittal", 0.0, "KOPF"),
    ("t1_neck", "coronal", 20.0, ""),
])
def test_real_heads_whatever_their_shape_and_label(corpus_heads: Path, tmp_path: Path,
                                                   name: str, kind: str, angle: float,
                                                   label: str) -> None:
    """Real heads from the corpus (one with a long field of view to the neck), written in
    other orientations, tilted, labelled in German or not at all: defaced."""
    image = sitk.ReadImage(str(corpus_heads / f"{name}.nii.gz"))
    files = write_mr_series(_resampled(image, kind, (2.5, 2.5, 2.5), angle), tmp_path / "in",
                            body_part=label, description="")
    work = work_for(files, tmp_path)
    DefaceStage(Config())(work)
    # The template's face where the core's QC passes it, else the mapped surrogate (the
    # sagittal cut of otsu_t1 puts the new face against the edge of the view): defaced.
    assert work.defaced and work.face["decision"] == "defaced"
    assert any(m in work.face["reason"] for m in ("template face", "mapped surrogate"))


def test_colour_head_is_defaced_on_its_luminance(colin: Colin, tmp_path: Path) -> None:
    """A colour MR series (a colour map over the anatomy, 8-bit RGB): fitted and judged on
    its luminance; the replaced pixels become grey, every brain pixel keeps its three
    samples bit for bit, and it is written back as RGB."""
    case = make_case(colin, "axial", SPACING)
    files = write_mr_series(case.image, tmp_path / "in", image_type=(
        "DERIVED", "PRIMARY", "COLFA", "ND"), description="colour map")
    tint = np.array([1.0, 0.7, 0.4])
    top = float(np.percentile(sitk.GetArrayViewFromImage(case.image), 99.5))
    for p in files:
        ds = pydicom.dcmread(p)
        grey = ds.pixel_array.astype(np.float64) * (255.0 / top)
        rgb = np.clip(np.rint(grey[..., None] * tint), 0, 255).astype(np.uint8)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = rgb.tobytes()
        ds.save_as(p)
    work = work_for(files, tmp_path)
    DefaceStage(replace(Config(), deface_renders=False))(work)
    assert work.defaced
    order = {p.name: int(pydicom.dcmread(p).InstanceNumber) for p in files}
    before = np.stack([pydicom.dcmread(p).pixel_array
                       for p in sorted(files, key=lambda p: order[p.name])])
    outs = [pydicom.dcmread(p) for p in sorted(work.files, key=lambda p: order[p.name])]
    assert all(ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
               for ds in outs)
    after = np.stack([ds.pixel_array for ds in outs])
    assert after.shape == before.shape
    changed = (before != after).any(axis=-1)
    assert not changed[case.brain].any(), "brain pixels changed"
    face = case.face & (before.max(axis=-1) > 10)
    assert float(changed[face].mean()) >= 0.85
    grey = after[changed]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
