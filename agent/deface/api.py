"""``deface_path``: deface one DICOM series folder or one NIfTI file (the CLI's entry)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.misc import is_dicom

from agent.config import DefaceConfig
from agent.deface.core import DefaceReport, DefaceResult, check_output, deface_image
from agent.deface.render import render_before_after
from agent.deface.template import load_template, warm_in_background
from agent.errors import DefaceFailed

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def apply_result(original: np.ndarray, result: DefaceResult, lo: float, hi: float,
                 integer: bool) -> np.ndarray:
    """``original`` with the new values written where the blend weight is positive."""
    out = original.copy()
    sub = out[result.box]
    region = result.weight > 0
    vals = result.values[region]
    if integer:
        vals = np.rint(vals)
    sub[region] = np.clip(vals, lo, hi).astype(original.dtype)
    return out


def guess_modality(image: sitk.Image) -> str:
    """"CT" when the volume holds Hounsfield units (air near -1000), else "MR"."""
    arr = sitk.GetArrayViewFromImage(image)
    return "CT" if float(np.percentile(arr[::4, ::4, ::4], 1)) < -500.0 else "MR"


def deface_nifti(inp: Path, out: Path, *, render: Path | None = None,
                 modality: str | None = None) -> DefaceReport:
    """Deface a NIfTI volume into ``out`` with the same grid and data type
    (``modality`` None: guessed from the values, see :func:`guess_modality`)."""
    t0 = time.perf_counter()
    template = load_template()
    warm_in_background(template)  # (while the volume is read and fitted)
    try:
        img = sitk.ReadImage(str(inp))
    except RuntimeError as exc:
        raise DefaceFailed(f"{inp.name} cannot be read as NIfTI ({str(exc).splitlines()[-1]})",
                           code="deface-input") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DefaceFailed(f"{inp.name} is not a single 3-D volume", code="deface-input")
    original = sitk.GetArrayFromImage(img)
    modality = modality or guess_modality(img)
    result = deface_image(sitk.Cast(img, sitk.sitkFloat32), template, modality=modality)
    integer = np.issubdtype(original.dtype, np.integer)
    info = np.iinfo(original.dtype) if integer else np.finfo(original.dtype)
    new = apply_result(original, result, float(info.min), float(info.max), integer)
    check_output(original, new, result)
    out_img = sitk.GetImageFromArray(new)
    out_img.CopyInformation(img)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Level 1: most of the size gain of gzip at a fraction of its time.
    sitk.WriteImage(out_img, str(out), useCompression=out.name.lower().endswith(".gz"),
                    compressionLevel=1)
    if render is not None:
        render_before_after(img, out_img, render, modality=modality)
    result.report.seconds = time.perf_counter() - t0
    return result.report


def dicom_files(folder: Path) -> list[Path]:
    """DICOM files below ``folder`` (by their preamble; DICOMDIR and other files skipped)."""
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name.upper() != "DICOMDIR" and is_dicom(str(p)):
            found.append(p)
    return found


def deface_path(inp: Path, out: Path, *, render: Path | None = None,
                cfg: DefaceConfig | None = None) -> DefaceReport:
    """Deface ``inp`` (a DICOM series folder or a NIfTI file) into ``out``.

    ``out`` is a folder for DICOM input (same file names) and a NIfTI path for NIfTI input.
    Raises DefaceFailed, with a reason a person can act on, whenever the face could not be
    replaced with confidence; nothing is written to ``out`` then (except a partial folder).
    """
    inp, out = Path(inp), Path(out)
    if inp.is_file() and is_nifti(inp):
        if not is_nifti(out):
            raise DefaceFailed("the output of a NIfTI input must be a .nii or .nii.gz path",
                               code="deface-input")
        return deface_nifti(inp, out, render=render)
    if inp.is_dir():
        files = dicom_files(inp)
        if not files:
            raise DefaceFailed(f"{inp} holds no DICOM files", code="deface-input")
        from agent.deface.plan import deface_dicom_files

        warm_in_background(load_template())  # (while the series is read and fitted)
        return deface_dicom_files(files, out, render=render, base=inp)
    raise DefaceFailed(f"{inp} is neither a DICOM series folder nor a NIfTI file",
                       code="deface-input")
