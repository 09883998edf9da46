"""Defacing Colin27 written as DICOM series in several acquisitions (real head, real face)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from agent.deface import deface_path
from agent.deface.core import deface_image, similarity_part
from agent.deface.template import load_template

from .conftest import Colin, grid, make_case, warp
from .dicom_writer import write_mr_series
from .helpers import boundary_gradients, metrics, read_stored
from .reident import (
    face_distance,
    identity_signal,
    posed_front_depth,
    smooth_perturbation,
)

# (orientation, voxel size (column, row, slice spacing), bits stored, slope, intercept, scale,
#  signed)
ACQUISITIONS = [
    ("axial", (2.0, 2.0, 2.0), 16, 1.0, 0.0, 4.0, False),
    ("sagittal", (1.8, 1.8, 2.4), 12, 0.5, 0.0, 6.0, False),
    ("coronal", (2.2, 2.2, 1.9), 12, 2.0, -100.0, 12.0, False),
    ("oblique", (2.0, 2.0, 2.5), 16, 1.0, -500.0, 1.0, True),
]


@pytest.mark.parametrize("kind,spacing,bits,slope,intercept,scale,signed", ACQUISITIONS,
                         ids=[a[0] for a in ACQUISITIONS])
def test_face_replaced_brain_untouched(colin: Colin, tmp_path: Path, kind: str,
                                       spacing: tuple[float, float, float], bits: int,
                                       slope: float, intercept: float, scale: float,
                                       signed: bool) -> None:
    case = make_case(colin, kind, spacing, scale=scale)
    write_mr_series(case.image, tmp_path / "in", bits_stored=bits, slope=slope,
                    intercept=intercept, signed=signed)
    report = deface_path(tmp_path / "in", tmp_path / "out", render=tmp_path / "render.png")
    before, _ = read_stored(tmp_path / "in")
    after, dss = read_stored(tmp_path / "out")
    assert before.shape == after.shape and before.dtype == after.dtype
    # Colin's skin is above 40 (of 254) in the original units.
    m = metrics(case, before, after, tissue_level=(40 * scale - intercept) / slope)
    assert m.brain_voxels > 100_000
    assert m.brain_changed == 0, "brain voxels must stay bit-identical"
    assert report.brain_voxels_changed == 0
    assert m.face_changed >= 0.85, f"only {m.face_changed:.0%} of the face changed"
    assert m.ear_voxels > 100 and m.ears_changed >= 0.85, f"ears: {m.ears_changed:.0%} changed"
    assert m.face_tissue_before > 0.95
    # Colin27's own field of view cuts his face; the new face curves away from that cut
    # (no plate), so somewhat less of the face box holds tissue.
    assert m.face_tissue_after >= 0.4, "the face must be replaced, not cut away"
    if signed:
        assert after.min() >= -(1 << (bits - 1)) and after.max() < (1 << (bits - 1))
    else:
        assert after.max() < (1 << bits), "values stay within bits stored"
    g_before, g_after = boundary_gradients(before.astype(float), after.astype(float),
                                           before != after, (1.0, 1.0, 1.0), case.valid)
    assert g_after <= 1.2 * g_before, f"seam at the blend boundary ({g_after} > {g_before})"
    assert report.dice > 0.8
    ds = dss[0]
    assert ds.ImageType[0] == "DERIVED"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113102" in codes
    item = ds.DeidentificationMethodCodeSequence[codes.index("113102")]
    assert item.CodingSchemeDesignator == "DCM"
    assert item.CodeMeaning == "Clean Recognizable Visual Features"
    assert (tmp_path / "render.png").stat().st_size > 1000


def test_defaced_faces_do_not_match_their_originals(colin: Colin) -> None:
    """Four differently shaped heads, each brought into one pose as an attacker would
    (see :mod:`tests.deface.reident`): the defaced faces carry no trace of which original
    they came from, while the originals are clearly distinct and a face that survives
    under a smooth 2 mm change is caught by the same measure."""
    heads = [
        warp(colin, seed=1, amplitude=6.0),
        warp(colin, seed=2, amplitude=6.0, scale=(0.97, 1.0, 1.03), angle_deg=4.0),
        warp(colin, seed=3, amplitude=6.0, scale=(1.03, 1.0, 0.98), shift=(3.0, -4.0, 2.0)),
        warp(colin, seed=4, amplitude=6.0, scale=(1.0, 1.0, 0.97), angle_deg=-3.0),
    ]
    originals, defaced = [], []
    for tx in heads:
        # In memory (the DICOM round trip is the other tests' subject): the defacer's own
        # result written into the volume as a writer does, rounded to integers.
        # The head alone (no masks: their resampling through the warp costs more).
        image = sitk.Resample(colin.head, grid("axial", (2.0, 2.0, 2.0), colin.centre), tx,
                              sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        result = deface_image(image, load_template())
        after = sitk.GetArrayFromImage(image)
        region = result.weight > 0
        after[result.box][region] = np.rint(result.values[region])
        out = sitk.GetImageFromArray(after)
        out.CopyInformation(image)
        # The attacker's pose is the template's similarity fit of the original: the one the
        # defacer made (the same function of the same input: tests.deface.reident.pose_of).
        pose = similarity_part(result.registration.transform)
        originals.append(posed_front_depth(image, pose, 40.0))
        defaced.append(posed_front_depth(out, pose, 40.0))

    signal, distinct = identity_signal(defaced, originals)
    # The test is meaningful: the original faces differ from each other ...
    assert distinct > 1.0
    # ... a face kept under a smooth 2 mm change would be found ...
    kept = [smooth_perturbation(o, seed=7 + i, amplitude_mm=2.0) for i, o in enumerate(originals)]
    assert identity_signal(kept, originals)[0] > 0.3 * distinct
    # ... and the defaced faces are not (at most 15 % of the originals' distinctness).
    assert signal <= 0.15 * distinct, f"defaced faces match their originals ({signal:.2f} mm)"
    for i in range(len(heads)):  # each defaced face really differs from its original
        assert face_distance(defaced[i], originals[i]) > 1.5, f"head {i}: face not replaced"


def test_dicom_round_trip_dcm2niix(colin: Colin, tmp_path: Path) -> None:
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not installed")
    case = make_case(colin, "oblique", (2.0, 2.0, 2.5))
    write_mr_series(case.image, tmp_path / "in", bits_stored=12)
    deface_path(tmp_path / "in", tmp_path / "out")
    for name in ("in", "out"):
        (tmp_path / f"nii_{name}").mkdir()
        proc = subprocess.run(
            ["dcm2niix", "-z", "n", "-f", "vol", "-o", str(tmp_path / f"nii_{name}"),
             str(tmp_path / name)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    a = sitk.ReadImage(str(tmp_path / "nii_in" / "vol.nii"))
    b = sitk.ReadImage(str(tmp_path / "nii_out" / "vol.nii"))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    # dcm2niix may flip axes (NIfTI conventions): the same axes up to sign, same centre.
    assert np.allclose(np.abs(a.GetDirection()), np.abs(case.image.GetDirection()), atol=1e-3)

    def centre(img: sitk.Image) -> np.ndarray:
        mid = [(n - 1) / 2.0 for n in img.GetSize()]
        return np.array(img.TransformContinuousIndexToPhysicalPoint(mid))

    assert np.allclose(centre(b), centre(case.image), atol=0.5)
    assert not np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    ds = pydicom.dcmread(next((tmp_path / "out").iterdir()))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_nifti_in_nifti_out(colin: Colin, tmp_path: Path) -> None:
    case = make_case(colin, "axial", (2.0, 2.0, 2.0))
    src = tmp_path / "head.nii.gz"
    img = sitk.Cast(sitk.Clamp(case.image, sitk.sitkFloat32, 0, 255), sitk.sitkInt16)
    sitk.WriteImage(img, str(src))
    report = deface_path(src, tmp_path / "defaced.nii.gz", render=tmp_path / "r.png")
    out = sitk.ReadImage(str(tmp_path / "defaced.nii.gz"))
    assert out.GetPixelID() == img.GetPixelID()
    assert out.GetSize() == img.GetSize()
    a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(out)
    assert np.array_equal(a[case.brain], b[case.brain])
    assert (a[case.face] != b[case.face]).mean() >= 0.85
    assert report.voxels_replaced > 10_000 and report.seconds > 0
    assert (tmp_path / "r.png").is_file()


def test_wrapped_face_behind_the_head_is_replaced(colin: Colin, tmp_path: Path) -> None:
    """A phase-wrapped copy of the nose at the back of the field of view is removed too.

    The field of view is moved 24 mm backwards so that the ghost lies clear of the head
    (a ghost overlapping the scalp cannot be told from it)."""
    case = make_case(colin, "axial", (2.0, 2.0, 2.0), shift=(0.0, 24.0, 0.0))
    arr = sitk.GetArrayFromImage(case.image)  # z, y (anterior -> posterior), x
    tissue_rows = np.nonzero((arr > 40).any(axis=(0, 2)))[0]
    nose = arr[:, tissue_rows[0]:tissue_rows[0] + 6, :]
    assert (nose > 40).sum() > 50
    arr[:, -6:, :] = np.maximum(arr[:, -6:, :], nose)  # the ghost, at the posterior edge
    ghost = sitk.GetImageFromArray(arr)
    ghost.CopyInformation(case.image)
    write_mr_series(ghost, tmp_path / "in")
    deface_path(tmp_path / "in", tmp_path / "out")
    before, _ = read_stored(tmp_path / "in")
    after, _ = read_stored(tmp_path / "out")
    # The face part of the ghost: below the brow (z < 10 mm); a wrapped forehead or scalp
    # is not a face and may stay.
    z_mm = case.image.GetOrigin()[2] + case.image.GetSpacing()[2] * np.arange(arr.shape[0])
    low = z_mm < 10.0
    ghost_before = int((before[low, -6:, :] > 40).sum())
    ghost_after = int((after[low, -6:, :] > 40).sum())
    assert ghost_before > 50
    assert ghost_after <= 0.05 * ghost_before, f"{ghost_after} of {ghost_before} ghost voxels"


@pytest.mark.parametrize("seed,angle,shift,scale", [
    (11, 12.0, (8.0, -10.0, 6.0), (1.0, 1.0, 1.0)),
    (12, -8.0, (-6.0, 5.0, -4.0), (0.92, 1.06, 0.95)),
], ids=["rotated", "scaled"])
def test_moved_and_deformed_heads(colin: Colin, tmp_path: Path, seed: int, angle: float,
                                  shift: tuple[float, float, float],
                                  scale: tuple[float, float, float]) -> None:
    """Heads moved in the field of view and deformed: the brain is still untouched."""
    tx = warp(colin, seed=seed, amplitude=5.0, scale=scale, angle_deg=angle, shift=shift)
    case = make_case(colin, "sagittal", (2.0, 2.0, 2.0), transform=tx)
    write_mr_series(case.image, tmp_path / "in", bits_stored=12)
    deface_path(tmp_path / "in", tmp_path / "out")
    before, _ = read_stored(tmp_path / "in")
    after, _ = read_stored(tmp_path / "out")
    m = metrics(case, before, after, tissue_level=40)
    assert m.brain_changed == 0
    assert m.face_changed >= 0.85
    assert m.face_tissue_after >= 0.4


def test_t2_like_contrast(colin: Colin, tmp_path: Path) -> None:
    """Another contrast (CSF bright, white matter darker than grey): same guarantees."""
    case = make_case(colin, "axial", (2.0, 2.0, 2.0))
    t1 = sitk.GetArrayFromImage(case.image)
    t2 = np.interp(t1, [0, 20, 45, 70, 95, 120, 160, 255],
                   [0, 15, 230, 160, 110, 80, 140, 170]).astype(np.float32)
    image = sitk.GetImageFromArray(t2)
    image.CopyInformation(case.image)
    write_mr_series(image, tmp_path / "in", description="T2 TSE")
    deface_path(tmp_path / "in", tmp_path / "out")
    before, _ = read_stored(tmp_path / "in")
    after, _ = read_stored(tmp_path / "out")
    m = metrics(case, before, after, tissue_level=15)
    assert m.brain_changed == 0
    assert m.face_changed >= 0.85 and m.ears_changed >= 0.85
    assert m.face_tissue_after >= 0.4
    g_before, g_after = boundary_gradients(before.astype(float), after.astype(float),
                                           before != after, (1.0, 1.0, 1.0), case.valid)
    assert g_after <= 1.2 * g_before
