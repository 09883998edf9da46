"""QA phantoms no head template fits end withheld (agent.deface.phantom), never delivered
unchecked: the geometry phantom's plates (GE's T1, EPI and DWI of the corpus), a series
named a phantom (Philips' bottle). Heads - whole, cut to strips or to a few slices
through the face, noisy, striped - show no phantom's plates and stay quarantined; a head
named a phantom that the template fits is defaced as any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.config import Config
from agent.deface import DefaceStage
from agent.deface.phantom import named_phantom, parallel_stripes, phantom_words
from agent.errors import DefaceFailed, Withheld
from agent.vocab import WithheldCode
from agent.work import SeriesWork

from .conftest import Colin, make_case
from .dicom_writer import write_mr_series

RNG = np.random.default_rng(5)


def volume(arr: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    noisy = arr + RNG.normal(0.0, 8.0, arr.shape)
    img = sitk.GetImageFromArray(np.clip(noisy, 0, None).astype(np.float32))
    img.SetSpacing(spacing)
    return img


def plates(shape: tuple[int, int, int] = (60, 120, 120), spacing: float = 2.0,
           tilt_deg: float = 3.0, dashed: bool = False, period: float = 12.0) -> sitk.Image:
    """A geometry phantom: thin bright plates every ``period`` mm, a little off the grid's
    axes (and, in EPI, broken into dashes), in a dark fill that fills the view."""
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32) * spacing
    t = np.deg2rad(tilt_deg)
    across = x * np.cos(t) + y * np.sin(t)
    arr = np.where((across % period) < max(2.5, 1.2 * spacing), 600.0, 20.0)
    if dashed:
        arr = np.where((-x * np.sin(t) + y * np.cos(t)) % 20.0 < 4.0, 20.0, arr)
    return volume(arr, (spacing, spacing, spacing))


@pytest.mark.parametrize("make", [
    lambda: plates(),
    lambda: plates((2, 128, 128), dashed=True),  # a 2-image DWI of the phantom
    lambda: plates((10, 64, 64), spacing=3.75, tilt_deg=-8.0, period=30.0),  # its fMRI
])
def test_a_geometry_phantoms_plates_are_seen(make) -> None:  # type: ignore[no-untyped-def]
    assert parallel_stripes(make()) is not None


def _crop(image: sitk.Image, lo: tuple[float, float, float], hi: tuple[float, float, float]
          ) -> sitk.Image:
    size = np.array(image.GetSize())
    start = (np.array(lo) * size).astype(int)
    stop = np.maximum((np.array(hi) * size).astype(int), start + 1)
    return sitk.RegionOfInterest(image, [int(v) for v in stop - start], [int(v) for v in start])


def test_what_only_resembles_plates_is_no_phantom(colin: Colin) -> None:
    """Short stripes (under 120 mm), a crossed grid, and heads cut to strips or to the
    face's profile in every orientation show no phantom's plates."""
    assert parallel_stripes(plates((20, 50, 50))) is None
    grid = sitk.GetArrayFromImage(plates())
    assert parallel_stripes(volume(np.maximum(grid, np.transpose(grid, (0, 2, 1))),
                                   (2.0, 2.0, 2.0))) is None
    for kind in ("sagittal", "coronal", "axial", "oblique"):
        image = make_case(colin, kind, (2.0, 2.0, 2.0)).image
        assert parallel_stripes(image) is None, kind
        for lo, hi in [((0, 0.6, 0), (1, 1, 1)), ((0.6, 0, 0), (1, 1, 1)),
                       ((0.45, 0, 0), (0.55, 1, 1)), ((0, 0.45, 0), (1, 0.55, 1))]:
            assert parallel_stripes(_crop(image, lo, hi)) is None, (kind, lo, hi)


@pytest.fixture(scope="module")
def real_head(corpus_heads: Path) -> sitk.Image:
    image = sitk.ReadImage(str(corpus_heads / "otsu_t1.nii.gz"), sitk.sitkFloat32)
    return sitk.Shrink(image, [2, 2, 2])


def _rician(image: sitk.Image, snr: float) -> sitk.Image:
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    sigma = float(np.median(arr[arr > 0.2 * np.percentile(arr, 99)])) / snr
    out = sitk.GetImageFromArray(np.hypot(arr + RNG.normal(0, sigma, arr.shape),
                                          RNG.normal(0, sigma, arr.shape)).astype(np.float32))
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("at", [0.25, 0.4, 0.55, 0.7])
def test_short_stacks_of_a_real_head_show_no_plates(real_head: sitk.Image, at: float) -> None:
    """The few slices of a quick DWI or a scout-like slab through the real head (the
    face, the eyes, the brain), clean and at SNR 3: no phantom, they stay quarantined."""
    for slices in (2, 5, 10):
        stack = _crop(real_head, (0, 0, at), (1, 1, at + slices / real_head.GetSize()[2]))
        assert parallel_stripes(stack) is None, (at, slices)
        assert parallel_stripes(_rician(stack, 3.0)) is None, (at, slices, "noisy")


def test_phantom_words() -> None:
    words, patient = phantom_words(), phantom_words(patient=True)
    for name in ("phantom", "QA^Phantom", "FBIRN", "Fantoom", "fantome", "agar sphere"):
        assert words.search(name), name
    for name in ("QC_daily", "ACR", "qa"):
        assert patient.search(name) and not words.search(name), name
    for name in ("XAtest_sub-July11", "Landman_234480", "Aqaba^Quentin", "EPI_asc", "dicom",
                 "Sacral^Macrae"):
        assert not patient.search(name), name


def _stage(image: sitk.Image, tmp: Path, name: str) -> SeriesWork:
    files = write_mr_series(image, tmp / "in", patient_name=name, description="")
    (tmp / "work").mkdir(parents=True, exist_ok=True)
    work = SeriesWork(key="ab" * 32, version=1, source_files=list(files),
                      workdir=tmp / "work")
    stage = DefaceStage(Config())
    stage.intake_closed()
    stage(work)
    return work


def test_a_short_stack_through_a_face_named_phantom_is_withheld(colin: Colin,
                                                                tmp_path: Path) -> None:
    """Header words may hold a series back, never let it through: 3 slices through
    Colin's eyes and nose named a phantom end withheld (nothing leaves); unnamed, they are
    quarantined saying what to do."""
    head = make_case(colin, "axial", (2.0, 2.0, 5.0)).image
    stack = _crop(head, (0, 0, 0.38), (1, 1, 0.38 + 3 / head.GetSize()[2]))
    assert named_phantom([]) is False
    with pytest.raises(Withheld) as held:
        _stage(stack, tmp_path / "named", "QA^PHANTOM")
    assert held.value.code is WithheldCode.QA_PHANTOM and "headers" in str(held.value)
    with pytest.raises(DefaceFailed):
        _stage(stack, tmp_path / "unnamed", "DOE^JANE")


def test_the_real_geometry_phantoms_dwi_is_withheld(corpus: Path, tmp_path: Path) -> None:
    """GE's plate phantom, 2 slices of DWI in 7 volumes: no fit, its plates seen."""
    files = sorted(p for p in (corpus / "dcm_qa_ge" / "01_Ax_DWI_TENSOR_R2").iterdir()
                   if p.name != "LICENSE")
    (tmp_path / "work").mkdir()
    work = SeriesWork(key="ef" * 32, version=1, source_files=files, workdir=tmp_path / "work")
    stage = DefaceStage(Config())
    stage.intake_closed()
    with pytest.raises(Withheld) as held:
        stage(work)
    assert held.value.code is WithheldCode.QA_PHANTOM and "plates" in str(held.value)


