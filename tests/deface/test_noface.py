"""Positive evidence that a volume holds no face, from its shape alone (agent.deface.noface):
limbs, trunks and phantoms are spared; no head, whole or cut, labelled or not, ever is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.config import Config
from agent.deface import DefaceStage
from agent.deface.noface import evidence
from agent.deface.studyfit import PartnerPending
from agent.errors import DefaceFailed, Withheld
from agent.vocab import FaceCode
from agent.work import SeriesWork

from .conftest import Colin, make_case
from .dicom_writer import write_mr_series

RNG = np.random.default_rng(7)


def volume(arr: np.ndarray, spacing: tuple[float, float, float],
           direction: tuple[float, ...] | None = None) -> sitk.Image:
    noisy = arr + RNG.normal(0.0, 8.0, arr.shape)
    img = sitk.GetImageFromArray(np.clip(noisy, 0, None).astype(np.float32))
    img.SetSpacing(spacing)
    if direction is not None:
        img.SetDirection(direction)
    return img


def knee(length_mm: float = 160.0) -> sitk.Image:
    """A knee-like limb, sagittal slices (rows AP, columns SI): skin, fat, muscle, two
    bones with marrow, running through the whole field of view."""
    nx, ny, nz = 30, 160, int(length_mm / 1.0)  # 3 mm LR slices, 1 mm in-plane
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx].astype(np.float32)
    # Physical mm: x across 90 mm (3 mm), y 160 mm, z along the limb.
    r = np.hypot((y - 80.0), (x - 15.0) * 3.0)
    arr = np.where(r < 58, 220.0, 0.0) + np.where(r < 50, 180.0, 0.0)
    arr -= np.where(np.hypot(y - 70.0, (x - 15.0) * 3.0) < 14, 300.0, 0.0)
    arr += np.where(np.hypot(y - 70.0, (x - 15.0) * 3.0) < 10, 320.0, 0.0)
    sag = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    return volume(np.transpose(arr, (2, 1, 0)).copy(), (1.0, 1.0, 3.0), sag)


def spine() -> sitk.Image:
    """A thin sagittal slab through a trunk: tissue fills most of every slice, the
    vertebrae and discs alternate along the 320 mm head-foot extent."""
    z, y, x = np.mgrid[0:12, 0:320, 0:280].astype(np.float32)  # 4 mm LR, 1 mm in-plane
    trunk = np.where((y > -1) & (x > 20) & (x < 260), 250.0, 0.0)
    vertebra = np.where((x > 190) & (x < 225) & ((y // 30) % 2 == 0), 200.0, 0.0)
    return volume(trunk + vertebra, (1.0, 1.0, 4.0))


def sphere_phantom(diameter: float = 160.0) -> sitk.Image:
    z, y, x = np.mgrid[0:72, 0:72, 0:72].astype(np.float32) * 3.0 - 108.0
    return volume(np.where(np.sqrt(x * x + y * y + z * z) < diameter / 2, 400.0, 0.0),
                  (3.0, 3.0, 3.0))


def cylinder_phantom() -> sitk.Image:
    z, y, x = np.mgrid[0:70, 0:64, 0:64].astype(np.float32) * 3.0
    inside = (np.hypot(x - 96.0, y - 96.0) < 80) & (np.abs(z - 105.0) < 75)
    return volume(np.where(inside, 400.0, 0.0), (3.0, 3.0, 3.0))


@pytest.mark.parametrize("make, code", [
    (knee, FaceCode.UNIFORM_SECTION),
    (spine, FaceCode.UNIFORM_SECTION),
    (cylinder_phantom, FaceCode.UNIFORM_SECTION),
    (sphere_phantom, FaceCode.SMOOTH_BODY),
    (lambda: volume(np.full((40, 12, 10), 300.0), (3.0, 3.0, 3.0)), FaceCode.TOO_SMALL),
])
def test_shapes_no_face_allows(make, code: FaceCode) -> None:  # type: ignore[no-untyped-def]
    found = evidence(make())
    assert found is not None and found.code is code, found
    assert "face" in found.reason


def test_what_only_resembles_them_is_no_evidence() -> None:
    """A short limb (under the length a face forbids), a sphere with a bump the size of a
    nose, a sphere cut by the edge of the view: not evidence."""
    assert evidence(knee(100.0)) is None
    z, y, x = np.mgrid[0:72, 0:72, 0:72].astype(np.float32) * 3.0 - 108.0
    ball = np.sqrt(x * x + y * y + z * z) < 80
    nose = (np.abs(x) < 12) & (np.abs(z) < 15) & (y > 60) & (y < 100)
    assert evidence(volume(np.where(ball | nose, 400.0, 0.0), (3.0, 3.0, 3.0))) is None
    assert evidence(sphere_phantom(240.0)) is None


@pytest.fixture(scope="module")
def colin_axial(colin: Colin) -> sitk.Image:
    return make_case(colin, "axial", (2.0, 2.0, 2.0)).image


def _crop(image: sitk.Image, lo: tuple[float, float, float], hi: tuple[float, float, float]
          ) -> sitk.Image:
    """The part of ``image`` between fractions ``lo`` and ``hi`` of its size (x, y, z)."""
    size = np.array(image.GetSize())
    start = (np.array(lo) * size).astype(int)
    stop = (np.array(hi) * size).astype(int)
    return sitk.RegionOfInterest(image, [int(v) for v in stop - start], [int(v) for v in start])


@pytest.mark.parametrize("kind", ["axial", "sagittal", "coronal", "oblique"])
def test_a_head_in_any_orientation_is_never_spared(colin: Colin, kind: str) -> None:
    assert evidence(make_case(colin, kind, (3.0, 3.0, 3.0)).image) is None


def test_cut_and_smoothed_heads_are_never_spared(colin: Colin, colin_axial: sitk.Image
                                                 ) -> None:
    """Heads cut to what still shows the nose (the lower half, the front half, a box
    around the face, thin and thick slabs through it), smoothed, or reduced to the brain
    (an EPI-like contrast): none is spared."""
    cuts = [((0, 0, 0), (1, 1, 0.5)), ((0, 0.45, 0), (1, 1, 1)),
            ((0.2, 0.5, 0.1), (0.8, 1, 0.6)), ((0, 0, 0.25), (1, 1, 0.4)),
            ((0, 0, 0.3), (1, 1, 0.32)), ((0.35, 0, 0), (0.65, 1, 1))]
    for lo, hi in cuts:
        assert evidence(_crop(colin_axial, lo, hi)) is None, (lo, hi)
    assert evidence(sitk.SmoothingRecursiveGaussian(colin_axial, 6.0)) is None
    case = make_case(colin, "axial", (3.0, 3.0, 3.0))
    arr = sitk.GetArrayFromImage(case.image)
    brain = sitk.GetImageFromArray(np.where(case.brain, arr, 0.0).astype(np.float32))
    brain.CopyInformation(case.image)
    assert evidence(brain) is None


@pytest.mark.parametrize("name", ["otsu_t1", "t1_neck"])
def test_real_heads_are_never_spared(corpus_heads: Path, name: str) -> None:
    image = sitk.ReadImage(str(corpus_heads / f"{name}.nii.gz"), sitk.sitkFloat32)
    assert evidence(image) is None
    assert evidence(_crop(image, (0, 0, 0), (1, 1, 0.55))) is None


def _through_stage(image: sitk.Image, tmp: Path, body_part: str) -> SeriesWork:
    files = write_mr_series(image, tmp / "in", body_part=body_part, description="")
    (tmp / "work").mkdir(parents=True, exist_ok=True)
    work = SeriesWork(key="cd" * 32, version=1, source_files=list(files),
                      workdir=tmp / "work")
    DefaceStage(Config())(work)  # partners still expected: no waiting either
    return work


@pytest.mark.parametrize("make, label, code", [
    (knee, "HEAD", FaceCode.UNIFORM_SECTION),
    (sphere_phantom, "", FaceCode.SMOOTH_BODY),
    (spine, "", FaceCode.UNIFORM_SECTION),
    (cylinder_phantom, "PHANTOM", FaceCode.UNIFORM_SECTION),
])
def test_non_heads_are_delivered_as_they_are(tmp_path: Path, make, label: str,  # type: ignore[no-untyped-def]
                                             code: FaceCode) -> None:
    """A limb (labelled HEAD: header words add suspicion, the shape decides) and a phantom
    are delivered without defacing, at once, the reason on the record."""
    work = _through_stage(make(), tmp_path, label)
    assert not work.defaced and work.files == work.source_files
    assert work.face["decision"] == "no-face" and work.face["code"] == code.value
    assert ("face-decision", work.face) in work.audit


def test_cropped_head_showing_the_nose_labelled_knee_is_defaced(colin: Colin,
                                                                tmp_path: Path) -> None:
    lower = _crop(make_case(colin, "axial", (3.0, 3.0, 3.0)).image, (0, 0, 0), (1, 1, 0.6))
    work = _through_stage(lower, tmp_path, "KNEE")
    assert work.defaced and work.face["decision"] == "defaced"


def test_a_phase_map_of_a_head_is_never_spared(colin: Colin) -> None:
    """Noise across the range fills a phase map's view: it is no tissue, so it is no
    uniform cross-section either; the head's smooth silhouette shows no such shape."""
    from .test_presence import phase_map

    assert evidence(phase_map(make_case(colin, "sagittal", (3.0, 3.0, 3.0)).image)) is None


