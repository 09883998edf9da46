"""DICOM series <-> SimpleITK volume, and writing a defaced volume back into the objects.

Geometry comes from Image Orientation/Position (Patient), never from file order or names, so
axial, sagittal, coronal and oblique acquisitions are handled alike. Written back: the same
objects with new pixel values (same rows, columns, data type, rescale, bits stored - values
are clipped to what the objects can represent), Image Type DERIVED, and code 113102 in
the De-identification Method Code Sequence. Compressed input is written uncompressed
(Explicit VR Little Endian).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from agent.deface.core import DefaceReport, DefaceResult, check_output, deface_image
from agent.deface.register import Registration
from agent.deface.template import load_template
from agent.errors import DefaceFailed

MIN_SLICES = 20
CLEAN_VISUAL = ("113102", "DCM", "Clean Recognizable Visual Features")
#: Tolerances: direction cosines (dot product), slice spacing (relative), tilt (relative).
_ORIENT_TOL = 1e-3
_SPACING_TOL = 0.02


@dataclass
class SeriesVolume:
    """One series as a volume: the datasets sorted along the slice normal, and the image."""

    files: list[Path]
    datasets: list[Dataset]
    image: sitk.Image  # real-world values, float32
    stored: np.ndarray  # stored values, (slices, rows, columns), original dtype
    slopes: np.ndarray
    intercepts: np.ndarray


def save_defaced(ds: Dataset, path: Path) -> Path:
    """Write a defaced object; a failure to write is a defacing failure (never deliver)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 -- pydicom's writer raises many types; converted
        raise _fail(f"the defaced image cannot be written ({type(exc).__name__})",
                    code="deface-write") from None
    return path


def _fail(message: str, code: str = "deface-input") -> DefaceFailed:
    return DefaceFailed(message, code=code)


def read_datasets(files: list[Path]) -> list[tuple[Path, Dataset]]:
    """Read every file (pixel data included); pydicom errors become DefaceFailed."""
    out: list[tuple[Path, Dataset]] = []
    for path in files:
        try:
            out.append((path, pydicom.dcmread(str(path))))
        except Exception as exc:  # noqa: BLE001 -- pydicom raises many types for damaged files
            raise _fail(f"a file of the series cannot be read as DICOM ({type(exc).__name__})"
                        ) from None
    return out


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    if int(getattr(ds, "PixelRepresentation", 0) or 0):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def load_volumes(items: list[tuple[Path, Dataset]]
                 ) -> tuple[list[SeriesVolume], Dataset | None]:
    """The volumes of a series, classic or enhanced; for an enhanced (multi-frame) object,
    also its dataset, into which :func:`write_volumes` writes the frames back."""
    from agent.deface.multiframe import frame_headers

    multi = [ds for _, ds in items if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1]
    source: Dataset | None = None
    if multi:
        if len(items) != 1:
            raise _fail("a series of several multi-frame objects cannot be defaced yet")
        path, source = items[0]
        items = [(path, h) for h in frame_headers(source)]
    volumes = [build_volume(group) for group in split_volumes(items)]
    return volumes, source


def write_volumes(volumes: list[SeriesVolume], results: list[tuple[DefaceResult, np.ndarray]],
                  out_dir: Path, names: dict[Path, str], source: Dataset | None
                  ) -> dict[Path, Path]:
    """Write every defaced volume; returns input file -> written file."""
    from agent.deface.multiframe import write_frames

    if source is not None:
        path = volumes[0].files[0]
        updates = [(v.datasets, stored) for v, (_, stored) in zip(volumes, results, strict=True)]
        return {path: write_frames(source, updates, out_dir / names[path])}
    written: dict[Path, Path] = {}
    for volume, (_, stored) in zip(volumes, results, strict=True):
        paths = write_series(volume, stored, out_dir, [names[p] for p in volume.files])
        written.update(zip(volume.files, paths, strict=True))
    return written