@pytest.mark.parametrize("name", [pytest.param("dcm_qa_ge/05_3D_Ax_T1_MP_RAGE_R22",
                                               marks=pytest.mark.soak),
                                  "dcm_qa_ge/2_fMRI_Multiphase_Des"])
def test_the_real_geometry_phantoms_plates_are_seen(corpus: Path, name: str) -> None:
    from agent.deface import dicomio
    from agent.deface.volumes import build_volumes

    files = sorted(p for p in (corpus / name).iterdir() if p.name != "LICENSE")
    objs = dicomio.read_series(files, files)
    assert parallel_stripes(build_volumes(objs.slices, objs.pixels)[0].fit_image())


@pytest.mark.soak
def test_a_whole_head_named_phantom_is_defaced(colin: Colin, tmp_path: Path) -> None:
    """The template fits: the name plays no part, the face is replaced."""
    work = _stage(make_case(colin, "axial", (2.0, 2.0, 2.0)).image, tmp_path, "PHANTOM")
    assert work.defaced and work.face["decision"] == "defaced", work.face


def _striped(image: sitk.Image, amplitude: float, period: float = 12.0, width: float = 3.5,
             add: bool = False) -> sitk.Image:
    """A stripe artefact (a herringbone from a spike in k-space) over the whole view."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    on = (np.indices(arr.shape)[2] * image.GetSpacing()[0]) % period < width
    level = amplitude * float(arr.max())
    out = sitk.GetImageFromArray(arr + np.where(on, level, 0.0) if add
                                 else np.where(on, level, arr))
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("amplitude, add", [(0.5, False), (1.0, True), (100.0, False)])
def test_plates_alone_never_deliver_a_striped_head(real_head: sitk.Image, tmp_path: Path,
                                                   amplitude: float, add: bool) -> None:
    """Why the plates may only withhold: a real head under stripes, as bright as it or a
    hundred times brighter, replacing or added to it, shows them too (measured: every
    amplitude, period and mode tried, on raw, ranked and log values). Cut to 3 slices
    across the head, no template fits; it ends withheld - nothing leaves - never
    delivered, and no shape rule calls it face-free."""
    from agent.deface.noface import evidence

    striped = _striped(real_head, amplitude, add=add)
    assert parallel_stripes(striped) is not None
    assert evidence(striped) is None
    stack = _crop(striped, (0, 0, 0.45), (1, 1, 0.45 + 3 / striped.GetSize()[2]))
    with pytest.raises(Withheld) as held:
        _stage(stack, tmp_path, "DOE^JANE")
    assert held.value.code is WithheldCode.QA_PHANTOM
