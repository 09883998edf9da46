"""Shared checks for the defacing tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from .conftest import Case


def read_stored(folder: Path, pattern: str = "*") -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Stored pixel values (slices sorted along the normal) and the datasets (of the files
    matching ``pattern``)."""
    dss: list[pydicom.Dataset] = [pydicom.dcmread(str(p)) for p in sorted(folder.glob(pattern))]
    iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.array([float(v) for v in d.ImagePositionPatient]) @ normal))
    return np.stack([d.pixel_array for d in dss]), dss


@dataclass
class Metrics:
    brain_changed: int
    brain_voxels: int
    face_changed: float
    ears_changed: float
    ear_voxels: int
    face_tissue_after: float
    face_tissue_before: float


def metrics(case: Case, before: np.ndarray, after: np.ndarray, tissue_level: float) -> Metrics:
    """Compare stored arrays (same grid as ``case``)."""
    brain = case.brain
    face = case.face
    changed = before != after
    return Metrics(
        brain_changed=int(changed[brain].sum()),
        brain_voxels=int(brain.sum()),
        face_changed=float(changed[face].mean()),
        ears_changed=float(changed[case.ears].mean()) if case.ears.any() else 0.0,
        ear_voxels=int(case.ears.sum()),
        face_tissue_before=float((before[face] > tissue_level).mean()),
        face_tissue_after=float((after[face] > tissue_level).mean()),
    )


def boundary_gradients(image_before: np.ndarray, image_after: np.ndarray, changed: np.ndarray,
                       spacing: tuple[float, float, float], valid: np.ndarray
                       ) -> tuple[float, float]:
    """Mean gradient magnitude on the unchanged side of the changed region's boundary.

    The shell is one voxel thick: unchanged voxels with a changed neighbour, where ``valid``.
    """
    ch = sitk.GetImageFromArray(changed.astype(np.uint8))
    shell = sitk.GetArrayFromImage(sitk.BinaryDilate(ch, [1, 1, 1])).astype(bool) & ~changed
    shell &= valid
    grads = []
    for arr in (image_before, image_after):
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing(spacing)
        g = sitk.GetArrayFromImage(sitk.GradientMagnitude(img))
        grads.append(float(g[shell].mean()))
    return grads[0], grads[1]
