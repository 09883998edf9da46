"""Reading just enough of an exported file: which series it belongs to, and whether it is whole.

Headers are read without pixel data (fast, even for thousands of files). Completeness is
judged from the bytes on disk: a file still being written by the viewer has pixel data
shorter than its header promises, or an encapsulated pixel data sequence that has not been
closed yet, however long it has been quiet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

#: Media Storage Directory Storage: DICOMDIR files index a media set and carry patient
#: names; they are never processed as images.
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
_SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER_BE = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"


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


def is_complete(path: Path) -> bool:
    """Whether the whole file parses and its pixel data are as long as the header says."""
    try:
        size = os.path.getsize(path)
        ds = pydicom.dcmread(path, defer_size=1024)
        if "PixelData" not in ds:
            # Objects without pixels (SR, presentation states): a full parse is all we can ask.
            ds.remove_private_tags()  # touches every element, so deferred reads happen
            return True
        elem = ds["PixelData"]
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            with open(path, "rb") as fh:
                fh.seek(max(0, size - 8))
                tail = fh.read(8)
            return tail in (_SEQUENCE_DELIMITER_LE, _SEQUENCE_DELIMITER_BE)
        length = getattr(elem, "length", None)
        if length is None or length == 0xFFFFFFFF:
            length = len(ds.PixelData)
        expected = _expected_native_length(ds)
        value_start = size - length
        return length >= expected and value_start > 0 and ds.PixelData is not None and (
            len(ds.PixelData) >= expected
        )
    except Exception:  # noqa: BLE001 - any parse failure means "not whole (yet)"
        return False
