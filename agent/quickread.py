"""One pass over the bytes of an exported file: which series, and whether it is whole.

Surveying an export parsed every file with pydicom twice (which series, is it whole), each
parse costing more than reading the file. This module walks the element headers of a file
already in memory once - no values decoded, no objects per element - and answers both
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

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_SUPPORTED = {
    b"1.2.840.10008.1.2": (True, True),
    b"1.2.840.10008.1.2.1": (False, True),
    b"1.2.840.10008.1.2.2": (False, False),
}
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


class _Walker:
    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        e = "<" if little else ">"
        self.data = data
        self.size = len(data)
        self.tag_at = struct.Struct(f"{e}HH").unpack_from
        self.implicit = implicit
        self.little = little
        self.head = struct.Struct(f"{e}HH2sH").unpack_from
        self.u32 = struct.Struct(f"{e}L").unpack_from
        self.tag_len = struct.Struct(f"{e}HHL").unpack_from

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None for implicit, value start, value length) at ``pos``."""
        if pos + 8 > self.size:
            raise _Unusual
        if self.implicit:
            group, elem, length = self.tag_len(self.data, pos)
            return group << 16 | elem, None, pos + 8, length
        group, elem, vr, short = self.head(self.data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            return tag, None, pos + 8, self.u32(self.data, pos + 4)[0]
        if vr in _LONG_VRS:
            if pos + 12 > self.size:
                raise _Unusual
            return tag, vr, pos + 12, self.u32(self.data, pos + 8)[0]
        if vr not in _VRS:
            raise _Unusual  # an implicit VR switch, or an unknown VR: pydicom guesses
        return tag, vr, pos + 8, short

    def is_sequence(self, tag: int, vr: bytes | None, value: int) -> bool:
        """How pydicom decides that an undefined-length element is a sequence."""
        if vr is not None:
            if vr == b"UN":
                raise _Unusual  # an UN sequence: implicit VR inside, pydicom's business
            return vr == b"SQ"
        known = _dictionary_sq(tag)
        if known is None:
            if value + 4 > self.size:
                raise _Unusual
            group, elem = self.tag_at(self.data, value)
            return (group << 16 | elem) == _ITEM
        return known

    def dataset(self, pos: int, end: int, in_item: bool,
                found: dict[int, tuple[int, int]] | None) -> int:
        """Walk the elements from ``pos`` to ``end`` (or to an item delimiter when
        ``in_item`` and the item has undefined length); the position after.

        At the top level (``found`` is not None) stops at the first pixel data tag and
        records where the values of the wanted tags are."""
        last = -1
        while pos < end:
            tag, vr, value, length = self.header(pos)
            if tag == _ITEM_END and in_item:
                return pos + 8
            if tag >> 16 in (0xFFFE, 0x0002) or tag <= last:
                raise _Unusual  # stray item or meta tags, tags out of order or twice
            last = tag
            if found is not None and tag in _PIXEL_TAGS:
                return pos
            if length == _UNDEFINED:
                if not self.is_sequence(tag, vr, value):
                    raise _Unusual  # undefined-length non-sequence: let pydicom read it
                pos = self.items(value)
                continue
            if found is not None and tag in _WANTED:
                found[tag] = (value, length)
            pos = self.value_end(vr, value, length, end)
        if in_item:
            raise _Unusual  # an undefined-length item never closed
        return pos

    def value_end(self, vr: bytes | None, value: int, length: int, end: int) -> int:
        """Where a defined-length value ends; a sequence's items are walked, so that
        their elements' VRs are checked as the others' are."""
        stop = value + length
        if stop > end:
            raise _Unusual  # cut short inside the header
        if vr == b"SQ" and length:
            self.items(value, stop)
        return stop

    def items(self, pos: int, stop: int | None = None) -> int:
        """Walk the items of a sequence, of undefined length or (``stop``) ending there;
        the position after its end."""
        while True:
            if stop is not None and pos == stop:
                return pos
            if pos + 8 > (self.size if stop is None else stop):
                raise _Unusual
            group, elem, length = self.tag_len(self.data, pos)
            tag = group << 16 | elem
            if tag == _SEQ_END and stop is None:
                return pos + 8
            if tag != _ITEM:
                raise _Unusual
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, self.size if stop is None else stop, True, None)
            else:
                end = pos + 8 + length
                if (end > (self.size if stop is None else stop)
                        or self.dataset(pos + 8, end, False, None) != end):
                    raise _Unusual
                pos = end


def _meta(data: bytes) -> tuple[int, bytes, str]:
    """(end of the file meta group, transfer syntax UID, Media Storage SOP Class UID)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Unusual
    pos, ts, media_class = 132, b"", ""
    last = -1
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        group, elem, vr = struct.unpack_from("<HH2s", data, pos)
        if vr in _LONG_VRS:
            length = struct.unpack_from("<L", data, pos + 8)[0]
            value = pos + 12
        elif vr in _VRS:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value = pos + 8
        else:
            raise _Unusual
        tag = group << 16 | elem
        if length == _UNDEFINED or value + length > len(data) or tag <= last:
            raise _Unusual
        last = tag
        if tag == 0x00020010:
            ts = data[value:value + length].rstrip(b"\x00 ")
        elif tag == 0x00020002:
            media_class = _text(data[value:value + length])
        pos = value + length
    return pos, ts, media_class


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


def _complete(data: bytes, walker: _Walker, pos: int, found: dict[int, tuple[int, int]],
              little: bool, sop_class: str) -> bool | None:
    """:func:`agent.dicomfiles.is_complete` from the pixel data tag at ``pos``."""
    size = len(data)
    is_image = (_ROWS in found and _COLUMNS in found) or is_image_class(sop_class)
    if pos >= size:
        return not is_image
    tag, vr, value, length = walker.header(pos)
    if tag != 0x7FE00010:
        return None  # float pixel data, or something else: pydicom parses it all
    if length == _UNDEFINED:
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
            _tag, _vr, value, length = walker.header(end)
        except _Unusual:
            return None
        if length == _UNDEFINED:
            return True  # as dicomfiles: a sequence after the pixels is accepted
        end = value + length
    return end == size


def _walk(data: bytes) -> tuple[_Walker, int, dict[int, tuple[int, int]], str] | None:
    """The top-level walk up to the first pixel data tag: (walker, position reached,
    where the wanted values are, Media Storage SOP Class UID); None for an unusual file.
    Raises _Unusual and struct.error."""
    start, ts, media_class = _meta(data)
    if ts not in _SUPPORTED:
        return None
    implicit, little = _SUPPORTED[ts]
    walker = _Walker(data, implicit, little)
    found: dict[int, tuple[int, int]] = {}
    return walker, walker.dataset(start, len(data), False, found), found, media_class


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
    except (_Unusual, struct.error):
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
    except (_Unusual, struct.error):
        return None


__all__ = ["MEDIA_DIRECTORY_SOP_CLASS", "QUICK_MAX_BYTES", "Scan", "pixel_bytes", "scan"]
