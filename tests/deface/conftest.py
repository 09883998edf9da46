"""Colin27 (from the Debian package mricron-data) as test heads, in many acquisitions.

Colin27 is a real head with a face, in MNI space; ch2bet is its brain. Cases are made by
resampling it (through an optional moving/deforming transform) onto acquisition grids with
any direction cosines and voxel size. Derived data are cached per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

COLIN_DIR = Path("/usr/share/mricron/templates")
CH2 = COLIN_DIR / "ch2.nii.gz"
CH2BET = COLIN_DIR / "ch2bet.nii.gz"
#: Extent (mm) of the acquisition box along patient x, y, z; Colin's head fits inside.
EXTENT = np.array([196.0, 232.0, 188.0])


@dataclass
class Case:
    """A test head on an acquisition grid, with its brain and face regions (same grid)."""

    image: sitk.Image  # real values
    brain: np.ndarray  # bool, z-y-x: any voxel touching Colin's brain
    face: np.ndarray  # bool: face tissue (brow to chin) well away from the brain
    ears: np.ndarray  # bool: tissue of both ears, well away from the brain
    #: Inside Colin's own field of view, 4 mm from its edges (outside it the test image
    #: is zero padding, where the new face meets an artificial cut).
    valid: np.ndarray


@dataclass
class Colin:
    head: sitk.Image
    brain: sitk.Image  # float 0/1
    face: sitk.Image  # float 0/1
    ears: sitk.Image  # float 0/1
    centre: np.ndarray


def direction(kind: str) -> np.ndarray:
    """Direction-cosine matrices (columns: row, column, normal) of common acquisitions."""
    if kind == "axial":
        return np.eye(3)
    if kind == "sagittal":  # rows run anterior->posterior, columns superior->inferior
        return np.column_stack([[0, 1, 0], [0, 0, -1], [-1, 0, 0]]).astype(float)
    if kind == "coronal":  # rows run right->left, columns superior->inferior
        return np.column_stack([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).astype(float)
    if kind == "oblique":  # axial tilted 20 degrees about x and 12 about z
        a, b = np.radians(20.0), np.radians(12.0)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        return rz @ rx
    raise ValueError(kind)


def grid(kind: str, spacing: tuple[float, float, float], centre: np.ndarray) -> sitk.Image:
    d = direction(kind)
    extent = np.abs(d.T) @ EXTENT  # box along the grid axes covering the patient box
    size = np.ceil(extent / np.array(spacing)).astype(int)
    ref = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(tuple(d.ravel()))
    ref.SetOrigin(tuple(centre - d @ (np.array(spacing) * (size - 1) / 2.0)))
    return ref


@pytest.fixture(scope="session")
def colin() -> Colin:
    if not (CH2.is_file() and CH2BET.is_file()):
        pytest.skip("Colin27 (ch2.nii.gz, ch2bet.nii.gz) not found: apt-get install mricron-data")
    head = sitk.ReadImage(str(CH2), sitk.sitkFloat32)
    brain = sitk.Cast(sitk.ReadImage(str(CH2BET)) > 0, sitk.sitkFloat32)
    # Face: head tissue in front of and below the brain's front, at least 12 mm from it.
    arr = sitk.GetArrayFromImage(head)
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        sitk.Cast(brain, sitk.sitkUInt8), insideIsPositive=False, useImageSpacing=True,
        squaredDistance=False))
    nz, ny, nx = arr.shape
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    # ch2's grid: index 0 is right (RAS x = -90), posterior (y = -125), inferior (z = -71).
    x_ras, y_ras, z_ras = xx - 90.0, yy - 125.0, zz - 71.0
    face = (arr > 40) & (y_ras > 45) & (z_ras < 20) & (dist > 12)
    # Ears: the pinnae stick out beyond the skull sides.
    ears = (arr > 40) & (np.abs(x_ras) > 72) & (y_ras > -45) & (y_ras < 0) \
        & (z_ras > -45) & (z_ras < 10) & (dist > 12)

    def as_image(mask: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(mask.astype(np.float32))
        img.CopyInformation(head)
        return img

    size = np.array(head.GetSize())
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in (size - 1) / 2.0]))
    return Colin(head=head, brain=brain, face=as_image(face), ears=as_image(ears),
                 centre=centre)


def make_case(colin: Colin, kind: str = "axial", spacing: tuple[float, float, float] = (2, 2, 2),
              transform: sitk.Transform | None = None, scale: float = 1.0,
              offset: float = 0.0, shift: tuple[float, float, float] = (0, 0, 0)) -> Case:
    """Colin on an acquisition grid; ``transform`` maps grid points to Colin's space.

    ``shift`` (mm, LPS) moves the field of view's centre away from the head's.
    """
    ref = grid(kind, spacing, colin.centre + np.array(shift))
    tx = transform or sitk.Transform()
    img = sitk.Resample(colin.head, ref, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    img = img * scale + offset
    brain = sitk.GetArrayFromImage(
        sitk.Resample(colin.brain, ref, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0
    face = sitk.GetArrayFromImage(
        sitk.Resample(colin.face, ref, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0.5
    ears = sitk.GetArrayFromImage(
        sitk.Resample(colin.ears, ref, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0.5
    fov = sitk.Image(colin.head.GetSize(), sitk.sitkFloat32) + 1.0
    fov.CopyInformation(colin.head)
    fov = sitk.BinaryErode(sitk.Cast(fov, sitk.sitkUInt8), [4, 4, 4])
    valid = sitk.GetArrayFromImage(
        sitk.Resample(sitk.Cast(fov, sitk.sitkFloat32), ref, tx, sitk.sitkLinear, 0.0)) > 0.99
    return Case(image=img, brain=brain, face=face, ears=ears, valid=valid)


def warp(colin: Colin, seed: int, amplitude: float = 7.0, scale: tuple[float, ...] = (1, 1, 1),
         angle_deg: float = 0.0, shift: tuple[float, float, float] = (0, 0, 0)
         ) -> sitk.Transform:
    """A smooth random deformation (B-spline, coarse mesh) after a scaled rigid move."""
    affine = sitk.AffineTransform(3)
    affine.SetCenter(tuple(colin.centre))
    a = np.radians(angle_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine.SetMatrix(tuple((rot @ np.diag(scale)).ravel()))
    affine.SetTranslation(shift)
    bs = sitk.BSplineTransformInitializer(colin.head, [4, 4, 4])
    rng = np.random.default_rng(seed)
    params = rng.normal(0.0, amplitude, len(bs.GetParameters()))
    bs.SetParameters(tuple(params))
    return sitk.CompositeTransform([affine, bs])


#: The real multi-vendor corpus (../shared/corpus from the repository root).
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"


def _corpus_part(name: str) -> Path:
    folder = CORPUS / name
    if not folder.is_dir():
        pytest.skip(f"the real corpus ({name}) is not at {folder.resolve()}")
    return folder


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus' DICOM folder; tests that need it skip where it is absent."""
    return _corpus_part("dicom")


@pytest.fixture(scope="session")
def corpus_heads() -> Path:
    """The corpus' NIfTI heads."""
    return _corpus_part("heads")


@pytest.fixture(scope="session")
def dcm2niix(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """dcm2niix (a real, independent converter) as a function: folder -> first volume."""
    import shutil
    import subprocess

    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (scripts/install-test-deps.sh installs it)")

    def convert(folder: Path) -> sitk.Image:
        out = tmp_path_factory.mktemp("dcm2niix")
        subprocess.run([exe, "-z", "n", "-b", "n", "-o", str(out), "-f", "v", str(folder)],
                       check=True, capture_output=True, timeout=120)
        (nii,) = sorted(out.glob("*.nii"))
        return sitk.ReadImage(str(nii))

    return convert
