"""A series' DICOM objects in and out: decoded once, slices read and written back in place.

:func:`read_series` reads every object of a series (pixel data decoded once, whatever the
transfer syntax) and lists its 2-D images as :class:`~agent.deface.volumes.Slice` s - one
per classic image, per frame of a multi-frame object (:mod:`agent.deface.multiframe`),
per tile of a Siemens mosaic (:mod:`agent.deface.mosaic`). Defacing changes stored values
through :meth:`SeriesObjects.put`; :meth:`SeriesObjects.write` writes every object back in
the form it came in: a mosaic stays a mosaic, an enhanced object stays one object with the
same frames, a classic image stays a classic image. Transfer syntax: uncompressed (either
byte order) and deflated objects keep theirs; lossless compression (RLE, JPEG 2000,
JPEG-LS) is re-encoded with the same syntax when an encoder is installed; lossy-compressed
objects, and lossless ones without an encoder, are written as Explicit VR Little Endian
(re-compressing lossily would degrade the image again). Written objects get Image Type
DERIVED and code 113102.

Colour images (a colour FA map, a perfusion map on anatomy: Samples per Pixel 3) are
fitted, judged and defaced on their luminance, the mean of the three samples; a pixel the
defacing changed becomes that grey value in all three samples, every other pixel keeps its
colour bit for bit. They are written as uncompressed RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from agent.deface import jpeglossless, mosaic, multiframe, splice
from agent.deface.planes import is_projection, number, plane_of, volume_key
from agent.deface.volumes import Slice
from agent.errors import DefaceFailed

#: Fewer slices than this along one direction: not a volume the template can be fitted to.
MIN_SLICES = 20
CLEAN_VISUAL = ("113102", "DCM", "Clean Recognizable Visual Features")
#: Lossless syntaxes that are re-encoded as they came when an encoder is available.
_REENCODE = (RLELossless, JPEG2000Lossless, JPEGLSLossless)


def _fail(message: str, code: str = "deface-input") -> DefaceFailed:
    return DefaceFailed(message, code=code)


def save_defaced(ds: Dataset, path: Path) -> Path:
    """Write a defaced object; a failure to write is a defacing failure (never deliver)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 -- pydicom's writer raises many types; converted
        raise _fail(f"the defaced image cannot be written ({type(exc).__name__})",
                    code="deface-write") from None
    return path


def stored_range(ds: Dataset, dtype: np.dtype) -> tuple[float, float]:
    """The stored values the object can represent (Bits Stored, sign, data type).

    Float pixel data (a parametric map in real units: T1 in ms, ADC, CBF, a phase in
    radians) carries no Bits Stored and may be negative: any finite value of its type.
    """
    if np.issubdtype(dtype, np.floating):
        finite = np.finfo(dtype)
        return float(finite.min), float(finite.max)
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    return lo, hi


