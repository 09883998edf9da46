"""Constructed variants of real corpus series in the multi-frame, derived and mosaic shapes
other vendors write (companion of :mod:`tests.deface.variants`).

Each rewrites real series (pixels untouched unless said) into one shape the corpus does not
hold:

- :func:`enhanced_4d`: a classic 4-D series (the Philips DTI and fMRI, the GE DWI) as one
  Enhanced MR object holding every frame, as Philips, GE and Canon write them: per-frame
  Frame Content (temporal position, stack, in-stack position, dimension index values),
  MR Diffusion (b-value, directionality, gradient direction), echo, frame type and
  rescale; private items of creators we do not know in every frame; optionally cut into a
  Concatenation of several files (``parts``), frames in slice-major order;
- :func:`two_stacks`: one enhanced object holding two stacks of different orientation;
- :func:`derived_maps`: ADC / FA / TRACEW-like maps of a DWI (Image Type DERIVED, a single
  image per position, or b0 and trace in one series told apart only by numbering);
- :func:`bare_mosaic`: a Siemens mosaic with its private headers removed and the Acquisition
  Matrix given, absent, or not the tile size.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

#: Per-image attributes that move into the functional groups of an enhanced object.
_PER_FRAME = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
              "SliceThickness", "RescaleSlope", "RescaleIntercept", "RescaleType",
              "WindowCenter", "WindowWidth", "InstanceNumber", "SliceLocation",
              "TemporalPositionIdentifier", "DiffusionBValue", "DiffusionGradientOrientation",
              "EchoTime", "EchoNumbers", "AcquisitionNumber", "TriggerTime", "ImageType",
              "SOPInstanceUID", "ImagesInAcquisition", "AcquisitionTime", "ContentTime",
              "SmallestImagePixelValue", "LargestImagePixelValue", "InversionTime")


def load(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "LICENSE"]


def _depth(ds: Dataset) -> float:
    o = np.array(ds.ImageOrientationPatient, float)
    return float(np.array(ds.ImagePositionPatient, float) @ np.cross(o[:3], o[3:]))


def _seq(item: Dataset) -> Sequence:
    return Sequence([item])


def _frame_group(ds: Dataset, temporal: int, stack: str, in_stack: int,
                 private: str) -> Dataset:
    g = Dataset()
    pos, ori, meas, scale, ftype, content, echo = (Dataset() for _ in range(7))
    pos.ImagePositionPatient = ds.ImagePositionPatient
    ori.ImageOrientationPatient = ds.ImageOrientationPatient
    meas.PixelSpacing = ds.PixelSpacing
    meas.SliceThickness = ds.get("SliceThickness", 1.0)
    scale.RescaleIntercept = ds.get("RescaleIntercept", 0)
    scale.RescaleSlope = ds.get("RescaleSlope", 1)
    scale.RescaleType = "US"
    values = list(ds.get("ImageType") or ["ORIGINAL", "PRIMARY"])
    ftype.FrameType = [*values[:2], "M" if len(values) < 3 else values[2], "NONE"][:4]
    content.StackID = stack
    content.InStackPositionNumber = in_stack
    content.TemporalPositionIndex = temporal
    content.FrameAcquisitionNumber = int(ds.get("AcquisitionNumber", 1) or 1)
    content.DimensionIndexValues = [int(stack), in_stack, temporal]
    g.PlanePositionSequence = _seq(pos)
    g.PlaneOrientationSequence = _seq(ori)
    g.PixelMeasuresSequence = _seq(meas)
    g.PixelValueTransformationSequence = _seq(scale)
    g.MRImageFrameTypeSequence = _seq(ftype)
    g.FrameContentSequence = _seq(content)
    if "EchoTime" in ds:
        echo.EffectiveEchoTime = float(ds.EchoTime)
        g.MREchoSequence = _seq(echo)
    if "DiffusionBValue" in ds:
        diff = Dataset()
        b = float(ds.DiffusionBValue)
        direction = [float(v) for v in (ds.get("DiffusionGradientOrientation") or [0, 0, 0])]
        diff.DiffusionBValue = b
        if b == 0:
            diff.DiffusionDirectionality = "NONE"
        elif not any(direction):
            diff.DiffusionDirectionality = "ISOTROPIC"  # the trace image of a DTI
        else:
            diff.DiffusionDirectionality = "DIRECTIONAL"
            grad = Dataset()
            grad.DiffusionGradientOrientation = direction
            diff.DiffusionGradientDirectionSequence = _seq(grad)
        g.MRDiffusionSequence = _seq(diff)
    # A vendor's own per-frame item, of a creator nobody else knows.
    block = g.private_block(0x2005, private, create=True)
    block.add_new(0x0E, "FL", 1.0)
    block.add_new(0x2A, "LO", "opaque")
    return g


def enhanced_4d(datasets: list[Dataset], out: Path, *, parts: int = 1,
                private: str = "Philips Imaging DD 005", manufacturer: str | None = None,
                slice_major: bool = False) -> list[Path]:
    """Every image of a classic (4-D) series as the frames of one enhanced object, or of a
    Concatenation of ``parts`` objects. Volumes are numbered by temporal position (or by
    their b-value and direction); ``slice_major`` orders the frames position by position
    (every volume's first slice, then every second slice ...) as Philips does."""
    ordered = sorted(datasets, key=lambda d: float(d.get("InstanceNumber", 0) or 0))
    depths = sorted({round(_depth(d), 2) for d in ordered})
    volume_of: dict[tuple[object, ...], int] = {}
    frames: list[tuple[int, int, Dataset]] = []  # (volume, in-stack position, image)
    seen: dict[tuple[int, int], int] = {}
    for d in ordered:
        k = depths.index(round(_depth(d), 2)) + 1
        tag = (d.get("TemporalPositionIdentifier"), str(d.get("DiffusionBValue")),
               str(d.get("DiffusionGradientOrientation")))
        volume = volume_of.setdefault(tag, len(volume_of) + 1)
        while (volume, k) in seen:  # a repeat with the same labels: the next volume
            volume += 1
        seen[(volume, k)] = 1
        frames.append((volume, k, d))
    frames.sort(key=lambda f: (f[1], f[0]) if slice_major else (f[0], f[1]))
    first = ordered[0]
    top = Dataset()
    for elem in first:
        if elem.keyword in _PER_FRAME or elem.tag.group == 0x0002 or elem.tag.is_private:
            continue
        if elem.keyword == "PixelData":
            continue
        top.add(copy.deepcopy(elem))
    top.SOPClassUID = EnhancedMRImageStorage
    top.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    if manufacturer:
        top.Manufacturer = manufacturer
    top.ContentQualification = "PRODUCT"
    top.DimensionOrganizationSequence = _seq(Dataset())
    top.DimensionOrganizationSequence[0].DimensionOrganizationUID = generate_uid()
    shared = Dataset()
    shared.MRImagingModifierSequence = _seq(Dataset())
    top.SharedFunctionalGroupsSequence = _seq(shared)
    series = generate_uid()
    concat = generate_uid() if parts > 1 else None
    size = -(-len(frames) // parts)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(parts):
        chunk = frames[p * size:(p + 1) * size]
        ds = copy.deepcopy(top)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = p + 1
        if concat:
            ds.ConcatenationUID = concat
            ds.SOPInstanceUIDOfConcatenationSource = generate_uid()
            ds.InConcatenationNumber = p + 1
            ds.InConcatenationTotalNumber = parts
            ds.ConcatenationFrameOffsetNumber = p * size
        ds.PerFrameFunctionalGroupsSequence = Sequence(
            [_frame_group(d, v, "1", k, private) for v, k, d in chunk])
        ds.NumberOfFrames = len(chunk)
        ds.PixelData = np.stack([d.pixel_array for _, _, d in chunk]).astype(
            first.pixel_array.dtype).tobytes()
        paths.append(_write(ds, out / f"ENH{p + 1:03d}.dcm"))
    return paths


def two_stacks(datasets: list[Dataset], tilted: list[Dataset], out: Path) -> list[Path]:
    """One enhanced object holding two stacks (Stack ID 1 and 2) in different
    orientations: a Philips multi-package scan, or a survey's planes in one object."""
    paths = enhanced_4d(datasets + tilted, out)
    ds = pydicom.dcmread(paths[0])
    normals = []
    for g in ds.PerFrameFunctionalGroupsSequence:
        normals.append(tuple(round(float(v), 3) for v in
                             g.PlaneOrientationSequence[0].ImageOrientationPatient))
    first = normals[0]
    counts: dict[str, int] = {}
    for g, n in zip(ds.PerFrameFunctionalGroupsSequence, normals, strict=True):
        c = g.FrameContentSequence[0]
        c.StackID = "1" if n == first else "2"
        counts[c.StackID] = counts.get(c.StackID, 0) + 1
        c.TemporalPositionIndex = 1
        c.InStackPositionNumber = counts[c.StackID]
        c.DimensionIndexValues = [int(c.StackID), c.InStackPositionNumber, 1]
    return [_write(ds, paths[0])]


def derived_maps(dwi: list[Dataset], out: Path, kind: str) -> list[Path]:
    """A map computed from a DWI's volumes, written as the scanner's derived series:
    ``adc`` / ``fa`` (one image per position, Image Type DERIVED, scaled integers), or
    ``tracew`` (the b0 and the mean of the diffusion-weighted volumes in one series, the
    same labels on both: only the numbering tells them apart)."""
    by_volume: dict[str, list[Dataset]] = {}
    for d in dwi:
        by_volume.setdefault(f"{d.get('DiffusionBValue')}|"
                             f"{d.get('DiffusionGradientOrientation')}", []).append(d)
    stacks = [sorted(v, key=_depth) for v in by_volume.values()]
    stacks = [s for s in stacks if len(s) == len(stacks[0])]
    b0 = next(s for s in stacks if float(s[0].get("DiffusionBValue", 0) or 0) == 0)
    dw = [s for s in stacks if s is not b0]
    s0 = np.stack([d.pixel_array for d in b0]).astype(np.float64) + 1
    sw = np.stack([np.stack([d.pixel_array for d in s]) for s in dw]).astype(np.float64) + 1
    bval = max(float(s[0].get("DiffusionBValue", 1000) or 1000) for s in dw)
    trace = np.exp(np.log(sw).mean(axis=0))
    maps: list[tuple[np.ndarray, list[str]]] = []
    if kind == "adc":
        adc = np.clip(-np.log(trace / s0) / bval * 1e6, 0, 4095)
        maps = [(adc, ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])]
    elif kind == "fa":
        md = sw.mean(axis=0)
        fa = np.sqrt(1.5 * ((sw - md) ** 2).sum(axis=0) / (sw ** 2).sum(axis=0))
        maps = [(np.clip(fa * 1000, 0, 1000), ["DERIVED", "PRIMARY", "DIFFUSION", "FA"])]
    else:
        kinds = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
        maps = [(s0 - 1, kinds), (trace - 1, kinds)]
    made = []
    number = 0
    for values, image_type in maps:
        for k, d in enumerate(b0):
            number += 1
            m = copy.deepcopy(d)
            for name in ("DiffusionBValue", "DiffusionGradientOrientation",
                         "TemporalPositionIdentifier"):
                if name in m:
                    delattr(m, name)
            for tag in [e.tag for e in m if e.tag.is_private]:
                del m[tag]
            m.ImageType = image_type
            m.RescaleSlope, m.RescaleIntercept = 1, 0
            m.InstanceNumber = number
            m.BitsAllocated, m.BitsStored, m.HighBit, m.PixelRepresentation = 16, 12, 11, 0
            m.PixelData = np.rint(values[k]).astype(np.uint16).tobytes()
            m.SOPInstanceUID = generate_uid()
            made.append(m)
    series = generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for m in made:
        m.SeriesInstanceUID = series
        paths.append(_write(m, out / f"IM{len(paths) + 1:04d}.dcm"))
    return paths


def bare_mosaic(datasets: list[Dataset], out: Path, matrix: list[int] | None) -> list[Path]:
    """The mosaics with every private element removed (as a PACS or an anonymiser that
    drops private tags leaves them); ``matrix``: the Acquisition Matrix left on them
    (None: removed too)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, d in enumerate(datasets):
        m = copy.deepcopy(d)
        for tag in [e.tag for e in m if e.tag.is_private]:
            del m[tag]
        if matrix is None:
            if "AcquisitionMatrix" in m:
                del m.AcquisitionMatrix
        else:
            m.AcquisitionMatrix = matrix
        paths.append(_write(m, out / f"MOS{n + 1:04d}.dcm"))
    return paths


def _write(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def one_series(parts: list[list[Path]], out: Path) -> list[Path]:
    """Several classic stacks written as one series (one Series Instance UID, numbered on):
    two orientations, two sizes, or the same positions twice, as a multi-package scan or a
    repeated acquisition arrives."""
    datasets = [pydicom.dcmread(p) for files in parts for p in files]
    series = generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        paths.append(_write(ds, out / f"IM{n + 1:04d}.dcm"))
    return paths


def enhanced_per_slice(datasets: list[Dataset], out: Path) -> list[Path]:
    """One single-frame enhanced object per slice (Number of Frames 1): geometry only in the
    functional groups, as some vendors write derived maps and reformats."""
    paths = []
    series = generate_uid()
    for n, d in enumerate(sorted(datasets, key=_depth)):
        (path,) = enhanced_4d([d], out / "tmp")
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        path.unlink()
        paths.append(_write(ds, out / f"ENH{n + 1:04d}.dcm"))
    (out / "tmp").rmdir()
    return paths


def foreign_headers(classic: list[Path], out: Path, vendor: str, group: int,
                    creator: str) -> list[Path]:
    """A vendor whose private creator nobody knows (United Imaging, Hitachi, Fujifilm):
    every other private element gone, theirs present, their Image Type."""
    datasets = [pydicom.dcmread(p) for p in classic]
    series = generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        for tag in [e.tag for e in ds if e.tag.is_private]:
            del ds[tag]
        ds.Manufacturer = vendor
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS3D"]
        block = ds.private_block(group, creator, create=True)
        block.add_new(0x01, "SH", "3D")
        block.add_new(0x09, "OB", b"\x00\x01" * 16)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        paths.append(_write(ds, out / f"IM{n + 1:04d}.dcm"))
    return paths


def float_map(enhanced: Path, out: Path, scale: float = 0.1) -> list[Path]:
    """An enhanced object rewritten as a Parametric Map with float pixel data (a T1 or ADC
    map in real units, as mapping software and some scanners write them)."""
    ds = pydicom.dcmread(enhanced)
    values = ds.pixel_array.astype(np.float32) * np.float32(scale)
    del ds.PixelData
    for name in ("BitsStored", "HighBit", "PixelRepresentation"):
        if name in ds:
            delattr(ds, name)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    ds.SOPInstanceUID = generate_uid()
    return [_write(ds, out / "MAP0001.dcm")]
