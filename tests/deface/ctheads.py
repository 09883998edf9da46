"""Head CT test data: the corpus' tilted head CT in its real (sheared) geometry."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CORPUS_HEADS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "heads"
CT_SHEAR = CORPUS_HEADS / "ct_shear.nii.gz"


def read_sheared_nifti(path: Path) -> sitk.Image:
    """A NIfTI volume with its sform kept exactly, shear included (SimpleITK's reader
    orthogonalises a sheared affine, which would move every slice)."""
    img = sitk.ReadImage(str(path), sitk.sitkFloat32)
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        header = f.read(348)
    srow = np.frombuffer(header[280:328], "<f4").reshape(3, 4).astype(np.float64)
    (sform_code,) = struct.unpack("<h", header[254:256])
    if sform_code <= 0:
        return img
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    m = ras_to_lps @ srow[:, :3]
    spacing = np.linalg.norm(m, axis=0)
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(img))
    out.SetSpacing(tuple(float(v) for v in spacing))
    out.SetDirection(tuple(float(v) for v in (m / spacing).ravel()))
    out.SetOrigin(tuple(float(v) for v in ras_to_lps @ srow[:, 3]))
    return out
