"""One pass over the bytes of an exported file: which series, and whether it is whole.

Surveying an export parsed every file with pydicom twice (which series, is it whole), each
parse costing more than reading the file. This module walks the element headers of a file
already in memory once (:mod:`agent.dicomwalk`; no values decoded) and answers both
exactly as the pydicom-based functions do:

* the header: Study, Series and SOP Instance UID and SOP Class UID, as
  :func:`agent.dicomfiles.read_header` reads them;
* whether the file is whole, as :func:`agent.dicomfiles.is_complete` decides.

It handles the ordinary files - Part 10 with explicit or implicit VR, little or big
endian, sequences and items of defined and undefined length, native and encapsulated
pixel data. Anything else (no preamble, deflate, tags out of order, UN sequences, implicit
VR switches, damaged or truncated headers) gives None, and the caller asks the pydicom
functions, so unusual files get exactly the old answers. ``tests/test_quickread.py``
holds the two paths equal on the real corpus and on truncated and damaged copies.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import dictionary_VR

from agent.dicomfiles import is_image_class
from agent.dicomwalk import (
    ITEM,
    MAX_DEPTH,
    PLAIN_SYNTAXES,
    UNDEFINED,
    VRS,
    Walker,
    WalkError,
    file_meta,
)

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_STUDY, _SERIES, _INSTANCE, _SOP_CLASS = 0x0020000D, 0x0020000E, 0x00080018, 0x00080016
_ROWS, _COLUMNS, _FRAMES, _SAMPLES, _BITS = (0x00280010, 0x00280011, 0x00280008, 0x00280002,
                                            0x00280100)
_PHOTOMETRIC = 0x00280004
_WANTED = frozenset({_STUDY, _SERIES, _INSTANCE, _SOP_CLASS, _ROWS, _COLUMNS, _FRAMES,
                     _SAMPLES, _BITS, _PHOTOMETRIC})
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Larger files are not read into memory whole: the pydicom functions stream them.
QUICK_MAX_BYTES = 64 << 20


class _Unusual(Exception):
    """The file is not one this reader answers for: ask pydicom."""


@dataclass(frozen=True)
class Scan:
    """What one pass found. Holds source UIDs: keep it in memory only."""

    study_uid: str
    series_uid: str
    instance_uid: str
    sop_class_uid: str
    #: Whether the file is whole (see :func:`agent.dicomfiles.is_complete`); None when
    #: this reader cannot tell and pydicom must decide.
    complete: bool | None

    @property
    def is_image_we_process(self) -> bool:
        """What :func:`agent.dicomfiles.read_header` says with a header (not None)."""
        return (self.sop_class_uid != MEDIA_DIRECTORY_SOP_CLASS and bool(self.study_uid)
                and bool(self.series_uid) and bool(self.instance_uid))


@lru_cache(maxsize=4096)
def _dictionary_sq(tag: int) -> bool | None:
    """True/False: the dictionary's VR is / is not SQ; None: not in the dictionary."""
    try:
        return str(dictionary_VR(tag)) == "SQ"
    except KeyError:
        return None


def _is_sequence(walker: Walker, tag: int, vr: bytes, value: int) -> bool:
    """How pydicom decides that an undefined-length element is a sequence."""
    if vr:
        if vr == b"UN":
            raise _Unusual  # an UN sequence: implicit VR inside, pydicom's business
        return vr == b"SQ"
    known = _dictionary_sq(tag)
    if known is None:
        return walker.data[value:value + 4] == (b"\xfe\xff\x00\xe0" if walker.little
                                                else b"\xff\xfe\xe0\x00")  # an item
    return known


def _dataset(walker: Walker, start: int, found: dict[int, tuple[int, int]]) -> int:
    """Walk the data set from ``start`` to the first pixel data tag at its top level,
    checking every element at every depth as pydicom would read it (tags in order, no
    stray file meta tags, undefined lengths only for sequences); the position reached.
    Records where the values of the wanted top-level elements are."""
    last = [-1] * (MAX_DEPTH + 2)  # the last tag of the data set at each depth
    for tag, vr, pos, value, length, depth in walker.walk(start):
        if tag == ITEM:
            last[depth] = -1
            continue
        if tag >> 16 == 0x0002 or tag <= last[depth]:
            raise _Unusual  # stray meta tags, tags out of order or twice
        last[depth] = tag
        if depth == 0 and tag in _PIXEL_TAGS:
            return pos
        if length == UNDEFINED:
            if not _is_sequence(walker, tag, vr, value):
                raise _Unusual  # undefined-length non-sequence: let pydicom read it
        elif depth == 0 and tag in _WANTED:
            found[tag] = (value, length)
    return walker.size


def _meta(data: bytes) -> tuple[int, bytes, str]:
    """(end of the file meta group, transfer syntax UID, Media Storage SOP Class UID)."""
    elements, start = file_meta(data)
    ts, media_class, last = b"", "", -1
    for tag, vr, _pos, value, length, _depth in elements:
        if vr not in VRS or tag <= last:
            raise _Unusual
        last = tag
        if tag == 0x00020010:
            ts = data[value:value + length].rstrip(b"\x00 ")
        elif tag == 0x00020002:
            media_class = _text(data[value:value + length])
    return start, ts, media_class


_UID = re.compile(rb"[0-9][0-9.]*")


def _text(raw: bytes) -> str:
    """A UI value as pydicom gives it: one trailing NUL or space removed. Anything but
    digits and dots (several values, odd padding) is left to pydicom."""
    if raw[-1:] in (b"\x00", b" "):
        raw = raw[:-1]
    if raw and not _UID.fullmatch(raw):
        raise _Unusual
    return raw.decode("ascii")