@dataclass
class SeriesObjects:
    """The objects of one series with their decoded pixel data."""

    paths: list[Path]
    datasets: list[Dataset]
    #: Stored values per object: (rows, columns) or (frames, rows, columns).
    arrays: list[np.ndarray]
    slices: list[Slice] = field(default_factory=list)
    #: Objects that are not images (no pixel data): kept as they are.
    others: list[int] = field(default_factory=list)
    #: Mosaic objects and their tiling.
    layouts: dict[int, mosaic.Layout] = field(default_factory=dict)
    changed: set[int] = field(default_factory=set)
    #: Colour objects: their decoded RGB samples (..., 3); ``arrays`` holds the luminance.
    colour: dict[int, np.ndarray] = field(default_factory=dict)
    #: Objects whose file can be written back by splicing its bytes (:mod:`splice`).
    spliceable: dict[int, splice.Layout] = field(default_factory=dict)

    def pixels(self, s: Slice) -> np.ndarray:
        """The stored values of one 2-D image."""
        arr = self.arrays[s.obj]
        if s.tile >= 0:
            return mosaic.tile(arr, self.layouts[s.obj], s.tile)
        return arr[s.frame] if arr.ndim == 3 else arr

    def put(self, s: Slice, values: np.ndarray) -> None:
        """Replace the stored values of one 2-D image (same shape and data type)."""
        arr = self.arrays[s.obj]
        if s.tile >= 0:
            mosaic.put_tile(arr, self.layouts[s.obj], s.tile, values)
        elif arr.ndim == 3:
            arr[s.frame] = values
        else:
            arr[...] = values
        self.changed.add(s.obj)

    def write(self, out_dir: Path, names: dict[Path, str]) -> dict[Path, Path]:
        """Write the changed objects into ``out_dir`` (input path -> written path); objects
        without changes keep their input file."""
        written: dict[Path, Path] = {}
        marks = splice.Marks(mark_derived)
        for i, (path, ds) in enumerate(zip(self.paths, self.datasets, strict=True)):
            if i not in self.changed:
                written[path] = path
                continue
            lay = self.spliceable.get(i)
            # An enhanced object (even one frame of it) also marks its Frame Types
            # DERIVED, which the splice (top-level elements only) cannot.
            if (lay is not None and i not in self.colour and self.arrays[i].ndim == 2
                    and not multiframe.is_enhanced(ds)):
                try:
                    written[path] = _splice(out_dir / names[path], lay, marks.of(ds, lay),
                                            self.arrays[i])
                    continue
                except splice.NotSpliceable:
                    pass  # (e.g. an odd pixel data length): written the ordinary way
            if i in self.colour:
                _set_colour(ds, self.colour[i], self.arrays[i])
            else:
                _set_pixels(ds, self.arrays[i])
            mark_derived(ds)
            if multiframe.is_enhanced(ds):
                multiframe.mark_frames_derived(ds)
            written[path] = save_defaced(ds, out_dir / names[path])
        return written


def _splice(path: Path, lay: splice.Layout, marks: dict[int, bytes], arr: np.ndarray
            ) -> Path:
    """Write a defaced classic object by splicing (see :mod:`agent.deface.splice`)."""
    data = splice.pixel_bytes(arr)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        splice.write(path, lay, marks, data)
    except OSError as exc:
        raise _fail(f"the defaced image cannot be written ({type(exc).__name__})",
                    code="deface-write") from None
    return path


def _read(path: Path) -> tuple[Dataset, splice.Layout | None, np.ndarray | None]:
    """One object, parsed from one read of its file; with the layout of its bytes when it
    can be written back by splicing, and then its stored values when they can be taken
    from those bytes as they are (:func:`_native`)."""
    try:
        raw = path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types for damaged files
        raise _fail("a file of the series cannot be read as DICOM "
                    f"({type(exc).__name__})") from None
    if ("PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1
            or int(ds.get("NumberOfFrames", 1) or 1) != 1):
        return ds, None, None
    try:
        lay = splice.layout(raw, str(ds.file_meta.TransferSyntaxUID))
    except splice.NotSpliceable:
        return ds, None, None
    return ds, lay, _native(ds, raw, len(lay.head))


