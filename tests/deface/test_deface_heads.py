"""Real heads from the corpus (T1 with chin and ears; T1 with neck): face and ears replaced,
brain untouched, no new surface defects, deterministic, and not re-identifiable.

Face, ears and brain of these heads are located through an intensity fit of the MNI
template made here (the defacer places its new face by a separate skin fit): face = tissue
in front of and below the MNI brain's front (MNI y > 50 mm, z < 5 mm), ears = tissue
beside the skull (|x| > 68 mm, -45 < y < 5, -50 < z < 10), both more than 12 mm from the
brain; brain = the MNI brain shrunk by 3 mm (what a registration error cannot move).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk

from agent.deface.core import deface_image
from agent.deface.register import register_template
from agent.deface.template import BRAIN, load_template

from .ctheads import CORPUS_HEADS
from .reident import identity_signal, pose_of, posed_front_depth

HEADS = {"otsu_t1": CORPUS_HEADS / "otsu_t1.nii.gz", "t1_neck": CORPUS_HEADS / "t1_neck.nii.gz"}


@dataclass
class Regions:
    face: np.ndarray
    ears: np.ndarray
    brain: np.ndarray


def read_head(name: str) -> sitk.Image:
    path = HEADS[name]
    if not path.is_file():
        pytest.skip(f"corpus head {name} not found ({path})")
    return sitk.ReadImage(str(path), sitk.sitkFloat32)


def regions(image: sitk.Image, level: float) -> Regions:
    t = load_template()
    reg = register_template(image, t.head)
    lab = sitk.Resample(t.labels, image, reg.transform, sitk.sitkNearestNeighbor, 0)
    brain = (sitk.GetArrayFromImage(lab) & BRAIN) > 0
    bimg = sitk.GetImageFromArray(brain.astype(np.uint8))
    bimg.CopyInformation(image)
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        bimg, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    size = image.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1)
    idx = idx.reshape(-1, 3).astype(np.float64)
    d = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    phys = idx @ d.T + np.array(image.GetOrigin())
    m = np.array(reg.transform.GetMatrix()).reshape(3, 3)
    c, tr = np.array(reg.transform.GetCenter()), np.array(reg.transform.GetTranslation())
    mni = (phys - c) @ m.T + c + tr
    x, y, z = (-mni[:, 0], -mni[:, 1], mni[:, 2])  # LPS -> RAS
    shape = size[::-1]

    def grid(a: np.ndarray) -> np.ndarray:
        return a.reshape(size[0], size[1], size[2]).transpose(2, 1, 0)

    x, y, z = grid(x), grid(y), grid(z)
    tissue = sitk.GetArrayFromImage(image) > level
    far = dist > 12.0
    face = tissue & far & (y > 50) & (z < 5)
    ears = tissue & far & (np.abs(x) > 68) & (y > -45) & (y < 5) & (z > -50) & (z < 10)
    assert face.shape == tuple(shape)
    return Regions(face=face, ears=ears, brain=dist < -3.0)


def defaced(image: sitk.Image, seed: int = 0) -> tuple[sitk.Image, object]:
    result = deface_image(image, load_template(), seed=seed)
    arr = sitk.GetArrayFromImage(image)
    arr[result.box] = np.where(result.weight > 0, np.rint(result.values), arr[result.box])
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out, result


def _check_head(name: str) -> None:
    image = sitk.Cast(sitk.Cast(read_head(name), sitk.sitkUInt8), sitk.sitkFloat32)
    out, result = defaced(image)
    r = regions(image, 25.0)  # skin of these 8-bit T1 heads is above 25
    before, after = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(out)
    changed = before != after
    assert r.face.sum() > 2000 and r.ears.sum() > 300
    assert int(changed[r.brain].sum()) == 0, "brain voxels changed"
    face, ears = float(changed[r.face].mean()), float(changed[r.ears].mean())
    assert face >= 0.90, f"{name}: only {face:.0%} of the face replaced"
    assert ears >= 0.85, f"{name}: only {ears:.0%} of the ears replaced"
    q = result.report.qc  # type: ignore[attr-defined]
    assert q.problems == []
    assert q.edge_tissue_after <= 1.2 * q.edge_tissue_before + 50
    assert q.defects_after <= q.defects_before + 0.01 * q.surface_pixels
    assert q.shift_mm <= 1.0


def test_head_with_neck() -> None:
    _check_head("t1_neck")


@pytest.mark.slow
def test_head_with_chin_and_ears() -> None:
    _check_head("otsu_t1")


def test_same_input_same_bytes() -> None:
    """Defacing is a function of the input: a re-export is not a new delivery."""
    image = sitk.Shrink(read_head("t1_neck"), [2, 2, 2])
    a, _ = defaced(image)
    b, _ = defaced(image)
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    c, _ = defaced(image, seed=1)
    assert not np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(c))


@pytest.mark.slow
def test_corpus_faces_are_not_reidentified() -> None:
    """The real heads, each brought into one pose (see :mod:`tests.deface.reident`): the
    defaced faces carry no trace of which original they came from."""
    originals: list[np.ndarray] = []
    defaced_faces: list[np.ndarray] = []
    for name in HEADS:
        image = read_head(name)
        pose = pose_of(image)
        out, _ = defaced(image)
        originals.append(posed_front_depth(image, pose, 25.0))
        defaced_faces.append(posed_front_depth(out, pose, 25.0))
    signal, distinct = identity_signal(defaced_faces, originals)
    assert distinct > 1.0, "the corpus heads' faces should differ"
    assert signal <= 0.15 * distinct, f"defaced faces match their originals ({signal:.2f} mm)"
