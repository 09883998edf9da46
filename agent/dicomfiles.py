"""Reading just enough of an exported file: which series it belongs to, and whether it is whole.

Headers are read without pixel data (fast, even for thousands of files). Completeness is
judged from the bytes on disk: a file still being written by the viewer has pixel data
shorter than its header promises, an encapsulated pixel data sequence that has not been
closed yet, or (deflated transfer syntax) a deflate stream that does not end, however long
it has been quiet. Nothing here reads pixel data into memory: encapsulated items are
walked by their lengths, a deflated dataset is inflated in bounded chunks and counted.

Every file is opened through :mod:`agent.boundary` (no link followed, nothing outside the
export folder) and every pydicom error is converted here: a damaged file is "not DICOM" or
"not whole", never an exception.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from agent.boundary import open_export_file

log = logging.getLogger(__name__)

#: Media Storage Directory Storage: DICOMDIR files index a media set and carry patient
#: names; they are never processed as images.
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
#: A deflated dataset larger than this once inflated is not read (a deflate bomb).
MAX_INFLATED = 2 << 30
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DicomHeader:
    """The identity of one exported file. Holds source UIDs: keep it in memory only."""

    study_uid: str
    series_uid: str
    instance_uid: str


def _dcmread(fh: BinaryIO, **kwargs: object) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(fh, **kwargs)  # type: ignore[arg-type]


def read_header(path: Path, root: Path | None = None) -> DicomHeader | None:
    """The series a file belongs to, or None when it is not a DICOM image we process.

    Returns None for non-DICOM files, DICOMDIR, files without Study/Series Instance UID,
    and deflated files that inflate beyond :data:`MAX_INFLATED`. Raises OSError when the
    file cannot be read (vanished, locked) and :class:`~agent.boundary.OutsideExport` for
    links and special files.
    """
    if path.name.upper() == "DICOMDIR":
        return None
    with open_export_file(path, root) as fh:
        deflated = _deflated_offset(fh)
        if deflated is not None and not _inflates_within(fh, deflated, MAX_INFLATED)[0]:
            return None
        fh.seek(0)
        try:
            ds = _dcmread(fh, stop_before_pixels=True, specific_tags=[
                "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                "MediaStorageSOPClassUID"])
            sop_class = str(ds.get("SOPClassUID", "")
                            or ds.file_meta.get("MediaStorageSOPClassUID", ""))
            study, series = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
            instance = ds.get("SOPInstanceUID")
            uids = (str(study or ""), str(series or ""), str(instance or ""))
        except Exception:  # noqa: BLE001 -- pydicom raises many types for damaged files
            return None
    if sop_class == MEDIA_DIRECTORY_SOP_CLASS or not all(uids):
        return None
    return DicomHeader(*uids)


@lru_cache(maxsize=256)
def is_image_class(sop_class_uid: str) -> bool:
    """Whether a SOP Class stores images (pydicom's registry: "... Image Storage"), whose
    Rows and Columns are required: such a file without them was cut short or damaged, not
    a file that holds no image."""
    uid = UID(sop_class_uid.strip("\x00 "))
    return uid.type == "SOP Class" and "Image Storage" in uid.name


def _sop_class(ds: pydicom.Dataset) -> str:
    try:
        meta = getattr(ds, "file_meta", None)
        return str(ds.get("SOPClassUID", "")
                   or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""))
    except Exception:  # noqa: BLE001 -- a damaged UID element says nothing usable
        return ""


# -- pixel data lengths ------------------------------------------------------------------


def expected_native_length(ds: pydicom.Dataset) -> int:
    """Bytes of native pixel data the header announces (Rows x Columns x Frames x
    Samples x Bits); 0 when the header says nothing usable."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(str(ds.get("NumberOfFrames", 1) or 1))
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        photometric = str(ds.get("PhotometricInterpretation", ""))
    except Exception:  # noqa: BLE001 -- a damaged element (unknown VR ...) says nothing usable
        return 0
    if min(rows, cols, frames, spp, bits) < 0:
        return 0
    if spp == 3 and photometric == "YBR_FULL_422":
        spp = 2  # two chroma samples shared by each pair of pixels
    return (rows * cols * frames * spp * bits + 7) // 8


_VRS_32 = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN")


def _pixel_value_header(fh: BinaryIO, explicit: bool, little: bool
                        ) -> tuple[int, int, bool] | None:
    """At the Pixel Data tag: (header length, value length, explicit VR) or None if it is
    not there.

    A file that says explicit VR but is written implicit (pydicom reads it, with a
    warning) is recognised by the missing VR letters."""
    raw = fh.read(12)
    order = "<" if little else ">"
    if len(raw) < 8:
        return None
    group, elem = struct.unpack(order + "HH", raw[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if explicit and raw[4:6] in _VRS_32:
        if len(raw) < 12:
            return None
        return 12, struct.unpack(order + "I", raw[8:12])[0], True
    if explicit and b"AA" <= raw[4:6] <= b"ZZ":
        return 8, struct.unpack(order + "H", raw[6:8])[0], True
    return 8, struct.unpack(order + "I", raw[4:8])[0], False


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


def _tail_is_whole(fh: BinaryIO, offset: int, size: int, explicit: bool,
                   little: bool) -> bool:
    """Whether the elements after the pixel data (padding, trailers) end exactly at EOF."""
    order = "<" if little else ">"
    while offset < size:
        fh.seek(offset)
        raw = fh.read(12)
        if len(raw) < 8:
            return False
        if explicit and raw[4:6] in _LONG_VRS:
            if len(raw) < 12:
                return False
            header, length = 12, struct.unpack(order + "I", raw[8:12])[0]
        elif explicit:
            header, length = 8, struct.unpack(order + "H", raw[6:8])[0]
        else:
            header, length = 8, struct.unpack(order + "I", raw[4:8])[0]
        if length == 0xFFFFFFFF:
            return True  # a sequence of undefined length after the pixels: rare, accept
        offset += header + length
    return offset == size


def _encapsulated_end(fh: BinaryIO, offset: int, size: int, little: bool) -> int | None:
    """Walk the items of encapsulated pixel data from ``offset``: the offset after the
    sequence delimiter, or None when the sequence is not closed inside the file."""
    order = "<" if little else ">"
    while offset + 8 <= size:
        fh.seek(offset)
        group, elem, length = struct.unpack(order + "HHI", fh.read(8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            return offset + 8
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return None
        offset += 8 + length
    return None


# -- deflated transfer syntax ------------------------------------------------------------


def _deflated_offset(fh: BinaryIO) -> int | None:
    """Where the deflated dataset starts, when the file uses the deflated transfer syntax."""
    fh.seek(0)
    head = fh.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return None
    (group_length,) = struct.unpack("<I", head[140:144])
    if group_length > 1 << 20:
        return None
    meta = fh.read(group_length)
    return 144 + group_length if DeflatedExplicitVRLittleEndian.encode() in meta else None


def _inflates_within(fh: BinaryIO, offset: int, limit: int) -> tuple[bool, bool]:
    """(within limit, stream complete): inflate from ``offset`` in bounded chunks, keeping
    nothing. A stream cut short (still being written) is not complete."""
    fh.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fh.read(_CHUNK):
            data = inflater.decompress(chunk, _CHUNK)
            while True:
                total += len(data)
                if total > limit:
                    return False, False
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            if inflater.eof:
                break
    except zlib.error:
        return True, False
    return True, inflater.eof


# -- completeness ------------------------------------------------------------------------


def is_complete(path: Path, root: Path | None = None) -> bool:
    """Whether the whole file parses and its pixel data are as long as the header says.

    Native pixel data: the file must hold as many bytes after the Pixel Data tag as its
    length says, and at least Rows x Columns x Frames x Samples x Bits. Encapsulated
    pixel data: the item sequence must be closed by its delimiter. Deflated: the deflate
    stream must end, and the inflated dataset hold its pixel data whole.
    """
    return why_incomplete(path, root) is None


def why_incomplete(path: Path, root: Path | None = None) -> str | None:
    """None when the file is whole (:func:`is_complete`), else what is wrong with it, in
    words that hold no PHI (offsets and sizes only): "is cut short at byte 1,204 (its
    pixel data should end at byte 525,000)"."""
    try:
        with open_export_file(path, root) as fh:
            size = os.fstat(fh.fileno()).st_size
            deflated = _deflated_offset(fh)
            if deflated is not None:
                return _deflated_incomplete(fh, deflated)
            fh.seek(0)
            return _plain_incomplete(fh, size)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 -- any parse failure means "not whole (yet)"
        return f"cannot be parsed as DICOM ({type(exc).__name__})"


def _n(value: int) -> str:
    return f"{value:,}"


def _deflated_incomplete(fh: BinaryIO, offset: int) -> str | None:
    within, complete = _inflates_within(fh, offset, MAX_INFLATED)
    if not within:
        return f"inflates to more than {_n(MAX_INFLATED)} bytes (a deflate bomb is not read)"
    if not complete:
        return "has a deflated data stream that is cut short or damaged"
    fh.seek(0)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(fh)
    if _cut_short(records):
        return "ends inside an element once inflated (it is cut short)"
    if ("Rows" not in ds or "Columns" not in ds) and not is_image_class(_sop_class(ds)):
        return None
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            return None
        return "describes an image but holds no pixel data"
    if ds["PixelData"].is_undefined_length:
        return None  # the inflated stream ended: its items were written whole
    return _short_pixels(len(ds.PixelData), expected_native_length(ds))


def _short_pixels(length: int, expected: int) -> str | None:
    if length >= expected:
        return None
    return (f"holds {_n(length)} bytes of pixel data where its header describes "
            f"{_n(expected)}")


def _cut_short(records: list[warnings.WarningMessage]) -> bool:
    """Whether pydicom warned that the file ended inside an element or a sequence (it
    reports an EOFError as a warning naming the file)."""
    return any(" in file " in str(w.message) or "End of file" in str(w.message)
               for w in records)


def _plain_incomplete(fh: BinaryIO, size: int) -> str | None:
    cut = f"is cut short at byte {_n(size)}"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        pos = fh.tell()
    if _cut_short(records):
        return f"{cut}, inside an element of its header"
    is_image = ("Rows" in ds and "Columns" in ds) or is_image_class(_sop_class(ds))
    if pos >= size:
        return (f"ends at byte {_n(size)}, before its pixel data (it is cut short or "
                "garbled)") if is_image else None
    little = ds.is_little_endian is not False
    explicit = not ds.is_implicit_VR
    header = _pixel_value_header(fh, explicit, little)
    if header is None:
        # Something else follows (float pixels, or pixels elsewhere): parse it all.
        fh.seek(0)
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            full = pydicom.dcmread(fh)
        if _cut_short(records):
            return f"{cut}, inside an element after its header"
        if (not is_image or "PixelData" in full or "FloatPixelData" in full
                or "DoubleFloatPixelData" in full):
            return None
        return "describes an image but holds no pixel data"
    header_len, length, explicit = header
    tail_broken = f"{cut}, in the elements after its pixel data (or bytes were appended)"
    if length == 0xFFFFFFFF:
        end = _encapsulated_end(fh, pos + header_len, size, little)
        if end is None:
            return f"{cut}: its compressed pixel data do not end with their delimiter"
        return None if _tail_is_whole(fh, end, size, explicit, little) else tail_broken
    end = pos + header_len + length
    if size < end:
        return f"{cut} (its pixel data should end at byte {_n(end)})"
    short = _short_pixels(length, expected_native_length(ds))
    if short is not None:
        return short
    return None if _tail_is_whole(fh, end, size, explicit, little) else tail_broken
