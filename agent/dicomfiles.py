"""Reading just enough of an exported file: which series it belongs to, and whether it is whole.

Headers are read without pixel data (fast, even for thousands of files). Completeness is
judged from the bytes on disk: a file still being written by the viewer has pixel data
shorter than its header promises, or an encapsulated pixel data sequence that has not been
closed yet, however long it has been quiet.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

#: Media Storage Directory Storage: DICOMDIR files index a media set and carry patient
#: names; they are never processed as images.
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class DicomHeader:
    """The identity of one exported file. Holds source UIDs: keep it in memory only."""

    study_uid: str
    series_uid: str
    instance_uid: str


def read_header(path: Path) -> DicomHeader | None:
    """The series a file belongs to, or None when it is not a DICOM image we process.

    Returns None for non-DICOM files, DICOMDIR, and files without Study/Series Instance UID.
    Raises OSError when the file cannot be read (vanished, locked).
    """
    if path.name.upper() == "DICOMDIR":
        return None
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "SOPClassUID", "MediaStorageSOPClassUID"],
        )
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            NotImplementedError, OverflowError, UnicodeDecodeError):
        return None
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_DIRECTORY_SOP_CLASS:
        return None
    study, series = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
    instance = ds.get("SOPInstanceUID")
    if not study or not series or not instance:
        return None
    return DicomHeader(str(study), str(series), str(instance))


def _expected_native_length(ds: pydicom.Dataset) -> int:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(str(ds.get("NumberOfFrames", 1) or 1))
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    total_bits = rows * cols * frames * spp * bits
    return (total_bits + 7) // 8


def _pixel_value_header(fh: BinaryIO, explicit: bool, little: bool) -> tuple[int, int] | None:
    """At the Pixel Data tag: (header length, value length) or None if it is not there."""
    raw = fh.read(12 if explicit else 8)
    order = "<" if little else ">"
    if len(raw) < 8:
        return None
    group, elem = struct.unpack(order + "HH", raw[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if explicit:
        if len(raw) < 12:
            return None
        if raw[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
            return 12, struct.unpack(order + "I", raw[8:12])[0]
        return 8, struct.unpack(order + "H", raw[6:8])[0]
    return 8, struct.unpack(order + "I", raw[4:8])[0]


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


def is_complete(path: Path) -> bool:
    """Whether the whole file parses and its pixel data are as long as the header says.

    Native pixel data: the file must hold as many bytes after the Pixel Data tag as its
    length says, and at least Rows x Columns x Frames x Samples x Bits. Encapsulated
    pixel data: the item sequence must be closed by its delimiter.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh, warnings.catch_warnings():
            # pydicom only warns when it hits the end of a file inside a sequence.
            warnings.simplefilter("error")
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pos = fh.tell()
            is_image = "Rows" in ds and "Columns" in ds
            if pos >= size:
                return not is_image
            little = ds.is_little_endian is not False
            header = _pixel_value_header(fh, not ds.is_implicit_VR, little)
            if header is None:
                # Something else follows (no pixels, or pixels elsewhere): parse it all.
                fh.seek(0)
                full = pydicom.dcmread(fh)
                return not is_image or "PixelData" in full or "FloatPixelData" in full
            header_len, length = header
            if length == 0xFFFFFFFF:
                fh.seek(0)
                full = pydicom.dcmread(fh)
                return "PixelData" in full
            end = pos + header_len + length
            return (size >= end and length >= _expected_native_length(ds)
                    and _tail_is_whole(fh, end, size, not ds.is_implicit_VR, little))
    except Exception:  # noqa: BLE001 -- any parse failure means "not whole (yet)"
        return False