def split_volumes(items: list[tuple[Path, Dataset]]) -> list[list[tuple[Path, Dataset]]]:
    """Split a series holding several volumes (time points, diffusion directions, echoes)
    into volumes: when every slice position holds the same number ``k`` of images, the
    ``i``-th image of each position (in Instance Number order) belongs to volume ``i``.
    Anything else is returned as one group (and :func:`build_volume` says what is wrong).
    """
    if len({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in items}) > 1:
        raise _fail("the files belong to several series; deface one series at a time")
    try:
        depths = []
        for _, ds in items:
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            normal = np.cross(iop[:3], iop[3:])
            depths.append(round(float(np.array([float(v) for v in ds.ImagePositionPatient])
                                      @ normal), 2))
    except (AttributeError, ValueError, TypeError, IndexError):
        return [items]
    groups: dict[float, list[tuple[Path, Dataset]]] = {}
    for depth, item in zip(depths, items, strict=True):
        groups.setdefault(depth, []).append(item)
    counts = {len(g) for g in groups.values()}
    if len(counts) != 1 or counts == {1}:
        return [items]
    k = counts.pop()
    volumes: list[list[tuple[Path, Dataset]]] = [[] for _ in range(k)]
    for group in groups.values():
        group.sort(key=lambda it: int(getattr(it[1], "InstanceNumber", 0) or 0))
        for i, item in enumerate(group):
            volumes[i].append(item)
    return volumes


def build_volume(items: list[tuple[Path, Dataset]]) -> SeriesVolume:
    """Sort slices along the normal and check they form one regular volume.

    Raises DefaceFailed naming the problem (too few slices, mixed orientations, gantry tilt,
    irregular spacing, multi-frame or colour data).
    """
    if len(items) < MIN_SLICES:
        raise _fail(f"the series has {len(items)} images; defacing needs a volume of at least "
                    f"{MIN_SLICES} slices")
    first = items[0][1]
    if len({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in items}) > 1:
        raise _fail("the files belong to several series; deface one series at a time")
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise _fail("multi-frame images cannot be defaced yet")
    if int(getattr(first, "SamplesPerPixel", 1) or 1) != 1:
        raise _fail("colour images cannot be defaced")
    try:
        iop = np.array([float(v) for v in first.ImageOrientationPatient])
        row, col = iop[:3], iop[3:]
        normal = np.cross(row, col)
        positions = []
        for _, ds in items:
            o = np.array([float(v) for v in ds.ImageOrientationPatient])
            if np.abs(o - iop).max() > _ORIENT_TOL:
                raise _fail("the images of the series have different orientations (a localizer "
                            "or a multi-stack series); it cannot be defaced as one volume")
            if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
                raise _fail("the images of the series have different sizes")
            positions.append(np.array([float(v) for v in ds.ImagePositionPatient]))
        spacing_rc = [float(v) for v in first.PixelSpacing]
    except (AttributeError, ValueError, TypeError, IndexError):
        raise _fail("the images lack usable position/orientation/spacing attributes") from None
    if abs(np.linalg.norm(normal) - 1.0) > 1e-2 or abs(float(row @ col)) > 1e-2:
        raise _fail("the image orientation is not a pair of orthogonal unit vectors")
    pos = np.array(positions)
    depth = pos @ normal
    order = np.argsort(depth)
    pos, depth = pos[order], depth[order]
    items = [items[i] for i in order]
    steps = np.diff(depth)
    if (steps <= 1e-3).any():
        raise _fail("the series has several images at the same position (several volumes or "
                    "echoes in one series); it cannot be defaced as one volume")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > _SPACING_TOL * step + 1e-3:
        raise _fail("the slices are not evenly spaced (missing slices or mixed stacks)")
    # Gantry tilt: successive positions move along a slanted axis, not the normal. The
    # volume keeps that native geometry as a sheared (non-orthogonal) direction matrix, so
    # every voxel is defaced where it is and written back bit for bit elsewhere.
    slice_axis, slice_step = normal, step
    lateral = (pos[-1] - pos[0]) - normal * (depth[-1] - depth[0])
    if np.linalg.norm(lateral) > 0.01 * abs(depth[-1] - depth[0]) + 0.05:
        travel = pos[-1] - pos[0]
        slice_axis = travel / np.linalg.norm(travel)
        slice_step = float(np.linalg.norm(travel)) / (len(pos) - 1)
        if float(slice_axis @ normal) < 0.5:  # more than 60 degrees: not a tilted stack
            raise _fail("the slices are sheared beyond any gantry tilt; they cannot be "
                        "defaced as one volume")
        expected = pos[0] + np.outer(np.arange(len(pos)), slice_axis * slice_step)
        if np.abs(pos - expected).max() > _SPACING_TOL * slice_step + 0.05:
            raise _fail("the slices of the tilted series are not evenly placed")

    stored_slices, slopes, intercepts = [], [], []
    for _, ds in items:
        try:
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 -- pixel decoders raise many types; converted
            raise _fail(f"the pixel data cannot be decoded ({type(exc).__name__})") from None
        if arr.shape != (int(first.Rows), int(first.Columns)):
            raise _fail("unexpected pixel data shape")
        stored_slices.append(arr)
        slopes.append(float(getattr(ds, "RescaleSlope", 1.0) or 1.0))
        intercepts.append(float(getattr(ds, "RescaleIntercept", 0.0) or 0.0))
    stored = np.stack(stored_slices)
    sl = np.array(slopes, np.float64)
    ic = np.array(intercepts, np.float64)
    real = stored.astype(np.float32) * sl[:, None, None].astype(np.float32) \
        + ic[:, None, None].astype(np.float32)
    image = sitk.GetImageFromArray(real)
    image.SetSpacing((spacing_rc[1], spacing_rc[0], slice_step))
    image.SetOrigin(tuple(float(v) for v in pos[0]))
    image.SetDirection(tuple(float(v) for v in
                             np.column_stack([row, col, slice_axis]).ravel()))
    return SeriesVolume(
        files=[p for p, _ in items], datasets=[d for _, d in items], image=image,
        stored=stored, slopes=sl, intercepts=ic,
    )