def test_a_bright_marker_does_not_shrink_a_head(colin: Colin) -> None:
    """A few voxels a million times brighter than the head (a fiducial, a metal artefact)
    do not make the head's tissue vanish below the tissue level: no evidence."""
    image = sitk.Shrink(colin.head, [2, 2, 2])
    arr = sitk.GetArrayFromImage(image)
    arr[40:44, 50:54, 45:49] = 1e6
    marked = sitk.GetImageFromArray(arr)
    marked.CopyInformation(image)
    assert evidence(marked) is None


def test_a_head_under_strong_stripes_is_never_spared(colin: Colin) -> None:
    """A stripe artefact as bright as the head over the whole view (a herringbone from a
    spike in k-space) lifts Otsu's level above the head and fakes a phase map's noisy
    edges: the shapes of what is left (the stripes: a constant cross-section) prove
    nothing, and there is no evidence."""
    head = make_case(colin, "axial", (3.0, 3.0, 3.0)).image
    arr = sitk.GetArrayFromImage(head)
    across = np.indices(arr.shape)[2] * 3.0
    for amplitude in (1.0, 0.5):
        striped = sitk.GetImageFromArray(
            np.where(across % 12 < 3.5, amplitude * float(arr.max()), arr))
        striped.CopyInformation(head)
        assert evidence(striped) is None, amplitude


@pytest.mark.soak
def test_a_head_under_strong_stripes_is_not_delivered_with_its_face(colin: Colin,
                                                                    tmp_path: Path) -> None:
    head = make_case(colin, "axial", (3.0, 3.0, 3.0)).image
    arr = sitk.GetArrayFromImage(head)
    across = np.indices(arr.shape)[2] * 3.0
    striped = sitk.GetImageFromArray(np.where(across % 12 < 3.5, float(arr.max()), arr))
    striped.CopyInformation(head)
    try:
        work = _through_stage(striped, tmp_path, "")
    except (DefaceFailed, PartnerPending, Withheld):
        return  # waits for a partner, then quarantined or withheld: nothing leaves
    assert work.defaced and work.face["decision"] == "defaced", work.face
