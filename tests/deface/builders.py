"""Test helpers: real-world series shapes written from SimpleITK volumes.

Siemens mosaics (with or without their private CSA and (0019,xx0A) headers), enhanced
multi-frame objects (one per volume as XA30/XA60 write them, or one holding a whole 4-D
series) and classic 4-D series (time points, b-values). No PHI: identifying attributes hold
obviously synthetic values.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, generate_uid

from .dicom_writer import _new_object


def csa2(tags: dict[str, list[str]], vr: str = "IS") -> bytes:
    """A CSA2 ("SV10") header holding ``tags`` (each a list of text items)."""
    out = bytearray(b"SV10\x04\x03\x02\x01")
    out += struct.pack("<2I", len(tags), 77)
    for name, items in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(items), vr.encode(), 0,
                           len(items), 77)
        for item in items:
            data = item.encode() + b"\x00"
            out += struct.pack("<4i", len(data), len(data), 77, len(data))
            out += data + b"\x00" * (-len(data) % 4)
    return bytes(out)


def csa1(tags: dict[str, list[str]]) -> bytes:
    """The same in the older CSA1 layout (item lengths offset by the first item count)."""
    out = bytearray(struct.pack("<2I", len(tags), 77))
    names = list(tags)
    offset = len(tags[names[1]]) if len(names) > 1 else 0
    for name, items in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(items), b"IS", 0, len(items), 77)
        for item in items:
            data = item.encode() + b"\x00"
            out += struct.pack("<4i", len(data) + offset, len(data), 77, len(data))
            out += data + b"\x00" * (-len(data) % 4)
    return bytes(out)


def _common(ds: Dataset, study: str, series: str, frame: str, description: str,
            body_part: str) -> None:
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID = "SYNTHETIC^VOLUNTEER", "VOLUNTEER03"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "MR", body_part, description
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SeriesNumber = 7


def _stored(image: sitk.Image) -> np.ndarray:
    return np.clip(np.rint(sitk.GetArrayFromImage(image)), 0, 4095).astype(np.uint16)


def mosaic_of(image: sitk.Image) -> tuple[np.ndarray, list[float], int]:
    """(mosaic pixels, Image Position of the mosaic, tiles per row) of one volume."""
    arr = _stored(image)
    n, rows, cols = arr.shape
    grid = math.ceil(math.sqrt(n))
    mosaic = np.zeros((grid * rows, grid * cols), np.uint16)
    for i in range(n):
        r, c = divmod(i, grid)
        mosaic[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = arr[i]
    d = np.array(image.GetDirection()).reshape(3, 3)
    sx, sy, _ = image.GetSpacing()
    first = np.array(image.GetOrigin())
    ipp = first - d[:, 0] * sx * (grid * cols - cols) / 2 - d[:, 1] * sy * (grid * rows - rows) / 2
    return mosaic, [float(v) for v in ipp], grid


def write_mosaic(volumes: list[sitk.Image], folder: Path, *, csa: bool = True,
                 private19: bool = True, matrix: bool = True,
                 description: str = "ep2d_bold", body_part: str = "HEAD",
                 study: str | None = None, frame: str | None = None) -> list[Path]:
    """One Siemens mosaic file per volume (all volumes share the geometry)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study or generate_uid(), generate_uid()
    frame = frame or generate_uid()
    paths = []
    for k, image in enumerate(volumes):
        mosaic, ipp, _grid = mosaic_of(image)
        n = image.GetSize()[2]
        d = np.array(image.GetDirection()).reshape(3, 3)
        sx, sy, sz = image.GetSpacing()
        ds = _new_object(MRImageStorage)
        _common(ds, study, series, frame, description, body_part)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.InstanceNumber = ds.AcquisitionNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.SliceThickness = ds.SpacingBetweenSlices = f"{sz:.6f}"
        ds.Rows, ds.Columns = mosaic.shape
        if matrix:
            ds.AcquisitionMatrix = [image.GetSize()[0], 0, 0, image.GetSize()[1]]
        if csa:
            ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
            ds.add_new(0x00291010, "OB", csa2({
                "NumberOfImagesInMosaic": [str(n)],
                "SliceNormalVector": [f"{v:.8f}" for v in d[:, 2]]}))
        if private19:
            ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
            ds.add_new(0x0019100A, "US", n)
        ds.PixelData = mosaic.tobytes()
        path = folder / f"MOSAIC{k:03d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def _frame_group(image: sitk.Image, k: int, temporal: int, bvalue: float | None) -> Dataset:
    group, pos, content = Dataset(), Dataset(), Dataset()
    pos.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint(
        (0, 0, k))]
    content.TemporalPositionIndex = temporal
    content.InStackPositionNumber = k + 1
    content.StackID = "1"
    group.PlanePositionSequence = Sequence([pos])
    group.FrameContentSequence = Sequence([content])
    if bvalue is not None:
        diff = Dataset()
        diff.DiffusionBValue = bvalue
        group.MRDiffusionSequence = Sequence([diff])
    ftype = Dataset()
    ftype.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    group.MRImageFrameTypeSequence = Sequence([ftype])
    return group


