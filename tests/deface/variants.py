"""Constructed variants of real corpus series, in the shapes other vendors' exports take.

The held-out data the project is measured on comes from scanners that are not in the
corpus. Each variant here rewrites a real series (pixels untouched) into one such shape:
the enhanced XA30 T1 as a classic single-frame stack (how Siemens VE/VB, GE, Philips,
Canon and Toshiba export), that stack again as a legacy-converted enhanced object, in every
lossless transfer syntax a codec exists for, in reversed file order, with a slice missing,
unevenly spaced, as coronal and axial stacks (the source is sagittal), with Canon/Toshiba
headers (no CSA, their private groups, four-valued image types), cut to 2 and 3 slices,
and as a multi-echo series. :func:`build_all` writes them;
``python -m tests.deface.variants OUT`` writes them and runs ``clinic2cloud process --json``
on each, one series per run, as a new user would.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "dicom"
T1 = CORPUS / "dcm_qa_xa30" / "5_anat-T1w_acq-tfl"

_FRAME_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence", "PlanePositionSequence",
                 "MREchoSequence", "FrameContentSequence", "PixelValueTransformationSequence",
                 "FrameVOILUTSequence", "MRTimingAndRelatedParametersSequence")


def _group(ds: Dataset, frame: Dataset, name: str) -> Dataset | None:
    for holder in (frame, ds.SharedFunctionalGroupsSequence[0]):
        seq = holder.get(name)
        if seq:
            return seq[0]
    return None


def enhanced_to_classic(src: Path, out: Path) -> list[Path]:
    """The frames of one enhanced MR object as classic MR Image Storage files (one per
    frame), its geometry and scaling copied from the functional groups."""
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array
    out.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    files = []
    for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        cl = Dataset()
        for elem in ds:
            if elem.tag.group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028) and elem.VR != "SQ":
                cl.add(copy.deepcopy(elem))
        for name in ("NumberOfFrames", "SharedFunctionalGroupsSequence",
                     "PerFrameFunctionalGroupsSequence", "DimensionIndexSequence",
                     "DimensionOrganizationSequence"):
            if name in cl:
                delattr(cl, name)
        measures = _group(ds, frame, "PixelMeasuresSequence")
        orient = _group(ds, frame, "PlaneOrientationSequence")
        pos = _group(ds, frame, "PlanePositionSequence")
        assert measures is not None and orient is not None and pos is not None
        cl.PixelSpacing = measures.PixelSpacing
        cl.SliceThickness = measures.get("SliceThickness", 1.0)
        cl.ImageOrientationPatient = orient.ImageOrientationPatient
        cl.ImagePositionPatient = pos.ImagePositionPatient
        echo = _group(ds, frame, "MREchoSequence")
        if echo is not None and "EffectiveEchoTime" in echo:
            cl.EchoTime = echo.EffectiveEchoTime
        scale = _group(ds, frame, "PixelValueTransformationSequence")
        if scale is not None:
            cl.RescaleIntercept = scale.get("RescaleIntercept", 0)
            cl.RescaleSlope = scale.get("RescaleSlope", 1)
        cl.SOPClassUID = MRImageStorage
        cl.SOPInstanceUID = generate_uid()
        cl.SeriesInstanceUID = series
        cl.InstanceNumber = n + 1
        cl.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        cl.PixelData = np.ascontiguousarray(frames[n]).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = cl.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        cl.file_meta = meta
        path = out / f"IM{n + 1:04d}.dcm"
        cl.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _load(files: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in files]


def _save(datasets: list[Dataset], out: Path, *, new_series: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for n, ds in enumerate(datasets):
        if new_series:
            ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / f"IM{n + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _position_order(datasets: list[Dataset]) -> list[Dataset]:
    def depth(ds: Dataset) -> float:
        o = np.array(ds.ImageOrientationPatient, float)
        return float(np.array(ds.ImagePositionPatient, float) @ np.cross(o[:3], o[3:]))
    return sorted(datasets, key=depth)


def resliced(classic: list[Path], out: Path, plane: str) -> list[Path]:
    """The classic stack re-cut across its slices (one new slice per column, or per row,
    of the old ones): the same voxels, no interpolation, the stack's grid read along
    another axis. Rows of the new slices run against the old stacking direction."""
    datasets = _position_order(_load(classic))
    vol = np.stack([ds.pixel_array for ds in datasets])  # k (stack), i (rows), j (columns)
    first = datasets[0]
    o = np.array(first.ImageOrientationPatient, float)
    row, col = o[:3], o[3:]
    p0 = np.array(first.ImagePositionPatient, float)
    step = np.array(datasets[1].ImagePositionPatient, float) - p0
    norm = float(np.linalg.norm(step))
    dr, dc = (float(v) for v in first.PixelSpacing)
    top = p0 + step * (vol.shape[0] - 1)
    made = []
    count = vol.shape[2] if plane == "columns" else vol.shape[1]
    for n in range(count):
        ds = copy.deepcopy(first)
        if plane == "columns":  # new columns along the old rows (col), one slice per j
            img, along, spacing, origin = vol[::-1, :, n], col, dr, top + row * dc * n
        else:  # new columns along the old columns (row), one slice per i
            img, along, spacing, origin = vol[::-1, n, :], row, dc, top + col * dr * n
        ds.ImageOrientationPatient = [float(v) for v in (*along, *(-step / norm))]
        ds.ImagePositionPatient = [float(v) for v in origin]
        ds.PixelSpacing = [norm, spacing]
        ds.SliceThickness = dc if plane == "columns" else dr
        ds.Rows, ds.Columns = img.shape
        ds.PixelData = np.ascontiguousarray(img).tobytes()
        ds.InstanceNumber = n + 1
        made.append(ds)
    return _save(made, out)


def oblique(classic: list[Path], out: Path, degrees: float = 20.0) -> list[Path]:
    """The stack resampled (linear) onto slices tilted by ``degrees`` about the first
    image axis: a double-oblique acquisition as planned on a scout."""
    import SimpleITK as sitk

    datasets = _position_order(_load(classic))
    vol = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)
    first = datasets[0]
    o = np.array(first.ImageOrientationPatient, float)
    row, col = o[:3], o[3:]
    p0 = np.array(first.ImagePositionPatient, float)
    step = np.array(datasets[1].ImagePositionPatient, float) - p0
    dr, dc = (float(v) for v in first.PixelSpacing)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((dc, dr, float(np.linalg.norm(step))))
    img.SetOrigin(tuple(p0))
    img.SetDirection(tuple(np.column_stack([row, col, step / np.linalg.norm(step)]).ravel()))
    t = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    d = np.array(img.GetDirection()).reshape(3, 3) @ rot
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in img.GetSize()]))
    size = img.GetSize()
    spacing = np.array(img.GetSpacing())
    origin = centre - d @ (spacing * (np.array(size) - 1) / 2)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(tuple(spacing))
    ref.SetDirection(tuple(d.ravel()))
    ref.SetOrigin(tuple(origin))
    tilted = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(),
                                                  sitk.sitkLinear, 0.0))
    made = []
    for k in range(tilted.shape[0]):
        ds = copy.deepcopy(first)
        ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in origin + d[:, 2] * spacing[2] * k]
        pixels = np.clip(np.rint(tilted[k]), 0, None).astype(first.pixel_array.dtype)
        ds.PixelData = pixels.tobytes()
        ds.InstanceNumber = k + 1
        made.append(ds)
    return _save(made, out)


def reversed_order(classic: list[Path], out: Path) -> list[Path]:
    """Instance numbers and file names run against the slice positions."""
    datasets = _position_order(_load(classic))[::-1]
    for n, ds in enumerate(datasets):
        ds.InstanceNumber = n + 1
    return _save(datasets, out)


def missing_slice(classic: list[Path], out: Path) -> list[Path]:
    datasets = _position_order(_load(classic))
    del datasets[len(datasets) // 2]
    return _save(datasets, out)


def uneven(classic: list[Path], out: Path) -> list[Path]:
    """Every slice in the lower half, every other one in the upper half."""
    datasets = _position_order(_load(classic))
    half = len(datasets) // 2
    return _save(datasets[:half] + datasets[half::2], out)


def thick(classic: list[Path], out: Path, every: int) -> list[Path]:
    """Every ``every``-th slice: a 2-D stack with gaps between its slices, as clinical
    T2 and FLAIR stacks are acquired (the slice thickness stays that of the source)."""
    made = _save(_position_order(_load(classic))[::every], out)
    shutil.rmtree(out / "tmp", ignore_errors=True)  # an intermediate form, if any
    return made


def cut(classic: list[Path], out: Path, count: int, at: float) -> list[Path]:
    """``count`` consecutive slices starting at fraction ``at`` of the stack."""
    datasets = _position_order(_load(classic))
    start = int(at * len(datasets))
    return _save(datasets[start:start + count], out)


def canon_headers(classic: list[Path], out: Path, vendor: str) -> list[Path]:
    """Canon/Toshiba-style headers: no Siemens private groups or CSA, their own private
    group, the four-valued image type they write."""
    datasets = _load(classic)
    for ds in datasets:
        for tag in [e.tag for e in ds if e.tag.is_private]:
            del ds[tag]
        ds.Manufacturer = vendor
        ds.ManufacturerModelName = "Vantage Orian" if vendor.startswith("CANON") else "Titan"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.add_new(0x70050010, "LO", "TOSHIBA_MEC_MR3")
        ds.add_new(0x70051000, "UN", b"\x01\x02\x03\x04")
        ds.BodyPartExamined = "HEAD"
    return _save(datasets, out)


def multi_echo(classic: list[Path], out: Path) -> list[Path]:
    """Two echoes at every position, in one series (the second darker)."""
    datasets = _load(classic)
    made = []
    for echo, (te, factor) in enumerate(((2.5, 1.0), (7.5, 0.6)), start=1):
        for ds in datasets:
            d = copy.deepcopy(ds)
            d.EchoNumbers = echo
            d.EchoTime = te
            arr = (d.pixel_array * factor).astype(d.pixel_array.dtype)
            d.PixelData = arr.tobytes()
            made.append(d)
    for n, ds in enumerate(made):
        ds.InstanceNumber = n + 1
    return _save(made, out)


def legacy_enhanced(classic: list[Path], out: Path) -> list[Path]:
    """The classic stack as one Legacy Converted Enhanced MR object (highdicom)."""
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = _position_order(_load(classic))
    enh = LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=generate_uid(),
                                         series_number=901, sop_instance_uid=generate_uid(),
                                         instance_number=1)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "enhanced.dcm"
    enh.save_as(path, enforce_file_format=True)
    return [path]


#: Lossless transfer syntaxes and the tool that writes them (dcmtk / gdcm).
COMPRESSORS: dict[str, list[str]] = {
    "jpeg-lossless": ["dcmcjpeg", "+e1"],
    "jpeg-ls": ["dcmcjpls", "+el"],
    "rle": ["dcmcrle"],
    "j2k-lossless": ["gdcmconv", "--j2k", "--lossless"],
}


def compressed(classic: list[Path], out: Path, syntax: str) -> list[Path]:
    tool = COMPRESSORS[syntax]
    if shutil.which(tool[0]) is None:
        raise FileNotFoundError(tool[0])
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for p in classic:
        dst = out / p.name
        subprocess.run([*tool, str(p), str(dst)], check=True, capture_output=True)
        files.append(dst)
    shutil.rmtree(out / "tmp", ignore_errors=True)  # an intermediate form, if any
    return files


def build_all(out: Path, *, only: set[str] | None = None) -> dict[str, Path]:
    """Every variant in its own folder under ``out``; returns name -> folder."""
    src = next(p for p in sorted(T1.iterdir()) if p.suffix == ".dcm")
    classic_dir = out / "classic"
    classic = enhanced_to_classic(src, classic_dir)
    makers: dict[str, Callable[[Path], list[Path]]] = {
        "legacy-enhanced": lambda o: legacy_enhanced(classic, o),
        "reversed": lambda o: reversed_order(classic, o),
        "missing-slice": lambda o: missing_slice(classic, o),
        "uneven": lambda o: uneven(classic, o),
        # The source is sagittal: one new slice per old column is coronal, per row axial.
        "coronal": lambda o: resliced(classic, o, "columns"),
        "axial": lambda o: resliced(classic, o, "rows"),
        "oblique": lambda o: oblique(classic, o),
        "sagittal-6mm": lambda o: thick(classic, o, 3),
        "axial-6mm": lambda o: thick(resliced(classic, o / "tmp", "rows"), o, 3),
        "enhanced-j2k": lambda o: compressed(legacy_enhanced(classic, o / "tmp"), o,
                                             "j2k-lossless"),
        "canon": lambda o: canon_headers(classic, o, "CANON_MEC"),
        "toshiba": lambda o: canon_headers(classic, o, "TOSHIBA"),
        "2-slices-nose": lambda o: cut(classic, o, 2, 0.30),
        "3-slices-nose": lambda o: cut(classic, o, 3, 0.30),
        "multi-echo": lambda o: multi_echo(classic, o),
        **{s: (lambda o, s=s: compressed(classic, o, s)) for s in COMPRESSORS},  # type: ignore[misc]
    }
    folders = {"classic": classic_dir}
    # A short stack arrives with the study's 3-D series: it is defaced from the study fit.
    study = out / "study-3d-and-2-slices"
    if only is None or study.name in only:
        shutil.copytree(classic_dir, study / "t1")
        cut(classic, study / "slab", 2, 0.30)
        folders[study.name] = study
    for name, make in makers.items():
        if only is not None and name not in only:
            continue
        try:
            make(out / name)
            folders[name] = out / name
        except FileNotFoundError as exc:
            print(f"{name}: skipped ({exc} not installed)", file=sys.stderr)
    return folders


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    only = set(argv[1:]) or None
    folders = build_all(out / "in", only=only)
    exe = Path(sys.executable).parent / "clinic2cloud"
    rows = []
    for name, folder in folders.items():
        dst = out / "out" / name
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.monotonic()
        proc = subprocess.run([str(exe), "process", "--json", "--out", str(dst), str(folder)],
                              capture_output=True, text=True)
        seconds = time.monotonic() - t0
        try:
            summary = json.loads(proc.stdout)
            series = summary["series"]
        except (ValueError, KeyError):
            series = [{"state": f"rc={proc.returncode}", "reason": proc.stderr[-300:]}]
        for s in series:
            rows.append((name, s.get("state"), s.get("code", ""), s.get("reason", "")[:150],
                         f"{seconds:.0f}s"))
            print(*rows[-1], sep=" | ", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