def _native(ds: Dataset, raw: bytes, offset: int) -> np.ndarray | None:
    """The stored values of a little-endian native image read straight from its bytes
    (pydicom's decoder costs more than the rest of reading), when that is exactly what the
    decoder gives: 8 or 16 bits allocated, and no bit above Bits Stored set unless all
    bits are stored. None: let the decoder do it."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(ds.PixelRepresentation) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if bits not in (8, 16) or not 0 < stored <= bits or rows <= 0 or cols <= 0:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    if offset + rows * cols * dtype.itemsize > len(raw):
        return None
    arr = np.frombuffer(raw, dtype, rows * cols, offset).reshape(rows, cols)
    if stored < bits:
        if signed:  # the decoder sign-extends from Bits Stored
            return None
        if int(arr.max()) >> stored:
            return None  # high bits in use: the decoder's own rules apply
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_series(files: list[Path], sources: list[Path] | None = None) -> SeriesObjects:
    """Read and decode every object; list its slices.

    ``sources``: the staged originals of the same series. De-identification removes the
    private Siemens headers that say how many tiles a mosaic holds; they are read there.
    """
    paths: list[Path] = []
    datasets: list[Dataset] = []
    arrays: list[np.ndarray] = []
    others: list[int] = []
    colours: dict[int, np.ndarray] = {}
    layouts: dict[int, splice.Layout] = {}
    for path in files:
        ds, lay, native = _read(path)
        if lay is not None:
            layouts[len(datasets)] = lay
        paths.append(path)
        datasets.append(ds)
        if "PixelData" not in ds and multiframe.float_pixels(ds) is None:
            others.append(len(datasets) - 1)
            arrays.append(np.zeros((0, 0), np.uint16))
            continue
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if samples not in (1, 3):
            raise _fail(f"images of {samples} samples per pixel cannot be defaced")
        try:
            arr = native if native is not None else np.array(ds.pixel_array, copy=True)
        except Exception as exc:  # noqa: BLE001 -- pixel decoders raise many types; converted
            raise _fail(f"the pixel data cannot be decoded ({type(exc).__name__})") from None
        if samples == 3:
            if arr.shape[-1] != 3:
                raise _fail("colour pixel data of an unexpected layout cannot be defaced")
            colours[len(datasets) - 1] = arr
            arr = luminance(arr)
        arrays.append(arr)
    objs = SeriesObjects(paths=paths, datasets=datasets, arrays=arrays, others=others,
                         colour=colours, spliceable=layouts)
    mosaics = any(mosaic.is_mosaic(ds) for ds in datasets)
    hints = mosaic.hints_from(sources or []) if mosaics else mosaic.Hints()
    for i in range(len(datasets)):
        if i in others:
            continue
        objs.slices.extend(_slices_of(objs, i, hints))
    return objs


def _slices_of(objs: SeriesObjects, i: int, hints: mosaic.Hints) -> list[Slice]:
    ds, arr = objs.datasets[i], objs.arrays[i]
    if multiframe.is_enhanced(ds) or arr.ndim == 3:
        return multiframe.frame_slices(i, ds, arr)
    layout = mosaic.layout(ds, hints)
    if layout is not None:
        objs.layouts[i] = layout
        return mosaic.tile_slices(i, ds, layout)
    if mosaic.is_mosaic(ds):
        raise _fail("a Siemens mosaic of the series does not say how many slices it holds "
                    "(its private header was removed before the export); export the series "
                    "from the scanner or PACS with its private headers", code="deface-input")
    plane = plane_of(ds, arr.shape)
    if plane is None:
        raise _fail("an image of the series has no usable position, orientation or pixel "
                    "spacing; where its face is cannot be told", code="deface-geometry")
    return [Slice(obj=i, frame=0, tile=-1, plane=plane,
                  slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
                  intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
                  key=volume_key(i, ds), order=number(ds.get("InstanceNumber")),
                  projection=is_projection(ds.get("ImageType")))]


def _set_pixels(ds: Dataset, arr: np.ndarray) -> None:
    """Put ``arr`` into ``ds`` in a transfer syntax chosen as the module docstring says."""
    if multiframe.put_float_pixels(ds, arr):
        return
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            delattr(ds, kw)
    if jpeglossless.encode(ds, arr):  # JPEG Lossless SV1, where its encoder is installed
        return
    if syntax.is_compressed and syntax in _REENCODE:
        try:
            ds.compress(syntax, np.ascontiguousarray(arr), generate_instance_uid=False)
            return
        except Exception:  # noqa: BLE001 - no encoder for this syntax/depth: write plain
            pass
    # The plain syntaxes (big endian too) and deflated are kept; pydicom deflates on writing.
    if syntax.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        syntax = ExplicitVRLittleEndian
    dtype = arr.dtype.newbyteorder("<" if syntax.is_little_endian else ">")
    data = np.ascontiguousarray(arr).astype(dtype, copy=False).tobytes()
    if len(data) % 2:
        data += b"\x00"  # DICOM values have even length
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 16)) <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False


def luminance(rgb: np.ndarray) -> np.ndarray:
    """The grey value of colour samples (..., 3): their rounded mean, same data type."""
    return np.rint(rgb.astype(np.float64).mean(axis=-1)).astype(rgb.dtype)


def _set_colour(ds: Dataset, rgb: np.ndarray, grey: np.ndarray) -> None:
    """Colour samples back into ``ds``: pixels whose grey value the defacing changed take
    it in all three samples; written as uncompressed, pixel-interleaved RGB (decoding
    gave RGB, whatever the photometric interpretation on disk)."""
    out = rgb.copy()
    changed = grey != luminance(rgb)
    out[changed] = grey[changed][:, None]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            delattr(ds, kw)
    data = np.ascontiguousarray(out).astype(out.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 8)) <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False


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
