"""One chunk of a series' files through the pixel checks; a file is re-written only when
something in it changed.

Per file: overlays and icons that survived the header profile are dropped; native Pixel
Data is cut to its samples (trailing bytes go); compressed frames lose their embedded
segments (:mod:`agent.pixels.segments`); samples are decoded with their unused bits as
stored and put in canonical form (:mod:`agent.pixels.bits`). Then the frames of all files
of one shape are searched for text together (:mod:`agent.pixels.text`), and lines that
show an identifier are redacted.

Compressed data whose samples must change (hidden bits set, text redacted, or a frame we
cannot edit in place) is written uncompressed, Explicit VR Little Endian: re-encoding a
lossy JPEG would add a generation of loss, no encoder exists here for every lossless
syntax, and the decoded samples are what every reader sees. Colour that the decoder
turned from YCbCr into RGB is labelled RGB.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from agent.deid.fastread import read_fast
from agent.deid.peek import peek
from agent.errors import SeriesProblem, is_library_panic
from agent.pixels.bits import Layout, as_words, canonical, hidden_bits
from agent.pixels.quick import read_quick
from agent.pixels.segments import Removed, Uncleanable, clean_frame
from agent.pixels.text import Line, TextScanner, redact

_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                     "1.2.840.10008.1.2.2"})
_ICON = 0x00880200


@dataclass
class FileReport:
    """What was done to one file (no PHI: counts, kinds and boxes)."""

    index: int
    changed: bool = False
    hidden_samples: int = 0
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    transcoded: bool = False
    lines: list[Line] = field(default_factory=list)
    declared_burned_in: bool = False
    sensitive: bool = False


@dataclass
class _Loaded:
    path: Path
    ds: Dataset
    report: FileReport
    samples: npt.NDArray[Any] | None = None
    spp: int = 1
    native_dirty: bool = False      # native samples changed: PixelData must be re-written
    frames_clean: list[bytes] | None = None  # compressed frames re-encapsulated, unchanged
    must_decompress: bool = False
    #: Read by agent.pixels.quick: ``ds`` holds the risk elements only (see :func:`full`).
    quick: bool = False


def _us(ds: Dataset, tag: int, default: int) -> int:
    """An US value straight from its raw bytes (no pydicom conversion: 200 files x a dozen
    values add up)."""
    elements: Any = ds._dict  # raw access, as the engine's peek does
    raw = elements.get(tag)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and len(raw.value) >= 2:
        return int(struct.unpack("<H" if raw.is_little_endian else ">H", raw.value[:2])[0])
    value = ds.get(tag)
    return default if value is None or value.value in (None, "") else int(value.value)


@dataclass(frozen=True)
class Geometry:
    rows: int
    cols: int
    spp: int
    frames: int
    planar: bool
    layout: Layout


def _geometry(ds: Dataset) -> Geometry:
    ba = _us(ds, 0x00280100, 0)
    bs = _us(ds, 0x00280101, ba)
    layout = Layout(ba, bs, _us(ds, 0x00280102, bs - 1), _us(ds, 0x00280103, 0) == 1)
    frames = peek(ds, 0x00280008).split("\\")[0].strip()
    spp = _us(ds, 0x00280002, 1)
    return Geometry(_us(ds, 0x00280010, 0), _us(ds, 0x00280011, 0), spp,
                    int(frames) if frames.isdigit() and int(frames) > 0 else 1,
                    spp > 1 and _us(ds, 0x00280006, 0) == 1, layout)


def _layout(ds: Dataset) -> Layout:
    return _geometry(ds).layout


def _frames_of(samples: npt.NDArray[Any], ds: Dataset, spp: int) -> npt.NDArray[Any]:
    """Decoded samples as (frames, rows, cols[, samples])."""
    if _geometry(ds).frames <= 1:
        samples = samples[None]
    if spp == 1 and samples.ndim == 4:
        samples = samples[..., 0]
    return samples


def _native_words(ds: Dataset, layout: Layout, ts: str, report: FileReport
                  ) -> tuple[npt.NDArray[np.unsignedinteger], bool]:
    """The stored words of native Pixel Data, trailing bytes cut. (words, trimmed)."""
    g = _geometry(ds)
    rows, cols, spp, n = g.rows, g.cols, g.spp, g.frames
    data: bytes = ds.PixelData
    count = rows * cols * spp * n
    expected = (count * layout.bits_allocated + 7) // 8
    if len(data) < expected:
        raise SeriesProblem("an image's pixel data is shorter than its size says; export the "
                            "series again", code="not-dicom")
    trimmed = False
    extra = data[expected:]
    if extra.strip(b"\x00") or len(extra) > 1:
        report.removed.append("bytes after the last sample")
        report.removed_bytes += len(extra)
        trimmed = True
    if layout.bits_allocated == 1:
        bits_used = count % 8
        if bits_used and data[expected - 1] >> bits_used:
            report.hidden_samples += 1
            trimmed = True
        return np.frombuffer(data[:expected], np.uint8), trimmed
    order = ">" if ts == ExplicitVRBigEndian else "<"
    words = np.frombuffer(data[:expected], f"{order}u{layout.bits_allocated // 8}")
    return words.astype(layout.unsigned_dtype()), trimmed


def load(path: Path, index: int) -> _Loaded:
    """Read one file and do its structural cleaning (overlays, bytes, bits) in memory.

    An ordinary slice with nothing to clean (:mod:`agent.pixels.quick`: no overlay, no
    trailing bytes, no hidden bit) is read the quick way: its samples a view of its
    bytes, its dataset only the risk elements (:attr:`_Loaded.quick`; :func:`full` reads
    it whole when it must be re-written)."""
    try:
        data = path.read_bytes()
    except OSError:
        raise SeriesProblem("a de-identified file cannot be read back for the pixel checks",
                            code="internal") from None
    quick = read_quick(data)
    if quick is not None:
        words = quick.samples.view(quick.layout.unsigned_dtype())
        if not hidden_bits(words, quick.layout):
            report = FileReport(index, declared_burned_in=quick.declared_burned_in)
            return _Loaded(path, quick.ds, report, quick.samples, quick=True)
    return _load_full(path, index, data)


def full(item: _Loaded) -> _Loaded:
    """``item`` read the full way (a quick item about to be redacted and re-written), with
    what was found in it."""
    if not item.quick:
        return item
    out = _load_full(item.path, item.report.index, item.path.read_bytes())
    out.report.lines = item.report.lines
    out.report.sensitive = item.report.sensitive
    return out


def _load_full(path: Path, index: int, data: bytes) -> _Loaded:
    try:
        ds = read_fast(data, str(path)) or pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # noqa: BLE001 - the engine wrote it; unreadable now means damage
        raise SeriesProblem("a de-identified file cannot be read back for the pixel checks",
                            code="internal") from None
    report = FileReport(index)
    item = _Loaded(path, ds, report)
    for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x601E or t == _ICON]:
        del ds[tag]
        report.removed.append("overlay" if tag != _ICON else "icon image")
        report.changed = True
    report.declared_burned_in = peek(ds, 0x00280301).upper() == "YES"
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            item.samples = _frames_of(ds.pixel_array, ds, 1)
        return item
    ts = str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    layout = _layout(ds)
    if not layout.valid:
        raise SeriesProblem("an image declares an impossible pixel layout (Bits Allocated, "
                            "Bits Stored, High Bit); it cannot be checked", code="not-dicom")
    item.spp = _geometry(ds).spp
    if ts in _NATIVE:
        _load_native(item, ts, layout)
        return item
    _load_compressed(item, ts, layout)
    return item


def _load_native(item: _Loaded, ts: str, layout: Layout) -> None:
    ds, report, spp = item.ds, item.report, item.spp
    words, trimmed = _native_words(ds, layout, ts, report)
    hidden = hidden_bits(words, layout) if layout.bits_allocated > 1 else 0
    if hidden:
        words = canonical(words, layout)
        report.hidden_samples += hidden
    item.native_dirty = trimmed or bool(hidden)
    report.changed |= item.native_dirty
    if layout.bits_allocated == 1:
        item.samples = _frames_of(ds.pixel_array, ds, spp)
        return
    dtype = np.dtype(f"i{layout.bits_allocated // 8}" if layout.signed
                     else f"u{layout.bits_allocated // 8}")
    g = _geometry(ds)
    n, rows, cols = g.frames, g.rows, g.cols
    arr = words.view(dtype)
    if g.planar:
        arr = arr.reshape(n, spp, rows, cols).transpose(0, 2, 3, 1)
        if item.native_dirty:
            ds.PlanarConfiguration = 0
    item.samples = np.ascontiguousarray(arr.reshape((n, rows, cols) + ((spp,) if spp > 1
                                                                       else ())))


def _decoded(ds: Dataset) -> npt.NDArray[Any]:
    """The decoded pixels; what cannot be decoded cannot be checked. A decoder's panic
    (pylibjpeg-rle on damaged data: a BaseException) is such a failure too."""
    try:
        return pixel_array(ds, correct_unused_bits=False)
    except BaseException as exc:
        if not (isinstance(exc, Exception) or is_library_panic(exc)):
            raise
        raise SeriesProblem("an image's compressed pixel data cannot be decoded, so it "
                            "cannot be checked for burned-in text; it is held back",
                            code="identity-risk") from None


def _load_compressed(item: _Loaded, ts: str, layout: Layout) -> None:
    ds, report = item.ds, item.report
    g = _geometry(ds)
    n = g.frames
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=n))
    except Exception:  # noqa: BLE001 - a broken encapsulation is a broken file
        raise SeriesProblem("an image's compressed pixel data is damaged (fragments do not "
                            "add up); export the series again", code="not-dicom") from None
    removed = Removed()
    cleaned: list[bytes] = []
    try:
        for frame in frames:
            cleaned.append(clean_frame(frame, ts, g.rows, g.cols, removed))
    except Uncleanable:
        item.must_decompress = True
    if not item.must_decompress and (removed.kinds or len(frames) != n
                                     or any(a is not b for a, b in zip(cleaned, frames,
                                                                       strict=True))):
        item.frames_clean = cleaned
        ds.PixelData = encapsulate(cleaned)
        for kw in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if kw in ds:
                del ds[kw]
        report.changed = True
    report.removed += removed.kinds
    report.removed_bytes += removed.bytes
    samples = _frames_of(_decoded(ds), ds, item.spp)
    if layout.bits_allocated > 1:
        words = as_words(samples, layout)
        hidden = hidden_bits(words, layout)
        if hidden:
            report.hidden_samples += hidden
            samples = canonical(words, layout).view(samples.dtype).reshape(samples.shape)
            item.must_decompress = True
    item.samples = samples


def write(item: _Loaded) -> None:
    """Re-write a changed file: native samples, cleaned frames or decompressed."""
    ds, report = item.ds, item.report
    if report.lines and report.declared_burned_in:
        ds.BurnedInAnnotation = "NO"  # the identifying text is gone (PS3.3 C.7.6.1.1.1)
    ts = str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    samples = item.samples
    if samples is not None and "PixelData" in ds and (
            item.native_dirty or item.must_decompress or report.lines):
        layout = _layout(ds)
        big = ts == ExplicitVRBigEndian
        if layout.bits_allocated == 1:
            from pydicom.pixels.utils import pack_bits
            ds.PixelData = pack_bits(samples.astype(np.uint8))
        else:
            dtype = samples.dtype.newbyteorder(">" if big else "<")
            ds.PixelData = np.ascontiguousarray(samples).astype(dtype).tobytes()
        if item.spp > 1:
            ds.PlanarConfiguration = 0
        if ts not in _NATIVE:
            report.transcoded = True
            ds.file_meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
            if item.spp == 3 and str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
                ds.PhotometricInterpretation = "RGB"
            for kw in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
                if kw in ds:
                    del ds[kw]
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - re-encoding our own output must not fail
        raise SeriesProblem(f"an image could not be re-written after its pixel checks "
                            f"({type(exc).__name__})", code="internal") from None
    tmp = item.path.with_name(f".{item.path.name}.px")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(item.path)
    report.changed = True


def scan_text(items: list[_Loaded], scanner: TextScanner, sensitive: bool) -> None:
    """Search the frames of every item for text, one stack per frame shape."""
    groups: dict[tuple[int, ...], list[_Loaded]] = {}
    for item in items:
        if item.samples is not None and item.samples.size:
            groups.setdefault(item.samples.shape[1:], []).append(item)
    for group in groups.values():
        stack = np.concatenate([g.samples for g in group if g.samples is not None])
        owners = [(g, k) for g in group for k in range(g.samples.shape[0])  # type: ignore
                  ]
        each = [g.report.sensitive or sensitive for g in group]
        lines = scanner.scan(stack, group[0].spp, sensitive=any(each))
        for line in lines:
            owner, frame = owners[line.frame]
            owner.report.lines.append(Line(frame, line.top, line.left, line.height,
                                           line.width, line.kind, line.dark))


def apply_redactions(item: _Loaded) -> None:
    if item.report.lines and item.samples is not None:
        if not item.samples.flags.writeable:
            item.samples = item.samples.copy()
        redact(item.samples, item.report.lines)