def write_enhanced(volumes: list[sitk.Image], folder: Path, *, one_per_volume: bool = True,
                   bvalues: list[float] | None = None, study: str | None = None,
                   frame: str | None = None, description: str = "ep2d_bold") -> list[Path]:
    """Enhanced MR: one object per volume (XA30/XA60) or one object with every volume."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study or generate_uid(), generate_uid()
    frame = frame or generate_uid()
    batches = [[i] for i in range(len(volumes))] if one_per_volume else [
        list(range(len(volumes)))]
    paths = []
    for b, members in enumerate(batches):
        first = volumes[members[0]]
        d = np.array(first.GetDirection()).reshape(3, 3)
        sx, sy, sz = first.GetSpacing()
        ds = _new_object(EnhancedMRImageStorage)
        _common(ds, study, series, frame, description, "BRAIN")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "FMRI", "NONE"]
        ds.InstanceNumber = b + 1
        shared, orient, measures = Dataset(), Dataset(), Dataset()
        orient.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        measures.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        measures.SliceThickness = f"{sz:.6f}"
        shared.PlaneOrientationSequence = Sequence([orient])
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        groups, frames = [], []
        for m in members:
            arr = _stored(volumes[m])
            for k in range(arr.shape[0]):
                bval = bvalues[m] if bvalues else None
                groups.append(_frame_group(volumes[m], k, m + 1, bval))
                frames.append(arr[k])
        ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
        ds.NumberOfFrames = len(frames)
        ds.Rows, ds.Columns = frames[0].shape
        ds.PixelData = np.stack(frames).tobytes()
        path = folder / f"ENH{b:03d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def write_classic_4d(volumes: list[sitk.Image], folder: Path, *, key: str | None = "temporal",
                     study: str | None = None, frame: str | None = None,
                     description: str = "ep2d_diff", body_part: str = "HEAD") -> list[Path]:
    """One file per slice for every volume. ``key``: "temporal" (Temporal Position
    Identifier), "bvalue" (Diffusion B-Value) or None (only the instance numbers tell)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = study or generate_uid(), generate_uid()
    frame = frame or generate_uid()
    paths = []
    number = 0
    for v, image in enumerate(volumes):
        arr = _stored(image)
        d = np.array(image.GetDirection()).reshape(3, 3)
        sx, sy, sz = image.GetSpacing()
        for k in range(arr.shape[0]):
            number += 1
            ds = _new_object(MRImageStorage)
            _common(ds, study, series, frame, description, body_part)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.InstanceNumber = number
            ds.ImageOrientationPatient = [f"{x:.6f}" for x in (*d[:, 0], *d[:, 1])]
            ds.ImagePositionPatient = [f"{x:.4f}" for x in image.TransformIndexToPhysicalPoint(
                (0, 0, k))]
            ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
            ds.SliceThickness = f"{sz:.6f}"
            if key == "temporal":
                ds.TemporalPositionIdentifier = v + 1
            elif key == "bvalue":
                ds.DiffusionBValue = 0.0 if v == 0 else 1000.0
                if v:
                    ds.DiffusionGradientOrientation = [float(v % 3 == 0), float(v % 3 == 1),
                                                       float(v % 3 == 2)]
            ds.Rows, ds.Columns = arr.shape[1:]
            ds.PixelData = arr[k].tobytes()
            path = folder / f"IM{(number * 7919) % 100003:06d}.dcm"  # names tell nothing
            ds.save_as(str(path), enforce_file_format=True)
            paths.append(path)
    return paths
