"""Test helper: write a SimpleITK volume as a DICOM MR series with pydicom.

Valid headers (Enhanced-free classic MR Image Storage), Image Orientation/Position taken
from the image's direction cosines, per-series rescale and bits stored. No PHI: every
identifying attribute holds an obviously synthetic value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def _new_object(sop_class: str) -> Dataset:
    """An empty object of ``sop_class`` with a fresh SOP Instance UID and its file meta."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_mr_series(
    image: sitk.Image,
    folder: Path,
    *,
    bits_stored: int = 16,
    slope: float = 1.0,
    intercept: float = 0.0,
    body_part: str = "HEAD",
    description: str = "T1 MPRAGE",
    modality: str = "MR",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    signed: bool = False,
    patient_name: str = "SYNTHETIC^VOLUNTEER",
    sop_class: str = MRImageStorage,
    extra: dict[str, object] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``image`` (real-world values) as one file per slice; returns the paths.

    Stored values are ``round((value - intercept) / slope)`` clipped to ``bits_stored``.
    Files are named in shuffled order so readers cannot rely on names.
    """
    folder.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    lo = -(1 << (bits_stored - 1)) if signed else 0
    stored = np.clip(np.rint((arr - intercept) / slope), lo, hi)
    dtype = np.int16 if signed else np.uint16
    d = np.array(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    study, series, frame = study_uid or generate_uid(), series_uid or generate_uid(), \
        generate_uid()
    rng = np.random.default_rng(len(arr))
    order = rng.permutation(len(arr))
    paths = []
    for k in range(arr.shape[0]):
        ds = _new_object(sop_class)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = patient_name, "VOLUNTEER01"
        ds.PatientIdentityRemoved = "YES"
        ds.Modality = modality
        ds.BodyPartExamined = body_part
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        # Columns 0 and 1 are the row and column directions; a sheared (gantry tilt)
        # image has a slice step that is not their normal, and positions follow it.
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        pos = image.TransformIndexToPhysicalPoint((0, 0, k))
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.SliceThickness = f"{sz:.6f}"
        ds.SpacingBetweenSlices = f"{sz:.6f}"
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.RescaleType = "HU" if modality == "CT" else "US"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = stored[k].astype(dtype).tobytes()
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced_mr(image: sitk.Image, path: Path, *, slope: float = 1.0,
                      intercept: float = 0.0) -> Path:
    """Write ``image`` as one multi-frame Enhanced MR object (one frame per slice; geometry
    and rescale in the functional groups, frames stored in reverse slice order)."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    stored = np.clip(np.rint((arr - intercept) / slope), 0, 4095).astype(np.uint16)[::-1]
    n = stored.shape[0]
    d = np.array(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    ds = _new_object(EnhancedMRImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "SYNTHETIC^VOLUNTEER", "VOLUNTEER02"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "MR", "BRAIN", "3D T1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    shared = Dataset()
    orient, measures, rescale = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
    measures.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
    measures.SliceThickness = f"{sz:.6f}"
    rescale.RescaleSlope, rescale.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    rescale.RescaleType = "US"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for f in range(n):
        k = n - 1 - f  # frame f holds slice k
        group, pos, ftype = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint(
            (0, 0, k))]
        ftype.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        group.PlanePositionSequence = Sequence([pos])
        group.MRImageFrameTypeSequence = Sequence([ftype])
        per.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