def _us(data: bytes, where: tuple[int, int] | None, little: bool, default: int) -> int:
    if where is None:
        return default
    value, length = where
    if length == 0:
        return default
    if length != 2:
        raise _Unusual
    number = int(struct.unpack_from("<H" if little else ">H", data, value)[0])
    return number or default


def _frames(data: bytes, where: tuple[int, int] | None) -> int:
    if where is None:
        return 1
    value, length = where
    text = data[value:value + length].decode("ascii", "replace").strip("\x00 ")
    if not text:
        return 1
    try:
        return int(text) or 1
    except ValueError:
        raise _Unusual from None


def _complete(data: bytes, walker: Walker, pos: int, found: dict[int, tuple[int, int]],
              little: bool, sop_class: str) -> bool | None:
    """:func:`agent.dicomfiles.is_complete` from the pixel data tag at ``pos``."""
    size = len(data)
    is_image = (_ROWS in found and _COLUMNS in found) or is_image_class(sop_class)
    if pos >= size:
        return not is_image
    tag, _vr, _pos, value, length, _depth = walker.header(pos)
    if tag != 0x7FE00010:
        return None  # float pixel data, or something else: pydicom parses it all
    if length == UNDEFINED:
        return None  # encapsulated: pydicom parses the fragments
    photometric = found.get(_PHOTOMETRIC)
    if photometric and b"422" in data[photometric[0]:photometric[0] + photometric[1]]:
        return None  # chroma subsampled: its expected length is dicomfiles' to reckon
    expected = (_us(data, found.get(_ROWS), little, 0) * _us(data, found.get(_COLUMNS),
                                                              little, 0)
                * _frames(data, found.get(_FRAMES)) * _us(data, found.get(_SAMPLES), little, 1)
                * _us(data, found.get(_BITS), little, 8) + 7) // 8
    end = value + length
    if size < end or length < expected:
        return False
    while end < size:  # the elements after the pixel data end exactly at EOF
        try:
            _tag, _vr, _pos, value, length, _depth = walker.header(end)
        except WalkError:
            return None
        if length == UNDEFINED:
            return True  # as dicomfiles: a sequence after the pixels is accepted
        end = value + length
    return end == size


def _walk(data: bytes) -> tuple[Walker, int, dict[int, tuple[int, int]], str] | None:
    """The top-level walk up to the first pixel data tag: (walker, position reached,
    where the wanted values are, Media Storage SOP Class UID); None for an unusual file.
    Raises _Unusual, WalkError and struct.error."""
    start, ts, media_class = _meta(data)
    syntax = PLAIN_SYNTAXES.get(ts.decode("ascii", "replace"))
    if syntax is None:
        return None
    walker = Walker(data, *syntax, strict=True)  # another VR: pydicom guesses, we do not
    found: dict[int, tuple[int, int]] = {}
    return walker, _dataset(walker, start, found), found, media_class


def pixel_bytes(data: bytes, whole: bool) -> int | None:
    """The decoded pixel bytes the header announces, as
    :func:`agent.dicomfiles.expected_native_length` reckons them from pydicom's parse;
    ``data`` is the file or (``whole`` False) its first bytes. None when this reader
    cannot tell (an unusual file, or a header longer than ``data``): ask pydicom."""
    try:
        walked = _walk(data)
        if walked is None:
            return None
        walker, pos, found, _media_class = walked
        if pos >= len(data) and not whole:
            return None  # the header may go on beyond what was read
        little = walker.little
        for tag in (_SAMPLES, _ROWS, _COLUMNS):
            where = found.get(tag)
            if where is not None and where[1] and _us(data, where, little, 0) == 0:
                return None  # no image has 0 of these: pydicom's parse, agent.headers say why
        spp = _us(data, found.get(_SAMPLES), little, 1)
        photometric = found.get(_PHOTOMETRIC)
        if spp == 3 and photometric and data[photometric[0]:photometric[0] + photometric[1]
                                             ].strip(b"\x00 ") == b"YBR_FULL_422":
            spp = 2
        frames = _frames(data, found.get(_FRAMES))
        if frames < 0:
            return 0  # as dicomfiles: a header that says nothing usable
        return (_us(data, found.get(_ROWS), little, 0) * _us(data, found.get(_COLUMNS),
                                                             little, 0)
                * frames * spp * _us(data, found.get(_BITS), little, 8) + 7) // 8
    except (_Unusual, WalkError, struct.error):
        return None


def scan(data: bytes) -> Scan | None:
    """One pass over a whole file in memory; None when pydicom must decide."""
    try:
        walked = _walk(data)
        if walked is None:
            return None
        walker, pos, found, media_class = walked
        little = walker.little

        def uid(tag: int) -> str:
            where = found.get(tag)
            return _text(data[where[0]:where[0] + where[1]]) if where else ""

        sop_class = uid(_SOP_CLASS) or media_class
        return Scan(study_uid=uid(_STUDY), series_uid=uid(_SERIES),
                    instance_uid=uid(_INSTANCE), sop_class_uid=sop_class,
                    complete=_complete(data, walker, pos, found, little, sop_class))
    except (_Unusual, WalkError, struct.error):
        return None


__all__ = ["MEDIA_DIRECTORY_SOP_CLASS", "QUICK_MAX_BYTES", "Scan", "pixel_bytes", "scan"]