def quantise(volume: SeriesVolume, result: DefaceResult) -> np.ndarray:
    """New stored values: the originals, with the blended voxels replaced (per-slice rescale,
    rounded and clipped to the representable range)."""
    out = volume.stored.copy()
    lo, hi = _stored_range(volume.datasets[0])
    info = np.iinfo(out.dtype) if np.issubdtype(out.dtype, np.integer) else None
    if info is not None:
        lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    z0 = result.box[0].start
    sub = out[result.box]
    region = result.weight > 0
    slope = volume.slopes[z0:z0 + sub.shape[0]][:, None, None]
    icpt = volume.intercepts[z0:z0 + sub.shape[0]][:, None, None]
    raw = (result.values.astype(np.float64) - icpt) / slope
    if info is not None:
        raw = np.rint(raw)
    sub[region] = np.clip(raw, lo, hi)[region].astype(out.dtype)
    return out


def mark_derived(ds: Dataset) -> None:
    """Image Type value 1 DERIVED, and 113102 in the de-identification method codes."""
    if "ImageType" in ds and ds.ImageType:
        values = list(ds.ImageType) if ds["ImageType"].VM > 1 else [str(ds.ImageType)]
        values[0] = "DERIVED"
        ds.ImageType = values
    else:
        ds.ImageType = ["DERIVED", "SECONDARY"]
    seq = ds.get("DeidentificationMethodCodeSequence")
    if seq is None:
        seq = Sequence()
        ds.DeidentificationMethodCodeSequence = seq
    if not any(getattr(item, "CodeValue", "") == CLEAN_VISUAL[0] for item in seq):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_VISUAL
        seq.append(item)
    # The free-text De-identification Method lists the options applied; name this one too.
    if "DeidentificationMethod" in ds:
        elem = ds["DeidentificationMethod"]
        methods = [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]
        if CLEAN_VISUAL[2] not in methods:
            ds.DeidentificationMethod = [m for m in methods if m] + [CLEAN_VISUAL[2]]


