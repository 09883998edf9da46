"""Every rule that lets a volume through undefaced (agent.deface.noface) attacked by real
heads made to look like the rule's case: a head at low SNR, a head turned upside down or
nose-up, a head cut to a short stack of 2-3 slices through the face, a head masked to a
cylinder (a circular reconstruction), a head CT in a circular field of view. None may be
taken for a limb, a phantom or something too small for a face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.deface.noface import evidence

from .conftest import Colin, make_case

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def real_head(corpus_heads: Path) -> sitk.Image:
    """The corpus' real 1 mm T1 head on a 2 mm grid (the rules run on a 4 mm one)."""
    image = sitk.ReadImage(str(corpus_heads / "otsu_t1.nii.gz"), sitk.sitkFloat32)
    return sitk.Shrink(image, [2, 2, 2])


def like(image: sitk.Image, arr: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(image)
    return out


def rician(image: sitk.Image, snr: float) -> sitk.Image:
    """Magnitude noise as a scanner's (Rician): ``snr`` is the tissue's median over sigma."""
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    sigma = float(np.median(arr[arr > 0.2 * np.percentile(arr, 99)])) / snr
    re = arr + RNG.normal(0.0, sigma, arr.shape)
    im = RNG.normal(0.0, sigma, arr.shape)
    return like(image, np.hypot(re, im))


@pytest.mark.parametrize("snr", [2.0, 4.0, 8.0])
def test_a_head_at_low_snr_is_never_spared(real_head: sitk.Image, colin: Colin,
                                           snr: float) -> None:
    assert evidence(rician(real_head, snr)) is None
    assert evidence(rician(make_case(colin, "sagittal", (3.0, 3.0, 3.0)).image, snr)) is None


def rotated(image: sitk.Image, axis: tuple[float, float, float], degrees: float
            ) -> sitk.Image:
    """``image`` turned about its centre, on a grid large enough to hold it whole."""
    centre = image.TransformContinuousIndexToPhysicalPoint(
        [(s - 1) / 2.0 for s in image.GetSize()])
    tx = sitk.VersorRigid3DTransform()
    tx.SetCenter(centre)
    tx.SetRotation(axis, np.deg2rad(degrees))
    side = int(max(image.GetSize()) * 1.45)
    ref = sitk.Image([side] * 3, sitk.sitkFloat32)
    ref.SetSpacing(image.GetSpacing())
    ref.SetOrigin(tuple(c - (side - 1) / 2.0 * s for c, s in zip(centre, image.GetSpacing(),
                                                                     strict=True)))
    return sitk.Resample(image, ref, tx.GetInverse(), sitk.sitkLinear, 0.0)


@pytest.mark.parametrize("axis, degrees", [((1, 0, 0), 180.0), ((1, 0, 0), 90.0),
                                           ((0, 0, 1), 45.0), ((1, 1, 0), 60.0)])
def test_a_head_turned_any_way_is_never_spared(real_head: sitk.Image,
                                               axis: tuple[float, float, float],
                                               degrees: float) -> None:
    assert evidence(rotated(real_head, axis, degrees)) is None


@pytest.mark.parametrize("kind, at", [("axial", 0.3), ("axial", 0.45), ("sagittal", 0.5),
                                      ("coronal", 0.1)])
@pytest.mark.parametrize("slices", [2, 3])
def test_a_short_stack_through_the_face_is_never_spared(colin: Colin, kind: str, at: float,
                                                        slices: int) -> None:
    """2-3 slices of 5 mm through the nose, the eyes, the middle of the face."""
    case = make_case(colin, kind, (1.0, 1.0, 5.0))
    size = case.image.GetSize()
    start = int(at * size[2])
    short = sitk.RegionOfInterest(case.image, [size[0], size[1], slices], [0, 0, start])
    assert case.face[start:start + slices].any(), "the stack must cut the face"
    assert evidence(short) is None


def test_a_head_masked_to_a_cylinder_is_never_spared(real_head: sitk.Image) -> None:
    """Zero outside a head-foot cylinder that still holds the face (as a circular
    reconstruction leaves), cut to the part where the head is wider than the cylinder:
    the cross-section looks constant but for the nose, which must not go unseen."""
    arr = sitk.GetArrayFromImage(real_head)
    z, y, x = np.indices(arr.shape)
    tissue = arr > 0.2 * np.percentile(arr, 99)
    cols = np.argwhere(tissue.any(axis=0))
    cy, cx = cols.mean(axis=0)
    sp = real_head.GetSpacing()
    for radius in (60.0, 80.0):
        inside = np.hypot((y - cy) * sp[1], (x - cx) * sp[0]) < radius
        masked = like(real_head, np.where(inside, arr, 0.0))
        assert evidence(masked) is None, radius
        levels = np.flatnonzero(tissue.reshape(len(arr), -1).any(axis=1))
        middle = (levels[0] + levels[-1]) // 2
        half = int(65.0 / sp[2])
        cut = sitk.RegionOfInterest(masked, [*masked.GetSize()[:2], 2 * half],
                                    [0, 0, max(0, int(middle) - half)])
        assert evidence(cut) is None, ("cut", radius)


def test_a_head_ct_in_a_circular_field_of_view_is_never_spared(corpus_heads: Path) -> None:
    """Outside the reconstruction circle scanners write a padding value below air
    (-3024, -2000): then air is 'tissue' to a threshold and the circle a cylinder."""
    image = sitk.Shrink(sitk.ReadImage(str(corpus_heads / "ct_shear.nii.gz"),
                                       sitk.sitkFloat32), [2, 2, 1])
    arr = sitk.GetArrayFromImage(image)
    _, y, x = np.indices(arr.shape)
    sp = image.GetSpacing()
    r = np.hypot((y - arr.shape[1] / 2) * sp[1], (x - arr.shape[2] / 2) * sp[0])
    for pad in (-3024.0, -2000.0):
        circled = np.where(r > 0.48 * min(arr.shape[1] * sp[1], arr.shape[2] * sp[0]), pad,
                           arr)
        assert evidence(like(image, circled)) is None, pad


@pytest.mark.parametrize("amplitude", [10.0, 100.0])
@pytest.mark.parametrize("add", [False, True])
def test_a_head_under_far_brighter_stripes_is_never_spared(corpus_heads: Path,
                                                           amplitude: float, add: bool) -> None:
    """Stripes of 5 mm every 20 mm, 10 or 100 times brighter than the real head with the
    neck, replacing or added to it: the whole head lies below any fixed fraction of the
    stripes' tissue level, and the stripes alone are a constant cross-section (this head
    was once taken for a limb). The band of dim tissue reaches down to the air's noise."""
    image = sitk.ReadImage(str(corpus_heads / "t1_neck.nii.gz"), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(image)
    on = (np.indices(arr.shape)[2] * image.GetSpacing()[0]) % 20.0 < 5.0
    level = amplitude * float(arr.max())
    striped = like(image, arr + np.where(on, level, 0.0) if add else np.where(on, level, arr))
    assert evidence(striped) is None