def write_series(volume: SeriesVolume, stored: np.ndarray, out_dir: Path,
                 names: list[str]) -> list[Path]:
    """Write each dataset with its new pixel values as ``out_dir / names[i]``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ds, arr, name in zip(volume.datasets, stored, names, strict=True):
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            if "NumberOfFrames" in ds and int(ds.NumberOfFrames) == 1:
                del ds.NumberOfFrames
        data = np.ascontiguousarray(arr).tobytes()
        if len(data) % 2:
            data += b"\x00"  # DICOM values have even length
        ds.PixelData = data
        ds["PixelData"].VR = "OB" if int(getattr(ds, "BitsAllocated", 16)) <= 8 else "OW"
        for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if kw in ds:
                delattr(ds, kw)
        mark_derived(ds)
        written.append(save_defaced(ds, out_dir / name))
    return written


def deface_volume(volume: SeriesVolume, *, seed: int = 0,
                  registration: Registration | None = None, modality: str = "MR"
                  ) -> tuple[DefaceResult, np.ndarray]:
    """Deface a series volume; returns the result and the checked new stored values.

    ``registration``: the fit found on another volume of the same series (same geometry),
    reused so every volume of a time series gets the same face.
    """
    result = deface_image(volume.image, load_template(), seed=seed, registration=registration,
                          modality=modality)
    stored = quantise(volume, result)
    check_output(volume.stored, stored, result)
    return result, stored


def stored_to_image(volume: SeriesVolume, stored: np.ndarray) -> sitk.Image:
    real = stored.astype(np.float32) * volume.slopes[:, None, None].astype(np.float32) \
        + volume.intercepts[:, None, None].astype(np.float32)
    img = sitk.GetImageFromArray(real)
    img.CopyInformation(volume.image)
    return img


def deface_dicom_files(files: list[Path], out_dir: Path, *, render: Path | None = None,
                       base: Path | None = None) -> DefaceReport:
    """Deface the DICOM series in ``files`` into ``out_dir`` (same relative names)."""
    from agent.deface.render import render_before_after

    t0 = time.perf_counter()
    volumes, source = load_volumes(read_datasets(files))
    modality = series_modality(volumes[0])
    results = deface_volumes(volumes, modality=modality)
    names = {p: str(p.relative_to(base)) if base else p.name for p in files}
    write_volumes(volumes, results, out_dir, names, source)
    if render is not None:
        render_before_after(volumes[0].image, stored_to_image(volumes[0], results[0][1]), render,
                            modality=modality)
    report = results[0][0].report
    report.seconds = time.perf_counter() - t0
    if len(volumes) > 1:
        report.notes.append(f"{len(volumes)} volumes defaced with one template fit")
    return report


def series_modality(volume: SeriesVolume) -> str:
    """"CT" for a CT series, else "MR" (the defacer's two intensity models)."""
    return "CT" if str(getattr(volume.datasets[0], "Modality", "")).upper() == "CT" else "MR"


def deface_volumes(volumes: list[SeriesVolume], *, seed: int = 0, modality: str = "MR"
                   ) -> list[tuple[DefaceResult, np.ndarray]]:
    """Deface every volume of a series: the template is fitted on the first volume and the
    fit reused for the others (they share the geometry), so all get the same new face."""
    geometry = _geometry(volumes[0])
    if any(_geometry(v) != geometry for v in volumes[1:]):
        raise _fail("the volumes of the series do not share one geometry")
    first = deface_volume(volumes[0], seed=seed, modality=modality)
    out = [first]
    for i, volume in enumerate(volumes[1:], start=1):
        out.append(deface_volume(volume, seed=seed + i, registration=first[0].registration,
                                 modality=modality))
    return out


def _geometry(volume: SeriesVolume) -> tuple[object, ...]:
    img = volume.image
    return (img.GetSize(), tuple(round(v, 4) for v in img.GetSpacing()),
            tuple(round(v, 3) for v in img.GetOrigin()),
            tuple(round(v, 5) for v in img.GetDirection()))
